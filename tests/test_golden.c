/* test_golden.c - berlin.h against the golden reference logits.

   Every variant of every fixture in $BERLIN_SHARED/golden/<fixture>/manifest.json
   (llama2.c .bin, GGUF of every type, HF safetensors folders and files,
   Mistral consolidated folders, both VLM namings) and the two trained models
   of $BERLIN_SHARED/models/trained (manifest key "reference") are loaded and
   held to the four pass criteria of golden/README.md at the precision tier of
   their weight type (tier_for below):
     1. logits: max|ours - golden| / max|golden| <= rel, smallest row cosine >= cos;
     2. argmax equal at every stored position whose golden top1-top2 gap >= gap;
     3. free-running greedy: the first stable_prefix[gap] ids equal greedy.ids;
     4. teacher-forced greedy: after prompt + greedy ids, the argmax after each
        fed token equals the next greedy id wherever that step's gap >= gap.
   Each runs four ways: the whole input in one bl_ctx_decode (one forward
   batch), the same call with n_batch = 5 (many chunks), one token per call
   on one thread, and chunks of 5 on an F16 KV cache (held to the looser of
   the README's F16 cache tier and the weights' own). The stated hyper-parameters are checked too, two files are
   loaded again with no_mmap, and on three models the KV cache must give the
   logits of a straight run after bl_kv_truncate and re-decoding, and after
   bl_ctx_reset. Paths come from $BERLIN_SHARED (default ../shared); the model
   files are read in place, nothing is copied into the repository. The whole
   suite runs at every kernel level the CPU has (and, built with BL_NO_SIMD as
   test_golden_nosimd, with the plain C kernels compiled alone). */
#define _POSIX_C_SOURCE 200809L
#define BERLIN_IMPLEMENTATION
#include "berlin.h"
#include "testutil.h"
#include <math.h>
#include <time.h>
#include <dirent.h>

/* >>tier  PRECISION TIERS ------------------------------------------------------
   The rows of golden/README.md's tolerance table. Which row applies depends on
   how the engine computes, not on the file: tier_for is the one place that says
   it, per weight type. */
typedef struct tier {
    const char *name;
    double max_rel, min_cos, gap;
} tier;

enum { TIER_EXACT, TIER_KV_F16, TIER_ACT_F16, TIER_ACT_BF16, TIER_ACT_QUANT };

static const tier tiers[] = {
    {"exact math", 1e-4, 0.99999, 0.001},
    {"F16 KV cache", 3e-3, 0.9999, 0.05},
    {"activation rounding F16", 5e-3, 0.99999, 0.05},
    {"activation rounding BF16", 2e-2, 0.9998, 0.2},
    {"activation rounding Q8_0/Q6_K/Q4_K/Q4_0", 6e-2, 0.998, 0.5},
};

static const tier *tier_for(int weight_type) {
    /* The library says what it rounds activations to before the dot products
       with weights of each type (bl_type_activation); the KV cache is F32.
       F32 and F16 weights meet float activations (exact math), BF16 weights
       BF16-rounded ones, quantized weights int8 blocks of 32. An F16 KV cache
       would move F32 to TIER_KV_F16 (and the others to the looser row). */
    switch (bl_type_activation(weight_type)) {
    case BL_TYPE_BF16: return &tiers[TIER_ACT_BF16];
    case BL_TYPE_F16: return &tiers[TIER_ACT_F16];
    case BL_TYPE_Q8_0: return &tiers[TIER_ACT_QUANT];
    default: return &tiers[TIER_EXACT];
    }
}

/* >>case  ONE MODEL FILE AND WHAT IT MUST PRODUCE ----------------------------- */
#define MAX_STABLE 8

typedef struct gcase {
    char name[128];      /* "llama3-gqa gguf-Q4_0" */
    char path[1024];     /* model file or folder */
    int no_mmap;
    int32_t *feed;       /* (n_feed) prompt then greedy ids */
    int n_prompt, n_greedy, n_feed;
    const int32_t *greedy; /* feed + n_prompt */
    float *greedy_gap;   /* (n_greedy) golden top1-top2 gap at each greedy step */
    float *golden;       /* (n_rows, n_vocab) logits after feed[0..t] */
    int n_rows, n_vocab;
    int n_stable;        /* stable_prefix thresholds; 0: derive from greedy_gap */
    double stable_thr[MAX_STABLE];
    int stable_n[MAX_STABLE];
    int cfg[7];          /* hidden, layers, heads, kv heads, head_dim, ffn, vocab; 0: unknown */
    double eps, theta;
} gcase;

static void gcase_free(gcase *g) {
    free(g->feed);
    free(g->greedy_gap);
    free(g->golden);
    memset(g, 0, sizeof *g);
}

/* The node at a '/'-separated path of object keys ("reference/stories-target/prompt"). */
static int jpath(const bl__json *j, int k, const char *path) {
    char key[128];
    while (k >= 0 && *path) {
        size_t n = strcspn(path, "/");
        if (n >= sizeof key) return -1;
        memcpy(key, path, n);
        key[n] = 0;
        k = bl__json_get(j, k, key);
        path += n;
        if (*path == '/') path++;
    }
    return k;
}

static int jint(const bl__json *j, int k, int fallback) {
    double v;
    return bl__json_num(j, k, &v) ? (int)v : fallback;
}

