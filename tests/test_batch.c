/* test_batch.c - bl_batch_decode runs several contexts in one forward step
   and leaves each exactly as bl_ctx_decode alone would: logits (LAST, ALL,
   NONE), positions, token history and greedy continuations, on models with
   GQA, biases and NEOX RoPE, quantized and F32. Steps mix prompt chunks and
   single tokens at different positions; more rows than max_tokens take
   several steps; a sequence that cannot run fails alone.
   Each model runs twice. With the plain C kernels (BL_SIMD=scalar) every
   logit must be bit-identical: that checks the batching itself. With the
   best kernels a step of several rows may take another kernel than one row
   alone (tiles instead of row-by-row dot products), which sums in another
   order: float weights must stay within 1e-5 relative (largest difference
   over the largest magnitude of the row). Quantized weights are multiplied
   with int8-rounded activations, and a last-bit difference can flip the
   rounding of an activation, one int8 step (1/127 of the block's largest
   value): on the llama3-gqa Q4_0 model the two kernel paths differ by 1e-2
   relative after a 23-token prompt, bl_ctx_decode alone as much (n_batch 3
   against 64), so those allow 3e-2. Steps of 3 rows are compared with
   chunks of 3, the others with whole prompts. A third pass does the best
   kernels' again with every context on an F16 KV cache. There the two
   paths' last-bit differences in a key or value (up to 1e-7 relative) can
   round it to a different F16 value, one F16 step (2^-11 = 4.9e-4 relative)
   apart, and later rows see that step: measured up to 2.2e-4 on stories260K
   with the AVX2 kernels, so float weights allow 1e-3 there, two steps.
   Unless BL_SIMD chooses a level, the best-kernel passes run again with
   AVX2 (the AVX-512 kernels sum gemv_f and gemm_f alike on short rows, so
   they hide what AVX2's differing orders show). */
#define _POSIX_C_SOURCE 200809L /* setenv */
#define BL_TEAM_MIN_BYTES 0      /* these small models too run on a team of two: the threaded loops are tested */
#define BERLIN_IMPLEMENTATION
#include "berlin.h"
#include "testutil.h"
#include <math.h>

#define NS 4          /* sequences */
#define NGEN 6        /* greedy tokens after each prompt */
#define MAX_EV 12     /* events (decode calls) per sequence */

/* One decode call of a sequence: a prompt chunk, or one generated token
   (toks == NULL: the greedy choice after the previous call). */
typedef struct event {
    const int32_t *toks;
    int n, mode;
} event;

typedef struct seq {
    int32_t prompt[64];
    event ev[MAX_EV];
    int n_ev, start;        /* events, and the step of the first */
    float *ref[MAX_EV];     /* logits rows after each event, decoded alone */
    int ref_rows[MAX_EV];
    int32_t ref_tok[MAX_EV]; /* the token fed by each generated event alone */
} seq;

static int nv, kv_f16;        /* kv_f16: contexts keep an F16 KV cache */
static double worst_rel, tol; /* tol: the relative error allowed in this pass */
static long n_rows_exact, n_rows_close;

static uint32_t lcg(uint32_t *s) { *s = *s * 1664525u + 1013904223u; return *s >> 8; }

/* Prompt lengths 7, 1, 23, 12: seq 2 keeps every row of its prompt, seq 3
   feeds its prompt in two calls (the first keeping none). Seq s starts at
   step s, so every step mixes a prompt with single tokens. */
static void make_seqs(seq *S, uint32_t seed) {
    static const int len[NS] = {7, 1, 23, 12};
    int s, i;
    memset(S, 0, NS * sizeof *S);
    for (s = 0; s < NS; s++) {
        seq *q = &S[s];
        for (i = 0; i < len[s]; i++) q->prompt[i] = (int32_t)(lcg(&seed) % (uint32_t)nv);
        q->start = s;
        if (s == 3) {
            q->ev[q->n_ev].toks = q->prompt; q->ev[q->n_ev].n = 5; q->ev[q->n_ev++].mode = BL_LOGITS_NONE;
            q->ev[q->n_ev].toks = q->prompt + 5; q->ev[q->n_ev].n = len[s] - 5; q->ev[q->n_ev++].mode = BL_LOGITS_LAST;
        } else {
            q->ev[q->n_ev].toks = q->prompt; q->ev[q->n_ev].n = len[s];
            q->ev[q->n_ev++].mode = s == 2 ? BL_LOGITS_ALL : BL_LOGITS_LAST;
        }
        for (i = 0; i < NGEN; i++) { q->ev[q->n_ev].toks = NULL; q->ev[q->n_ev].n = 1; q->ev[q->n_ev++].mode = BL_LOGITS_LAST; }
    }
}

