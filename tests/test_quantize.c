/* test_quantize - berlin-quantize's block encoders, conversions checked
   against the golden GGUFs (bytes and logits), random models, and a smoke
   test of berlin-bench's JSON output and of its kernel timings.

   The quantizer is compiled in (tools/quantize.c with QZ_NO_MAIN) and run
   in-process through qz_main, so the sanitizer build checks it too; the
   built tools are also run once each as programs. */
#define _POSIX_C_SOURCE 200809L
#define QZ_NO_MAIN
#include "tools/quantize.c"
#include "testutil.h"
#include <sys/stat.h>

static char tmpdir[256];

/* qz_main on a NULL-terminated argument list. */
static int run_qz(const char *first, ...) {
    char *argv[24];
    int n = 0;
    const char *s;
    va_list ap;
    argv[n++] = (char *)"berlin-quantize";
    va_start(ap, first);
    for (s = first; s && n < 23; s = va_arg(ap, const char *)) argv[n++] = (char *)s;
    va_end(ap);
    argv[n] = NULL;
    return qz_main(n, argv);
}

/* (a) blocks computed by hand -------------------------------------------- */

static void test_half(void) {
    uint32_t h, bad = 0;
    float f;
    CHECK(qz_f32_to_f16(1.0f) == 0x3C00, "f16(1)");
    CHECK(qz_f32_to_f16(-2.0f) == 0xC000, "f16(-2)");
    CHECK(qz_f32_to_f16(0.1f) == 0x2E66, "f16(0.1) = %04x", qz_f32_to_f16(0.1f));
    CHECK(qz_f32_to_f16(65504.0f) == 0x7BFF, "f16(max)");
    CHECK(qz_f32_to_f16(65519.0f) == 0x7BFF, "f16(65519) rounds down");
    CHECK(qz_f32_to_f16(65520.0f) == 0x7C00, "f16(65520) overflows to inf");
    CHECK(qz_f32_to_f16(ldexpf(1, -24)) == 0x0001, "f16 smallest subnormal");
    CHECK(qz_f32_to_f16(ldexpf(1, -25)) == 0x0000, "f16 2^-25 ties to even zero");
    CHECK(qz_f32_to_f16(ldexpf(3, -26)) == 0x0001, "f16 0.75*2^-24 rounds up");
    CHECK(qz_f32_to_f16(ldexpf(3, -25)) == 0x0002, "f16 1.5*2^-24 ties to even 2");
    CHECK(qz_f32_to_f16(1.0f + ldexpf(1, -11)) == 0x3C00, "f16 tie to even (down)");
    CHECK(qz_f32_to_f16(1.0f + ldexpf(3, -11)) == 0x3C02, "f16 tie to even (up)");
    CHECK(qz_f32_to_f16(ldexpf(1023, -24) + ldexpf(1, -25)) == 0x0400, "f16 subnormal rounds into the first normal");
    for (h = 0; h < 65536; h++) { /* every half survives the round trip */
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue;
        f = bl__f16_to_f32((uint16_t)h);
        if (qz_f32_to_f16(f) != h) bad++;
    }
    CHECK(bad == 0, "%u halves do not round-trip", bad);
    CHECK(qz_f32_to_bf16(1.0f) == 0x3F80, "bf16(1)");
    CHECK(qz_f32_to_bf16(1.0f + ldexpf(1, -8)) == 0x3F80, "bf16 tie to even (down)");
    CHECK(qz_f32_to_bf16(1.0f + ldexpf(3, -8)) == 0x3F82, "bf16 tie to even (up)");
    CHECK(qz_f32_to_bf16(-3.0f) == 0xC040, "bf16(-3)");
}

