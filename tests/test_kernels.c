/* test_kernels.c - every SIMD kernel against the plain C reference, on odd
   sizes and tails, at every level this CPU runs (scalar, avx2, avx512).
   Errors are measured relative to sum |w_i x_i|, which cancellation cannot
   make small. */
#define BERLIN_IMPLEMENTATION
#include "berlin.h"
#include "testutil.h"
#include <fenv.h>
#include <math.h>

static uint64_t rs = 0x9e3779b97f4a7c15ULL;
static uint32_t rnd(void) { rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17; return (uint32_t)(rs >> 16); }
static float frand(void) { return (float)(rnd() % 2000001) / 1000000.0f - 1.0f; }

/* The plain C activations with everything the one-token kernels read. */
static void ref_q8a(const float *x, int64_t K, uint8_t *out) {
    bl__q8a_ref(x, K, out);
    bl__q8a_permute(out, K);
}

static uint16_t f2h(float x) { /* normal range only */
    uint32_t u, s, m;
    int e;
    memcpy(&u, &x, 4);
    s = (u >> 16) & 0x8000;
    e = (int)((u >> 23) & 255) - 127 + 15;
    m = (u >> 13) & 1023;
    if (e <= 0) return (uint16_t)s;
    return (uint16_t)(s | ((uint32_t)e << 10) | m);
}

static const int qtypes[4] = {BL_TYPE_Q4_0, BL_TYPE_Q8_0, BL_TYPE_Q4_K, BL_TYPE_Q6_K};

/* n elements of `type`, random, with sane scales. */
static void fill_row(int type, uint8_t *p, int64_t n) {
    size_t bytes = bl__row_bytes(type, n), i;
    int bs = bl__types[type].bytes;
    for (i = 0; i < bytes; i++) p[i] = (uint8_t)rnd();
    if (type == BL_TYPE_F32) for (i = 0; i < (size_t)n; i++) { float v = frand(); memcpy(p + 4 * i, &v, 4); }
    else if (type == BL_TYPE_F16) for (i = 0; i < (size_t)n; i++) { uint16_t h = f2h(frand()); memcpy(p + 2 * i, &h, 2); }
    else if (type == BL_TYPE_BF16) for (i = 0; i < (size_t)n; i++) { uint16_t h = bl__f32_to_bf16(frand()); memcpy(p + 2 * i, &h, 2); }
    else
        for (i = 0; i < bytes; i += (size_t)bs) {
            uint16_t d = f2h(0.01f + 0.02f * (float)(rnd() % 100) / 100.0f), dm = f2h(0.005f);
            if (type == BL_TYPE_Q4_0 || type == BL_TYPE_Q8_0) memcpy(p + i, &d, 2);
            else if (type == BL_TYPE_Q4_K) { memcpy(p + i, &d, 2); memcpy(p + i + 2, &dm, 2); }
            else memcpy(p + i + 208, &d, 2);
        }
}

/* sum |w x| over the dequantized row, the scale errors are measured against */
static double abs_dot(int type, const uint8_t *w, const float *x, int64_t n, double *exact) {
    float *f = (float *)malloc((size_t)n * sizeof(float));
    double s = 0, e = 0;
    int64_t i;
    bl__dequant_row(type, w, f, n);
    for (i = 0; i < n; i++) { s += fabs((double)f[i] * x[i]); e += (double)f[i] * x[i]; }
    free(f);
    if (exact) *exact = e;
    return s > 0 ? s : 1;
}

static void test_levels(void) {
    bl__kern k;
    int lv;
    for (lv = 0; lv <= BL__SIMD_AVX512; lv++) {
        int got = bl__kern_init(&k, lv);
        CHECK(got <= lv, "level %d gave %d", lv, got);
        printf("level %d -> %s\n", lv, k.name);
    }
    CHECK(bl_type_activation(BL_TYPE_F32) == BL_TYPE_F32 && bl_type_activation(BL_TYPE_F16) == BL_TYPE_F32, "float types are exact");
    CHECK(bl_type_activation(BL_TYPE_BF16) == BL_TYPE_BF16, "bf16 rounds to bf16");
    CHECK(bl_type_activation(BL_TYPE_Q4_0) == BL_TYPE_Q8_0 && bl_type_activation(BL_TYPE_Q6_K) == BL_TYPE_Q8_0, "quants use q8");
    {   /* the word-wise Q4_K scale unpacking agrees with the byte-wise one */
        int i, j, bad = 0;
        for (i = 0; i < 1000; i++) {
            uint8_t q[12], sc[8], mn[8];
            for (j = 0; j < 12; j++) q[j] = (uint8_t)rnd();
            bl__k4_scales8(q, sc, mn);
            for (j = 0; j < 8; j++) {
                int s1, m1;
                bl__k4_scale_min(j, q, &s1, &m1);
                bad += s1 != sc[j] || m1 != mn[j];
            }
        }
        CHECK(bad == 0, "bl__k4_scales8: %d mismatches", bad);
    }
    CHECK(bl_type_activation(3) == -1 && bl_type_activation(-1) == -1 && bl_type_activation(99) == -1, "unknown types");
}