static int argmax(const float *x) {
    int i, b = 0;
    for (i = 1; i < nv; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

static bl_ctx *new_ctx(const bl_model *m, int n_ctx, int n_batch) {
    bl_ctx *c = NULL;
    bl_ctx_desc d;
    memset(&d, 0, sizeof d);
    d.n_ctx = n_ctx;
    d.n_batch = n_batch;
    d.n_threads = 2;
    d.kv_type = kv_f16 ? BL_TYPE_F16 : BL_TYPE_F32;
    CHECK(bl_ctx_create(&c, m, &d) == BL_OK, "ctx create: %s", bl_ctx_last_error(c));
    return c;
}

/* Each sequence decoded alone with bl_ctx_decode in chunks of n_batch:
   the reference. */
static void reference(const bl_model *m, seq *S, int n_batch) {
    int s, e, r;
    for (s = 0; s < NS; s++) {
        seq *q = &S[s];
        bl_ctx *c = new_ctx(m, 128, n_batch);
        int32_t next = -1;
        for (e = 0; e < q->n_ev; e++) {
            const event *v = &q->ev[e];
            const int32_t *t = v->toks ? v->toks : &next;
            q->ref_tok[e] = *t;
            CHECK(bl_ctx_decode(c, t, v->n, v->mode) == BL_OK, "reference decode: %s", bl_ctx_last_error(c));
            q->ref_rows[e] = v->mode == BL_LOGITS_ALL ? v->n : v->mode == BL_LOGITS_LAST ? 1 : 0;
            q->ref[e] = (float *)malloc((size_t)(q->ref_rows[e] ? q->ref_rows[e] : 1) * (size_t)nv * sizeof(float));
            for (r = 0; r < q->ref_rows[e]; r++) memcpy(q->ref[e] + (size_t)r * nv, bl_ctx_logits(c, r), (size_t)nv * sizeof(float));
            if (q->ref_rows[e]) next = argmax(bl_ctx_logits(c, -1));
        }
        bl_ctx_destroy(c);
    }
}

static void free_ref(seq *S) {
    int s, e;
    for (s = 0; s < NS; s++)
        for (e = 0; e < S[s].n_ev; e++) free(S[s].ref[e]);
}

/* 1 if row a is within tol of the reference row b; counts exact rows. */
static int row_close(const float *a, const float *b) {
    double md = 0, mb = 0;
    int i;
    if (memcmp(a, b, (size_t)nv * sizeof(float)) == 0) { n_rows_exact++; return 1; }
    for (i = 0; i < nv; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > md || d != d) md = d;
        if (fabs((double)b[i]) > mb) mb = fabs((double)b[i]);
    }
    md /= mb > 0 ? mb : 1;
    if (md > worst_rel) worst_rel = md;
    n_rows_close++;
    return md <= tol;
}

/* The sequences through bl_batch_decode on a batch of max_tokens rows, each
   step holding every sequence with an event left; checked against the
   reference after every step. */
static void batched(const bl_model *m, seq *S, int max_tokens, const char *name) {
    bl_batch *b = NULL;
    bl_batch_desc bd;
    bl_ctx *c[NS];
    int32_t next[NS];
    int s, step, r, bad = 0;
    memset(&bd, 0, sizeof bd);
    bd.max_tokens = max_tokens;
    bd.max_seqs = NS;
    bd.n_threads = 2;
    CHECK(bl_batch_create(&b, m, &bd) == BL_OK, "batch create: %s", bl_batch_last_error(b));
    for (s = 0; s < NS; s++) c[s] = new_ctx(m, 128, 0);
    for (step = 0;; step++) {
        bl_batch_seq bs[NS];
        bl_result res[NS];
        int who[NS], n = 0, k;
        for (s = 0; s < NS; s++) {
            int e = step - S[s].start;
            if (e < 0 || e >= S[s].n_ev) continue;
            bs[n].ctx = c[s];
            bs[n].tokens = S[s].ev[e].toks ? S[s].ev[e].toks : &next[s];
            bs[n].n_tokens = S[s].ev[e].n;
            bs[n].logits_mode = S[s].ev[e].mode;
            if (!S[s].ev[e].toks && next[s] != S[s].ref_tok[e]) bad++;
            who[n++] = s;
        }
        if (!n) break;
        CHECK(bl_batch_decode(b, bs, n, res) == BL_OK, "%s: step %d: %s", name, step, bl_batch_last_error(b));
        for (k = 0; k < n; k++) {
            seq *q = &S[who[k]];
            int e = step - q->start, pos_want = 0, i;
            CHECK(res[k] == BL_OK, "%s: step %d seq %d: %s", name, step, who[k], bl_ctx_last_error(c[who[k]]));
            for (i = 0; i <= e; i++) pos_want += q->ev[i].n;
            if (bl_ctx_pos(c[who[k]]) != pos_want) bad++;
            for (r = 0; r < q->ref_rows[e]; r++) {
                const float *l = bl_ctx_logits(c[who[k]], r);
                if (!l || !row_close(l, q->ref[e] + (size_t)r * nv)) bad++;
            }
            if (bl_ctx_logits(c[who[k]], q->ref_rows[e]) != NULL) bad++;
            /* the next token as an application would take it */
            if (q->ref_rows[e]) next[who[k]] = bl_ctx_sample(c[who[k]], NULL);
        }
    }
    CHECK(bad == 0, "%s (max_tokens %d): %d mismatches against decoding alone (worst relative error %.3g)", name, max_tokens, bad, worst_rel);
    for (s = 0; s < NS; s++) {
        int e, p = 0, ok = 1;
        for (e = 0; e < S[s].n_ev; e++) {
            const int32_t *t = S[s].ev[e].toks ? S[s].ev[e].toks : &S[s].ref_tok[e];
            ok &= memcmp(bl_ctx_tokens(c[s]) + p, t, (size_t)S[s].ev[e].n * sizeof *t) == 0;
            p += S[s].ev[e].n;
        }
        CHECK(ok, "%s: token history of seq %d", name, s);
        bl_ctx_destroy(c[s]);
    }
    bl_batch_destroy(b);
}

/* Sequences that cannot run fail alone; the others match decoding alone. */
static void test_errors(const bl_model *m, const bl_model *other) {
    static const int32_t good[3] = {1, 403, 407};
    bl_batch *b = NULL;
    bl_batch_desc bd;
    bl_ctx *full = new_ctx(m, 8, 0), *ok1 = new_ctx(m, 64, 0), *ok2 = new_ctx(m, 64, 0), *badtok = new_ctx(m, 64, 0), *alien = new_ctx(other, 64, 0);
    bl_ctx *ref = new_ctx(m, 64, 0);
    bl_batch_seq bs[7];
    bl_result res[7], r;
    int32_t bad_tok = (int32_t)nv + 5, fill[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    float *want;
    nv = bl_model_get_info(m)->n_vocab;
    memset(&bd, 0, sizeof bd);
    bd.max_seqs = 7;
    CHECK(bl_batch_create(&b, m, &bd) == BL_OK, "batch create: %s", bl_batch_last_error(b));
    CHECK(bl_ctx_decode(full, fill, 8, BL_LOGITS_NONE) == BL_OK, "fill: %s", bl_ctx_last_error(full));
    CHECK(bl_ctx_decode(ref, good, 3, BL_LOGITS_LAST) == BL_OK, "ref: %s", bl_ctx_last_error(ref));
    want = bl_ctx_logits(ref, -1);
    bs[0].ctx = full; bs[0].tokens = good; bs[0].n_tokens = 1; bs[0].logits_mode = BL_LOGITS_LAST;
    bs[1].ctx = ok1; bs[1].tokens = good; bs[1].n_tokens = 3; bs[1].logits_mode = BL_LOGITS_LAST;
    bs[2].ctx = badtok; bs[2].tokens = &bad_tok; bs[2].n_tokens = 1; bs[2].logits_mode = BL_LOGITS_LAST;
    bs[3].ctx = alien; bs[3].tokens = good; bs[3].n_tokens = 3; bs[3].logits_mode = BL_LOGITS_LAST;
    bs[4].ctx = ok2; bs[4].tokens = good; bs[4].n_tokens = 3; bs[4].logits_mode = BL_LOGITS_LAST;
    bs[5].ctx = ok1; bs[5].tokens = good; bs[5].n_tokens = 1; bs[5].logits_mode = BL_LOGITS_LAST;
    bs[6].ctx = NULL; bs[6].tokens = good; bs[6].n_tokens = 1; bs[6].logits_mode = BL_LOGITS_LAST;
    r = bl_batch_decode(b, bs, 7, res);
    CHECK(r == BL_ERR_CTX_FULL, "first failing code returned: %s", bl_result_string(r));
    CHECK(res[0] == BL_ERR_CTX_FULL && bl_ctx_pos(full) == 8, "full context: %s, pos %d", bl_result_string(res[0]), bl_ctx_pos(full));
    CHECK(res[2] == BL_ERR_ARG && bl_ctx_pos(badtok) == 0 && strstr(bl_ctx_last_error(badtok), "vocabulary"), "bad token: %s", bl_ctx_last_error(badtok));
    CHECK(res[3] == BL_ERR_ARG && bl_ctx_pos(alien) == 0 && strstr(bl_ctx_last_error(alien), "model"), "other model: %s", bl_ctx_last_error(alien));
    CHECK(res[5] == BL_ERR_ARG && strstr(bl_ctx_last_error(ok1), "twice"), "same context twice: %s", bl_ctx_last_error(ok1));
    CHECK(res[6] == BL_ERR_ARG, "no context: %s", bl_result_string(res[6]));
    CHECK(strstr(bl_batch_last_error(b), "5 of 7") != NULL, "batch error: %s", bl_batch_last_error(b));
    CHECK(res[1] == BL_OK && res[4] == BL_OK && bl_ctx_pos(ok1) == 3 && bl_ctx_pos(ok2) == 3, "good sequences ran: %s %s",
          bl_result_string(res[1]), bl_result_string(res[4]));
    CHECK(bl_ctx_logits(ok1, -1) && memcmp(bl_ctx_logits(ok1, -1), want, (size_t)nv * sizeof(float)) == 0 && bl_ctx_logits(ok2, -1) &&
              memcmp(bl_ctx_logits(ok2, -1), want, (size_t)nv * sizeof(float)) == 0,
          "good sequences' logits equal decoding alone");
    /* the rest still work after a failed call */
    bs[0].ctx = ok1; bs[0].tokens = &good[2]; bs[0].n_tokens = 1;
    CHECK(bl_batch_decode(b, bs, 1, NULL) == BL_OK && bl_ctx_pos(ok1) == 4, "after errors: %s", bl_batch_last_error(b));
    CHECK(bl_batch_decode(b, bs, 8, NULL) == BL_ERR_ARG && bl_ctx_pos(ok1) == 4, "more sequences than max_seqs");
    CHECK(bl_batch_decode(b, bs, 0, NULL) == BL_ERR_ARG, "no sequences");
    bl_batch_destroy(b);
    bl_ctx_destroy(full); bl_ctx_destroy(ok1); bl_ctx_destroy(ok2); bl_ctx_destroy(badtok); bl_ctx_destroy(alien); bl_ctx_destroy(ref);
}

int main(void) {
    static const char *models[] = {"models/stories260K.gguf", "golden/llama3-gqa/gguf/model-Q4_0.gguf",
                                   "golden/llama3-gqa/gguf/model-F32.gguf", "golden/qwen2-bias/hf-f32"};
    static const int splits[] = {512, 8, 3};
    static const char *levels[2] = {NULL, "avx2"}; /* NULL: the best this CPU has, or BL_SIMD's choice */
    bl_model *first = NULL;
    int i, k, n_passes;
    (void)tu_read;
    const char *simd = getenv("BL_SIMD");
    char simd_saved[32] = "";
    if (simd) snprintf(simd_saved, sizeof simd_saved, "%s", simd);
    n_passes = simd ? 3 : 5;
    for (i = 0; i < 4; i++) {
        bl_model *m = NULL;
        const char *path = tu_shared(models[i]);
        seq S[NS];
        int pass;
        if (bl_model_load(&m, path, NULL) != BL_OK) {
            CHECK(0, "load %s: %s", path, bl_model_last_error(m));
            bl_model_destroy(m);
            continue;
        }
        nv = bl_model_get_info(m)->n_vocab;
        make_seqs(S, 12345u + (uint32_t)i);
        for (pass = 0; pass < n_passes; pass++) {
            /* kernels are chosen when a context or batch is made; passes
               1, 2 run the best kernels (3, 4: AVX2), the second of each on
               F16 KV caches (the reference too) */
            const char *level = pass == 0 ? "scalar" : levels[(pass - 1) / 2];
            kv_f16 = pass > 0 && pass % 2 == 0;
            if (level) setenv("BL_SIMD", level, 1);
            else if (simd) setenv("BL_SIMD", simd_saved, 1);
            else unsetenv("BL_SIMD");
            tol = pass == 0 ? 0 : bl_type_activation(bl_model_get_info(m)->weight_type) == BL_TYPE_Q8_0 ? 3e-2 : kv_f16 ? 1e-3 : 1e-5;
            worst_rel = 0;
            n_rows_exact = n_rows_close = 0;
            for (k = 0; k < 3; k++) {
                if (k == 0 || k == 2) {
                    if (k) free_ref(S);
                    reference(m, S, splits[k] < 8 ? splits[k] : 64);
                }
                batched(m, S, splits[k], models[i]);
            }
            printf("%-40s %-7s %-6s %3ld rows bit-identical, %3ld within %.0e (worst relative error %.3g)\n", models[i],
                   level ? level : simd ? simd_saved : "best", kv_f16 ? "F16 KV" : "",
                   n_rows_exact, n_rows_close, tol, worst_rel);
            free_ref(S);
        }
        if (i == 0) first = m;
        else {
            if (i == 1) { /* bit-identical rows need one summing order: the plain C kernels */
                kv_f16 = 0;
                setenv("BL_SIMD", "scalar", 1);
                test_errors(first, m);
                if (simd) setenv("BL_SIMD", simd_saved, 1);
                else unsetenv("BL_SIMD");
            }
            bl_model_destroy(m);
        }
    }
    bl_model_destroy(first);
    return tu_finish();
}