static void test_blocks(void) {
    float x[256], y[256];
    uint8_t b[256];
    int j;
    /* Q8_0: max |x| = 63.5 so d = 0.5 (f16 0x3800) and q = round(2x) */
    static const int8_t q8[32] = {-127, -39, -36, -34, -31, -29, -26, -23, -21, -18, -16, -13, -10, -8, -5, -3,
                                  0, 3, 5, 8, 10, 13, 16, 18, 21, 23, 26, 29, 31, 34, 36, 39};
    x[0] = -63.5f;
    for (j = 1; j < 32; j++) x[j] = (float)(j - 16) * 1.3f;
    CHECK(qz_quantize_row(BL_TYPE_Q8_0, x, 32, b) == 34, "q8_0 block size");
    CHECK(b[0] == 0x00 && b[1] == 0x38, "q8_0 scale bytes %02x %02x", b[0], b[1]);
    CHECK(memcmp(b + 2, q8, 32) == 0, "q8_0 quants");
    /* Q4_0: x[0] = -8 has the largest magnitude, so d = 1 (f16 0x3C00) and
       q = x + 8; byte j holds element j (low) and element j+16 (high). */
    for (j = 0; j < 16; j++) { x[j] = (float)(j - 8); x[16 + j] = (float)(7 - j); }
    x[3] = -4.55f; /* nearest -5: q 3 */
    x[4] = -3.45f; /* nearest -3: q 5 */
    CHECK(qz_quantize_row(BL_TYPE_Q4_0, x, 32, b) == 18, "q4_0 block size");
    CHECK(b[0] == 0x00 && b[1] == 0x3C, "q4_0 scale bytes %02x %02x", b[0], b[1]);
    {
        static const uint8_t q4[16] = {0xF0, 0xE1, 0xD2, 0xC3, 0xB5, 0xA5, 0x96, 0x87, 0x78, 0x69, 0x5A, 0x4B, 0x3C, 0x2D, 0x1E, 0x0F};
        CHECK(memcmp(b + 2, q4, 16) == 0, "q4_0 nibbles %02x %02x %02x %02x %02x", b[2], b[3], b[4], b[5], b[6]);
    }
    bl__dequant_row(BL_TYPE_Q4_0, b, y, 32);
    CHECK(y[0] == -8 && y[4] == -3 && y[16] == 7 && y[31] == -8, "q4_0 dequant");
    /* Q4_K and Q6_K: ggml's scale searches (their bytes are checked against
       the golden files below); here the reconstruction of a block whose
       sub-blocks have very different ranges and offsets on purpose. */
    for (j = 0; j < 256; j++) x[j] = (float)(sin(j * 0.37) * (1 + (j / 32) * 0.7) + ((j / 32) % 3 == 1 ? 2.5 : 0) + 0.01 * (j % 7));
    {
        double e4 = 0, e6 = 0, ss = 0, m4 = 0, m6 = 0;
        CHECK(qz_quantize_row(BL_TYPE_Q4_K, x, 256, b) == 144, "q4_k block size");
        bl__dequant_row(BL_TYPE_Q4_K, b, y, 256);
        for (j = 0; j < 256; j++) { double d = y[j] - x[j]; e4 += d * d; ss += (double)x[j] * x[j]; if (fabs(d) > m4) m4 = fabs(d); }
        CHECK(qz_quantize_row(BL_TYPE_Q6_K, x, 256, b) == 210, "q6_k block size");
        bl__dequant_row(BL_TYPE_Q6_K, b, y, 256);
        for (j = 0; j < 256; j++) { double d = y[j] - x[j]; e6 += d * d; if (fabs(d) > m6) m6 = fabs(d); }
        e4 = sqrt(e4 / ss);
        e6 = sqrt(e6 / ss);
        printf("q4_k rel rms %.4f max %.4f; q6_k rel rms %.5f max %.5f\n", e4, m4, e6, m6);
        CHECK(e4 < 0.05 && m4 < 0.4, "q4_k reconstruction rel rms %.4f max %.4f", e4, m4);
        CHECK(e6 < 0.015 && m6 < 0.15, "q6_k reconstruction rel rms %.5f max %.5f", e6, m6);
    }
    /* zeros and constants must not divide by zero */
    for (j = 0; j < 256; j++) x[j] = 0;
    qz_quantize_row(BL_TYPE_Q4_K, x, 256, b);
    bl__dequant_row(BL_TYPE_Q4_K, b, y, 256);
    CHECK(y[0] == 0 && y[255] == 0, "q4_k zeros");
    qz_quantize_row(BL_TYPE_Q6_K, x, 256, b);
    bl__dequant_row(BL_TYPE_Q6_K, b, y, 256);
    CHECK(y[0] == 0 && y[255] == 0, "q6_k zeros");
    for (j = 0; j < 256; j++) x[j] = 0.75f;
    qz_quantize_row(BL_TYPE_Q4_K, x, 256, b);
    bl__dequant_row(BL_TYPE_Q4_K, b, y, 256);
    CHECK(fabsf(y[7] - 0.75f) < 0.01f, "q4_k constant %g", y[7]);
}

/* (b) conversions against the golden files -------------------------------- */

typedef struct gfile { bl__file f; bl__tensor *t; int nt; } gfile;

static int gfile_open(gfile *g, const char *path) {
    char err[BL__ERRLEN];
    bl__gguf h;
    memset(g, 0, sizeof *g);
    memset(&h, 0, sizeof h);
    if (bl__file_open(&g->f, path, 0, err) != BL_OK || bl__gguf_read(&h, &g->f, &g->t, &g->nt, err) != BL_OK) {
        printf("%s\n", err);
        bl__gguf_free(&h);
        return 0;
    }
    bl__gguf_free(&h);
    return 1;
}
static void gfile_close(gfile *g) {
    int i;
    for (i = 0; i < g->nt; i++) free(g->t[i].name);
    free(g->t);
    bl__file_close(&g->f);
}

/* Count tensors byte-equal to the reference's; rope_freqs may differ by an
   ulp (torch's float32 pow), which is reported separately. */
