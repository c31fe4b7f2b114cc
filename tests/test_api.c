/* test_api.c - the public API behaves as documented on stories260K:
   result strings, model info, tokenizer round trip, the sampler (greedy,
   seeded randomness, independence of contexts, penalties), reset and
   truncate, and many contexts sharing one model across threads. */
#define _POSIX_C_SOURCE 200809L
#define BL__MOVE_CHUNK ((size_t)2 << 20) /* BL_WEIGHTS_MOVED in chunks of one huge page: several per test model */
#define BERLIN_IMPLEMENTATION
#include "berlin.h"
#include "testutil.h"
#include <math.h>
#include <pthread.h>

static const int32_t prompt[5] = {1, 403, 407, 261, 378}; /* BOS "Once upon a time" */

static bl_ctx *new_ctx(const bl_model *m, uint64_t seed, int n_threads) {
    bl_ctx *c = NULL;
    bl_ctx_desc d;
    bl_result r;
    memset(&d, 0, sizeof d);
    d.n_ctx = 256;
    d.seed = seed;
    d.n_threads = n_threads;
    r = bl_ctx_create(&c, m, &d);
    CHECK(r == BL_OK, "ctx create: %s", bl_ctx_last_error(c));
    return c;
}

/* Feed the prompt, then generate n tokens with sampler s (NULL: greedy). */
static int generate(bl_ctx *c, const bl_sampler_desc *s, int32_t *out, int n) {
    int i;
    if (bl_ctx_decode(c, prompt, 5, BL_LOGITS_LAST) != BL_OK) return 0;
    for (i = 0; i < n; i++) {
        out[i] = bl_ctx_sample(c, s);
        if (out[i] < 0 || bl_ctx_decode(c, &out[i], 1, BL_LOGITS_LAST) != BL_OK) return i;
    }
    return n;
}

static int same(const int32_t *a, const int32_t *b, int n) { return memcmp(a, b, (size_t)n * sizeof *a) == 0; }

static void test_results(void) {
    static const struct { bl_result r; const char *word; } rs[] = {
        {BL_OK, "ok"}, {BL_ERR_IO, "read"}, {BL_ERR_FORMAT, "malformed"}, {BL_ERR_UNSUPPORTED, "unsupported"},
        {BL_ERR_NOMEM, "memory"}, {BL_ERR_ARG, "argument"}, {BL_ERR_CONFIG, "configuration"}, {BL_ERR_CTX_FULL, "full"},
        {BL_ERR_TOKENIZER, "tokenizer"},
    };
    size_t i, j;
    for (i = 0; i < sizeof rs / sizeof rs[0]; i++) {
        const char *s = bl_result_string(rs[i].r);
        CHECK(s && strstr(s, rs[i].word), "bl_result_string(%d) = '%s', want it to mention '%s'", rs[i].r, s ? s : "(null)", rs[i].word);
        for (j = 0; j < i; j++) CHECK(strcmp(s, bl_result_string(rs[j].r)) != 0, "codes %d and %d share a string", rs[i].r, rs[j].r);
    }
    CHECK(BL_OK == 0, "BL_OK is not 0");
    CHECK(strcmp(bl_result_string((bl_result)-100), "unknown result") == 0, "unknown code: %s", bl_result_string((bl_result)-100));
    CHECK(bl_type_name(BL_TYPE_Q4_K) && !strcmp(bl_type_name(BL_TYPE_Q4_K), "Q4_K"), "type name Q4_K");
    CHECK(bl_type_name(13) == NULL && bl_type_name(-1) == NULL && bl_type_name(1000) == NULL, "unreadable types have no name");
}

static void test_info(const bl_model *m) {
    const bl_model_info *in = bl_model_get_info(m);
    CHECK(!strcmp(in->format, "gguf") && !strcmp(in->arch, "llama"), "format %s arch %s", in->format, in->arch);
    CHECK(in->dim == 64 && in->n_layer == 5 && in->n_head == 8 && in->n_head_kv == 4 && in->n_vocab == 512,
          "dims %d/%d/%d/%d/%d", in->dim, in->n_layer, in->n_head, in->n_head_kv, in->n_vocab);
    CHECK(in->head_dim == 8 && in->n_ff == 172, "head_dim %d n_ff %d", in->head_dim, in->n_ff);
    CHECK(in->weight_type == BL_TYPE_F32 && !in->tied_output && !in->has_qkv_bias && !in->rope_neox, "weight type %d tied %d bias %d neox %d",
          in->weight_type, in->tied_output, in->has_qkv_bias, in->rope_neox);
    CHECK(fabsf(in->norm_eps - 1e-5f) < 1e-9f && in->rope_theta == 10000.0f, "eps %g theta %g", in->norm_eps, in->rope_theta);
    CHECK(in->n_params > 250000 && in->n_params < 400000, "n_params %lld", (long long)in->n_params);
    CHECK(bl_model_last_error(m)[0] == 0, "last error set after a good load: %s", bl_model_last_error(m));
}