/* Activation conversion: identical to the reference. */
static void test_act(const bl__kern *k) {
    static const int64_t Ks[] = {32, 64, 96, 256, 800, 2048};
    int ki;
    for (ki = 0; ki < 6; ki++) {
        int64_t K = Ks[ki], i;
        float *x = (float *)malloc((size_t)K * sizeof(float));
        size_t st = bl__q8a_stride(K);
        uint8_t *a = (uint8_t *)calloc(st, 1), *b = (uint8_t *)calloc(st, 1);
        uint16_t *h1 = (uint16_t *)calloc((size_t)K, 2), *h2 = (uint16_t *)calloc((size_t)K, 2);
        bl__q8a qa, qb;
        int bad = 0;
        for (i = 0; i < K; i++) x[i] = frand() * (i % 97 == 0 ? 10.0f : 1.0f);
        if (K == 96) for (i = 32; i < 64; i++) x[i] = 0; /* an all-zero block */
        ref_q8a(x, K, a);
        bl__quant_act(k, x, K, b, 1);
        qa = bl__q8a_at(a, K);
        qb = bl__q8a_at(b, K);
        for (i = 0; i < K; i++) bad += qa.q[i] != qb.q[i];
        for (i = 0; i < K / 32; i++) bad += qa.d[i] != qb.d[i] || fabsf(qa.s32[i] - qb.s32[i]) > 1e-5f * (fabsf(qa.s32[i]) + 1);
        for (i = 0; i < K / 16; i++) bad += fabsf(qa.s16[i] - qb.s16[i]) > 1e-5f * (fabsf(qa.s16[i]) + 1);
        for (i = 0; i < K / 32; i++) { /* the integer sums: the block's codes added up */
            int j, sum = 0;
            for (j = 0; j < 32; j++) sum += qb.q[32 * i + j];
            bad += qa.i32[i] != qb.i32[i] || qb.i32[i] != sum;
        }
        bad += memcmp(qa.qp, qb.qp, (size_t)K) != 0 || memcmp(qa.qg, qb.qg, (size_t)K) != 0;
        CHECK(bad == 0, "%s q8a K=%lld: %d mismatches", k->name, (long long)K, bad);
        memset(b, 0, st); /* the form tiles read: the same codes, scales and sums */
        bl__quant_act(k, x, K, b, 0);
        CHECK(!memcmp(b, a, (size_t)K) && !memcmp(b + 3 * K, a + 3 * K, st - 3 * (size_t)K), "%s q8a K=%lld for tiles: not the codes, scales and sums", k->name,
              (long long)K);
        bl__bf16a_ref(x, K - 3, h1);
        k->bf16a(x, K - 3, h2);
        CHECK(memcmp(h1, h2, (size_t)(K - 3) * 2) == 0, "%s bf16a n=%lld", k->name, (long long)(K - 3));
        free(x); free(a); free(b); free(h1); free(h2);
    }
}

/* Quantized dot products: level vs reference (same math), and reference vs
   the exact float dot (activation rounding only). */
static void test_vdot(const bl__kern *k) {
    static const int64_t Ks[] = {256, 512, 768, 1024, 2048, 2816, 5632};
    int ti, ki, rep;
    for (ti = 0; ti < 4; ti++) {
        int type = qtypes[ti];
        double worst = 0, worst_exact = 0;
        for (ki = 0; ki < 7; ki++)
            for (rep = 0; rep < 3; rep++) {
                int64_t K = Ks[ki], i;
                uint8_t *w = (uint8_t *)malloc(bl__row_bytes(type, K)), *a = (uint8_t *)malloc(bl__q8a_stride(K));
                float *x = (float *)malloc((size_t)K * sizeof(float));
                double ex, sc, r, s;
                for (i = 0; i < K; i++) x[i] = frand();
                fill_row(type, w, K);
                ref_q8a(x, K, a);
                sc = abs_dot(type, w, x, K, &ex);
                r = k->vdot[ti](w, bl__q8a_at(a, K), K);
                s = k == NULL ? 0 : (ti == 0 ? bl__vdot_q4_0_ref : ti == 1 ? bl__vdot_q8_0_ref : ti == 2 ? bl__vdot_q4_k_ref : bl__vdot_q6_k_ref)(w, bl__q8a_at(a, K), K);
                if (fabs(r - s) / sc > worst) worst = fabs(r - s) / sc;
                if (fabs(s - ex) / sc > worst_exact) worst_exact = fabs(s - ex) / sc;
                free(w); free(a); free(x);
            }
        CHECK(worst < 2e-6, "%s vdot %s: rel err %.3g vs reference", k->name, bl__type_any_name(type), worst);
        CHECK(worst_exact < 1e-2, "%s vdot %s: rel err %.3g vs exact", k->name, bl__type_any_name(type), worst_exact);
    }
}

/* vrows (several rows in one call) gives each row vdot's bits, in every
   layout, for 1 to 5 rows. */