/* Array node k as n ints appended to *dst (which holds *len); 0 on a malformed array. */
static int jints(const bl__json *j, int k, int32_t **dst, int *len) {
    int i, n;
    int32_t *p;
    if (k < 0 || j->nodes[k].type != BL__J_ARR) return 0;
    n = j->nodes[k].n;
    p = (int32_t *)realloc(*dst, (size_t)(*len + n + 1) * sizeof *p);
    if (!p) return 0;
    *dst = p;
    for (i = 0; i < n; i++) {
        double v;
        if (!bl__json_num(j, bl__json_at(j, k, i), &v)) return 0;
        p[*len + i] = (int32_t)v;
    }
    *len += n;
    return 1;
}

static float *jfloats(const bl__json *j, int k, int *len) {
    int i, n;
    float *p;
    if (k < 0 || j->nodes[k].type != BL__J_ARR) return NULL;
    n = j->nodes[k].n;
    p = (float *)malloc((size_t)(n + 1) * sizeof *p);
    for (i = 0; p && i < n; i++) {
        double v;
        if (!bl__json_num(j, bl__json_at(j, k, i), &v)) { free(p); return NULL; }
        p[i] = (float)v;
    }
    if (len) *len = n;
    return p;
}

/* Raw little-endian float32 [rows][vocab]; NULL unless the size is exact. */
static float *read_logits(const char *path, int rows, int vocab) {
    size_t len = 0, i, n = (size_t)rows * (size_t)vocab;
    unsigned char *b = (unsigned char *)tu_read(path, &len);
    float *f;
    if (!b) return NULL;
    if (len != n * 4 || !(f = (float *)malloc(n * sizeof *f))) { free(b); return NULL; }
    for (i = 0; i < n; i++) {
        uint32_t u = (uint32_t)b[4 * i] | (uint32_t)b[4 * i + 1] << 8 | (uint32_t)b[4 * i + 2] << 16 | (uint32_t)b[4 * i + 3] << 24;
        memcpy(&f[i], &u, 4);
    }
    free(b);
    return f;
}

/* The model's hyper-parameters as a golden or trained manifest states them. */
static const char *cfg_keys[7] = {"hidden", "n_layers", "n_heads", "n_kv_heads", "head_dim", "inter", "vocab"};

static void read_config(gcase *g, const bl__json *j, int k) {
    int i;
    for (i = 0; i < 7; i++) g->cfg[i] = jint(j, bl__json_get(j, k, cfg_keys[i]), 0);
    if (!bl__json_num(j, bl__json_get(j, k, "eps"), &g->eps)) g->eps = 0;
    if (!bl__json_num(j, bl__json_get(j, k, "rope_theta"), &g->theta)) g->theta = 0;
}

/* stable_prefix: {"0.001": 16, "0.05": 16, ...}; the keys are thresholds. */
static void read_stable(gcase *g, const bl__json *j, int k) {
    int i, key;
    if (k < 0 || j->nodes[k].type != BL__J_OBJ) return;
    for (i = 0, key = k + 1; i < j->nodes[k].n && g->n_stable < MAX_STABLE; i++) {
        int val = j->nodes[key].next;
        char *s = bl__json_str(j, key, NULL);
        if (s) {
            g->stable_thr[g->n_stable] = strtod(s, NULL);
            g->stable_n[g->n_stable++] = jint(j, val, -1);
            BL_FREE(s);
        }
        key = j->nodes[val].next;
    }
}

/* How many greedy ids must match under gap threshold thr. The golden manifests
   state it; the trained manifest does not, and there it is the leading run of
   steps whose gap is >= thr (which is how the golden numbers were made). */
static int stable_prefix(const gcase *g, double thr) {
    int i, n = 0;
    for (i = 0; i < g->n_stable; i++)
        if (fabs(g->stable_thr[i] - thr) <= 1e-9 * thr) return g->stable_n[i];
    if (g->n_stable) return -1;
    while (n < g->n_greedy && g->greedy_gap[n] >= thr) n++;
    return n;
}

/* >>measure  MEASURING ONE RUN --------------------------------------------------- */
static int argmax(const float *x, int n) {
    int i, best = 0;
    for (i = 1; i < n; i++) if (x[i] > x[best]) best = i;
    return best;
}

static double top_gap(const float *x, int n) {
    int i, best = argmax(x, n);
    double second = -HUGE_VAL;
    for (i = 0; i < n; i++) if (i != best && x[i] > second) second = x[i];
    return (double)x[best] - second;
}

typedef struct score {
    double rel, cos;
    int am_ok, am_n;      /* argmax agreements / positions with gap >= threshold */
    int greedy_lead, greedy_need;
    int tf_ok, tf_n;      /* teacher-forced agreements / steps with gap >= threshold */
} score;

static void score_logits(const gcase *g, const float *ours, double gap_thr, score *s) {
    double max_d = 0, max_g = 0;
    int t, i;
    s->cos = 1;
    s->am_ok = s->am_n = 0;
    for (t = 0; t < g->n_rows; t++) {
        const float *a = ours + (size_t)t * g->n_vocab, *b = g->golden + (size_t)t * g->n_vocab;
        double ab = 0, aa = 0, bb = 0, c;
        for (i = 0; i < g->n_vocab; i++) {
            double d = fabs((double)a[i] - b[i]);
            if (d > max_d || d != d) max_d = d;
            if (fabs(b[i]) > max_g) max_g = fabs(b[i]);
            ab += (double)a[i] * b[i];
            aa += (double)a[i] * a[i];
            bb += (double)b[i] * b[i];
        }
        c = aa > 0 && bb > 0 ? ab / sqrt(aa * bb) : 0;
        if (s->cos == s->cos && !(c >= s->cos)) s->cos = c; /* a NaN sticks */
        if (top_gap(b, g->n_vocab) >= gap_thr) {
            s->am_n++;
            s->am_ok += argmax(a, g->n_vocab) == argmax(b, g->n_vocab);
        }
    }
    s->rel = max_g > 0 ? max_d / max_g : HUGE_VAL;
    s->tf_ok = s->tf_n = 0;
    for (t = 0; t < g->n_greedy; t++) {
        if (g->greedy_gap[t] < gap_thr) continue;
        s->tf_n++;
        s->tf_ok += argmax(ours + (size_t)(g->n_prompt - 1 + t) * g->n_vocab, g->n_vocab) == g->greedy[t];
    }
}