/* The other formats agree on the shape and on the first greedy token. */
static void test_formats(void) {
    static const char *paths[2] = {"models/stories260K.bin", "models/stories260K-hf"};
    static const char *formats[2] = {"llama2c", "safetensors"};
    int i;
    for (i = 0; i < 2; i++) {
        bl_model *m = NULL;
        bl_model_desc d;
        bl_ctx *c;
        const bl_model_info *in;
        memset(&d, 0, sizeof d);
        d.tokenizer_path = i == 0 ? tu_shared("models/tok512.bin") : NULL;
        if (bl_model_load(&m, tu_shared(paths[i]), &d) != BL_OK) {
            CHECK(0, "load %s: %s", paths[i], bl_model_last_error(m));
            bl_model_destroy(m);
            continue;
        }
        in = bl_model_get_info(m);
        CHECK(!strcmp(in->format, formats[i]), "%s: format %s", paths[i], in->format);
        CHECK(in->dim == 64 && in->n_layer == 5 && in->n_head == 8 && in->n_head_kv == 4 && in->n_vocab == 512, "%s: dims", paths[i]);
        CHECK(in->tied_output == 1, "%s: tied_output %d", paths[i], in->tied_output); /* both share the embedding */
        CHECK(i == 1 || bl_model_tokenizer(m) != NULL, "%s: no tokenizer", paths[i]);
        c = new_ctx(m, 0, 1);
        if (c) {
            CHECK(bl_ctx_decode(c, prompt, 5, BL_LOGITS_LAST) == BL_OK, "%s: decode", paths[i]);
            CHECK(bl_ctx_sample(c, NULL) == 432, "%s: first greedy token", paths[i]);
        }
        bl_ctx_destroy(c);
        bl_model_destroy(m);
    }
}

static void test_tokenizer(const bl_model *m) {
    const bl_tokenizer *t = bl_model_tokenizer(m);
    int32_t ids[32];
    char text[256] = "", piece[64];
    int n, i;
    CHECK(t != NULL, "no tokenizer");
    if (!t) return;
    CHECK(bl_tokenizer_n_vocab(t) == 512 && bl_tokenizer_bos(t) == 1 && bl_tokenizer_eos(t) == 2, "vocab %d bos %d eos %d",
          bl_tokenizer_n_vocab(t), bl_tokenizer_bos(t), bl_tokenizer_eos(t));
    CHECK(bl_tokenizer_is_eog(t, 2) && !bl_tokenizer_is_eog(t, 1) && !bl_tokenizer_is_eog(t, 403), "is_eog");
    n = bl_tokenize(t, "Once upon a time", -1, ids, 32, BL_TOK_ADD_BOS);
    CHECK(n == 5 && same(ids, prompt, 5), "tokenize: %d ids [%d %d %d %d %d]", n, ids[0], ids[1], ids[2], ids[3], ids[4]);
    for (i = 0; i < n; i++) {
        int k = bl_token_to_text(t, i ? ids[i - 1] : -1, ids[i], piece, sizeof piece);
        CHECK(k >= 0 && (size_t)k == strlen(piece), "token_to_text length %d", k);
        strcat(text, piece);
    }
    CHECK(!strcmp(text, "Once upon a time"), "round trip gave '%s'", text);
    n = bl_tokenize(t, "Once upon a time", 9, ids, 32, 0); /* "Once upon" */
    CHECK(n == 2 && ids[0] == 403 && ids[1] == 407, "explicit length: %d ids", n);
    {
        int len = 0;
        const char *p = bl_token_piece(t, 403, &len);
        CHECK(p && len == 7 && !memcmp(p, "\xE2\x96\x81Once", 7), "piece 403 is '%.*s'", len, p ? p : "");
    }
    {   /* a longer text survives encode + decode unchanged */
        const char *story = "Lily and Ben went to the park. They saw a big dog!";
        int32_t big[128];
        text[0] = 0;
        n = bl_tokenize(t, story, -1, big, 128, BL_TOK_ADD_BOS);
        CHECK(n > 10 && n < 128 && big[0] == 1, "story: %d ids", n);
        for (i = 1; i < n && n < 128; i++) {
            bl_token_to_text(t, big[i - 1], big[i], piece, sizeof piece);
            strcat(text, piece);
        }
        CHECK(!strcmp(text, story), "story round trip gave '%s'", text);
    }
}