static void test_vrows(const bl__kern *k) {
    static const int64_t Ks[3] = {256, 768, 2816};
    static const int base[6] = {BL_TYPE_Q4_0, BL_TYPE_Q8_0, BL_TYPE_Q4_K, BL_TYPE_Q6_K, BL_TYPE_Q4_0, BL_TYPE_Q4_K};
    int slot, ki, nr, i, bad = 0, calls = 0;
    for (slot = 0; slot < 6; slot++)
        for (ki = 0; ki < 3; ki++) {
            const int64_t K = Ks[ki];
            const size_t rb = bl__row_bytes(base[slot], K);
            uint8_t *w = (uint8_t *)malloc(rb * 5), *wr = (uint8_t *)malloc(rb * 5), *a = (uint8_t *)malloc(bl__q8a_stride(K));
            float *x = (float *)malloc((size_t)K * sizeof(float)), y[5];
            bl__q8a qa;
            for (i = 0; i < K; i++) x[i] = frand();
            for (i = 0; i < 5; i++) {
                fill_row(base[slot], w + (size_t)i * rb, K);
                if (slot == 4) bl__q4_0r_from_q4_0(w + (size_t)i * rb, wr + (size_t)i * rb, K);
                else if (slot == 5) bl__q4_kr_from_q4_k(w + (size_t)i * rb, wr + (size_t)i * rb, K);
                else memcpy(wr + (size_t)i * rb, w + (size_t)i * rb, rb);
            }
            bl__quant_act(k, x, K, a, 1);
            qa = bl__q8a_at(a, K);
            for (nr = 1; nr <= 5 && k->vrows[slot]; nr++) {
                k->vrows[slot](wr, rb, nr, &qa, K, y);
                calls++;
                for (i = 0; i < nr; i++) bad += y[i] != k->vdot[slot](wr + (size_t)i * rb, qa, K);
            }
            free(w); free(wr); free(a); free(x);
        }
    CHECK(bad == 0, "%s vrows: %d rows differ from vdot", k->name, bad);
    CHECK(calls == 6 * 3 * 5, "%s has vrows for every quantized layout (%d calls)", k->name, calls);
}

/* Float-weight GEMM: every nr, nt up to 4, odd lengths. */
static void test_gemm_f(const bl__kern *k) {
    static const int ftypes[3] = {BL_TYPE_F32, BL_TYPE_F16, BL_TYPE_BF16};
    static const int64_t Ks[] = {1, 7, 8, 15, 16, 17, 31, 33, 64, 100, 172, 1000, 2049};
    int ti, ki, nr, nt;
    for (ti = 0; ti < 3; ti++) {
        int type = ftypes[ti];
        double worst = 0, worst_exact = 0;
        for (ki = 0; ki < 13; ki++) {
            int64_t K = Ks[ki], i;
            size_t rb = bl__row_bytes(type, K), xs = type == BL_TYPE_BF16 ? bl__bf16a_stride(K) : (size_t)K * 4;
            uint8_t *w = (uint8_t *)malloc(rb * 4), *xa = (uint8_t *)calloc(xs * 4, 1);
            float *x = (float *)malloc((size_t)K * 4 * sizeof(float)), y1[16], y2[16];
            for (i = 0; i < 4; i++) fill_row(type, w + (size_t)i * rb, K);
            for (i = 0; i < 4 * K; i++) x[i] = frand();
            for (i = 0; i < 4; i++) {
                if (type == BL_TYPE_BF16) bl__bf16a_ref(x + i * K, K, (uint16_t *)(void *)(xa + (size_t)i * xs));
                else memcpy(xa + (size_t)i * xs, x + i * K, (size_t)K * 4);
            }
            for (nr = 1; nr <= 4; nr++)
                for (nt = 1; nt <= 4; nt++) {
                    int r, t;
                    for (i = 0; i < 16; i++) y1[i] = y2[i] = -12345.0f;
                    bl__gemm_f_ref(type, w, rb, nr, xa, xs, nt, K, y1, 4);
                    (type == BL_TYPE_BF16 ? k->gemm_bf16 : k->gemm_f)(type, w, rb, nr, xa, xs, nt, K, y2, 4);
                    for (i = 0; i < 16; i++)
                        if ((i % 4 >= nr || i / 4 >= nt) && y2[i] != -12345.0f) { worst = 1; printf("wrote outside nr=%d nt=%d\n", nr, nt); }
                    for (t = 0; t < nt; t++)
                        for (r = 0; r < nr; r++) {
                            double ex, sc = abs_dot(type, w + (size_t)r * rb, x + t * K, K, &ex);
                            double e1 = fabs(y1[t * 4 + r] - y2[t * 4 + r]) / sc, e2 = fabs(y1[t * 4 + r] - ex) / sc;
                            if (e1 > worst) worst = e1;
                            if (e2 > worst_exact) worst_exact = e2;
                        }
                }
            free(w); free(xa); free(x);
        }
        CHECK(worst < 2e-6, "%s gemm %s: rel err %.3g vs reference", k->name, bl__type_any_name(type), worst);
        CHECK(worst_exact < (type == BL_TYPE_BF16 ? 8e-3 : 2e-6), "%s gemm %s: rel err %.3g vs exact", k->name, bl__type_any_name(type), worst_exact);
    }
}

/* One token by 1..8 rows (gemv_f, where a level has it): the same bits as
   gemm_f of that level on a batch (a token must not change with the batch it is in),
   with exactly nr rows allocated so ASan sees any read past them. */