static int compare_tensors(const char *ref, const char *out, int *same, int *n, double *rope_rel) {
    gfile a, b;
    int i, k;
    *same = *n = 0;
    *rope_rel = 0;
    if (!gfile_open(&a, ref)) return 0;
    if (!gfile_open(&b, out)) { gfile_close(&a); return 0; }
    for (i = 0; i < a.nt; i++) {
        for (k = 0; k < b.nt; k++) if (!strcmp(a.t[i].name, b.t[k].name)) break;
        (*n)++;
        if (k == b.nt) continue;
        if (a.t[i].type == b.t[k].type && a.t[i].nbytes == b.t[k].nbytes && !memcmp(a.t[i].data, b.t[k].data, a.t[i].nbytes)) (*same)++;
        else if (!strcmp(a.t[i].name, "rope_freqs.weight") && a.t[i].nbytes == b.t[k].nbytes) {
            size_t e;
            for (e = 0; e < a.t[i].nbytes / 4; e++) {
                float u, v;
                memcpy(&u, a.t[i].data + 4 * e, 4);
                memcpy(&v, b.t[k].data + 4 * e, 4);
                if (fabs(u - v) / fabs(u) > *rope_rel) *rope_rel = fabs(u - v) / fabs(u);
            }
        }
    }
    i = a.nt == b.nt;
    gfile_close(&a);
    gfile_close(&b);
    return i;
}

/* Decode the prompt with BL_LOGITS_ALL; rel = max|d| / max|golden|, cos = worst row. */
/* The golden precision tier of a weight type (as in test_golden.c): exact
   math unless the library rounds the activations it meets that type with. */
static void tier_tol(const char *type_name, double *rel, double *cs) {
    int t, act = BL_TYPE_F32;
    for (t = 0; t < BL_TYPE_COUNT_; t++)
        if (bl_type_name(t) && !strcmp(bl_type_name(t), type_name)) act = bl_type_activation(t);
    if (act == BL_TYPE_BF16) { *rel = 2e-2; *cs = 0.9998; }
    else if (act == BL_TYPE_Q8_0) { *rel = 6e-2; *cs = 0.998; }
    else { *rel = 1e-4; *cs = 0.99999; }
}

static int logits_vs(const char *model, const int32_t *ids, int n, const float *gold, int n_vocab, double *rel, double *cos_min) {
    bl_model *m = NULL;
    bl_ctx *c = NULL;
    bl_ctx_desc cd;
    int t, v, ok = 0;
    double mg = 0, md = 0;
    *rel = 1e9;
    *cos_min = -1;
    memset(&cd, 0, sizeof cd);
    cd.n_ctx = 64;
    cd.n_threads = 2;
    if (bl_model_load(&m, model, NULL) != BL_OK) { printf("load %s: %s\n", model, bl_model_last_error(m)); goto out; }
    if (bl_model_get_info(m)->n_vocab != n_vocab) goto out;
    if (bl_ctx_create(&c, m, &cd) != BL_OK || bl_ctx_decode(c, ids, n, BL_LOGITS_ALL) != BL_OK) goto out;
    *cos_min = 1;
    for (t = 0; t < n; t++) {
        const float *l = bl_ctx_logits(c, t), *g = gold + (size_t)t * n_vocab;
        double dot = 0, a = 0, b = 0;
        for (v = 0; v < n_vocab; v++) {
            if (fabs(g[v]) > mg) mg = fabs(g[v]);
            if (fabs(l[v] - g[v]) > md) md = fabs(l[v] - g[v]);
            dot += (double)l[v] * g[v]; a += (double)l[v] * l[v]; b += (double)g[v] * g[v];
        }
        if (dot / sqrt(a * b) < *cos_min) *cos_min = dot / sqrt(a * b);
    }
    *rel = md / mg;
    ok = 1;
out:
    bl_ctx_destroy(c);
    bl_model_destroy(m);
    return ok;
}

static int read_prompt(const char *manifest, const char *obj, int32_t *ids, int cap) {
    size_t len;
    char *txt = tu_read(manifest, &len);
    bl__json j;
    int p, a, i, n = 0;
    if (!txt) return 0;
    if (bl__json_parse(&j, txt, len) == 0 && (p = bl__json_get(&j, 0, obj)) >= 0 && (a = bl__json_get(&j, p, "tokens")) >= 0)
        for (i = 0; i < j.nodes[a].n && n < cap; i++) {
            double v;
            if (bl__json_num(&j, bl__json_at(&j, a, i), &v)) ids[n++] = (int32_t)v;
        }
    bl__json_free(&j);
    free(txt);
    return n;
}