static void test_sampler_ctx(const bl_model *m) {
    enum { N = 40 };
    int32_t g1[N], g2[N], a[N], b[N], a2[N], k1[N];
    bl_sampler_desc s;
    bl_ctx *c1 = new_ctx(m, 1234, 1), *c2 = new_ctx(m, 1234, 1), *c3 = new_ctx(m, 999, 1);
    int i, na = 0, nb = 0;
    if (!c1 || !c2 || !c3) goto done;

    /* greedy is the argmax of the logits, and the golden first token */
    CHECK(bl_ctx_decode(c1, prompt, 5, BL_LOGITS_LAST) == BL_OK, "decode prompt");
    {   /* fewer threads than the context was made for give the same logits */
        bl_ctx *cw = new_ctx(m, 1, 2);
        float *l1 = bl_ctx_logits(c1, -1), *l2;
        bl_ctx_set_threads(cw, 1);
        CHECK(cw && bl_ctx_decode(cw, prompt, 5, BL_LOGITS_LAST) == BL_OK, "decode on a 2-thread ctx");
        l2 = cw ? bl_ctx_logits(cw, -1) : NULL;
        CHECK(l1 && l2 && !memcmp(l1, l2, 512 * sizeof(float)), "logits depend on the thread count");
        bl_ctx_destroy(cw);
    }
    {
        float *lg = bl_ctx_logits(c1, -1);
        int best = 0;
        for (i = 1; i < 512; i++) if (lg[i] > lg[best]) best = i;
        CHECK(bl_ctx_sample(c1, NULL) == best && best == 432, "greedy %d argmax %d", bl_ctx_sample(c1, NULL), best);
        CHECK(bl_ctx_logits(c1, 0) == lg && bl_ctx_logits(c1, 1) == NULL, "LOGITS_LAST keeps one row");
    }
    memset(&s, 0, sizeof s);
    s.temperature = 0;
    CHECK(bl_ctx_sample(c1, &s) == 432, "temperature 0 is greedy");

    /* greedy generation, then again after reset */
    bl_ctx_reset(c1);
    CHECK(bl_ctx_pos(c1) == 0, "reset pos %d", bl_ctx_pos(c1));
    CHECK(generate(c1, NULL, g1, N) == N, "greedy generate");
    CHECK(bl_ctx_pos(c1) == 5 + N, "pos after generate %d", bl_ctx_pos(c1));
    CHECK(same(bl_ctx_tokens(c1), prompt, 5) && same(bl_ctx_tokens(c1) + 5, g1, N), "bl_ctx_tokens holds the sequence");
    bl_ctx_reset(c1);
    CHECK(generate(c1, NULL, g2, N) == N && same(g1, g2, N), "greedy after reset differs");

    /* top_k = 1 is greedy whatever the temperature */
    memset(&s, 0, sizeof s);
    s.temperature = 1.5f;
    s.top_k = 1;
    bl_ctx_reset(c2);
    CHECK(generate(c2, &s, k1, N) == N && same(k1, g1, N), "top_k 1 differs from greedy");

    /* same seed, same sequence; another seed, another sequence; reset reseeds */
    memset(&s, 0, sizeof s);
    s.temperature = 1.0f;
    s.top_k = 40;
    s.top_p = 0.95f;
    s.min_p = 0.02f;
    bl_ctx_reset(c1);
    bl_ctx_reset(c2);
    CHECK(generate(c1, &s, a, N) == N, "sampled generate 1");
    CHECK(generate(c2, &s, b, N) == N, "sampled generate 2");
    CHECK(same(a, b, N), "same seed gave different sequences");
    CHECK(generate(c3, &s, b, N) == N && !same(a, b, N), "different seeds gave the same sequence");
    CHECK(!same(a, g1, N), "temperature 1 sampling equals greedy: the sampler ignores its settings");
    bl_ctx_reset(c1);
    CHECK(generate(c1, &s, a2, N) == N && same(a, a2, N), "reset does not reseed");
    bl_ctx_set_seed(c3, 1234);
    bl_ctx_reset(c3);
    CHECK(generate(c3, &s, b, N) == N && same(a, b, N), "bl_ctx_set_seed(1234) does not reproduce seed 1234");

    /* interleaved: one context's sampling does not disturb another's */
    bl_ctx_reset(c1);
    bl_ctx_reset(c3);
    bl_ctx_set_seed(c3, 999);
    CHECK(bl_ctx_decode(c1, prompt, 5, BL_LOGITS_LAST) == BL_OK && bl_ctx_decode(c3, prompt, 5, BL_LOGITS_LAST) == BL_OK, "decode");
    for (i = 0; i < N; i++) {
        int32_t t1 = bl_ctx_sample(c1, &s), t3 = bl_ctx_sample(c3, &s), t3b = bl_ctx_sample(c3, &s);
        (void)t3b; /* an extra draw on c3 must not shift c1 */
        b[i] = t1;
        if (bl_ctx_decode(c1, &t1, 1, BL_LOGITS_LAST) == BL_OK) na++;
        if (bl_ctx_decode(c3, &t3, 1, BL_LOGITS_LAST) == BL_OK) nb++;
    }
    CHECK(na == N && nb == N && same(a, b, N), "interleaving with another context changed the sequence");

    /* truncate and re-decode gives the same logits as the first time */
    bl_ctx_reset(c1);
    CHECK(bl_ctx_decode(c1, prompt, 5, BL_LOGITS_LAST) == BL_OK, "decode");
    {
        float before[512], *lg;
        int32_t t = g1[0];
        CHECK(bl_ctx_decode(c1, &t, 1, BL_LOGITS_LAST) == BL_OK, "decode 1");
        memcpy(before, bl_ctx_logits(c1, -1), sizeof before);
        CHECK(bl_ctx_decode(c1, g1 + 1, 3, BL_LOGITS_NONE) == BL_OK && bl_ctx_logits(c1, -1) == NULL, "LOGITS_NONE keeps none");
        CHECK(bl_kv_truncate(c1, 5) == BL_OK && bl_ctx_pos(c1) == 5, "truncate");
        CHECK(bl_ctx_decode(c1, &t, 1, BL_LOGITS_LAST) == BL_OK, "re-decode");
        lg = bl_ctx_logits(c1, -1);
        CHECK(lg && !memcmp(lg, before, sizeof before), "logits after truncate + re-decode differ");
    }

    /* one batch with LOGITS_ALL agrees with token-by-token decoding */
    {
        int32_t seq[12];
        float *rows = (float *)malloc(12 * 512 * sizeof(float));
        double worst = 0;
        int j;
        memcpy(seq, prompt, 5 * sizeof *seq);
        memcpy(seq + 5, g1, 7 * sizeof *seq);
        bl_ctx_reset(c2);
        for (i = 0; i < 12; i++) {
            CHECK(bl_ctx_decode(c2, &seq[i], 1, BL_LOGITS_LAST) == BL_OK, "decode step %d", i);
            memcpy(rows + i * 512, bl_ctx_logits(c2, -1), 512 * sizeof(float));
        }
        bl_ctx_reset(c2);
        CHECK(bl_ctx_decode(c2, seq, 12, BL_LOGITS_ALL) == BL_OK, "decode batch");
        for (i = 0; i < 12; i++) {
            float *lg = bl_ctx_logits(c2, i);
            if (!lg) { worst = 1e9; break; }
            for (j = 0; j < 512; j++) if (fabs(lg[j] - rows[i * 512 + j]) > worst) worst = fabs(lg[j] - rows[i * 512 + j]);
        }
        CHECK(worst < 1e-3, "batch vs step logits differ by %g", worst);
        CHECK(bl_ctx_logits(c2, -1) == bl_ctx_logits(c2, 11) && bl_ctx_logits(c2, 12) == NULL, "row indexing");
        free(rows);
    }
done:
    bl_ctx_destroy(c1);
    bl_ctx_destroy(c2);
    bl_ctx_destroy(c3);
}