static void test_gemv_f(const bl__kern *k) {
    static const int ftypes[2] = {BL_TYPE_F32, BL_TYPE_F16};
    static const int64_t Ks[] = {1, 7, 8, 15, 16, 17, 31, 33, 64, 100, 172, 1000, 2049};
    int ti, ki, nr;
    if (!k->gemv_f) return;
    for (ti = 0; ti < 2; ti++) {
        int type = ftypes[ti];
        double worst = 0;
        for (ki = 0; ki < 13; ki++)
            for (nr = 1; nr <= 8; nr++) {
                int64_t K = Ks[ki], i;
                size_t rb = bl__row_bytes(type, K);
                uint8_t *w = (uint8_t *)malloc(rb * (size_t)nr);
                float *x = (float *)malloc((size_t)K * sizeof(float)), y1[9], y2[9];
                for (i = 0; i < nr; i++) fill_row(type, w + (size_t)i * rb, K);
                for (i = 0; i < K; i++) x[i] = frand();
                for (i = 0; i < 9; i++) y1[i] = y2[i] = -12345.0f;
                for (i = 0; i < nr; i++) { /* the token as one of a batch of two (nt = 1 reads long rows one at a time instead) */
                    float yy[2];
                    k->gemm_f(type, w + (size_t)i * rb, rb, 1, (const uint8_t *)x, 0, 2, K, yy, 1);
                    y1[i] = yy[0];
                }
                k->gemv_f(type, w, rb, nr, (const uint8_t *)x, (size_t)K * 4, 1, K, y2, 1);
                for (i = nr; i < 9; i++)
                    if (y2[i] != -12345.0f) { worst = 1; printf("gemv wrote outside nr=%d\n", nr); }
                if (memcmp(y1, y2, (size_t)nr * sizeof(float))) { worst = 1; printf("gemv K=%d nr=%d differs from gemm\n", (int)K, nr); }
                free(w); free(x);
            }
        CHECK(worst == 0, "%s gemv %s: differs from gemm_f", k->name, bl__type_any_name(type));
    }
}

/* Tiles: pack (partial tiles too) and multiply by 1..9 tokens; compare with
   the one-row reference dot. */
static void test_tiles(const bl__kern *k) {
    static const int nrs[] = {1, 5, 16, 17, 32};
    static const int nts[] = {1, 3, 4, 5, 9};
    int ti, ni, ti2;
    for (ti = 0; ti < 4; ti++) {
        int type = qtypes[ti];
        int64_t K = ti < 2 ? (ti ? 96 : 96 * 4) : 768, i;
        size_t rb = bl__row_bytes(type, K), as = bl__q8a_stride(K);
        uint8_t *w = (uint8_t *)malloc(rb * 32), *a = (uint8_t *)malloc(as * 9);
        uint8_t *tile = (uint8_t *)malloc(bl__tile_bytes(K) + 16 * (size_t)K + 64);
        uint8_t *tile2 = (uint8_t *)malloc(bl__tile_bytes(K) + 16 * (size_t)K + 64);
        float *x = (float *)malloc((size_t)K * sizeof(float)), y[9 * 40];
        double worst = 0, worst_ref = 0;
        for (i = 0; i < 32; i++) fill_row(type, w + (size_t)i * rb, K);
        for (i = 0; i < 9; i++) {
            int64_t j;
            for (j = 0; j < K; j++) x[j] = frand();
            ref_q8a(x, K, a + (size_t)i * as);
        }
        for (ni = 0; ni < 5; ni++)
            for (ti2 = 0; ti2 < 5; ti2++) {
                int nr = nrs[ni], nt = nts[ti2], r, t;
                bl__tile_pack(type, w, rb, nr, K, tile2, tile2 + bl__tile_bytes(K));
                k->tile_pack(type, w, rb, nr, K, tile, tile + bl__tile_bytes(K));
                CHECK(memcmp(tile, tile2, (size_t)K * 32 + (size_t)(K / bl__tile_sub(type)) * 32 * 8) == 0, "%s tile_pack %s nr=%d equals the reference", k->name, bl__type_any_name(type), nr);
                for (i = 0; i < 9 * 40; i++) y[i] = -12345.0f;
                k->tile_gemm(type, tile, K, a, as, nt, y, 40, nr);
                for (t = 0; t < 9; t++)
                    for (r = 0; r < 40; r++) {
                        if (t < nt && r < nr) {
                            bl__q8a qa = bl__q8a_at(a + (size_t)t * as, K);
                            double s = (ti == 0 ? bl__vdot_q4_0_ref : ti == 1 ? bl__vdot_q8_0_ref : ti == 2 ? bl__vdot_q4_k_ref : bl__vdot_q6_k_ref)(w + (size_t)r * rb, qa, K);
                            float fx[768];
                            double sc;
                            int64_t j;
                            for (j = 0; j < K; j++) fx[j] = qa.d[j / 32] * (float)qa.q[j];
                            sc = abs_dot(type, w + (size_t)r * rb, fx, K, NULL);
                            if (fabs(y[t * 40 + r] - s) / sc > worst) worst = fabs(y[t * 40 + r] - s) / sc;
                        } else if (y[t * 40 + r] != -12345.0f) worst = 1;
                    }
                /* the plain C tile kernel is a reference too */
                for (i = 0; i < 9 * 40; i++) y[i] = 0;
                bl__tile_gemm_ref(type, tile, K, a, as, nt, y, 40, nr);
                for (t = 0; t < nt; t++)
                    for (r = 0; r < nr; r++) {
                        double s = (ti == 0 ? bl__vdot_q4_0_ref : ti == 1 ? bl__vdot_q8_0_ref : ti == 2 ? bl__vdot_q4_k_ref : bl__vdot_q6_k_ref)(w + (size_t)r * rb, bl__q8a_at(a + (size_t)t * as, K), K);
                        double sc = fabs(s) + 1;
                        if (fabs(y[t * 40 + r] - s) / sc > worst_ref) worst_ref = fabs(y[t * 40 + r] - s) / sc;
                    }
            }
        CHECK(worst < 2e-6, "%s tile %s: rel err %.3g", k->name, bl__type_any_name(type), worst);
        CHECK(worst_ref < 1e-4, "reference tile %s: rel err %.3g", bl__type_any_name(type), worst_ref);
        free(w); free(a); free(tile); free(tile2); free(x);
    }
}