/* >>run  RUNNING A CASE ---------------------------------------------------------- */
enum { MODE_BATCH, MODE_CHUNKS, MODE_SERIAL, MODE_KV_F16, MODE_COUNT };
static const char *mode_names[MODE_COUNT] = {"one batch", "chunks of 5", "one token per call", "F16 KV cache, chunks of 5"};

/* Decode feed[0..n) into a fresh context and copy every row of logits to out. */
static int decode_all(bl_ctx *c, const int32_t *feed, int n, int mode, float *out, int nv, const char *name) {
    int i;
    bl_result r;
    if (mode != MODE_SERIAL) {
        r = bl_ctx_decode(c, feed, n, BL_LOGITS_ALL);
        CHECK(r == BL_OK, "%s %s: decode of %d tokens: %s", name, mode_names[mode], n, bl_ctx_last_error(c));
        if (r != BL_OK) return 0;
        for (i = 0; i < n; i++) {
            const float *row = bl_ctx_logits(c, i);
            if (!row) { CHECK(0, "%s: no logits row %d after BL_LOGITS_ALL", name, i); return 0; }
            memcpy(out + (size_t)i * nv, row, (size_t)nv * sizeof *out);
        }
        CHECK(bl_ctx_logits(c, -1) == bl_ctx_logits(c, n - 1) && !bl_ctx_logits(c, n),
              "%s: bl_ctx_logits(-1) is not the last of %d rows", name, n);
    } else {
        for (i = 0; i < n; i++) {
            const float *row;
            r = bl_ctx_decode(c, feed + i, 1, BL_LOGITS_LAST);
            if (r != BL_OK) { CHECK(0, "%s: decode of token %d: %s", name, i, bl_ctx_last_error(c)); return 0; }
            row = bl_ctx_logits(c, -1);
            if (!row || row != bl_ctx_logits(c, 0)) { CHECK(0, "%s: no last-row logits after token %d", name, i); return 0; }
            memcpy(out + (size_t)i * nv, row, (size_t)nv * sizeof *out);
        }
    }
    CHECK(bl_ctx_pos(c) == n, "%s %s: position %d after %d tokens", name, mode_names[mode], bl_ctx_pos(c), n);
    CHECK(memcmp(bl_ctx_tokens(c), feed, (size_t)n * sizeof *feed) == 0, "%s: bl_ctx_tokens differs from the input", name);
    return 1;
}

/* Free-running greedy from the prompt; returns how many leading ids match. */
static int greedy_lead(bl_ctx *c, const gcase *g) {
    int i, lead = 0;
    bl_result r = bl_ctx_decode(c, g->feed, g->n_prompt, BL_LOGITS_LAST);
    CHECK(r == BL_OK, "%s: prompt decode: %s", g->name, bl_ctx_last_error(c));
    for (i = 0; r == BL_OK && i < g->n_greedy; i++) {
        int32_t t = bl_ctx_sample(c, NULL);
        if (t != g->greedy[i]) break; /* diverged: what follows does not count */
        lead++;
        if (i + 1 < g->n_greedy) r = bl_ctx_decode(c, &t, 1, BL_LOGITS_LAST);
    }
    CHECK(r == BL_OK, "%s: greedy step decode: %s", g->name, bl_ctx_last_error(c));
    return lead;
}

/* Weight types met so far, to print their tier once at the end. */
static int types_seen[BL_TYPE_COUNT_];
/* 1: load with the weights copied (BL_WEIGHTS_COPIED), which also
   turns Q4_0 and Q4_K matrices into the Q4_0R and Q4_KR decoding layouts. */
static int copy_weights;