static void test_golden(void) {
    static const char *const types[] = {"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q6_K", "Q4_K"};
    char sources[2][512];
    int32_t ids[64];
    int n, s, k, nv = 512;
    size_t len;
    float *f32 = (float *)tu_read(tu_shared("golden/llama3-gqa/logits/gguf-F32.f32"), &len);
    n = read_prompt(tu_shared("golden/llama3-gqa/manifest.json"), "prompt", ids, 64);
    if (!f32 || n != 24) { CHECK(0, "golden llama3-gqa fixture missing (BERLIN_SHARED?)"); free(f32); return; }
    snprintf(sources[0], sizeof sources[0], "%s", tu_shared("golden/llama3-gqa/gguf/model-F32.gguf"));
    snprintf(sources[1], sizeof sources[1], "%s", tu_shared("golden/llama3-gqa/hf-f32"));
    printf("%-6s %-5s %-13s %-9s %-9s %-9s %-9s\n", "source", "type", "tensors=gold", "rel", "cos", "rel(F32)", "cos(F32)");
    for (s = 0; s < 2; s++)
        for (k = 0; k < (int)(sizeof types / sizeof *types); k++) {
            const char *ty = types[k];
            const char *gt = strcmp(ty, "Q4_K") ? ty : "Q4_K_M";
            char out[400], rel_gold[64], gpath[64], lpath[64];
            float *gold;
            int same, nt;
            double rope_rel, rel, cs, rel32, cs32, tol_rel, tol_cos;
            snprintf(out, sizeof out, "%s/%s-%s.gguf", tmpdir, s ? "hf" : "gguf", ty);
            CHECK(run_qz("-q", "--pure", sources[s], out, ty, NULL) == 0, "quantize %s to %s", sources[s], ty);
            snprintf(gpath, sizeof gpath, "golden/llama3-gqa/gguf/model-%s.gguf", gt);
            snprintf(lpath, sizeof lpath, "golden/llama3-gqa/logits/gguf-%s.f32", gt);
            CHECK(compare_tensors(tu_shared(gpath), out, &same, &nt, &rope_rel), "%s: same tensor set as %s", out, gpath);
            /* deterministic rounding: every tensor's bytes equal the golden file's (rope_freqs: 1 ulp allowed) */
            CHECK(same == nt || (same == nt - 1 && rope_rel > 0 && rope_rel < 1e-6), "%s: %d of %d tensors equal the golden bytes", out, same, nt);
            gold = (float *)tu_read(tu_shared(lpath), &len);
            CHECK(gold && len == (size_t)n * nv * 4, "%s missing", lpath);
            if (!gold) continue;
            CHECK(logits_vs(out, ids, n, gold, nv, &rel, &cs), "%s loads and decodes", out);
            logits_vs(out, ids, n, f32, nv, &rel32, &cs32);
            snprintf(rel_gold, sizeof rel_gold, "%d/%d", same, nt);
            printf("%-6s %-5s %-13s %-9.2e %-9.6f %-9.2e %-9.6f%s\n", s ? "hf" : "gguf", ty, rel_gold, rel, cs, rel32, cs32,
                   rope_rel > 0 ? "  (rope_freqs 1 ulp)" : "");
            /* equal bytes: the golden tier of this type on the same weights */
            tier_tol(ty, &tol_rel, &tol_cos);
            CHECK(rel <= tol_rel && cs >= tol_cos, "%s: logits rel %.3g cos %.6f vs %s", out, rel, cs, lpath);
            free(gold);
        }
    free(f32);
    /* the mix: output gets Q6_K, some attn_v/ffn_down Q6_K */
    {
        char out[400];
        gfile g;
        int i, n6 = 0, n4 = 0, out6 = 0;
        snprintf(out, sizeof out, "%s/mix-Q4_K_M.gguf", tmpdir);
        CHECK(run_qz("-q", sources[0], out, "Q4_K_M", NULL, NULL) == 0, "Q4_K_M mix");
        if (gfile_open(&g, out)) {
            for (i = 0; i < g.nt; i++) {
                if (g.t[i].type == BL_TYPE_Q6_K) n6++;
                if (g.t[i].type == BL_TYPE_Q4_K) n4++;
                if (!strcmp(g.t[i].name, "output.weight")) out6 = g.t[i].type == BL_TYPE_Q6_K;
            }
            gfile_close(&g);
        }
        /* 2 layers: only layer 1 (i >= 7n/8) gets more bits for attn_v and ffn_down */
        CHECK(out6 && n6 == 3 && n4 == 13, "Q4_K_M mix: output Q6_K %d, %d Q6_K, %d Q4_K", out6, n6, n4);
        snprintf(out, sizeof out, "%s/ot.gguf", tmpdir);
        CHECK(run_qz("-q", "--output-type", "Q8_0", "--embd-type", "F16", sources[0], out, "Q4_0", NULL) == 0, "--output-type");
        if (gfile_open(&g, out)) {
            for (i = 0; i < g.nt; i++) {
                if (!strcmp(g.t[i].name, "output.weight")) CHECK(g.t[i].type == BL_TYPE_Q8_0, "output type");
                if (!strcmp(g.t[i].name, "token_embd.weight")) CHECK(g.t[i].type == BL_TYPE_F16, "embd type");
                if (!strcmp(g.t[i].name, "blk.0.attn_q.weight")) CHECK(g.t[i].type == BL_TYPE_Q4_0, "main type");
            }
            gfile_close(&g);
        }
    }
}