/* Q4_0R and Q4_KR (the decoding layouts the loader makes from Q4_0 and
   Q4_K): Q4_KR's blocks rebuild the Q4_K blocks byte for byte; either gives
   the same values and the same reference sums, bit for bit, as its GGUF
   type; the level's kernel on lengths that are and are not whole groups of
   eight blocks; the tile packer gives the same tile from either layout. */
static void test_rearranged(const bl__kern *k, int rtype) {
    static const int64_t K40[] = {32, 96, 224, 256, 288, 800, 896, 2048, 2080, 5632}, KK[] = {256, 512, 768, 2048, 5632, 0, 0, 0, 0, 0};
    const int base = rtype == BL__TYPE_Q4_0R ? BL_TYPE_Q4_0 : BL_TYPE_Q4_K;
    const int64_t *Ks = rtype == BL__TYPE_Q4_0R ? K40 : KK;
    const char *rn = rtype == BL__TYPE_Q4_0R ? "Q4_0R" : "Q4_KR", *bn = bl__type_any_name(base);
    double worst = 0;
    int ki, rep, same_blk = 1, same_deq = 1, same_ref = 1, same_tile = 1;
    for (ki = 0; ki < 10 && Ks[ki]; ki++)
        for (rep = 0; rep < 3; rep++) {
            int64_t K = Ks[ki], i;
            size_t rb = bl__row_bytes(base, K);
            uint8_t *w = (uint8_t *)malloc(rb * 5), *wr = (uint8_t *)malloc(rb * 5), *a = (uint8_t *)malloc(bl__q8a_stride(K)), blk[144];
            uint8_t *t1 = (uint8_t *)malloc(bl__tile_bytes(K) + 16 * (size_t)K + 64), *t2 = (uint8_t *)malloc(bl__tile_bytes(K) + 16 * (size_t)K + 64);
            float *x = (float *)malloc((size_t)K * sizeof(float)), *f1 = (float *)malloc((size_t)K * sizeof(float)), *f2 = (float *)malloc((size_t)K * sizeof(float));
            double r, s, sc;
            for (i = 0; i < K; i++) x[i] = frand();
            for (i = 0; i < 5; i++) {
                fill_row(base, w + (size_t)i * rb, K);
                if (base == BL_TYPE_Q4_0) bl__q4_0r_from_q4_0(w + (size_t)i * rb, wr + (size_t)i * rb, K);
                else bl__q4_kr_from_q4_k(w + (size_t)i * rb, wr + (size_t)i * rb, K);
            }
            for (i = 0; base == BL_TYPE_Q4_K && i < K / 256; i++) {
                bl__q4_kr_block(wr, K, i, blk);
                if (memcmp(blk, w + 144 * i, 144)) same_blk = 0;
            }
            bl__quant_act(k, x, K, a, 1);
            bl__dequant_row(base, w, f1, K);
            bl__dequant_row(rtype, wr, f2, K);
            if (memcmp(f1, f2, (size_t)K * sizeof(float))) same_deq = 0;
            s = bl__vdot_q4_0r_ref(wr, bl__q8a_at(a, K), K);
            if (base == BL_TYPE_Q4_K) s = bl__vdot_q4_kr_ref(wr, bl__q8a_at(a, K), K);
            if (s != (base == BL_TYPE_Q4_0 ? bl__vdot_q4_0_ref : bl__vdot_q4_k_ref)(w, bl__q8a_at(a, K), K)) same_ref = 0;
            r = k->vdot[bl__qslot(rtype)](wr, bl__q8a_at(a, K), K);
            sc = abs_dot(base, w, x, K, NULL);
            if (fabs(r - s) / sc > worst) worst = fabs(r - s) / sc;
            k->tile_pack(base, w, rb, 5, K, t1, t1 + bl__tile_bytes(K));
            k->tile_pack(rtype, wr, rb, 5, K, t2, t2 + bl__tile_bytes(K));
            if (memcmp(t1, t2, (size_t)K * 32 + (size_t)(K / 32) * 32 * 8)) same_tile = 0;
            free(w); free(wr); free(a); free(t1); free(t2); free(x); free(f1); free(f2);
        }
    if (base == BL_TYPE_Q4_K) CHECK(same_blk, "%s blocks rebuild the %s blocks byte for byte", rn, bn);
    CHECK(same_deq, "%s dequantizes to the same values as %s", rn, bn);
    CHECK(same_ref, "%s reference dot equals %s's, bit for bit", rn, bn);
    CHECK(worst < 2e-6, "%s vdot %s: rel err %.3g vs reference", k->name, rn, worst);
    CHECK(same_tile, "%s tile_pack: %s and %s give the same tile", k->name, rn, bn);
}