static void run_case(const gcase *g) {
    bl_model *m = NULL;
    bl_model_desc md;
    const bl_model_info *in;
    const tier *tr;
    float *out = NULL;
    score worst;
    int mode, i;
    const char *tn;
    double kv_rel = -1, kv_cos = -1;
    memset(&md, 0, sizeof md);
    md.no_mmap = g->no_mmap;
    md.weights = copy_weights ? BL_WEIGHTS_COPIED : BL_WEIGHTS_MAPPED;
    if (bl_model_load(&m, g->path, &md) != BL_OK) {
        CHECK(0, "%s: cannot load %s: %s", g->name, g->path, bl_model_last_error(m));
        bl_model_destroy(m);
        return;
    }
    in = bl_model_get_info(m);
    {
        int got[7];
        got[0] = in->dim; got[1] = in->n_layer; got[2] = in->n_head; got[3] = in->n_head_kv;
        got[4] = in->head_dim; got[5] = in->n_ff; got[6] = in->n_vocab;
        for (i = 0; i < 7; i++)
            CHECK(!g->cfg[i] || got[i] == g->cfg[i], "%s: %s is %d, the manifest says %d", g->name, cfg_keys[i], got[i], g->cfg[i]);
        CHECK(!g->eps || fabs(in->norm_eps - g->eps) <= 1e-6 * g->eps, "%s: eps %g, the manifest says %g", g->name, in->norm_eps, g->eps);
        CHECK(!g->theta || fabs(in->rope_theta - g->theta) <= 1e-6 * g->theta, "%s: rope theta %g, the manifest says %g", g->name, in->rope_theta, g->theta);
    }
    if (in->n_vocab != g->n_vocab) {
        CHECK(0, "%s: vocabulary %d, the golden logits have %d", g->name, in->n_vocab, g->n_vocab);
        bl_model_destroy(m);
        return;
    }
    tr = tier_for(in->weight_type);
    tn = bl_type_name(in->weight_type);
    CHECK(tn != NULL, "%s: weight type %d has no name", g->name, in->weight_type);
    if (in->weight_type >= 0 && in->weight_type < BL_TYPE_COUNT_) types_seen[in->weight_type] = 1;
    out = (float *)malloc((size_t)g->n_feed * (size_t)g->n_vocab * sizeof *out);
    if (!out) { CHECK(0, "out of memory"); bl_model_destroy(m); return; }
    memset(&worst, 0, sizeof worst);
    worst.cos = 1;
    worst.greedy_need = stable_prefix(g, tr->gap);
    CHECK(worst.greedy_need >= 0 && worst.greedy_need <= g->n_greedy, "%s: no stable_prefix for gap %g", g->name, tr->gap);
    worst.greedy_lead = g->n_greedy;
    worst.am_ok = worst.tf_ok = INT_MAX;
    for (mode = 0; mode < MODE_COUNT; mode++) {
        bl_ctx *c = NULL;
        bl_ctx_desc cd;
        score s;
        /* an F16 cache: the looser of its tier and the weights' */
        tier kt = *tr;
        if (mode == MODE_KV_F16) {
            const tier *kv = &tiers[TIER_KV_F16];
            kt.name = kv->max_rel > tr->max_rel ? kv->name : tr->name;
            kt.max_rel = kv->max_rel > tr->max_rel ? kv->max_rel : tr->max_rel;
            kt.min_cos = kv->min_cos < tr->min_cos ? kv->min_cos : tr->min_cos;
            kt.gap = kv->gap > tr->gap ? kv->gap : tr->gap;
        }
        memset(&cd, 0, sizeof cd);
        cd.n_ctx = g->n_feed; /* exactly full after the feed */
        cd.n_batch = mode == MODE_CHUNKS || mode == MODE_KV_F16 ? 5 : 0;
        cd.n_threads = mode == MODE_SERIAL ? 1 : 0; /* one thread, and all cores, give the same logits */
        cd.kv_type = mode == MODE_KV_F16 ? BL_TYPE_F16 : BL_TYPE_F32;
        if (bl_ctx_create(&c, m, &cd) != BL_OK) {
            CHECK(0, "%s: bl_ctx_create: %s", g->name, bl_ctx_last_error(c));
            bl_ctx_destroy(c);
            continue;
        }
        if (!decode_all(c, g->feed, g->n_feed, mode, out, g->n_vocab, g->name)) { bl_ctx_destroy(c); continue; }
        if (mode == MODE_BATCH) {
            int32_t one = g->feed[0];
            CHECK(bl_ctx_decode(c, &one, 1, BL_LOGITS_LAST) == BL_ERR_CTX_FULL && bl_ctx_pos(c) == g->n_feed,
                  "%s: a token past n_ctx was not refused with BL_ERR_CTX_FULL", g->name);
        }
        score_logits(g, out, kt.gap, &s);
        CHECK(s.rel <= kt.max_rel, "%s %s: logits rel %.3g > %g (%s)", g->name, mode_names[mode], s.rel, kt.max_rel, kt.name);
        CHECK(s.cos >= kt.min_cos, "%s %s: row cosine %.8f < %g (%s)", g->name, mode_names[mode], s.cos, kt.min_cos, kt.name);
        CHECK(s.am_ok == s.am_n, "%s %s: argmax agrees at %d of %d positions with gap >= %g", g->name, mode_names[mode], s.am_ok, s.am_n, kt.gap);
        CHECK(s.tf_ok == s.tf_n, "%s %s: teacher-forced greedy agrees at %d of %d steps with gap >= %g", g->name, mode_names[mode], s.tf_ok, s.tf_n, kt.gap);
        if (mode == MODE_KV_F16) { /* reported on its own line, below: the worst figures are the float cache's */
            kv_rel = s.rel;
            kv_cos = s.cos;
            bl_ctx_destroy(c);
            continue;
        }
        /* free-running greedy, once, on the reset context: the prompt in one
           batch, then one token per call (how the other modes would feed the
           prompt, the feed above already covers) */
        s.greedy_lead = g->n_greedy;
        if (mode == MODE_BATCH) {
            bl_ctx_reset(c);
            CHECK(bl_ctx_pos(c) == 0 && bl_ctx_logits(c, -1) == NULL, "%s: bl_ctx_reset left position %d", g->name, bl_ctx_pos(c));
            s.greedy_lead = greedy_lead(c, g);
            CHECK(s.greedy_lead >= worst.greedy_need, "%s %s: free-running greedy matches %d ids, %d must (gap %g)", g->name,
                  mode_names[mode], s.greedy_lead, worst.greedy_need, tr->gap);
        }
        if (s.rel > worst.rel || s.rel != s.rel) worst.rel = s.rel;
        if (!(s.cos >= worst.cos)) worst.cos = s.cos;
        if (s.am_ok < worst.am_ok) { worst.am_ok = s.am_ok; worst.am_n = s.am_n; }
        if (s.tf_ok < worst.tf_ok) { worst.tf_ok = s.tf_ok; worst.tf_n = s.tf_n; }
        if (s.greedy_lead < worst.greedy_lead) worst.greedy_lead = s.greedy_lead;
        bl_ctx_destroy(c);
    }
    printf("  %-42s [%s, tier %s]: rel %.1e cos %.6f argmax %d/%d greedy %d/%d teacher %d/%d; F16 KV cache: rel %.1e cos %.6f\n", g->name,
           tn ? tn : "?", tr->name, worst.rel, worst.cos, worst.am_ok == INT_MAX ? 0 : worst.am_ok, worst.am_n, worst.greedy_lead, g->n_greedy,
           worst.tf_ok == INT_MAX ? 0 : worst.tf_ok, worst.tf_n, kv_rel, kv_cos);
    free(out);
    bl_model_destroy(m);
}