/* bl_sample_logits on crafted rows. */
static void test_sample_logits(void) {
    float lg[8], row[8];
    int32_t hist[4];
    uint64_t rng = 42;
    double scratch[8];
    bl_sampler_desc s;
    int i, hits;
    memset(&s, 0, sizeof s);
    for (i = 0; i < 8; i++) row[i] = -2.0f;
    row[3] = 2.0f;
    row[5] = 1.9f;
    memcpy(lg, row, sizeof lg);
    CHECK(bl_sample_logits(lg, 8, NULL, NULL, 0, &rng, scratch) == 3, "greedy on a crafted row");

    /* repeat penalty: 3 was just used, so 5 wins */
    s.repeat_penalty = 1.5f;
    hist[0] = 3;
    memcpy(lg, row, sizeof lg);
    CHECK(bl_sample_logits(lg, 8, &s, hist, 1, &rng, scratch) == 5, "repeat penalty does not change the pick");
    /* ...but not when 3 is outside the look-back window */
    hist[0] = 3; hist[1] = 0; hist[2] = 0; hist[3] = 0;
    s.repeat_last_n = 2;
    memcpy(lg, row, sizeof lg);
    CHECK(bl_sample_logits(lg, 8, &s, hist, 4, &rng, scratch) == 3, "repeat_last_n window ignored");
    /* negative logits are pushed down (multiplied), not up */
    for (i = 0; i < 8; i++) lg[i] = -5.0f;
    lg[2] = -1.0f;
    lg[6] = -1.2f;
    hist[0] = 2;
    s.repeat_last_n = 0;
    CHECK(bl_sample_logits(lg, 8, &s, hist, 1, &rng, scratch) == 6, "penalty on a negative logit");
    /* penalty 1 is off; out-of-range history ids are ignored */
    s.repeat_penalty = 1.0f;
    memcpy(lg, row, sizeof lg);
    hist[0] = 3;
    CHECK(bl_sample_logits(lg, 8, &s, hist, 1, &rng, scratch) == 3, "penalty 1.0 should be off");
    s.repeat_penalty = 2.0f;
    hist[0] = 99; hist[1] = -4;
    memcpy(lg, row, sizeof lg);
    CHECK(bl_sample_logits(lg, 8, &s, hist, 2, &rng, scratch) == 3, "out-of-range history");

    /* temperature 1 on two live candidates with p = 1/4, 3/4 */
    memset(&s, 0, sizeof s);
    s.temperature = 1.0f;
    for (i = 0, hits = 0; i < 4000; i++) {
        int32_t t;
        memset(lg, 0, sizeof lg);
        lg[0] = 0.0f;
        lg[1] = logf(3.0f);
        for (t = 2; t < 8; t++) lg[t] = -1e30f;
        t = bl_sample_logits(lg, 8, &s, NULL, 0, &rng, scratch);
        CHECK(t == 0 || t == 1, "sampled a dead candidate %d", t);
        hits += t == 1;
    }
    CHECK(hits > 2850 && hits < 3150, "p(1) = %g, want 0.75", hits / 4000.0);
    /* p = 3/10 for the favourite, 1/10 for each other: top_p 0.25 and min_p 0.5 keep only it */
    s.top_p = 0.25f;
    for (i = 0, hits = 0; i < 200; i++) {
        memset(lg, 0, sizeof lg);
        lg[1] = logf(3.0f);
        hits += bl_sample_logits(lg, 8, &s, NULL, 0, &rng, scratch) == 1;
    }
    CHECK(hits == 200, "top_p 0.25 let others through (%d/200)", hits);
    s.top_p = 0;
    s.min_p = 0.5f;
    for (i = 0, hits = 0; i < 200; i++) {
        memset(lg, 0, sizeof lg);
        lg[1] = logf(3.0f);
        hits += bl_sample_logits(lg, 8, &s, NULL, 0, &rng, scratch) == 1;
    }
    CHECK(hits == 200, "min_p 0.5 let others through (%d/200)", hits);
    s.min_p = 0;
    s.top_k = 2;
    for (i = 0, hits = 0; i < 400; i++) {
        int32_t t;
        for (t = 0; t < 8; t++) lg[t] = (float)t * 0.1f;
        t = bl_sample_logits(lg, 8, &s, NULL, 0, &rng, scratch);
        hits += t == 6 || t == 7;
    }
    CHECK(hits == 400, "top_k 2 let others through (%d/400)", hits);
    {   /* the same RNG state gives the same draw */
        uint64_t r1 = 7, r2 = 7;
        int32_t x, y;
        s.top_k = 0;
        for (i = 0; i < 8; i++) lg[i] = 0;
        x = bl_sample_logits(lg, 8, &s, NULL, 0, &r1, scratch);
        for (i = 0; i < 8; i++) lg[i] = 0;
        y = bl_sample_logits(lg, 8, &s, NULL, 0, &r2, scratch);
        CHECK(x == y && r1 == r2 && r1 != 7, "explicit RNG state not honoured");
    }
}