static void test_misc(const bl__kern *k) {
    static const int ns[] = {1, 3, 8, 15, 16, 17, 33, 64, 100, 513};
    int ni;
    for (ni = 0; ni < 10; ni++) {
        int n = ns[ni], i;
        float *a = (float *)malloc((size_t)n * 4), *b = (float *)malloc((size_t)n * 4), *c1 = (float *)malloc((size_t)n * 4), *c2 = (float *)malloc((size_t)n * 4);
        double sc = 0, e = 0;
        for (i = 0; i < n; i++) { a[i] = frand() * 8; b[i] = frand() * 8; sc += fabs((double)a[i] * b[i]); }
        CHECK(fabs(k->dot(a, b, n) - bl__dot_f32(a, b, n)) <= 1e-6 * (sc + 1), "%s dot n=%d", k->name, n);
        memcpy(c1, b, (size_t)n * 4); memcpy(c2, b, (size_t)n * 4);
        bl__axpy_ref(c1, 0.37f, a, n);
        k->axpy(c2, 0.37f, a, n);
        for (i = 0; i < n; i++) if (fabsf(c1[i] - c2[i]) > 1e-6f * (fabsf(c1[i]) + 1)) e = 1;
        CHECK(e == 0, "%s axpy n=%d", k->name, n);
        memcpy(c1, a, (size_t)n * 4); memcpy(c2, a, (size_t)n * 4);
        bl__softmax_ref(c1, n);
        k->softmax(c2, n);
        for (i = 0, e = 0; i < n; i++) if (fabs(c1[i] - c2[i]) > e) e = fabs(c1[i] - c2[i]);
        CHECK(e < 1e-6, "%s softmax n=%d: err %.3g", k->name, n, e);
        memcpy(c1, a, (size_t)n * 4); memcpy(c2, a, (size_t)n * 4);
        for (i = 0; i < n; i++) { c1[i] *= 3; c2[i] *= 3; }
        bl__swiglu_ref(c1, b, n);
        k->swiglu(c2, b, n);
        for (i = 0, e = 0; i < n; i++) if (fabs(c1[i] - c2[i]) / (fabs(c1[i]) + 1e-3) > e) e = fabs(c1[i] - c2[i]) / (fabs(c1[i]) + 1e-3);
        CHECK(e < 1e-5, "%s swiglu n=%d: rel err %.3g", k->name, n, e);
        bl__rmsnorm_ref(c1, a, b, n, 1e-5f);
        k->rmsnorm(c2, a, b, n, 1e-5f);
        for (i = 0, e = 0; i < n; i++) if (fabs(c1[i] - c2[i]) / (fabs(c1[i]) + 1e-3) > e) e = fabs(c1[i] - c2[i]) / (fabs(c1[i]) + 1e-3);
        CHECK(e < 1e-6, "%s rmsnorm n=%d: rel err %.3g", k->name, n, e);
        free(a); free(b); free(c1); free(c2);
    }
    {   /* RoPE: both pairings, head sizes with and without whole vectors; the same bits */
        static const int hds[] = {2, 6, 8, 16, 18, 34, 64, 80, 96, 128};
        float v1[128], v2[128], cs[64], sn[64];
        int hi, neox, i, same = 1;
        for (hi = 0; hi < 10; hi++)
            for (neox = 0; neox < 2; neox++) {
                int hd = hds[hi];
                for (i = 0; i < hd; i++) v1[i] = v2[i] = frand() * 4;
                for (i = 0; i < hd / 2; i++) { cs[i] = cosf(0.3f * (float)i + 0.1f); sn[i] = sinf(0.3f * (float)i + 0.1f); }
                bl__rope_ref(v1, cs, sn, hd, neox);
                k->rope(v2, cs, sn, hd, neox);
                if (memcmp(v1, v2, (size_t)hd * sizeof(float))) { same = 0; printf("rope hd=%d neox=%d differs\n", hd, neox); }
            }
        CHECK(same, "%s rope: the same bits as the reference", k->name);
    }
    {   /* extreme inputs to the vector exp: no inf/nan, monotone tails */
        float v[32], u[32];
        int i;
        for (i = 0; i < 32; i++) { v[i] = (float)(i - 16) * 12.0f; u[i] = 1; }
        k->swiglu(v, u, 32);
        for (i = 0; i < 32; i++) CHECK(v[i] == v[i] && fabsf(v[i]) < 1e30f, "%s swiglu finite at %d", k->name, i);
    }
}

/* Attention of one head: every level against the reference, odd lengths,
   keys in tiles and values in rows (bl__k_at). The positions past n_att in
   the last tile hold random numbers, or NaN in the second pass: a level that
   reads them gives NaN. With an F16 cache, each level gives the bits it
   gives on a float cache holding the same (F16) values. */