/* >>kv  TRUNCATION AND RESET --------------------------------------------------------
   Speculative decoding and chat editing rewind the cache: positions past the
   cut must be forgotten exactly, even when the cut falls inside a batch chunk
   and the positions were overwritten by other tokens in between. */
static double max_diff(const float *a, const float *b, size_t n) {
    double d = 0;
    size_t i;
    for (i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]);
        if (e > d || e != e) d = e;
    }
    return d;
}

static void run_kv(const gcase *g) {
    bl_model *m = NULL;
    bl_ctx *c = NULL;
    bl_ctx_desc cd;
    float *ref = NULL, *got = NULL;
    const int nv = g->n_vocab, n = g->n_feed;
    const int cut = g->n_prompt + 3;            /* not a multiple of n_batch */
    const int far = (n + cut) / 2;              /* decoded, then forgotten */
    int32_t junk[7];
    size_t rowsz = (size_t)nv * sizeof(float);
    double worst = 0, scale = 0, tol;
    int i;
    if (bl_model_load(&m, g->path, NULL) != BL_OK) {
        CHECK(0, "%s: cannot load %s: %s", g->name, g->path, bl_model_last_error(m));
        bl_model_destroy(m);
        return;
    }
    /* Under exact math every path gives the same logits to rounding. With
       rounded activations a batch and a single token sum in different orders
       (different kernels), and a last-bit difference can move one int8
       activation by a step: then the tier's own bound applies. */
    tol = tier_for(bl_model_get_info(m)->weight_type) == &tiers[TIER_EXACT] ? 1e-6 : tier_for(bl_model_get_info(m)->weight_type)->max_rel;
    memset(&cd, 0, sizeof cd);
    cd.n_ctx = n;
    cd.n_batch = 5;
    ref = (float *)malloc((size_t)n * rowsz);
    got = (float *)malloc((size_t)n * rowsz);
    if (!ref || !got || bl_ctx_create(&c, m, &cd) != BL_OK) { CHECK(0, "%s: kv test setup", g->name); goto done; }
    /* straight through */
    if (!decode_all(c, g->feed, n, MODE_CHUNKS, ref, nv, g->name)) goto done;
    for (i = 0; i < n * nv; i++) if (fabs(ref[i]) > scale) scale = fabs(ref[i]);
    for (i = 0; i < 7; i++) junk[i] = (g->feed[(i * 5 + 3) % n] + 17 * i + 1) % nv;

    /* 1. decode further than needed, cut back inside a chunk, overwrite with junk, cut again, finish */
    bl_ctx_reset(c);
    CHECK(bl_ctx_decode(c, g->feed, far, BL_LOGITS_NONE) == BL_OK, "%s: kv prefix decode: %s", g->name, bl_ctx_last_error(c));
    CHECK(bl_ctx_logits(c, -1) == NULL, "%s: BL_LOGITS_NONE kept a row", g->name);
    CHECK(bl_kv_truncate(c, far + 1) == BL_ERR_ARG && bl_ctx_pos(c) == far, "%s: truncating past the end was accepted", g->name);
    CHECK(bl_kv_truncate(c, -1) == BL_ERR_ARG && bl_ctx_pos(c) == far, "%s: truncating to -1 was accepted", g->name);
    CHECK(bl_kv_truncate(c, cut) == BL_OK && bl_ctx_pos(c) == cut, "%s: bl_kv_truncate(%d) left position %d", g->name, cut, bl_ctx_pos(c));
    CHECK(bl_ctx_decode(c, junk, 7, BL_LOGITS_LAST) == BL_OK && bl_ctx_pos(c) == cut + 7, "%s: junk decode: %s", g->name, bl_ctx_last_error(c));
    CHECK(bl_kv_truncate(c, cut) == BL_OK && bl_ctx_logits(c, -1) == NULL, "%s: truncate kept stale logits", g->name);
    CHECK(memcmp(bl_ctx_tokens(c), g->feed, (size_t)cut * sizeof(int32_t)) == 0, "%s: tokens before the cut changed", g->name);
    if (bl_ctx_decode(c, g->feed + cut, n - cut, BL_LOGITS_ALL) == BL_OK) {
        for (i = 0; i < n - cut; i++) memcpy(got + (size_t)i * nv, bl_ctx_logits(c, i), rowsz);
        worst = max_diff(got, ref + (size_t)cut * nv, (size_t)(n - cut) * nv);
        CHECK(worst <= tol * scale, "%s: after truncating to %d the logits differ by %.3g from a straight run", g->name, cut, worst);
        CHECK(memcmp(bl_ctx_tokens(c), g->feed, (size_t)n * sizeof(int32_t)) == 0, "%s: tokens after re-decode differ", g->name);
    } else CHECK(0, "%s: re-decode after truncate: %s", g->name, bl_ctx_last_error(c));

    /* 2. one token at a time from a cut at every step: truncate(pos - 1) and redo it */
    bl_ctx_reset(c);
    for (i = 0; i < n; i++) {
        if (bl_ctx_decode(c, g->feed + i, 1, BL_LOGITS_LAST) != BL_OK) { CHECK(0, "%s: step %d: %s", g->name, i, bl_ctx_last_error(c)); break; }
        if (i % 3 == 1 && /* undo, put a wrong token there, undo again, redo: the same row must come back */
            (bl_kv_truncate(c, i) != BL_OK || bl_ctx_decode(c, &junk[i % 7], 1, BL_LOGITS_NONE) != BL_OK ||
             bl_kv_truncate(c, i) != BL_OK || bl_ctx_decode(c, g->feed + i, 1, BL_LOGITS_LAST) != BL_OK)) {
            CHECK(0, "%s: redo at %d: %s", g->name, i, bl_ctx_last_error(c));
            break;
        }
        memcpy(got + (size_t)i * nv, bl_ctx_logits(c, -1), rowsz);
    }
    if (i == n) {
        double d = max_diff(got, ref, (size_t)n * nv);
        CHECK(d <= tol * scale, "%s: step-wise with undo differs by %.3g from a straight run", g->name, d);
        if (d > worst) worst = d;
    }

    /* 3. truncate to 0 is a reset; bl_ctx_reset after a full cache likewise */
    CHECK(bl_kv_truncate(c, 0) == BL_OK && bl_ctx_pos(c) == 0, "%s: truncate to 0", g->name);
    if (decode_all(c, g->feed, n, MODE_CHUNKS, got, nv, g->name)) {
        double d = max_diff(got, ref, (size_t)n * nv);
        CHECK(d <= tol * scale, "%s: after truncate(0) the logits differ by %.3g", g->name, d);
        if (d > worst) worst = d;
    }
    bl_ctx_reset(c);
    if (decode_all(c, g->feed, n, MODE_CHUNKS, got, nv, g->name)) {
        double d = max_diff(got, ref, (size_t)n * nv);
        CHECK(d <= tol * scale, "%s: after bl_ctx_reset the logits differ by %.3g", g->name, d);
        if (d > worst) worst = d;
    }
    printf("  %-42s kv truncate/reset: max |diff| vs straight run %.1e\n", g->name, worst);
done:
    free(ref);
    free(got);
    bl_ctx_destroy(c);
    bl_model_destroy(m);
}