/* The other fixtures' converter layouts: qwen2 (arch qwen2, NEOX, biases),
   tied embeddings, Mistral consolidated (already interleaved) and the VLM
   namings give the same bytes as the golden GGUFs (llama.cpp's converter
   followed by llama-quantize --pure) and the same logits. */
static void test_fixtures(void) {
    static const char *const fx[][4] = {
        {"qwen2-bias", "hf-f32", "Q8_0", "qwen2arch-Q8_0"},
        {"smollm-tied", "hf-f32", "Q8_0", "Q8_0"},
        {"smollm-tied", "hf-f32", "Q4_0", "Q4_0"},
        {"mistral-consolidated", "consolidated-f32", "Q4_0", "Q4_0"},
        {"vlm-text-config", "hf-f32", "Q8_0", "Q8_0"},
        {"vlm-text-config", "hf-f32-v5names", "F16", "F16"},
    };
    int i;
    for (i = 0; i < (int)(sizeof fx / sizeof fx[0]); i++) {
        char base[300], src[700], out[700], ref[700], lg[700], man[700];
        int32_t ids[64];
        int n, same, nt;
        double rope, rel = 1, cs = 0, tol_rel, tol_cos;
        size_t len;
        float *gold;
        snprintf(base, sizeof base, "%s", tu_shared("golden"));
        snprintf(man, sizeof man, "%s/%s/manifest.json", base, fx[i][0]);
        snprintf(ref, sizeof ref, "%s/%s/gguf/model-%s.gguf", base, fx[i][0], fx[i][3]);
        snprintf(lg, sizeof lg, "%s/%s/logits/gguf-%s.f32", base, fx[i][0], fx[i][3]);
        snprintf(out, sizeof out, "%s/fx%d.gguf", tmpdir, i);
        snprintf(src, sizeof src, "%s/%s/%s", base, fx[i][0], fx[i][1]);
        CHECK(run_qz("-q", "--pure", src, out, fx[i][2], NULL) == 0, "quantize %s", src);
        CHECK(compare_tensors(ref, out, &same, &nt, &rope) && same == nt, "%s/%s %s: %d of %d tensors equal %s", fx[i][0], fx[i][1], fx[i][2], same,
              nt, ref);
        n = read_prompt(man, "prompt", ids, 64);
        gold = (float *)tu_read(lg, &len);
        tier_tol(fx[i][2], &tol_rel, &tol_cos);
        CHECK(gold && n == 24 && len == (size_t)n * 512 * 4 && logits_vs(out, ids, n, gold, 512, &rel, &cs) && rel <= tol_rel && cs >= tol_cos,
              "%s/%s %s: logits rel %.3g cos %.6f", fx[i][0], fx[i][1], fx[i][2], rel, cs);
        printf("%-21s %-17s %-5s tensors %d/%d equal, logits rel %.2e\n", fx[i][0], fx[i][1], fx[i][2], same, nt, rel);
        free(gold);
    }
}

/* llama2.c checkpoint + tokenizer.bin -> GGUF: same tensors and logits as the
   shared stories260K.gguf. */
static void test_l2c(void) {
    char out[400];
    double rel = 1, cs = 0;
    int32_t ids[64];
    int n, same, nt;
    double rope;
    size_t len;
    float *gold = (float *)tu_read(tu_shared("golden/stories260K/logits/f32.f32"), &len);
    n = read_prompt(tu_shared("golden/stories260K/manifest.json"), "sequence", ids, 64);
    snprintf(out, sizeof out, "%s/l2c.gguf", tmpdir);
    CHECK(run_qz("-q", "--vocab", tu_shared("models/tok512.bin"), tu_shared("models/stories260K.bin"), out, "F32", NULL) == 0, "l2c to gguf");
    compare_tensors(out, tu_shared("models/stories260K.gguf"), &same, &nt, &rope);
    CHECK(same == nt && nt == 47, "l2c: %d of %d tensors equal (the reference also stores the tied output)", same, nt);
    CHECK(gold && n == 48 && logits_vs(out, ids, n, gold, 512, &rel, &cs) && rel < 1e-4, "l2c logits rel %.3g", rel);
    {
        bl_model *m = NULL;
        if (bl_model_load(&m, out, NULL) == BL_OK) {
            int32_t t[16];
            int k = bl_tokenize(bl_model_tokenizer(m), "Once upon a time", -1, t, 16, BL_TOK_ADD_BOS);
            CHECK(k > 2 && t[0] == 1, "tokenizer written from tok512.bin works (%d tokens)", k);
        } else CHECK(0, "load %s", out);
        bl_model_destroy(m);
    }
    free(gold);
}

/* (c) random models ---------------------------------------------------------- */