static void test_attn(const bl__kern *k) {
    static const int hds[] = {8, 16, 32, 64, 128, 256, 6, 20, 72};
    static const int ns[] = {1, 2, 15, 16, 17, 33, 63, 64, 65, 100};
    int hi, ni, pass;
    for (pass = 0; pass < 2; pass++)
        for (hi = 0; hi < 9; hi++)
            for (ni = 0; ni < 10; ni++) {
                int hd = hds[hi], n = ns[ni], i, t, d;
                size_t kvn = (size_t)hd * bl__kv_len(n);
                float *q = (float *)malloc((size_t)hd * 4), *kv = (float *)malloc(kvn * 4), *vv = (float *)malloc(kvn * 4);
                float *s = (float *)malloc((size_t)n * 4), *o1 = (float *)malloc((size_t)hd * 4), *o2 = (float *)malloc((size_t)hd * 4);
                float *o3 = (float *)malloc((size_t)hd * 4);
                uint16_t *kh = (uint16_t *)malloc(kvn * 2), *vh = (uint16_t *)malloc(kvn * 2);
                double e = 0;
                for (i = 0; i < hd; i++) q[i] = frand();
                for (i = 0; i < (int)kvn; i++) { kv[i] = frand(); vv[i] = frand(); }
                if (pass)
                    for (t = n; t < (int)bl__kv_len(n); t++)
                        for (d = 0; d < hd; d++) kv[bl__k_at(hd, t, d)] = vv[(size_t)t * (size_t)hd + (size_t)d] = NAN;
                bl__attn_ref(q, kv, vv, n, hd, 0.3f, s, o1, 0);
                k->attn(q, kv, vv, n, hd, 0.3f, s, o2, 0);
                for (i = 0; i < hd; i++) {
                    if (fabs(o1[i] - o2[i]) > e) e = fabs(o1[i] - o2[i]);
                    if (o2[i] != o2[i]) e = INFINITY;
                }
                CHECK(e < 1e-5, "%s attn hd=%d n=%d pass %d: err %.3g", k->name, hd, n, pass, e);
                for (i = 0; i < (int)kvn; i++) { /* the F16 cache and a float cache of its values */
                    kh[i] = bl__f32_to_f16(kv[i]);
                    vh[i] = bl__f32_to_f16(vv[i]);
                    kv[i] = bl__f16_to_f32(kh[i]);
                    vv[i] = bl__f16_to_f32(vh[i]);
                }
                k->attn(q, kv, vv, n, hd, 0.3f, s, o2, 0);
                k->attn(q, kh, vh, n, hd, 0.3f, s, o3, 1);
                CHECK(!memcmp(o2, o3, (size_t)hd * 4), "%s attn on an F16 cache hd=%d n=%d pass %d: not the float cache's bits", k->name, hd, n, pass);
                free(q); free(kv); free(vv); free(s); free(o1); free(o2); free(o3); free(kh); free(vh);
            }
}

/* attn4 at every level: each of up to four queries gets the bits attn
   gives it alone, for query heads sharing a KV head (dn 0) and for
   consecutive positions (dn 1), float and F16 caches; what lies past the
   longest span is NaN, so reading it shows. */
static void test_attn4(const bl__kern *k) {
    static const int hds[] = {64, 128, 32, 6, 20, 72};
    static const int n0s[] = {1, 2, 15, 16, 17, 63, 64, 100};
    int hi, ni, nq, dn, f16, bad = 0, runs = 0;
    for (hi = 0; hi < 6; hi++)
        for (ni = 0; ni < 8; ni++)
            for (nq = 1; nq <= BL__ATTN_Q; nq++)
                for (dn = 0; dn < 2; dn++)
                    for (f16 = 0; f16 < 2; f16++) {
                        const int hd = hds[hi], n0 = n0s[ni], nmax = n0 + (nq - 1) * dn, cap = nmax + 3;
                        const size_t kvn = (size_t)hd * bl__kv_len(nmax), es = f16 ? 2 : 4;
                        uint8_t *kc = (uint8_t *)malloc(kvn * es), *vc = (uint8_t *)malloc(kvn * es);
                        float *q = (float *)malloc((size_t)nq * (size_t)hd * 4), *o = (float *)malloc((size_t)nq * (size_t)hd * 4);
                        float *o1 = (float *)malloc((size_t)hd * 4), *s = (float *)malloc((size_t)BL__ATTN_Q * (size_t)cap * 4);
                        size_t i;
                        int t, d, b;
                        for (i = 0; i < kvn; i++) {
                            const float a = frand(), v = frand();
                            if (f16) { ((uint16_t *)kc)[i] = bl__f32_to_f16(a); ((uint16_t *)vc)[i] = bl__f32_to_f16(v); }
                            else { ((float *)kc)[i] = a; ((float *)vc)[i] = v; }
                        }
                        for (t = nmax; t < (int)bl__kv_len(nmax); t++)
                            for (d = 0; d < hd; d++) {
                                const size_t ki = bl__k_at(hd, t, d), vi = (size_t)t * (size_t)hd + (size_t)d;
                                if (f16) { ((uint16_t *)kc)[ki] = 0x7e00; ((uint16_t *)vc)[vi] = 0x7e00; }
                                else { ((float *)kc)[ki] = NAN; ((float *)vc)[vi] = NAN; }
                            }
                        for (i = 0; i < (size_t)nq * (size_t)hd; i++) q[i] = frand() * 2;
                        k->attn4(q, (size_t)hd, nq, n0, dn, hd, 0.3f, kc, vc, s, (size_t)cap, o, (size_t)hd, f16);
                        for (b = 0; b < nq; b++) {
                            k->attn(q + (size_t)b * (size_t)hd, kc, vc, n0 + b * dn, hd, 0.3f, s, o1, f16);
                            if (memcmp(o1, o + (size_t)b * (size_t)hd, (size_t)hd * 4)) {
                                if (bad++ < 5) printf("   %s attn4 hd=%d n0=%d nq=%d dn=%d f16=%d: query %d differs from attn\n", k->name, hd, n0, nq, dn, f16, b);
                            }
                        }
                        runs++;
                        free(kc); free(vc); free(q); free(o); free(o1); free(s);
                    }
    CHECK(bad == 0, "%s attn4: %d of %d calls not the bits of attn", k->name, bad, runs);
    CHECK(runs == 6 * 8 * BL__ATTN_Q * 4, "%s attn4: %d calls", k->name, runs);
}

/* f16row: bl__f32_to_f16's bits at every level, on random bit patterns
   (NaNs, infinities, subnormals among them), edge values and every length
   up to 40 (the vector part and its tail). */