/* >>load  READING THE MANIFESTS ---------------------------------------------------- */
static int ends_with(const char *s, const char *tail) {
    size_t a = strlen(s), b = strlen(tail);
    return a >= b && strcmp(s + a - b, tail) == 0;
}

/* What to hand bl_model_load: the checkpoint or GGUF file; for safetensors the
   folder when the weights carry the name a folder load looks for, otherwise the
   weights file itself (its config.json is read from beside it). */
static int variant_path(char *dst, size_t cap, const char *dir, const bl__json *j, int v) {
    int files = bl__json_get(j, v, "files"), i, pick = -1;
    char *fmt = bl__json_str(j, bl__json_get(j, v, "format"), NULL), *rel;
    int st = fmt && strncmp(fmt, "safetensors", 11) == 0;
    BL_FREE(fmt);
    for (i = 0; files >= 0 && i < j->nodes[files].n; i++) {
        int p = bl__json_get(j, bl__json_at(j, files, i), "path");
        char *s = bl__json_str(j, p, NULL);
        if (s && (!st ? pick < 0 : ends_with(s, ".safetensors"))) pick = p;
        BL_FREE(s);
    }
    if (pick < 0 || !(rel = bl__json_str(j, pick, NULL))) return 0;
    if (st && (ends_with(rel, "/model.safetensors") || ends_with(rel, "/consolidated.safetensors")))
        *strrchr(rel, '/') = 0;
    i = snprintf(dst, cap, "%s/%s", dir, rel) < (int)cap;
    BL_FREE(rel);
    return i;
}

/* Fill g from variant v of a golden manifest; 0 (with a failed CHECK) if the
   manifest or its files are not as the README describes. */