static void test_random(void) {
    char a[400], b[400];
    const char *voc = "models/stories260K.gguf";
    size_t la, lb;
    char *da, *db;
    bl_model *m = NULL;
    bl_ctx *c = NULL;
    snprintf(a, sizeof a, "%s/rand-a.gguf", tmpdir);
    snprintf(b, sizeof b, "%s/rand-b.gguf", tmpdir);
    CHECK(run_qz("-q", "-t", "1", "--random", "tiny", "--vocab", voc, a, NULL) == 1, "missing TYPE is an error");
    {
        const char *v[] = {"berlin-quantize", "-q", "-t", "1", "--random", "tiny", "--vocab", "models/stories260K.gguf", "", "Q4_K_M"};
        char *argv[10];
        int i;
        for (i = 0; i < 10; i++) argv[i] = (char *)v[i];
        argv[8] = a;
        CHECK(qz_main(10, argv) == 0, "random tiny Q4_K_M (1 thread)");
        v[3] = "2";
        for (i = 0; i < 10; i++) argv[i] = (char *)v[i];
        argv[8] = b;
        CHECK(qz_main(10, argv) == 0, "random tiny Q4_K_M (2 threads)");
    }
    da = tu_read(a, &la);
    db = tu_read(b, &lb);
    CHECK(da && db && la == lb && !memcmp(da, db, la), "random weights do not depend on the thread count");
    free(da);
    free(db);
    if (bl_model_load(&m, a, NULL) == BL_OK) {
        const bl_model_info *in = bl_model_get_info(m);
        int32_t t[8] = {1, 20, 30, 40, 50, 60, 70, 80}, i, bad = 0;
        CHECK(in->dim == 256 && in->n_layer == 2 && in->n_head == 8 && in->n_head_kv == 2 && in->n_ff == 512 && in->n_vocab == 512, "tiny shape");
        CHECK(bl_model_tokenizer(m) && bl_tokenizer_n_vocab(bl_model_tokenizer(m)) == 512, "vocabulary copied");
        CHECK(bl_ctx_create(&c, m, NULL) == BL_OK && bl_ctx_decode(c, t, 8, BL_LOGITS_LAST) == BL_OK, "random model decodes");
        if (c && bl_ctx_logits(c, -1)) {
            const float *l = bl_ctx_logits(c, -1);
            for (i = 0; i < 512; i++) if (!(l[i] == l[i]) || fabsf(l[i]) > 100) bad++;
            CHECK(bad == 0, "%d bad logits", bad);
        }
    } else CHECK(0, "load %s: %s", a, bl_model_last_error(m));
    bl_ctx_destroy(c);
    bl_model_destroy(m);
    m = NULL;
    /* --layers: the shape with another layer count; only with --random */
    CHECK(run_qz("-q", "--random", "tiny", "--layers", "5", "--vocab", voc, b, "Q8_0", NULL) == 0, "random tiny, 5 layers");
    if (bl_model_load(&m, b, NULL) == BL_OK) {
        const bl_model_info *in = bl_model_get_info(m);
        CHECK(in->n_layer == 5 && in->dim == 256 && in->n_ff == 512, "--layers 5: %d layers, dim %d, ffn %d", in->n_layer, in->dim, in->n_ff);
    } else CHECK(0, "load %s: %s", b, bl_model_last_error(m));
    bl_model_destroy(m);
    CHECK(run_qz("-q", "--layers", "1", a, b, "Q8_0", NULL) == 1, "--layers without --random is an error");
    CHECK(run_qz("-q", "--random", "tiny", "--layers", "0", b, "Q8_0", NULL) == 1, "--layers 0 is an error");
    CHECK(run_qz("-q", "--random", "tiny", "--layers", "2x", b, "Q8_0", NULL) == 1, "--layers 2x is an error");
    /* the built program itself, with a vocabulary whose size differs from the shape's */
    {
        char cmd[1200];
        snprintf(cmd, sizeof cmd, "./build/berlin-quantize -q --random tiny --vocab %s %s/v.gguf Q8_0 2>/dev/null",
                 tu_shared("tokenizers/gguf/ggml-vocab-llama-spm.gguf"), tmpdir);
        CHECK(system(cmd) == 0, "%s", cmd);
        snprintf(a, sizeof a, "%s/v.gguf", tmpdir);
        m = NULL;
        CHECK(bl_model_load(&m, a, NULL) == BL_OK && bl_model_get_info(m)->n_vocab == 32000, "vocabulary size taken from the vocab file");
        bl_model_destroy(m);
    }
}

/* A model large enough to decode on two threads (the 134M shape in Q8_0,
   90 MB with this vocabulary) gives the same logits, bit for bit, on one
   thread. Two-thread decoding also runs single steps on one thread: the
   ninth step is always one, to time it (see bl__forward). */