/* Many contexts on one shared model, each on its own thread. */
#define N_WORKERS 4
#define N_GEN 24
typedef struct worker {
    const bl_model *m;
    uint64_t seed;
    int sampled;
    int n_threads;        /* threads inside the context (OpenMP builds) */
    int32_t out[N_GEN];
    int n;
} worker;

static void *work(void *arg) {
    worker *w = (worker *)arg;
    bl_sampler_desc s;
    bl_ctx *c = NULL;
    bl_ctx_desc d;
    int round;
    memset(&s, 0, sizeof s);
    s.temperature = 0.8f;
    s.top_k = 20;
    memset(&d, 0, sizeof d);
    d.n_ctx = 64;
    d.n_threads = w->n_threads > 0 ? w->n_threads : 1;
    d.seed = w->seed;
    if (bl_ctx_create(&c, w->m, &d) != BL_OK) { bl_ctx_destroy(c); return NULL; }
    for (round = 0; round < 3; round++) { /* several rounds so the threads overlap */
        int32_t out[N_GEN];
        int n;
        bl_ctx_reset(c);
        n = generate(c, w->sampled ? &s : NULL, out, N_GEN);
        if (round == 0) { memcpy(w->out, out, sizeof out); w->n = n; }
        else if (n != w->n || !same(out, w->out, N_GEN)) w->n = -1;
    }
    bl_ctx_destroy(c);
    return NULL;
}