static int golden_case(gcase *g, const char *fixture, const char *dir, const bl__json *j, int v) {
    int root = 0, seq = jpath(j, root, "sequence/tokens");
    int gr = bl__json_get(j, v, "greedy"), rows, ngap = 0, i;
    char *id = bl__json_str(j, bl__json_get(j, v, "id"), NULL), *lf;
    char path[1024];
    memset(g, 0, sizeof *g);
    snprintf(g->name, sizeof g->name, "%s %s", fixture, id ? id : "?");
    BL_FREE(id);
    if (gr < 0) gr = bl__json_get(j, v, "greedy_from_prompt"); /* stories260K */
    if (!variant_path(g->path, sizeof g->path, dir, j, v) || gr < 0) { CHECK(0, "%s: variant without files or greedy ids", g->name); return 0; }
    read_config(g, j, bl__json_get(j, root, "model"));
    if (!jints(j, jpath(j, root, "prompt/tokens"), &g->feed, &g->n_prompt) || !(g->n_feed = g->n_prompt) ||
        !jints(j, bl__json_get(j, gr, "ids"), &g->feed, &g->n_feed)) { CHECK(0, "%s: no prompt or greedy ids", g->name); return 0; }
    g->n_greedy = g->n_feed - g->n_prompt;
    g->greedy = g->feed + g->n_prompt;
    g->greedy_gap = jfloats(j, bl__json_get(j, gr, "top1_top2_gap"), &ngap);
    read_stable(g, j, bl__json_get(j, gr, "stable_prefix"));
    rows = jint(j, bl__json_at(j, jpath(j, v, "logits/shape"), 0), 0);
    g->n_vocab = jint(j, bl__json_at(j, jpath(j, v, "logits/shape"), 1), 0);
    lf = bl__json_str(j, jpath(j, v, "logits/file"), NULL);
    i = snprintf(path, sizeof path, "%s/%s", dir, lf ? lf : "?") < (int)sizeof path;
    BL_FREE(lf);
    if (!i) { CHECK(0, "%s: path too long", g->name); return 0; }
    CHECK(ngap == g->n_greedy && g->n_stable > 0, "%s: greedy gaps %d for %d ids, %d stable_prefix entries", g->name, ngap, g->n_greedy, g->n_stable);
    /* stories260K stores the logits of `sequence`, which must be prompt + greedy */
    if (seq >= 0) {
        int32_t *s = NULL;
        int ns = 0;
        CHECK(jints(j, seq, &s, &ns) && ns == g->n_feed && memcmp(s, g->feed, (size_t)ns * sizeof *s) == 0,
              "%s: sequence is not prompt + greedy ids", g->name);
        free(s);
    }
    if (rows <= 0 || rows > g->n_feed || !(g->golden = read_logits(path, rows, g->n_vocab))) {
        CHECK(0, "%s: cannot read %d x %d logits from %s", g->name, rows, g->n_vocab, path);
        return 0;
    }
    g->n_rows = rows;
    /* the gaps we compute from the stored rows are the manifest's */
    {
        int pg = bl__json_get(j, v, "prompt_top1_top2_gap"), n = 0;
        float *mg = jfloats(j, pg, &n);
        double d = 0;
        for (i = 0; mg && i < n && i < rows; i++) {
            double e = fabs(top_gap(g->golden + (size_t)i * g->n_vocab, g->n_vocab) - mg[i]);
            if (e > d) d = e;
        }
        CHECK(pg < 0 || (mg && n == g->n_prompt && d < 1e-3), "%s: prompt_top1_top2_gap differs from the stored logits by %g", g->name, d);
        free(mg);
    }
    return g->greedy_gap != NULL;
}

static int run_fixture(const char *fixture, int *n_variants) {
    char rel[256], dir[1024];
    bl__json j;
    char *src;
    size_t len;
    int vars, v, ok = 1;
    snprintf(rel, sizeof rel, "golden/%s", fixture);
    snprintf(dir, sizeof dir, "%s", tu_shared(rel));
    snprintf(rel, sizeof rel, "golden/%s/manifest.json", fixture);
    src = tu_read(tu_shared(rel), &len);
    if (!src || bl__json_parse(&j, src, len) != 0) {
        CHECK(0, "%s: cannot read or parse %s: %s", fixture, tu_shared(rel), src ? j.err : "unreadable");
        free(src);
        return 0;
    }
    vars = bl__json_get(&j, 0, "variants");
    CHECK(vars >= 0 && j.nodes[vars].n > 0, "%s: manifest has no variants", fixture);
    printf("%s\n", fixture);
    for (v = 0; vars >= 0 && v < j.nodes[vars].n; v++) {
        gcase g;
        int vn = bl__json_at(&j, vars, v);
        if (golden_case(&g, fixture, dir, &j, vn)) {
            run_case(&g);
            (*n_variants)++;
            /* the GGUF and the safetensors loaders again without mmap; the KV cache */
            if ((strcmp(fixture, "stories260K") == 0 && (bl__json_is(&j, bl__json_get(&j, vn, "id"), "gguf-f32") ||
                                                         bl__json_is(&j, bl__json_get(&j, vn, "id"), "hf-f32"))) ||
                bl__json_is(&j, bl__json_get(&j, vn, "id"), "gguf-Q4_0")) { /* copied: Q4_0R made in place */
                g.no_mmap = 1;
                strcat(g.name, " (no_mmap)");
                run_case(&g);
                g.name[strlen(g.name) - strlen(" (no_mmap)")] = 0;
                if (strcmp(fixture, "stories260K") == 0 && bl__json_is(&j, bl__json_get(&j, vn, "id"), "gguf-f32")) run_kv(&g);
            }
            if ((strcmp(fixture, "llama3-gqa") == 0 && bl__json_is(&j, bl__json_get(&j, vn, "id"), "gguf-Q4_K_M")) ||
                (strcmp(fixture, "qwen2-bias") == 0 && bl__json_is(&j, bl__json_get(&j, vn, "id"), "hf-f32")))
                run_kv(&g);
        } else ok = 0;
        gcase_free(&g);
    }
    bl__json_free(&j);
    free(src);
    return ok;
}