static void test_threads_same_logits(void) {
    char a[400];
    const char *v[] = {"berlin-quantize", "-q", "--random", "134m", "--vocab", "models/stories260K.gguf", "", "Q8_0"};
    char *argv[8];
    bl_model *m = NULL;
    bl_ctx *c2 = NULL, *c1 = NULL;
    bl_ctx_desc d;
    int i, step, same = 1;
    int32_t tok = 1;
    snprintf(a, sizeof a, "%s/r134.gguf", tmpdir);
    for (i = 0; i < 8; i++) argv[i] = (char *)v[i];
    argv[6] = a;
    if (qz_main(8, argv) != 0 || bl_model_load(&m, a, NULL) != BL_OK) {
        CHECK(0, "random 134m Q8_0: %s", m ? bl_model_last_error(m) : "not written");
        bl_model_destroy(m);
        return;
    }
    memset(&d, 0, sizeof d);
    d.n_ctx = 64;
    d.n_threads = 2;
    CHECK(bl_ctx_create(&c2, m, &d) == BL_OK, "two-thread context");
    d.n_threads = 1;
    CHECK(bl_ctx_create(&c1, m, &d) == BL_OK, "one-thread context");
    for (step = 0; c1 && c2 && step < 24 && same; step++) {
        const float *l2, *l1;
        int best = 0;
        if (bl_ctx_decode(c2, &tok, 1, BL_LOGITS_LAST) != BL_OK || bl_ctx_decode(c1, &tok, 1, BL_LOGITS_LAST) != BL_OK) {
            CHECK(0, "decode step %d", step);
            break;
        }
        l2 = bl_ctx_logits(c2, -1);
        l1 = bl_ctx_logits(c1, -1);
        same = l1 && l2 && !memcmp(l1, l2, 512 * sizeof(float));
        CHECK(same, "step %d: the logits of two threads differ from one thread's", step);
        for (i = 1; l1 && i < 512; i++) if (l1[i] > l1[best]) best = i;
        tok = best;
    }
    CHECK(step == 24, "24 steps compared, %d done", step);
    bl_ctx_destroy(c2);
    bl_ctx_destroy(c1);
    bl_model_destroy(m);
    remove(a);
}

/* (d) berlin-bench -o json ------------------------------------------------- */

/* berlin-bench's output (at most 64 KiB) as parsed JSON; 0 if it ran and parsed. */
static int bench_json(const char *cmd, bl__json *j, char **out) {
    FILE *p = popen(cmd, "r");
    char *buf;
    size_t n = 0, cap = 1 << 16;
    int rc;
    *out = NULL;
    memset(j, 0, sizeof *j);
    if (!p) { CHECK(0, "popen %s", cmd); return -1; }
    buf = (char *)malloc(cap);
    while (buf && n + 1 < cap) {
        size_t k = fread(buf + n, 1, cap - 1 - n, p);
        if (!k) break;
        n += k;
    }
    rc = pclose(p);
    CHECK(rc == 0, "%s: exit status %d", cmd, rc);
    if (!buf) return -1;
    buf[n] = 0;
    *out = buf;
    CHECK(bl__json_parse(j, buf, n) == 0, "berlin-bench -o json is JSON: %.200s", buf);
    return rc == 0 && j->nodes ? 0 : -1;
}

/* Records in order: for each depth (-d 0,20) the pp test, the tg test and
   the pp+tg test (-pg 8,4), each with its n_prompt, n_gen and n_depth, and
   avg_ts the tokens of the timed part over its time (one run each). The
   share of the read bandwidth: for a model that fits the caches (read test
   once, after the reps) effective_gbps / mem_read_gbps; for one of more
   than 64 MiB (read tests between the reps) a positive share of its own. */