static void test_threads(const bl_model *m) {
    worker ref[2], ws[N_WORKERS];
    pthread_t th[N_WORKERS];
    int i;
    for (i = 0; i < 2; i++) {
        memset(&ref[i], 0, sizeof ref[i]);
        ref[i].m = m;
        ref[i].seed = 77;
        ref[i].sampled = i;
        work(&ref[i]);
        CHECK(ref[i].n == N_GEN, "reference run %d", i);
    }
    for (i = 0; i < N_WORKERS; i++) {
        memset(&ws[i], 0, sizeof ws[i]);
        ws[i].m = m;
        ws[i].seed = 77;
        ws[i].sampled = i & 1;
        ws[i].n_threads = 1 + (i >> 1); /* the result does not depend on it: each row is one thread's sum */
        CHECK(pthread_create(&th[i], NULL, work, &ws[i]) == 0, "pthread_create %d", i);
    }
    for (i = 0; i < N_WORKERS; i++) pthread_join(th[i], NULL);
    for (i = 0; i < N_WORKERS; i++)
        CHECK(ws[i].n == N_GEN && same(ws[i].out, ref[i & 1].out, N_GEN), "thread %d (%s) differs from the single-thread run", i,
              ws[i].sampled ? "sampled" : "greedy");
#ifdef _OPENMP
    {   /* the same from an OpenMP team, with OpenMP inside the contexts too */
        int bad = 0;
#pragma omp parallel for num_threads(2) reduction(+ : bad)
        for (i = 0; i < N_WORKERS; i++) {
            worker w;
            memset(&w, 0, sizeof w);
            w.m = m;
            w.seed = 77;
            w.sampled = i & 1;
            work(&w);
            bad += w.n != N_GEN || !same(w.out, ref[i & 1].out, N_GEN);
        }
        CHECK(bad == 0, "%d OpenMP workers differ from the single-thread run", bad);
    }
#endif
}

#ifdef BL__MOVE
#define MOVED_OR_MAPPED BL_WEIGHTS_MOVED
#else
#define MOVED_OR_MAPPED BL_WEIGHTS_MAPPED
#endif

/* bl_model_desc.weights: AUTO copies Q4_0 models (rearranged for decoding)
   and moves the rest (maps them where moving is not built in), info.weights
   says which; every mode gives logits within the quantized tier (rel 6e-2)
   of the first. */