/* The trained models: reference logits for a fixed prompt, greedy ids after it. */
static void run_trained(void) {
    static const char *names[2] = {"stories-target", "stories-draft-bpe"};
    char *src = tu_read(tu_shared("models/trained/manifest.json"), NULL);
    bl__json j;
    int i, form;
    if (!src || bl__json_parse(&j, src, strlen(src)) != 0) {
        CHECK(0, "cannot read or parse %s", tu_shared("models/trained/manifest.json"));
        free(src);
        return;
    }
    printf("trained\n");
    for (i = 0; i < 2; i++) {
        char key[128], *lf;
        int ref, pa, ok = 1, t, rows;
        gcase g;
        int32_t *am = NULL;
        int nam = 0;
        memset(&g, 0, sizeof g);
        snprintf(key, sizeof key, "reference/%s", names[i]);
        ref = jpath(&j, 0, key);
        snprintf(key, sizeof key, "models/%s/config", names[i]);
        read_config(&g, &j, jpath(&j, 0, key));
        ok = ref >= 0 && jints(&j, jpath(&j, ref, "prompt/ids"), &g.feed, &g.n_prompt) && (g.n_feed = g.n_prompt) > 0 &&
             jints(&j, jpath(&j, ref, "greedy/ids"), &g.feed, &g.n_feed) &&
             (g.greedy_gap = jfloats(&j, jpath(&j, ref, "greedy/top1_top2_gap"), &t)) != NULL && t == g.n_feed - g.n_prompt;
        g.n_greedy = g.n_feed - g.n_prompt;
        g.greedy = g.feed + g.n_prompt;
        pa = jpath(&j, ref, "prompt_argmax");
        rows = jint(&j, bl__json_at(&j, jpath(&j, ref, "logits/shape"), 0), 0);
        g.n_vocab = jint(&j, bl__json_at(&j, jpath(&j, ref, "logits/shape"), 1), 0);
        lf = bl__json_str(&j, jpath(&j, ref, "logits/file"), NULL);
        snprintf(key, sizeof key, "models/trained/%s", lf ? lf : "?");
        BL_FREE(lf);
        g.golden = ok && rows > 0 && rows <= g.n_feed ? read_logits(tu_shared(key), rows, g.n_vocab) : NULL;
        g.n_rows = rows;
        if (!g.golden) {
            CHECK(0, "trained %s: reference incomplete or %s unreadable", names[i], tu_shared(key));
            gcase_free(&g);
            continue;
        }
        /* the stored rows agree with the manifest's prompt_argmax */
        CHECK(jints(&j, pa, &am, &nam) && nam == rows, "trained %s: prompt_argmax has %d entries", names[i], nam);
        for (t = 0; am && t < nam && t < rows; t++)
            CHECK(argmax(g.golden + (size_t)t * g.n_vocab, g.n_vocab) == am[t], "trained %s: stored row %d argmax is not prompt_argmax", names[i], t);
        free(am);
        /* both files: the HF folder and the GGUF */
        for (form = 0; form < 2; form++) {
            snprintf(key, sizeof key, form ? "models/trained/%s-F32.gguf" : "models/trained/%s", names[i]);
            snprintf(g.path, sizeof g.path, "%s", tu_shared(key));
            snprintf(g.name, sizeof g.name, "%s %s", names[i], form ? "gguf-F32" : "hf-f32");
            run_case(&g);
        }
        gcase_free(&g);
    }
    bl__json_free(&j);
    free(src);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(void) {
    static const char *required[] = {"stories260K", "llama3-gqa", "qwen2-bias", "smollm-tied", "mistral-consolidated", "vlm-text-config"};
    char *names[64];
    int n = 0, i, k, n_variants = 0;
    clock_t t0 = clock();
    DIR *d = opendir(tu_shared("golden"));
    struct dirent *e;
    setvbuf(stdout, NULL, _IOLBF, 0); /* keep the lines before a sanitizer abort */
    CHECK(d != NULL, "cannot open %s (set BERLIN_SHARED)", tu_shared("golden"));
    while (d && (e = readdir(d)) != NULL && n < 64) {
        char rel[512];
        FILE *f;
        if (e->d_name[0] == '.') continue;
        snprintf(rel, sizeof rel, "golden/%s/manifest.json", e->d_name);
        if (!(f = fopen(tu_shared(rel), "rb"))) continue;
        fclose(f);
        names[n++] = bl__strndup(e->d_name, strlen(e->d_name));
    }
    if (d) closedir(d);
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    for (k = 0; k < (int)(sizeof required / sizeof *required); k++) {
        int found = 0;
        for (i = 0; i < n; i++) found |= strcmp(names[i], required[k]) == 0;
        CHECK(found, "fixture %s is missing from %s", required[k], tu_shared("golden"));
    }
    {   /* Every kernel level this CPU has: the best one, then (unless the
           caller chose one with BL_SIMD, or this is the slow sanitizer build)
           AVX2 and the plain C reference, which contexts pick up from BL_SIMD. */
        static const char *levels[3] = {NULL, "avx2", "scalar"};
        int lv, n_lv = 3;
#if defined(__SANITIZE_ADDRESS__) || defined(BL_NO_SIMD)
        n_lv = 1;
#endif
        if (getenv("BL_SIMD")) n_lv = 1;
        for (lv = 0; lv < n_lv; lv++) {
            if (levels[lv]) setenv("BL_SIMD", levels[lv], 1);
            for (copy_weights = 0; copy_weights < 2; copy_weights++) { /* mmapped, then copied (Q4_0 as Q4_0R, Q4_K as Q4_KR) */
                printf("== kernels: %s, weights %s\n", levels[lv] ? levels[lv] : getenv("BL_SIMD") ? getenv("BL_SIMD") : "best available",
                       copy_weights ? "copied" : "mmapped");
                for (i = 0; i < n; i++) run_fixture(names[i], &n_variants);
                run_trained();
            }
        }
        if (n_lv > 1) unsetenv("BL_SIMD");
        for (i = 0; i < n; i++) BL_FREE(names[i]);
    }
    printf("tiers by weight type:");
    for (k = 0; k < BL_TYPE_COUNT_; k++)
        if (types_seen[k]) printf(" %s=%s;", bl_type_name(k), tier_for(k)->name);
    printf("\n%d golden variants in %d fixtures, %.1f s cpu\n", n_variants, n, (double)(clock() - t0) / CLOCKS_PER_SEC);
    return tu_finish();
}