static void test_f16row(const bl__kern *k) {
    static const uint32_t edge[] = {0, 0x80000000u, 0x33000000u, 0x33000001u, 0x387fe000u, 0x387ff000u, 0x38800000u, 0x477fefffu, 0x477ff000u,
                                    0x7f800000u, 0xff800000u, 0x7fc00000u, 0x7f800001u, 0xffc12345u, 0x3f800000u, 0x3f801000u, 0x3f803000u};
    float x[40];
    uint16_t a[40], b[40];
    uint32_t st = 12345;
    int n, i, rep, bad = 0;
    for (rep = 1; rep < 2000; rep++) {
        n = rep < 40 ? rep : 40;
        for (i = 0; i < n; i++) {
            uint32_t u;
            st = st * 1664525u + 1013904223u;
            u = rep % 3 ? st : edge[st % (sizeof edge / sizeof *edge)] ^ (st & 0x80000000u);
            memcpy(&x[i], &u, 4);
            b[i] = bl__f32_to_f16(x[i]);
        }
        k->f16row(x, a, n);
        if (memcmp(a, b, (size_t)n * 2)) bad++;
    }
    CHECK(bad == 0, "%s f16row: %d rows differ from bl__f32_to_f16", k->name, bad);
}

/* bl__f32_to_f16 gives the nearest F16, ties to even: checked against its
   neighbours on random bit patterns and on the edges (zeros and what rounds
   to them, subnormals, the largest finite value, overflow, NaN); and it
   gives the same bits whatever the host's rounding mode. */
static void test_f16_round(void) {
    static const float edge[] = {0.0f, -0.0f, 1.0f, 65504.0f, 65519.0f, 65520.0f, 1e9f, 6.1035156e-05f, 6.0e-08f, 2.9e-08f, 3.0e-08f,
                                 2.98023224e-08f /* 2^-25, a tie with 0 */, 8.94069672e-08f /* 3 x 2^-25, a tie between 1 and 2 */,
                                 -2.9e-08f, 1e-30f, 0.33333334f};
    static const int modes[] = { /* the modes this platform has (C99 7.6p5) */
#ifdef FE_UPWARD
        FE_UPWARD,
#endif
#ifdef FE_DOWNWARD
        FE_DOWNWARD,
#endif
#ifdef FE_TOWARDZERO
        FE_TOWARDZERO,
#endif
        -1};
    /* called through a volatile pointer: without -frounding-math the compiler
       may take the conversion as a pure function and reuse h across fesetround */
    static uint16_t (*volatile cvt)(float) = bl__f32_to_f16;
    const int n_edge = (int)(sizeof edge / sizeof *edge);
    int i, k, bad = 0, bad_mode = 0, nan_ok;
    uint32_t x = 12345;
    for (i = 0; i < 200000 + n_edge; i++) {
        float f, g;
        uint16_t h;
        double d, dn;
        if (i < n_edge) f = edge[i];
        else {
            uint32_t u;
            x = x * 1664525u + 1013904223u;
            u = (x & 0x807fffffu) | (uint32_t)(95 + (x >> 8) % 55) << 23; /* 2^-32 to 2^22: under F16's subnormals to past its largest */
            memcpy(&f, &u, 4);
        }
        h = bl__f32_to_f16(f);
        for (k = 0; modes[k] != -1 && (i < n_edge || i % 16 == 0); k++) {
            fesetround(modes[k]);
            if (cvt(f) != h) bad_mode++;
            fesetround(FE_TONEAREST);
        }
        g = bl__f16_to_f32(h);
        if (fabsf(f) >= 65520.0f) { if (!isinf(g) || (g < 0) != (f < 0)) bad++; continue; }
        if ((h >> 15) != (f < 0 || (f == 0 && signbit(f)))) { bad++; continue; } /* the sign, zeros included */
        d = fabs((double)g - (double)f);
        dn = fabs((double)bl__f16_to_f32((uint16_t)(h + 1)) - (double)f); /* one step away from zero */
        if (h & 0x7fff) { /* one step towards zero */
            double dl = fabs((double)bl__f16_to_f32((uint16_t)(h - 1)) - (double)f);
            if (dl < dn) dn = dl;
        }
        if ((h & 0x7fff) != 0x7bff && d > dn) bad++;              /* a neighbour is nearer */
        if ((h & 0x7fff) != 0x7bff && d == dn && (h & 1)) bad++;  /* a tie kept the odd one */
    }
    CHECK(bad == 0, "f32 -> f16: %d values not rounded to the nearest (ties to even)", bad);
    CHECK(bad_mode == 0, "f32 -> f16: %d values rounded otherwise under another rounding mode", bad_mode);
    nan_ok = isnan(bl__f16_to_f32(bl__f32_to_f16(NAN)));
    CHECK(nan_ok, "f32 -> f16 keeps NaN");
}


int main(void) {
    int lv;
    (void)tu_shared;
    (void)tu_read;
    test_levels();
    test_f16_round();
    for (lv = 0; lv <= BL__SIMD_AVX512; lv++) {
        bl__kern k;
        if (bl__kern_init(&k, lv) != lv) { printf("level %d not supported here: skipped\n", lv); continue; }
        test_act(&k);
        test_vdot(&k);
        test_vrows(&k);
        test_gemm_f(&k);
        test_gemv_f(&k);
        test_tiles(&k);
        test_rearranged(&k, BL__TYPE_Q4_0R);
        test_rearranged(&k, BL__TYPE_Q4_KR);
        test_misc(&k);
        test_attn(&k);
        test_attn4(&k);
        test_f16row(&k);
    }
    return tu_finish();
}