static void test_bench(void) {
    char *buf, cmd[1024], big[512];
    bl__json j;
    int i;
    if (bench_json("./build/berlin-bench -m models/stories260K.gguf -p 16 -n 8 -pg 8,4 -d 0,20 -r 1 -t 1 --bw-mib 64 -o json 2>/dev/null", &j, &buf)) {
        bl__json_free(&j);
        free(buf);
        return;
    }
    if (j.nodes && j.nodes[0].type == BL__J_ARR) {
        static const char *const fields[] = {"model_filename", "model_type", "model_size", "model_n_params", "n_threads", "n_prompt", "n_gen",
                                             "avg_ns", "stddev_ns", "avg_ts", "stddev_ts", "samples_ns", "samples_ts", "type_k", "type_v",
                                             "test_time", "weight_bytes_per_token", "effective_gbps", "mem_read_gbps"};
        static const int want[6][3] = {{16, 0, 0}, {0, 8, 0}, {8, 4, 0}, {16, 0, 20}, {0, 8, 20}, {8, 4, 20}}; /* n_prompt, n_gen, n_depth */
        CHECK(j.nodes[0].n == 6, "six records (pp, tg and pp+tg at two depths), got %d", j.nodes[0].n);
        for (i = 0; i < j.nodes[0].n && i < 6; i++) {
            int r = bl__json_at(&j, 0, i), f;
            double v = 0, ns = 0, np = -1, ng = -1, nd = -1;
            for (f = 0; f < (int)(sizeof fields / sizeof *fields); f++) CHECK(bl__json_get(&j, r, fields[f]) >= 0, "record %d lacks %s", i, fields[f]);
            CHECK(bl__json_num(&j, bl__json_get(&j, r, "avg_ts"), &v) && v > 0, "avg_ts %g", v);
            bl__json_num(&j, bl__json_get(&j, r, "avg_ns"), &ns);
            bl__json_num(&j, bl__json_get(&j, r, "n_prompt"), &np);
            bl__json_num(&j, bl__json_get(&j, r, "n_gen"), &ng);
            bl__json_num(&j, bl__json_get(&j, r, "n_depth"), &nd);
            CHECK(np == want[i][0] && ng == want[i][1] && nd == want[i][2], "record %d: n_prompt %g n_gen %g n_depth %g, want %d %d %d", i, np, ng, nd,
                  want[i][0], want[i][1], want[i][2]);
            CHECK(ns > 0 && fabs(v - (np + ng) * 1e9 / ns) <= 1e-3 * v, "record %d: avg_ts %g is not (n_prompt + n_gen) / avg_ns (%g ns)", i, v, ns);
            {
                double e = 0, m = 0, sh = -1;
                bl__json_num(&j, bl__json_get(&j, r, "effective_gbps"), &e);
                bl__json_num(&j, bl__json_get(&j, r, "mem_read_gbps"), &m);
                bl__json_num(&j, bl__json_get(&j, r, "mem_read_share"), &sh);
                CHECK(e > 0 && m > 0 && fabs(sh - e / m) <= 1e-3 * sh + 1e-4, "record %d: mem_read_share %g is not %g / %g", i, sh, e, m);
            }
        }
    } else CHECK(0, "JSON output is not an array");
    bl__json_free(&j);
    free(buf);
    snprintf(big, sizeof big, "%s/bench-135m.gguf", tmpdir);
    if (run_qz("-q", "--random", "smollm2-135m", "--vocab", "models/stories260K.gguf", big, "Q8_0", NULL) != 0) { CHECK(0, "random smollm2-135m Q8_0"); return; }
    snprintf(cmd, sizeof cmd, "./build/berlin-bench -m %s -p 0 -n 4 -r 3 -t 2 --bw-mib 64 -o json 2>/dev/null", big);
    if (!bench_json(cmd, &j, &buf)) {
        const int r = bl__json_at(&j, 0, 0);
        double wb = 0, m = 0, sh = -1;
        bl__json_num(&j, bl__json_get(&j, r, "weight_bytes_per_token"), &wb);
        bl__json_num(&j, bl__json_get(&j, r, "mem_read_gbps"), &m);
        bl__json_num(&j, bl__json_get(&j, r, "mem_read_share"), &sh);
        CHECK(wb > 64.0 * 1048576 && m > 0 && sh > 0 && sh < 10, "135M Q8_0: %g bytes a token, read %g GB/s, share %g", wb, m, sh);
    }
    bl__json_free(&j);
    free(buf);
    remove(big);
}

/* berlin-bench --kernels: a row of positive figures for every kernel and
   length (speed itself is not a test's business), from 8 MiB of memory to
   keep it short; the -t threads' share of the read loop consistent with
   the two figures it is made of (both printed to one decimal). */
static void test_bench_kernels(void) {
    FILE *p = popen("./build/berlin-bench --kernels --kernel-mib 8 -t 2 2>/dev/null", "r");
    char line[512];
    int rows = 0, bad = 0, rc;
    if (!p) { CHECK(0, "popen berlin-bench --kernels"); return; }
    while (fgets(line, sizeof line, p)) {
        char name[64];
        int K;
        double l2, mem, ns, mt, rd, sh;
        if (sscanf(line, "| %63[^|] | %d | %lf | %lf | %lf | %lf | %lf | %lf%% |", name, &K, &l2, &mem, &ns, &mt, &rd, &sh) != 8) continue;
        rows++;
        /* the share is the threads' figure over the read loop's, as printed */
        if (!(l2 > 0 && mem > 0 && ns > 0 && mt > 0 && rd > 0 && fabs(sh - 100.0 * mt / rd) <= 0.5 + 0.05 * 100.0 * mt / rd)) { bad++; printf("   %s", line); }
    }
    rc = pclose(p);
    CHECK(rc == 0, "berlin-bench --kernels exit status %d", rc);
    CHECK(rows == 27, "27 kernel rows (9 types x 3 lengths), got %d", rows);
    CHECK(bad == 0, "%d kernel rows without positive figures", bad);
}

int main(void) {
    char cmd[400];
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/berlin-qz-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmpdir)) { printf("cannot make a temp dir\n"); return 1; }
    test_half();
    test_blocks();
    test_golden();
    test_fixtures();
    test_l2c();
    test_random();
    test_threads_same_logits();
    test_bench();
    test_bench_kernels();
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) printf("could not remove %s\n", tmpdir);
    return tu_finish();
}