static void test_weights_modes(void) {
    static const char *paths[2] = {"golden/llama3-gqa/gguf/model-Q4_0.gguf", "golden/llama3-gqa/gguf/model-F32.gguf"};
    static const int32_t toks[6] = {1, 17, 99, 230, 7, 400};
    int i, mode, moves;
    for (i = 0; i < 2; i++) {
        float *first = NULL;
        int nv = 0;
        for (mode = BL_WEIGHTS_AUTO; mode <= BL_WEIGHTS_MOVED; mode++) {
            bl_model *m = NULL;
            bl_model_desc d;
            bl_ctx *c;
            memset(&d, 0, sizeof d);
            d.weights = mode;
            if (bl_model_load(&m, tu_shared(paths[i]), &d) != BL_OK) {
                CHECK(0, "load %s (weights %d): %s", paths[i], mode, bl_model_last_error(m));
                bl_model_destroy(m);
                continue;
            }
            /* files under two huge pages have nothing to move */
            moves = m->files[0].size >= ((size_t)4 << 20) ? MOVED_OR_MAPPED : BL_WEIGHTS_MAPPED;
            CHECK(bl_model_get_info(m)->weights == (mode == BL_WEIGHTS_AUTO ? (i == 0 ? BL_WEIGHTS_COPIED : moves) : mode == BL_WEIGHTS_MOVED ? moves : mode),
                  "%s: weights mode %d taken as %d", paths[i], mode, bl_model_get_info(m)->weights);
            nv = bl_model_get_info(m)->n_vocab;
            c = new_ctx(m, 0, 1);
            if (c && bl_ctx_decode(c, toks, 6, BL_LOGITS_LAST) == BL_OK) {
                const float *lg = bl_ctx_logits(c, -1);
                if (!first) {
                    first = (float *)malloc((size_t)nv * sizeof(float));
                    if (first) memcpy(first, lg, (size_t)nv * sizeof(float));
                } else if (first) {
                    double md = 0, mx = 0;
                    int k;
                    for (k = 0; k < nv; k++) {
                        if (fabs(first[k]) > mx) mx = fabs(first[k]);
                        if (fabs(first[k] - lg[k]) > md) md = fabs(first[k] - lg[k]);
                    }
                    CHECK(md <= 6e-2 * mx, "%s: weights mode %d moves the logits by %g of %g", paths[i], mode, md, mx);
                }
            } else CHECK(0, "%s: decode (weights %d)", paths[i], mode);
            bl_ctx_destroy(c);
            bl_model_destroy(m);
        }
        free(first);
    }
}

#ifdef BL__MOVE
/* 1 if every mapping overlapping [lo, hi) in /proc/self/smaps is anonymous
   (inode 0) and resident ("Anonymous:" above 0 kB); *n_vma: how many. */
static int span_anonymous(uintptr_t lo, uintptr_t hi, int *n_vma) {
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    int in = 0, ok = 1;
    unsigned long long a, b, ino;
    *n_vma = 0;
    if (!f) return 0;
    while (fgets(line, sizeof line, f)) {
        char perms[8], dev[16];
        unsigned long long off;
        long kb;
        if (sscanf(line, "%llx-%llx %7s %llx %15s %llu", &a, &b, perms, &off, dev, &ino) == 6) {
            in = a < hi && b > lo;
            if (in) { (*n_vma)++; ok &= ino == 0; }
        } else if (in && sscanf(line, "Anonymous: %ld kB", &kb) == 1)
            ok &= kb > 0;
    }
    fclose(f);
    return ok && *n_vma > 0;
}

/* BL_WEIGHTS_MOVED: decoding while the background thread moves the file's
   pages (2 MiB at a time here: four moves on this 10 MB file), and after,
   gives exactly the mapped model's logits; bl_model_wait says the move
   finished, and the file's 2 MiB-aligned span is then anonymous memory at
   the same addresses. Models destroyed at once, between chunks or after
   stop the thread (the sanitizer build checks the joins). Whether the first
   round overlapped the move is printed: the thread is at the lowest
   priority and may not have started. */
static void test_weights_moved(void) {
    static const int32_t toks[8] = {1, 17, 99, 230, 7, 400, 3, 150};
    const char *path = tu_shared("models/trained/stories-target-F32.gguf");
    bl_model *mapped = NULL, *moved = NULL;
    bl_model_desc d;
    bl_ctx *c0 = NULL, *c1 = NULL;
    int round, i, n_vma = 0;
    memset(&d, 0, sizeof d);
    d.weights = BL_WEIGHTS_MAPPED;
    if (bl_model_load(&mapped, path, &d) != BL_OK) {
        CHECK(0, "load %s: %s", path, bl_model_last_error(mapped));
        bl_model_destroy(mapped);
        return;
    }
    d.weights = BL_WEIGHTS_MOVED;
    CHECK(bl_model_load(&moved, path, &d) == BL_OK, "load moved: %s", bl_model_last_error(moved));
    CHECK(bl_model_get_info(moved)->weights == BL_WEIGHTS_MOVED, "weights mode %d", bl_model_get_info(moved)->weights);
    c0 = new_ctx(mapped, 0, 1);
    c1 = new_ctx(moved, 0, 2);
    for (round = 0; round < 2; round++) { /* 0: while moving (most likely), 1: after */
        int bad = 0;
        if (round == 0) {
            const bl__file *f = &moved->files[0];
            const uintptr_t huge = (uintptr_t)2 << 20;
            printf("  moved weights: the file's span is %s as decoding starts\n",
                   span_anonymous(((uintptr_t)f->data + huge - 1) & ~(huge - 1), ((uintptr_t)f->data + f->size) & ~(huge - 1), &n_vma)
                       ? "already moved"
                       : "not yet all moved");
        }
        const int nv = bl_model_get_info(mapped)->n_vocab;
        bl_ctx_reset(c0);
        bl_ctx_reset(c1);
        for (i = 0; i < 8; i++) {
            bad += bl_ctx_decode(c0, &toks[i], 1, BL_LOGITS_LAST) != BL_OK || bl_ctx_decode(c1, &toks[i], 1, BL_LOGITS_LAST) != BL_OK;
            bad += memcmp(bl_ctx_logits(c0, -1), bl_ctx_logits(c1, -1), (size_t)nv * sizeof(float)) != 0;
        }
        CHECK(bad == 0, "round %d: %d of 8 steps differ from the mapped model", round, bad);
        if (round == 0) CHECK(bl_model_wait(moved) == 1, "the move finished");
    }
    {
        const bl__file *f = &moved->files[0];
        const uintptr_t huge = (uintptr_t)2 << 20;
        const uintptr_t lo = ((uintptr_t)f->data + huge - 1) & ~(huge - 1), hi = ((uintptr_t)f->data + f->size) & ~(huge - 1);
        CHECK(hi > lo && span_anonymous(lo, hi, &n_vma), "the file's aligned span [%#lx, %#lx) is anonymous memory (%d mappings)",
              (unsigned long)lo, (unsigned long)hi, n_vma);
        CHECK(!span_anonymous((uintptr_t)mapped->files[0].data + huge, (uintptr_t)mapped->files[0].data + 2 * huge, &n_vma),
              "the mapped model's pages are still the file's");
    }
    CHECK(bl_model_wait(moved) == 1 && bl_model_wait(mapped) == 0, "bl_model_wait again, and in the mapped mode");
    bl_ctx_destroy(c0);
    bl_ctx_destroy(c1);
    bl_model_destroy(moved);
    bl_model_destroy(mapped);
    for (i = 0; i < 3; i++) { /* destroyed at once, mid-move or after */
        moved = NULL;
        CHECK(bl_model_load(&moved, path, &d) == BL_OK, "load moved: %s", bl_model_last_error(moved));
        bl_model_destroy(moved);
    }
}
#endif

/* A KV cache type other than F32 or F16 is refused with a message naming
   it; F16 is taken (F32, the default, every other test uses). */
static void test_kv_types(const bl_model *m) {
    static const int types[5] = {BL_TYPE_BF16, BL_TYPE_Q8_0, 99, -1, BL_TYPE_F16};
    int i;
    for (i = 0; i < 5; i++) {
        bl_ctx *c = NULL;
        bl_ctx_desc d;
        bl_result r;
        memset(&d, 0, sizeof d);
        d.n_ctx = 64;
        d.kv_type = types[i];
        r = bl_ctx_create(&c, m, &d);
        if (types[i] == BL_TYPE_F16)
            CHECK(r == BL_OK && bl_ctx_decode(c, prompt, 5, BL_LOGITS_LAST) == BL_OK, "F16 KV cache: %s", bl_ctx_last_error(c));
        else
            CHECK(r == BL_ERR_ARG && strstr(bl_ctx_last_error(c), "KV cache type"), "KV cache type %d: %s, '%s'", types[i], bl_result_string(r),
                  bl_ctx_last_error(c));
        bl_ctx_destroy(c);
    }
}

int main(void) {
    bl_model *m = NULL;
    size_t n;
    char *man;
    setvbuf(stdout, NULL, _IONBF, 0);
    test_results();
    test_sample_logits();
    if (bl_model_load(&m, tu_shared("models/stories260K.gguf"), NULL) != BL_OK) {
        CHECK(0, "load stories260K.gguf: %s", bl_model_last_error(m));
        bl_model_destroy(m);
        return tu_finish();
    }
    test_info(m);
    test_tokenizer(m);
    test_sampler_ctx(m);
    test_threads(m);
    test_kv_types(m);
    bl_model_destroy(m);
    test_formats();
    test_weights_modes();
#ifdef BL__MOVE
    test_weights_moved();
#endif
    /* the golden manifest agrees with the first greedy token checked above */
    man = tu_read(tu_shared("golden/stories260K/manifest.json"), &n);
    CHECK(man && strstr(man, "432"), "golden manifest unreadable or lacks token 432");
    free(man);
    return tu_finish();
}
