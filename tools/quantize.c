/* berlin-quantize - convert any model berlin.h reads into a GGUF v3 file.

   usage: berlin-quantize [options] INPUT OUTPUT.gguf TYPE
          berlin-quantize [options] --random SHAPE [--vocab VOCAB.gguf] OUTPUT.gguf TYPE

   INPUT is anything bl_model_load opens (GGUF, safetensors file or folder,
   Mistral consolidated folder, llama2.c .bin). TYPE is one of F32, F16,
   BF16, Q8_0, Q4_0, Q6_K, Q4_K_M (and Q4_K, which like llama-quantize means
   Q4_K_M). Without --pure the quantized types follow llama.cpp's mixes:
   the output projection gets Q6_K, and Q4_K_M gives attn_v and ffn_down of
   some layers Q6_K. 1D tensors (norms, biases, rope_freqs) stay F32.

   Why it is written this way: the file is streamed. The header (metadata
   and tensor infos with their offsets) is computed first from the shapes
   and types alone, then each tensor is converted a chunk of rows at a time
   (rows in parallel with OpenMP) and appended with a buffered writer, so a
   big model is never held in memory twice: the source stays mmapped.

   Hugging Face checkpoints store q/k rows in rotate-half order; GGUF arch
   llama wants interleaved pairs, so those rows are permuted per head as
   llama.cpp's converter does (arch qwen2 keeps NEOX order and is not
   permuted). Llama 3 rope scaling becomes the rope_freqs.weight tensor.

   The quantizers below follow the GGUF block layouts (the structs in
   berlin.h's >>kern). Q8_0 and Q4_0 use the same arithmetic as ggml's
   reference rounding, and Q4_K and Q6_K repeat ggml's reference scale
   searches, so the bytes of all of them match llama-quantize's (without an
   importance matrix).

   Compile the functions without main (for tests) with QZ_NO_MAIN. */
#define _POSIX_C_SOURCE 200809L
#define BERLIN_IMPLEMENTATION
#include "berlin.h"
#include <time.h>
#include <unistd.h>

/* >>qz  QUANTIZERS --------------------------------------------------------- */

uint16_t qz_f32_to_f16(float f) {
    uint32_t x, sign, r, h, rem;
    memcpy(&x, &f, 4);
    sign = (x >> 16) & 0x8000u;
    x &= 0x7fffffffu;
    if (x >= 0x7f800000u) return (uint16_t)(sign | 0x7c00u | (x > 0x7f800000u ? 0x200u : 0u)); /* inf, nan */
    if (x < 0x38800000u) { /* below the smallest normal half: subnormal or zero */
        uint32_t e = x >> 23, m, s, q, half;
        if (x < 0x33000000u) return (uint16_t)sign; /* below 2^-25: rounds to zero */
        m = (x & 0x7fffffu) | 0x800000u;
        s = 126 - e; /* value = m * 2^(e-150); half subnormal unit 2^-24 */
        q = m >> s;
        rem = m & ((1u << s) - 1);
        half = 1u << (s - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        return (uint16_t)(sign | q);
    }
    r = x - (112u << 23); /* rebias 127 -> 15 */
    h = r >> 13;
    rem = r & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++; /* a carry into the exponent is right, up to inf */
    if (h > 0x7c00u) h = 0x7c00u;
    return (uint16_t)(sign | h);
}

uint16_t qz_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); /* keep nan a quiet nan */
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
}

/* Q8_0: d = max|x| / 127, q = round(x / d). */
static void qz_q8_0(const float *x, bl__block_q8_0 *y) {
    float amax = 0, d, id;
    int j;
    for (j = 0; j < 32; j++) if (fabsf(x[j]) > amax) amax = fabsf(x[j]);
    d = amax / 127.0f;
    id = d != 0 ? 1.0f / d : 0.0f;
    y->d = qz_f32_to_f16(d);
    for (j = 0; j < 32; j++) y->qs[j] = (int8_t)roundf(x[j] * id);
}

/* Q4_0: the element of largest magnitude maps to -8 exactly; q = x/d + 8 in
   0..15; byte j holds element j (low nibble) and element j+16 (high). */
static void qz_q4_0(const float *x, bl__block_q4_0 *y) {
    float amax = 0, mx = 0, d, id;
    int j;
    for (j = 0; j < 32; j++) if (fabsf(x[j]) > amax) { amax = fabsf(x[j]); mx = x[j]; }
    d = mx / -8.0f;
    id = d != 0 ? 1.0f / d : 0.0f;
    y->d = qz_f32_to_f16(d);
    for (j = 0; j < 16; j++) {
        int a = (int)(int8_t)(x[j] * id + 8.5f), b = (int)(int8_t)(x[j + 16] * id + 8.5f);
        if (a > 15) a = 15;
        if (b > 15) b = 15;
        y->qs[j] = (uint8_t)(a | (b << 4));
    }
}

static int qz_clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* Round to nearest (ties to even) for |v| < 2^22: adding 1.5*2^23 leaves
   the integer in the low mantissa bits. Much faster than lrintf's libcall
   in the scale searches' inner loops. */
static int qz_nearest(float v) {
    float t = (v < -4e6f ? -4e6f : v > 4e6f ? 4e6f : v) + 12582912.0f;
    int32_t i;
    memcpy(&i, &t, 4);
    return (i & 0x007fffff) - 0x00400000;
}

/* The K-quants below do what ggml's reference quantizers do (the path
   llama-quantize takes when it has no importance matrix), one float
   operation at a time in the same order, so the bytes match. Keep every sum
   and product as written: reassociating, or letting the compiler fuse a
   multiply and an add (-ffast-math, -ffp-contract=fast with FMA), changes
   the roundings and with them the chosen scales. */

/* Fit 32 elements x ~ s*q + lo with q in [0, nmax] and lo <= 0,
   minimizing the error weighted by w. The first guess spans
   [min(x,0), max(x)]; then 21 inverse scales (nmax-1 .. nmax+1 in steps
   of 0.1) / span are tried: round with each, solve the weighted least
   squares for (s, lo) given those q (lo clipped to 0), and keep whichever
   has the smallest error. q gets the kept rounding, *m_out = -lo. */
static float qz_fit_affine(const float *x, const float *w, int nmax, uint8_t *q, float *m_out) {
    float lo = x[0], hi = x[0], sw = w[0], swx = w[0] * x[0], is, s, best = 0;
    uint8_t t[32];
    int i, k;
    for (i = 1; i < 32; i++) {
        if (x[i] < lo) lo = x[i];
        if (x[i] > hi) hi = x[i];
        sw += w[i];
        swx += w[i] * x[i];
    }
    if (lo > 0) lo = 0;
    if (hi == lo) {
        memset(q, 0, 32);
        *m_out = -lo;
        return 0;
    }
    is = (float)nmax / (hi - lo);
    s = 1 / is;
    for (i = 0; i < 32; i++) {
        float e;
        q[i] = (uint8_t)qz_clampi(qz_nearest(is * (x[i] - lo)), 0, nmax);
        e = s * (float)q[i] + lo - x[i];
        best += w[i] * (e * e);
    }
    for (k = 0; k <= 20; k++) {
        float sl = 0, sll = 0, sxl = 0, det, ts, tlo, err = 0;
        is = (-1.0f + 0.1f * (float)k + (float)nmax) / (hi - lo);
        for (i = 0; i < 32; i++) {
            int l = qz_clampi(qz_nearest(is * (x[i] - lo)), 0, nmax);
            t[i] = (uint8_t)l;
            sl += w[i] * (float)l;
            sll += w[i] * (float)l * (float)l;
            sxl += w[i] * (float)l * x[i];
        }
        det = sw * sll - sl * sl;
        if (!(det > 0)) continue;
        ts = (sw * sxl - swx * sl) / det;
        tlo = (sll * swx - sl * sxl) / det;
        if (tlo > 0) {
            tlo = 0;
            ts = sxl / sll;
        }
        for (i = 0; i < 32; i++) {
            float e = ts * (float)t[i] + tlo - x[i];
            err += w[i] * (e * e);
        }
        if (err < best) {
            memcpy(q, t, 32);
            best = err;
            s = ts;
            lo = tlo;
        }
    }
    *m_out = -lo;
    return s;
}

/* Q4_K: 8 sub-blocks of 32, each fit affinely (weights rms(x) + |x|); the
   sub-block scales and mins become 6-bit multiples of the largest of each
   (d, dmin), and x is requantized against those. A sub-block whose 6-bit
   scale is 0 keeps the q of its own fit. */
static void qz_q4_k(const float *x, bl__block_q4_k *y) {
    float sc[8], mn[8], w[32], msc = 0, mmn = 0, isc, imn, d, dmin;
    uint8_t q[256];
    int L[8], M[8], j, l;
    for (j = 0; j < 8; j++) {
        const float *xs = x + 32 * j;
        float ss = 0, rms;
        for (l = 0; l < 32; l++) ss += xs[l] * xs[l];
        rms = sqrtf(ss / 32);
        for (l = 0; l < 32; l++) w[l] = rms + fabsf(xs[l]);
        sc[j] = qz_fit_affine(xs, w, 15, q + 32 * j, &mn[j]);
        if (sc[j] > msc) msc = sc[j];
        if (mn[j] > mmn) mmn = mn[j];
    }
    isc = msc > 0 ? 63.0f / msc : 0;
    imn = mmn > 0 ? 63.0f / mmn : 0;
    memset(y->scales, 0, sizeof y->scales);
    for (j = 0; j < 8; j++) {
        /* through uint8_t as ggml does: a (never expected) negative wraps, then clips to 63 */
        L[j] = (uint8_t)qz_nearest(isc * sc[j]);
        M[j] = (uint8_t)qz_nearest(imn * mn[j]);
        if (L[j] > 63) L[j] = 63;
        if (M[j] > 63) M[j] = 63;
        if (j < 4) {
            y->scales[j] |= (uint8_t)L[j];
            y->scales[j + 4] |= (uint8_t)M[j];
        } else { /* low 4 bits in bytes 8..11, high 2 bits on top of bytes j-4 (scale) and j (min) */
            y->scales[j + 4] = (uint8_t)((L[j] & 15) | ((M[j] & 15) << 4));
            y->scales[j - 4] |= (uint8_t)((L[j] >> 4) << 6);
            y->scales[j] |= (uint8_t)((M[j] >> 4) << 6);
        }
    }
    y->d = qz_f32_to_f16(msc / 63.0f);
    y->dmin = qz_f32_to_f16(mmn / 63.0f);
    d = bl__f16_to_f32(y->d);
    dmin = bl__f16_to_f32(y->dmin);
    for (j = 0; j < 8; j++) {
        float s = d * (float)L[j], m = dmin * (float)M[j];
        if (s == 0) continue;
        for (l = 0; l < 32; l++) q[32 * j + l] = (uint8_t)qz_clampi(qz_nearest((x[32 * j + l] + m) / s), 0, 15);
    }
    for (j = 0; j < 4; j++) /* 32 bytes per pair of sub-blocks: the first in the low nibbles */
        for (l = 0; l < 32; l++) y->qs[32 * j + l] = (uint8_t)(q[64 * j + l] | (q[64 * j + 32 + l] << 4));
}

/* One trial of qz_fit_sym: round is*x into [-nmax, nmax-1] (t gets
   q + nmax) and form the x^2-weighted sums sum(w x q) and sum(w q q). */
static void qz_sym_try(const float *x, int nmax, float is, uint8_t *t, float *sxq, float *sqq) {
    float a = 0, b = 0;
    int i;
    for (i = 0; i < 16; i++) {
        int l = qz_clampi(qz_nearest(is * x[i]), -nmax, nmax - 1);
        float w = x[i] * x[i];
        t[i] = (uint8_t)(l + nmax);
        a += w * x[i] * (float)l;
        b += w * (float)l * (float)l;
    }
    *sxq = a;
    *sqq = b;
}

/* Fit 16 elements x ~ s*q with q in [-nmax, nmax-1], weighting each by
   x^2. The first try puts the largest-magnitude element on -nmax, 18 more
   put it on -(nmax + 0.1k) for k = +-1..+-9; a try replaces the best so far
   when its sxq^2/sqq (the error its least-squares s removes) is larger.
   q gets the kept try's values plus nmax; the kept s is returned. */
static float qz_fit_sym(const float *x, int nmax, uint8_t *q) {
    float amax = 0, mx = 0, s, best, sxq, sqq;
    uint8_t t[16];
    int i, k;
    for (i = 0; i < 16; i++)
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            mx = x[i];
        }
    if (amax < 1e-15f) {
        memset(q, 0, 16);
        return 0;
    }
    qz_sym_try(x, nmax, (float)-nmax / mx, q, &sxq, &sqq);
    s = sqq != 0 ? sxq / sqq : 0;
    best = s * sxq;
    for (k = -9; k <= 9; k++) {
        if (!k) continue;
        qz_sym_try(x, nmax, -((float)nmax + 0.1f * (float)k) / mx, t, &sxq, &sqq);
        if (sqq > 0 && sxq * sxq > best * sqq) {
            memcpy(q, t, 16);
            s = sxq / sqq;
            best = s * sxq;
        }
    }
    return s;
}

/* Q6_K: 16 sub-blocks of 16, each fit symmetrically; the sub-block scale
   of largest magnitude maps to -128, the others to 8-bit multiples of
   d = its scale / -128, and x is requantized against d * scale. A
   sub-block whose 8-bit scale is 0 keeps the q of its own fit. */
static void qz_q6_k(const float *x, bl__block_q6_k *y) {
    float sc[16], msc = 0, amax = 0, is, d;
    uint8_t q[256];
    int j, l;
    for (j = 0; j < 16; j++) {
        sc[j] = qz_fit_sym(x + 16 * j, 32, q + 16 * j);
        if (fabsf(sc[j]) > amax) {
            amax = fabsf(sc[j]);
            msc = sc[j];
        }
    }
    if (amax < 1e-15f) {
        memset(y, 0, sizeof *y);
        return;
    }
    is = -128.0f / msc;
    y->d = qz_f32_to_f16(1 / is);
    for (j = 0; j < 16; j++) y->scales[j] = (int8_t)qz_clampi(qz_nearest(is * sc[j]), -128, 127);
    d = bl__f16_to_f32(y->d);
    for (j = 0; j < 16; j++) {
        float ds = d * (float)y->scales[j];
        if (ds == 0) continue;
        for (l = 0; l < 16; l++) q[16 * j + l] = (uint8_t)(qz_clampi(qz_nearest(x[16 * j + l] / ds), -32, 31) + 32);
    }
    /* each half of 128: ql byte l holds elements l (low) and l+64 (high),
       byte l+32 elements l+32 and l+96; qh byte l the top 2 bits of all four */
    for (j = 0; j < 2; j++) {
        const uint8_t *p = q + 128 * j;
        uint8_t *ql = y->ql + 64 * j, *qh = y->qh + 32 * j;
        for (l = 0; l < 32; l++) {
            ql[l] = (uint8_t)((p[l] & 15) | ((p[l + 64] & 15) << 4));
            ql[l + 32] = (uint8_t)((p[l + 32] & 15) | ((p[l + 96] & 15) << 4));
            qh[l] = (uint8_t)((p[l] >> 4) | ((p[l + 32] >> 4) << 2) | ((p[l + 64] >> 4) << 4) | ((p[l + 96] >> 4) << 6));
        }
    }
}

/* Convert n floats (whole blocks) to type; returns the bytes written. */
size_t qz_quantize_row(int type, const float *x, int64_t n, uint8_t *out) {
    int64_t i;
    switch (type) {
    case BL_TYPE_F32: memcpy(out, x, (size_t)n * 4); break;
    case BL_TYPE_F16:
        for (i = 0; i < n; i++) { uint16_t h = qz_f32_to_f16(x[i]); memcpy(out + 2 * i, &h, 2); }
        break;
    case BL_TYPE_BF16:
        for (i = 0; i < n; i++) { uint16_t h = qz_f32_to_bf16(x[i]); memcpy(out + 2 * i, &h, 2); }
        break;
    case BL_TYPE_Q8_0: for (i = 0; i < n / 32; i++) qz_q8_0(x + 32 * i, (bl__block_q8_0 *)(void *)(out + 34 * i)); break;
    case BL_TYPE_Q4_0: for (i = 0; i < n / 32; i++) qz_q4_0(x + 32 * i, (bl__block_q4_0 *)(void *)(out + 18 * i)); break;
    case BL_TYPE_Q4_K: for (i = 0; i < n / 256; i++) qz_q4_k(x + 256 * i, (bl__block_q4_k *)(void *)(out + 144 * i)); break;
    case BL_TYPE_Q6_K: for (i = 0; i < n / 256; i++) qz_q6_k(x + 256 * i, (bl__block_q6_k *)(void *)(out + 210 * i)); break;
    default: return 0;
    }
    return bl__row_bytes(type, n);
}

/* >>plan  WHAT TO WRITE ------------------------------------------------------
   One plan entry per output tensor: where its rows come from (a source
   tensor, possibly with q/k rows permuted, or generated), and its type. */

enum { QZ_SRC, QZ_RANDN, QZ_ONES, QZ_VEC };

typedef struct qz_tensor {
    char name[96];
    int n_dims;
    int64_t ne0, ne1;     /* ne0 = row length, ne1 = rows (1 for vectors) */
    int type;             /* output bl_type */
    int gen;              /* QZ_SRC, QZ_RANDN, QZ_ONES, QZ_VEC */
    const bl__tensor *src;
    const float *vec;     /* QZ_VEC values (ne0) */
    int perm_heads;       /* > 0: rotate-half -> interleaved within each of this many heads */
    uint64_t offset;      /* in the data section */
    size_t nbytes;
} qz_tensor;

typedef struct qz_hp {
    char arch[32], name[128];
    int dim, n_layer, n_head, n_head_kv, head_dim, n_ff, n_vocab, n_ctx;
    double eps, theta;
    int scaling;          /* 0 none, 1 linear, 2 llama3 */
    double factor, low_ff, high_ff, orig_ctx;
    int tied, qkv_bias;
} qz_hp;

typedef struct qz_shape {
    const char *name, *arch;
    int dim, n_layer, n_head, n_head_kv, head_dim, n_ff, n_vocab, n_ctx;
    double eps, theta;
    int tied, qkv_bias, llama3;
    double factor, low_ff, high_ff, orig_ctx;
    const char *note;
} qz_shape;

/* Real model shapes for --random (weights random, sizes real). */
static const qz_shape qz_shapes[] = {
    {"smollm2-135m", "llama", 576, 30, 9, 3, 64, 1536, 49152, 8192, 1e-5, 100000, 1, 0, 0, 0, 0, 0, 0, "HuggingFaceTB/SmolLM2-135M"},
    {"qwen2.5-0.5b", "qwen2", 896, 24, 14, 2, 64, 4864, 151936, 32768, 1e-6, 1000000, 1, 1, 0, 0, 0, 0, 0, "Qwen/Qwen2.5-0.5B"},
    {"llama-3.2-1b", "llama", 2048, 16, 32, 8, 64, 8192, 128256, 131072, 1e-5, 500000, 1, 0, 1, 32, 1, 4, 8192, "meta-llama/Llama-3.2-1B"},
    {"tinyllama-1.1b", "llama", 2048, 22, 32, 4, 64, 5632, 32000, 2048, 1e-5, 10000, 0, 0, 0, 0, 0, 0, 0, "TinyLlama-1.1B"},
    {"ministral-3b", "llama", 3072, 26, 32, 8, 128, 9216, 131072, 262144, 1e-5, 1000000, 1, 0, 0, 0, 0, 0, 0,
     "Ministral-3-3B text model, config from a third-party copy (unverified); its yarn rope scaling is not written"},
    {"134m", "llama", 768, 12, 12, 12, 64, 2048, 32000, 2048, 1e-5, 10000, 0, 0, 0, 0, 0, 0, 0, "benchmark shape"},
    {"tiny", "llama", 256, 2, 8, 2, 32, 512, 512, 2048, 1e-5, 10000, 0, 0, 0, 0, 0, 0, 0, "test shape, K-quant compatible"},
};

enum { QZ_MIX_NONE = 0, QZ_MIX_Q4_K_M = 1 };

typedef struct qz_ftype { const char *name; int type; int mix; int file_type; } qz_ftype;

static const qz_ftype qz_ftypes[] = {
    {"F32", BL_TYPE_F32, 0, 0},   {"F16", BL_TYPE_F16, 0, 1},  {"BF16", BL_TYPE_BF16, 0, 32},
    {"Q8_0", BL_TYPE_Q8_0, 0, 7}, {"Q4_0", BL_TYPE_Q4_0, 0, 2}, {"Q6_K", BL_TYPE_Q6_K, 0, 18},
    {"Q4_K_M", BL_TYPE_Q4_K, QZ_MIX_Q4_K_M, 15}, {"Q4_K", BL_TYPE_Q4_K, QZ_MIX_Q4_K_M, 15},
};

static const qz_ftype *qz_ftype_find(const char *s) {
    size_t i;
    char up[16];
    for (i = 0; s[i] && i + 1 < sizeof up; i++) up[i] = (char)(s[i] >= 'a' && s[i] <= 'z' ? s[i] - 32 : s[i]);
    up[i] = 0;
    for (i = 0; i < sizeof qz_ftypes / sizeof qz_ftypes[0]; i++)
        if (!strcmp(qz_ftypes[i].name, up)) return &qz_ftypes[i];
    return NULL;
}

static int qz_is_quant(int t) { return t == BL_TYPE_Q8_0 || t == BL_TYPE_Q4_0 || t == BL_TYPE_Q4_K || t == BL_TYPE_Q6_K; }

/* llama.cpp's choice of layers that get more bits in the _M mixes. */
static int qz_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

/* A type the row length allows: K-quants need 256-element rows, the
   others 32; fall back as llama.cpp does (to the nearest type we write). */
static int qz_fit_type(int t, int64_t ne0) {
    if ((t == BL_TYPE_Q4_K || t == BL_TYPE_Q6_K) && ne0 % 256) t = t == BL_TYPE_Q6_K ? BL_TYPE_Q8_0 : BL_TYPE_Q4_0;
    if ((t == BL_TYPE_Q4_0 || t == BL_TYPE_Q8_0) && ne0 % 32) t = BL_TYPE_F16;
    return t;
}

typedef struct qz_opts {
    const qz_ftype *ft;
    int out_type, embd_type; /* -1: by the mix */
    int pure, threads, quiet;
    uint64_t seed;
} qz_opts;

static int qz_pick_type(const qz_opts *o, const char *name, int n_dims, int64_t ne0, int has_output, int n_layer) {
    int t = o->ft->type, layer = -1;
    const char *kind = name;
    if (n_dims < 2) return BL_TYPE_F32;
    if (!strncmp(name, "blk.", 4)) {
        layer = atoi(name + 4);
        kind = strchr(name + 4, '.');
        kind = kind ? kind + 1 : name;
    }
    if (!strcmp(name, "output.weight") && o->out_type >= 0) return qz_fit_type(o->out_type, ne0);
    if (!strcmp(name, "token_embd.weight") && o->embd_type >= 0) return qz_fit_type(o->embd_type, ne0);
    if (!o->pure && qz_is_quant(t)) {
        if (!strcmp(name, "output.weight") || (!has_output && !strcmp(name, "token_embd.weight"))) {
            if (o->out_type >= 0) t = o->out_type;
            else if (ne0 % 256) t = BL_TYPE_Q8_0;
            else if (t != BL_TYPE_Q8_0) t = BL_TYPE_Q6_K;
        } else if (o->ft->mix == QZ_MIX_Q4_K_M && layer >= 0 &&
                   (!strcmp(kind, "attn_v.weight") || !strcmp(kind, "ffn_down.weight")) && qz_more_bits(layer, n_layer)) {
            t = BL_TYPE_Q6_K;
        }
    }
    return qz_fit_type(t, ne0);
}

/* Per-pair frequency divisors for llama 3 scaling, as llama.cpp's converter
   computes them (in float32). */
static void qz_llama3_factors(const qz_hp *hp, float *out) {
    int i, n = hp->head_dim / 2;
    float lo_wl = (float)(hp->orig_ctx / hp->low_ff), hi_wl = (float)(hp->orig_ctx / hp->high_ff);
    for (i = 0; i < n; i++) {
        float e = (float)(2 * i) / (float)hp->head_dim;
        float freq = 1.0f / powf((float)hp->theta, e);
        float wl = (float)(2.0 * 3.14159265358979323846) / freq;
        if (wl < hi_wl) out[i] = 1.0f;
        else if (wl > lo_wl) out[i] = (float)hp->factor;
        else {
            float sm = ((float)hp->orig_ctx / wl - (float)hp->low_ff) / (float)(hp->high_ff - hp->low_ff);
            out[i] = 1.0f / ((1.0f - sm) / (float)hp->factor + sm);
        }
    }
}

/* >>gw  GGUF WRITER ----------------------------------------------------------
   The header is assembled in memory (metadata, tokenizer arrays, tensor
   infos); the data follows through stdio's buffer. */

typedef struct qz_buf { uint8_t *p; size_t n, cap; int oom; } qz_buf;

static void qz_put(qz_buf *b, const void *v, size_t n) {
    if (b->oom) return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        uint8_t *p;
        while (cap < b->n + n) cap *= 2;
        p = (uint8_t *)realloc(b->p, cap);
        if (!p) { b->oom = 1; return; }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, v, n);
    b->n += n;
}
static void qz_u32(qz_buf *b, uint32_t v) { qz_put(b, &v, 4); }
static void qz_u64(qz_buf *b, uint64_t v) { qz_put(b, &v, 8); }
static void qz_str(qz_buf *b, const char *s, size_t n) { qz_u64(b, n); qz_put(b, s, n); }
static void qz_key(qz_buf *b, const char *k, int type) { qz_str(b, k, strlen(k)); qz_u32(b, (uint32_t)type); }

typedef struct qz_meta { qz_buf b; uint64_t n_kv; } qz_meta;

static void qz_kv_u32(qz_meta *m, const char *k, uint32_t v) { qz_key(&m->b, k, BL__G_U32); qz_u32(&m->b, v); m->n_kv++; }
static void qz_kv_f32(qz_meta *m, const char *k, float v) { qz_key(&m->b, k, BL__G_F32); qz_put(&m->b, &v, 4); m->n_kv++; }
static void qz_kv_bool(qz_meta *m, const char *k, int v) { uint8_t x = (uint8_t)(v != 0); qz_key(&m->b, k, BL__G_BOOL); qz_put(&m->b, &x, 1); m->n_kv++; }
static void qz_kv_str(qz_meta *m, const char *k, const char *v) { qz_key(&m->b, k, BL__G_STR); qz_str(&m->b, v, strlen(v)); m->n_kv++; }
static void qz_kv_arch_u32(qz_meta *m, const qz_hp *hp, const char *k, uint32_t v) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", hp->arch, k);
    qz_kv_u32(m, key, v);
}
static void qz_kv_arch_f32(qz_meta *m, const qz_hp *hp, const char *k, float v) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", hp->arch, k);
    qz_kv_f32(m, key, v);
}

/* Copy every tokenizer.* key of a GGUF verbatim (tokens, scores, types,
   merges, special ids, chat template...). Returns the tokens' count. */
static int64_t qz_copy_tokenizer_keys(qz_meta *m, const bl__gguf *g, const bl__file *f) {
    int64_t i, n_tok = 0;
    for (i = 0; i < g->n_kv; i++) {
        const bl__gkv *kv = &g->kv[i];
        bl__rd r;
        const uint8_t *start;
        if (kv->klen < 10 || memcmp(kv->key, "tokenizer.", 10) != 0) continue;
        start = kv->type == BL__G_ARR ? kv->val - 12 : kv->val; /* arrays: element type and count come first */
        r.p = start;
        r.end = f->data + f->size;
        if (!bl__rd_skip(&r, kv->type, 0)) continue;
        qz_str(&m->b, kv->key, kv->klen);
        qz_u32(&m->b, (uint32_t)kv->type);
        qz_put(&m->b, start, (size_t)(r.p - start));
        m->n_kv++;
        if (kv->klen == 21 && !memcmp(kv->key, "tokenizer.ggml.tokens", 21)) n_tok = (int64_t)kv->n;
    }
    return n_tok;
}

/* Tokenizer keys from a loaded bl_tokenizer (llama2.c tokenizer.bin...). */
static void qz_write_tokenizer_struct(qz_meta *m, const bl_tokenizer *t) {
    int i;
    qz_kv_str(m, "tokenizer.ggml.model", "llama");
    qz_key(&m->b, "tokenizer.ggml.tokens", BL__G_ARR);
    qz_u32(&m->b, BL__G_STR);
    qz_u64(&m->b, (uint64_t)t->n_vocab);
    for (i = 0; i < t->n_vocab; i++) {
        size_t len;
        const char *p = bl__tok_text(t, i, &len);
        qz_str(&m->b, p, len);
    }
    m->n_kv++;
    qz_key(&m->b, "tokenizer.ggml.scores", BL__G_ARR);
    qz_u32(&m->b, BL__G_F32);
    qz_u64(&m->b, (uint64_t)t->n_vocab);
    qz_put(&m->b, t->scores, (size_t)t->n_vocab * 4);
    m->n_kv++;
    qz_key(&m->b, "tokenizer.ggml.token_type", BL__G_ARR);
    qz_u32(&m->b, BL__G_I32);
    qz_u64(&m->b, (uint64_t)t->n_vocab);
    for (i = 0; i < t->n_vocab; i++) { int32_t v = t->types[i] ? t->types[i] : BL__TT_NORMAL; qz_put(&m->b, &v, 4); }
    m->n_kv++;
    if (t->bos >= 0) qz_kv_u32(m, "tokenizer.ggml.bos_token_id", (uint32_t)t->bos);
    if (t->eos >= 0) qz_kv_u32(m, "tokenizer.ggml.eos_token_id", (uint32_t)t->eos);
    if (t->unk >= 0) qz_kv_u32(m, "tokenizer.ggml.unknown_token_id", (uint32_t)t->unk);
    qz_kv_bool(m, "tokenizer.ggml.add_bos_token", t->add_bos);
    qz_kv_bool(m, "tokenizer.ggml.add_space_prefix", t->add_space_prefix);
}

/* >>run  CONVERSION --------------------------------------------------------- */

static double qz_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t qz_mix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* Normal-ish values (sum of four uniforms) with standard deviation sd. */
static void qz_randn(float *x, int64_t n, uint64_t seed, float sd) {
    uint64_t s = qz_mix64(seed) | 1;
    float k = sd / (1.1547005f * 2147483648.0f); /* std of a sum of 4 U(-1,1) is 2/sqrt(3) */
    int64_t i;
    for (i = 0; i < n; i++) {
        int64_t acc = 0;
        int j;
        for (j = 0; j < 2; j++) {
            s ^= s >> 12; s ^= s << 25; s ^= s >> 27;
            {
                uint64_t r = s * 0x2545F4914F6CDD1Dull;
                acc += (int64_t)(int32_t)(uint32_t)r + (int64_t)(int32_t)(uint32_t)(r >> 32);
            }
        }
        x[i] = (float)acc * k;
    }
}

/* Source row r of t (after the q/k permutation) as floats. */
static void qz_fetch_row(const qz_tensor *t, int64_t r, float *dst, float *tmp, uint64_t seed, int index) {
    if (t->gen == QZ_RANDN) { qz_randn(dst, t->ne0, seed ^ ((uint64_t)index << 40) ^ (uint64_t)r, 0.02f); return; }
    if (t->gen == QZ_ONES) { int64_t i; for (i = 0; i < t->ne0; i++) dst[i] = 1.0f; return; }
    if (t->gen == QZ_VEC) { memcpy(dst, t->vec, (size_t)t->ne0 * 4); return; }
    if (t->n_dims < 2) {
        bl__dequant_row(t->src->type, t->src->data, t->perm_heads ? tmp : dst, t->ne0);
        if (t->perm_heads) {
            int64_t hd = t->ne0 / t->perm_heads, i;
            for (i = 0; i < t->ne0; i++) {
                int64_t h = i / hd, k = i % hd;
                dst[i] = tmp[h * hd + (k & 1) * (hd / 2) + k / 2];
            }
        }
        return;
    }
    {
        int64_t sr = r;
        size_t rb = bl__row_bytes(t->src->type, t->ne0);
        if (t->perm_heads) { /* output row 2j+s of a head is source row s*hd/2 + j */
            int64_t hd = t->ne1 / t->perm_heads, h = r / hd, k = r % hd;
            sr = h * hd + (k & 1) * (hd / 2) + k / 2;
        }
        bl__dequant_row(t->src->type, t->src->data + (size_t)sr * rb, dst, t->ne0);
    }
}

typedef struct qz_job {
    qz_hp hp;
    qz_tensor *t;
    int n_t, cap_t;
    bl_model *m;
    bl__file vocab_file;
    bl__gguf vocab_g;
    int has_vocab_g;
    const bl_tokenizer *tok; /* when the tokenizer comes from a struct */
    bl_tokenizer *own_tok;   /* a llama2.c tokenizer.bin for --random */
    float *rope_factors;
} qz_job;

static qz_tensor *qz_add(qz_job *j, const char *name, int n_dims, int64_t ne0, int64_t ne1) {
    qz_tensor *t;
    if (j->n_t == j->cap_t) {
        int cap = j->cap_t ? j->cap_t * 2 : 64;
        qz_tensor *p = (qz_tensor *)realloc(j->t, (size_t)cap * sizeof *p);
        if (!p) return NULL;
        j->t = p;
        j->cap_t = cap;
    }
    t = &j->t[j->n_t++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->n_dims = n_dims;
    t->ne0 = ne0;
    t->ne1 = ne1;
    return t;
}

static int qz_have(const qz_job *j, const char *name) {
    int i;
    for (i = 0; i < j->n_t; i++) if (!strcmp(j->t[i].name, name)) return 1;
    return 0;
}

/* Add source tensor `name` (if present) to the plan. */
static int qz_plan_src(qz_job *j, const bl__tensor *s, int permute) {
    qz_tensor *t = qz_add(j, s->name, s->n_dims > 1 ? 2 : 1, s->ne[0], s->ne[1] * s->ne[2] * s->ne[3]);
    if (!t) return 0;
    t->src = s;
    t->gen = QZ_SRC;
    if (permute && strstr(s->name, ".attn_q.")) t->perm_heads = j->m->hp.n_head;
    if (permute && strstr(s->name, ".attn_k.")) t->perm_heads = j->m->hp.n_head_kv;
    return 1;
}

/* The plan for a loaded model: canonical order first, then anything else. */
static int qz_plan_model(qz_job *j) {
    static const char *const per_layer[] = {"attn_norm.weight", "attn_q.weight", "attn_q.bias", "attn_k.weight", "attn_k.bias",
                                            "attn_v.weight", "attn_v.bias", "attn_output.weight", "ffn_norm.weight",
                                            "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"};
    const bl_model *m = j->m;
    int permute = m->hp.rope_neox && strcmp(j->hp.arch, "qwen2") != 0;
    int l, k;
    char nm[96];
    const bl__tensor *s;
    if ((s = bl__find_tensor(m, "token_embd.weight")) && !qz_plan_src(j, s, permute)) return 0;
    if ((s = bl__find_tensor(m, "rope_freqs.weight"))) {
        if (!qz_plan_src(j, s, permute)) return 0;
    } else if (j->rope_factors) {
        qz_tensor *t = qz_add(j, "rope_freqs.weight", 1, j->hp.head_dim / 2, 1);
        if (!t) return 0;
        t->gen = QZ_VEC;
        t->vec = j->rope_factors;
    }
    for (l = 0; l < m->hp.n_layer; l++)
        for (k = 0; k < (int)(sizeof per_layer / sizeof *per_layer); k++) {
            snprintf(nm, sizeof nm, "blk.%d.%s", l, per_layer[k]);
            if ((s = bl__find_tensor(m, nm)) && !qz_plan_src(j, s, permute)) return 0;
        }
    if ((s = bl__find_tensor(m, "output_norm.weight")) && !qz_plan_src(j, s, permute)) return 0;
    if ((s = bl__find_tensor(m, "output.weight")) && !qz_plan_src(j, s, permute)) return 0;
    for (k = 0; k < m->n_tensors; k++)
        if (!qz_have(j, m->tensors[k].name) && !qz_plan_src(j, &m->tensors[k], permute)) return 0;
    return 1;
}

static int qz_plan_random(qz_job *j) {
    const qz_hp *hp = &j->hp;
    int64_t qd = (int64_t)hp->n_head * hp->head_dim, kvd = (int64_t)hp->n_head_kv * hp->head_dim;
    int l;
    char nm[96];
    qz_tensor *t;
#define QZ_ADD(nmx, nd, a, b, g) do { if (!(t = qz_add(j, nmx, nd, a, b))) return 0; t->gen = g; } while (0)
    QZ_ADD("token_embd.weight", 2, hp->dim, hp->n_vocab, QZ_RANDN);
    if (j->rope_factors) { QZ_ADD("rope_freqs.weight", 1, hp->head_dim / 2, 1, QZ_VEC); t->vec = j->rope_factors; }
    for (l = 0; l < hp->n_layer; l++) {
#define QZ_L(s, nd, a, b, g) do { snprintf(nm, sizeof nm, "blk.%d.%s", l, s); QZ_ADD(nm, nd, a, b, g); } while (0)
        QZ_L("attn_norm.weight", 1, hp->dim, 1, QZ_ONES);
        QZ_L("attn_q.weight", 2, hp->dim, qd, QZ_RANDN);
        if (hp->qkv_bias) QZ_L("attn_q.bias", 1, qd, 1, QZ_RANDN);
        QZ_L("attn_k.weight", 2, hp->dim, kvd, QZ_RANDN);
        if (hp->qkv_bias) QZ_L("attn_k.bias", 1, kvd, 1, QZ_RANDN);
        QZ_L("attn_v.weight", 2, hp->dim, kvd, QZ_RANDN);
        if (hp->qkv_bias) QZ_L("attn_v.bias", 1, kvd, 1, QZ_RANDN);
        QZ_L("attn_output.weight", 2, qd, hp->dim, QZ_RANDN);
        QZ_L("ffn_norm.weight", 1, hp->dim, 1, QZ_ONES);
        QZ_L("ffn_gate.weight", 2, hp->dim, hp->n_ff, QZ_RANDN);
        QZ_L("ffn_up.weight", 2, hp->dim, hp->n_ff, QZ_RANDN);
        QZ_L("ffn_down.weight", 2, hp->n_ff, hp->dim, QZ_RANDN);
#undef QZ_L
    }
    QZ_ADD("output_norm.weight", 1, hp->dim, 1, QZ_ONES);
    if (!hp->tied) QZ_ADD("output.weight", 2, hp->dim, hp->n_vocab, QZ_RANDN);
#undef QZ_ADD
    return 1;
}

static void qz_usage(FILE *f) {
    size_t i;
    fprintf(f,
            "usage: berlin-quantize [options] INPUT OUTPUT.gguf TYPE\n"
            "       berlin-quantize [options] --random SHAPE [--vocab VOCAB.gguf] OUTPUT.gguf TYPE\n"
            "INPUT: GGUF, safetensors file or folder, Mistral consolidated folder, llama2.c .bin\n"
            "TYPE:  F32 F16 BF16 Q8_0 Q4_0 Q6_K Q4_K_M (Q4_K = Q4_K_M)\n"
            "options:\n"
            "  --output-type TYPE  type of output.weight (and of token_embd when tied)\n"
            "  --embd-type TYPE    type of token_embd.weight\n"
            "  --pure              every 2D tensor gets TYPE (no mix)\n"
            "  --vocab FILE        tokenizer to write: a GGUF (tokenizer.* keys copied) or a llama2.c tokenizer.bin\n"
            "  --seed N            seed of --random weights [1]\n"
            "  --layers N          with --random: N layers instead of the shape's (the same matrices in a\n"
            "                      smaller file: quick runs, or timing a few layers near the caches)\n"
            "  -t N                threads [all cores]\n"
            "  -q                  no progress display\n"
            "shapes for --random:\n");
    for (i = 0; i < sizeof qz_shapes / sizeof qz_shapes[0]; i++)
        fprintf(f, "  %-15s dim %d, %d layers, %d/%d heads, head_dim %d, ffn %d, vocab %d (%s)\n", qz_shapes[i].name, qz_shapes[i].dim,
                qz_shapes[i].n_layer, qz_shapes[i].n_head, qz_shapes[i].n_head_kv, qz_shapes[i].head_dim, qz_shapes[i].n_ff,
                qz_shapes[i].n_vocab, qz_shapes[i].note);
}

static int qz_type_arg(const char *s, int *out) {
    const qz_ftype *f = qz_ftype_find(s);
    if (!f) { fprintf(stderr, "berlin-quantize: unknown type '%s'\n", s); return 0; }
    *out = f->type;
    return 1;
}

static void qz_job_free(qz_job *j) {
    free(j->t);
    free(j->rope_factors);
    if (j->has_vocab_g) { bl__gguf_free(&j->vocab_g); bl__file_close(&j->vocab_file); }
    bl_tokenizer_destroy(j->own_tok);
    bl_model_destroy(j->m);
}

/* Load a GGUF's metadata to copy its tokenizer.* keys from. */
static int qz_open_vocab_gguf(qz_job *j, const char *path) {
    char err[BL__ERRLEN];
    bl__tensor *tt = NULL;
    int nt = 0, i;
    bl_result r = bl__file_open(&j->vocab_file, path, 0, err);
    if (r == BL_OK) r = bl__gguf_read(&j->vocab_g, &j->vocab_file, &tt, &nt, err);
    for (i = 0; i < nt; i++) free(tt[i].name);
    free(tt);
    if (r != BL_OK) {
        fprintf(stderr, "berlin-quantize: %s\n", err);
        bl__gguf_free(&j->vocab_g);
        bl__file_close(&j->vocab_file);
        return 0;
    }
    j->has_vocab_g = 1;
    return 1;
}

static int qz_is_gguf(const char *path) {
    FILE *f = fopen(path, "rb");
    char b[4] = {0, 0, 0, 0};
    size_t n;
    if (!f) return 0;
    n = fread(b, 1, 4, f);
    fclose(f);
    return n == 4 && !memcmp(b, "GGUF", 4);
}

int qz_main(int argc, char **argv) {
    qz_opts o;
    qz_job j;
    const char *in = NULL, *out = NULL, *type = NULL, *shape = NULL, *vocab = NULL;
    const char *pos[3];
    int n_pos = 0, i, rc = 1, has_output, layers = 0;
    qz_meta meta;
    qz_buf head;
    FILE *f = NULL;
    uint64_t data_bytes = 0, done = 0;
    uint8_t *chunk = NULL;
    float *rows = NULL;
    size_t chunk_cap = 0;
    double t0 = qz_now(), last = 0;
    int tty;
    memset(&o, 0, sizeof o);
    memset(&j, 0, sizeof j);
    memset(&meta, 0, sizeof meta);
    memset(&head, 0, sizeof head);
    o.out_type = o.embd_type = -1;
    o.seed = 1;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        int more = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { qz_usage(stdout); return 0; }
        else if (!strcmp(a, "--pure")) o.pure = 1;
        else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) o.quiet = 1;
        else if (!strcmp(a, "--output-type") && more) { if (!qz_type_arg(argv[++i], &o.out_type)) return 1; }
        else if (!strcmp(a, "--embd-type") && more) { if (!qz_type_arg(argv[++i], &o.embd_type)) return 1; }
        else if (!strcmp(a, "--random") && more) shape = argv[++i];
        else if (!strcmp(a, "--vocab") && more) vocab = argv[++i];
        else if (!strcmp(a, "--seed") && more) o.seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(a, "--layers") && more) {
            char *end;
            const long v = strtol(argv[++i], &end, 10);
            if (end == argv[i] || *end || v < 1 || v > 1000) { fprintf(stderr, "berlin-quantize: --layers wants 1 to 1000, not '%s'\n", argv[i]); return 1; }
            layers = (int)v;
        }
        else if (!strcmp(a, "-t") && more) o.threads = atoi(argv[++i]);
        else if (a[0] == '-' && a[1]) { fprintf(stderr, "berlin-quantize: unknown option '%s'\n", a); qz_usage(stderr); return 1; }
        else if (n_pos < 3) pos[n_pos++] = a;
        else { fprintf(stderr, "berlin-quantize: too many arguments\n"); return 1; }
    }
    if (n_pos != (shape ? 2 : 3)) {
        fprintf(stderr, "berlin-quantize: expected %s OUTPUT.gguf TYPE (see --help)\n", shape ? "--random SHAPE" : "INPUT");
        return 1;
    }
    if (layers && !shape) { fprintf(stderr, "berlin-quantize: --layers goes with --random\n"); return 1; }
    if (!shape) in = pos[0];
    out = pos[n_pos - 2];
    type = pos[n_pos - 1];
    o.ft = qz_ftype_find(type);
    if (!o.ft) { fprintf(stderr, "berlin-quantize: unknown type '%s' (F32 F16 BF16 Q8_0 Q4_0 Q6_K Q4_K_M)\n", type); return 1; }
#if defined(_OPENMP) && !defined(BL_NO_THREADS) /* berlin.h includes omp.h only then */
    if (o.threads <= 0) o.threads = omp_get_max_threads();
#endif
    if (o.threads <= 0) o.threads = 1;

    /* the source and its hyper-parameters */
    if (shape) {
        const qz_shape *s = NULL;
        size_t k;
        for (k = 0; k < sizeof qz_shapes / sizeof qz_shapes[0]; k++) if (!strcmp(qz_shapes[k].name, shape)) s = &qz_shapes[k];
        if (!s) { fprintf(stderr, "berlin-quantize: unknown shape '%s'\n", shape); qz_usage(stderr); return 1; }
        snprintf(j.hp.arch, sizeof j.hp.arch, "%s", s->arch);
        snprintf(j.hp.name, sizeof j.hp.name, "random-%s", s->name);
        j.hp.dim = s->dim; j.hp.n_layer = layers ? layers : s->n_layer; j.hp.n_head = s->n_head; j.hp.n_head_kv = s->n_head_kv;
        j.hp.head_dim = s->head_dim; j.hp.n_ff = s->n_ff; j.hp.n_vocab = s->n_vocab; j.hp.n_ctx = s->n_ctx;
        j.hp.eps = s->eps; j.hp.theta = s->theta; j.hp.tied = s->tied; j.hp.qkv_bias = s->qkv_bias;
        if (s->llama3) { j.hp.scaling = 2; j.hp.factor = s->factor; j.hp.low_ff = s->low_ff; j.hp.high_ff = s->high_ff; j.hp.orig_ctx = s->orig_ctx; }
        if (vocab && !qz_is_gguf(vocab)) { /* llama2.c tokenizer.bin: it does not store its size, so the shape's is used */
            if (bl_tokenizer_load(&j.own_tok, vocab, j.hp.n_vocab) != BL_OK) {
                fprintf(stderr, "berlin-quantize: %s\n", bl_tokenizer_last_error(j.own_tok));
                qz_job_free(&j);
                return 1;
            }
            j.tok = j.own_tok;
        }
    } else {
        bl_model_desc d;
        bl_result r;
        const bl__hparams *hp;
        memset(&d, 0, sizeof d);
        if (vocab && !qz_is_gguf(vocab)) d.tokenizer_path = vocab;
        d.weights = BL_WEIGHTS_MAPPED; /* the tensors are read from the file's mapping: a copy would go unused */
        r = bl_model_load(&j.m, in, &d);
        if (r != BL_OK) { fprintf(stderr, "berlin-quantize: %s\n", bl_model_last_error(j.m)); qz_job_free(&j); return 1; }
        hp = &j.m->hp;
        snprintf(j.hp.arch, sizeof j.hp.arch, "%s", !strcmp(j.m->arch, "qwen2") ? "qwen2" : j.m->info.format && !strcmp(j.m->info.format, "gguf") ? j.m->arch : "llama");
        j.hp.dim = hp->dim; j.hp.n_layer = hp->n_layer; j.hp.n_head = hp->n_head; j.hp.n_head_kv = hp->n_head_kv;
        j.hp.head_dim = hp->head_dim; j.hp.n_ff = hp->n_ff; j.hp.n_vocab = hp->n_vocab;
        j.hp.n_ctx = hp->n_ctx_train > 0 ? hp->n_ctx_train : 4096;
        j.hp.eps = hp->eps; j.hp.theta = hp->theta; j.hp.scaling = hp->scaling; j.hp.factor = hp->factor;
        j.hp.low_ff = hp->low_ff; j.hp.high_ff = hp->high_ff; j.hp.orig_ctx = hp->orig_ctx;
        j.hp.tied = j.m->info.tied_output;
        {
            const char *b = strrchr(in, '/');
            size_t n;
            b = b && b[1] ? b + 1 : in;
            n = strcspn(b, ".");
            snprintf(j.hp.name, sizeof j.hp.name, "%.*s", (int)(n ? n : strlen(b)), b);
        }
        if (!vocab && qz_is_gguf(in)) vocab = in;
        if (j.m->tok && !(vocab && qz_is_gguf(vocab))) j.tok = j.m->tok;
    }
    if (vocab && qz_is_gguf(vocab)) {
        const char *s;
        size_t n;
        if (!qz_open_vocab_gguf(&j, vocab)) { qz_job_free(&j); return 1; }
        if (!shape && vocab == in && bl__gguf_str(&j.vocab_g, "general.name", &s, &n))
            snprintf(j.hp.name, sizeof j.hp.name, "%.*s", (int)(n > 120 ? 120 : n), s);
    }
    if (j.hp.scaling == 2 && !(j.m && bl__find_tensor(j.m, "rope_freqs.weight"))) {
        j.rope_factors = (float *)malloc((size_t)j.hp.head_dim / 2 * sizeof(float));
        if (!j.rope_factors) { qz_job_free(&j); return 1; }
        qz_llama3_factors(&j.hp, j.rope_factors);
    }

    /* metadata */
    qz_kv_str(&meta, "general.architecture", j.hp.arch);
    qz_kv_str(&meta, "general.name", j.hp.name);
    qz_kv_arch_u32(&meta, &j.hp, "context_length", (uint32_t)j.hp.n_ctx);
    qz_kv_arch_u32(&meta, &j.hp, "embedding_length", (uint32_t)j.hp.dim);
    qz_kv_arch_u32(&meta, &j.hp, "block_count", (uint32_t)j.hp.n_layer);
    qz_kv_arch_u32(&meta, &j.hp, "feed_forward_length", (uint32_t)j.hp.n_ff);
    qz_kv_arch_u32(&meta, &j.hp, "attention.head_count", (uint32_t)j.hp.n_head);
    qz_kv_arch_u32(&meta, &j.hp, "attention.head_count_kv", (uint32_t)j.hp.n_head_kv);
    qz_kv_arch_f32(&meta, &j.hp, "rope.freq_base", (float)j.hp.theta);
    qz_kv_arch_f32(&meta, &j.hp, "attention.layer_norm_rms_epsilon", (float)j.hp.eps);
    qz_kv_arch_u32(&meta, &j.hp, "rope.dimension_count", (uint32_t)j.hp.head_dim);
    qz_kv_arch_u32(&meta, &j.hp, "attention.key_length", (uint32_t)j.hp.head_dim);
    qz_kv_arch_u32(&meta, &j.hp, "attention.value_length", (uint32_t)j.hp.head_dim);
    if (j.hp.scaling == 1) {
        char key[128];
        snprintf(key, sizeof key, "%s.rope.scaling.type", j.hp.arch);
        qz_kv_str(&meta, key, "linear");
        qz_kv_arch_f32(&meta, &j.hp, "rope.scaling.factor", (float)j.hp.factor);
    }
    if (j.has_vocab_g) {
        int64_t nt = qz_copy_tokenizer_keys(&meta, &j.vocab_g, &j.vocab_file);
        if (shape && nt > 0 && nt != j.hp.n_vocab) {
            fprintf(stderr, "berlin-quantize: shape %s has %d tokens, %s has %lld: using the vocabulary's size\n", shape, j.hp.n_vocab, vocab,
                    (long long)nt);
            j.hp.n_vocab = (int)nt;
        }
    } else if (j.tok) {
        qz_write_tokenizer_struct(&meta, j.tok);
    }
    qz_kv_arch_u32(&meta, &j.hp, "vocab_size", (uint32_t)j.hp.n_vocab);
    qz_kv_u32(&meta, "general.quantization_version", 2);
    qz_kv_u32(&meta, "general.file_type", (uint32_t)o.ft->file_type);
    qz_kv_u32(&meta, "general.alignment", 32);
    if (meta.b.oom) { fprintf(stderr, "berlin-quantize: out of memory\n"); goto done; }

    /* the tensor plan, types and offsets */
    if (!(shape ? qz_plan_random(&j) : qz_plan_model(&j))) { fprintf(stderr, "berlin-quantize: out of memory\n"); goto done; }
    has_output = qz_have(&j, "output.weight");
    for (i = 0; i < j.n_t; i++) {
        qz_tensor *t = &j.t[i];
        t->type = qz_pick_type(&o, t->name, t->n_dims, t->ne0, has_output, j.hp.n_layer);
        t->nbytes = bl__row_bytes(t->type, t->ne0) * (size_t)t->ne1;
        t->offset = data_bytes;
        data_bytes += (t->nbytes + 31) / 32 * 32;
    }

    /* header */
    qz_put(&head, "GGUF", 4);
    qz_u32(&head, 3);
    qz_u64(&head, (uint64_t)j.n_t);
    qz_u64(&head, meta.n_kv);
    qz_put(&head, meta.b.p, meta.b.n);
    for (i = 0; i < j.n_t; i++) {
        qz_tensor *t = &j.t[i];
        qz_str(&head, t->name, strlen(t->name));
        qz_u32(&head, (uint32_t)t->n_dims);
        qz_u64(&head, (uint64_t)t->ne0);
        if (t->n_dims > 1) qz_u64(&head, (uint64_t)t->ne1);
        qz_u32(&head, (uint32_t)t->type);
        qz_u64(&head, t->offset);
    }
    while (head.n % 32) qz_put(&head, "", 1);
    if (head.oom) { fprintf(stderr, "berlin-quantize: out of memory\n"); goto done; }
    f = fopen(out, "wb");
    if (!f) { fprintf(stderr, "berlin-quantize: %s: cannot create\n", out); goto done; }
    setvbuf(f, NULL, _IOFBF, 1 << 22);
    if (fwrite(head.p, 1, head.n, f) != head.n) goto werr;

    /* data, a chunk of rows at a time */
    tty = !o.quiet && isatty(2);
    {
        int64_t maxc = 1;
        for (i = 0; i < j.n_t; i++) if (j.t[i].ne0 > maxc) maxc = j.t[i].ne0;
        rows = (float *)malloc((size_t)o.threads * 2 * (size_t)maxc * sizeof(float));
        if (!rows) { fprintf(stderr, "berlin-quantize: out of memory\n"); goto done; }
        for (i = 0; i < j.n_t; i++) {
            qz_tensor *t = &j.t[i];
            size_t rb = bl__row_bytes(t->type, t->ne0);
            int64_t per = (int64_t)((8u << 20) / rb), r0;
            if (per < 1) per = 1;
            if (per > t->ne1) per = t->ne1;
            if ((size_t)per * rb > chunk_cap) {
                free(chunk);
                chunk_cap = (size_t)per * rb;
                chunk = (uint8_t *)malloc(chunk_cap);
                if (!chunk) { fprintf(stderr, "berlin-quantize: out of memory\n"); goto done; }
            }
            if (t->gen == QZ_SRC && t->src->type == t->type && !t->perm_heads) { /* same type: copy the bytes */
                if (fwrite(t->src->data, 1, t->nbytes, f) != t->nbytes) goto werr;
            } else {
                for (r0 = 0; r0 < t->ne1; r0 += per) {
                    int64_t n = t->ne1 - r0 < per ? t->ne1 - r0 : per, r;
                    BL__OMP(omp parallel for num_threads(o.threads) schedule(dynamic, 4))
                    for (r = 0; r < n; r++) {
                        float *buf = rows + (size_t)BL__THREAD_ID() * 2 * (size_t)maxc;
                        qz_fetch_row(t, r0 + r, buf, buf + maxc, o.seed, i);
                        qz_quantize_row(t->type, buf, t->ne0, chunk + (size_t)r * rb);
                    }
                    if (fwrite(chunk, 1, (size_t)n * rb, f) != (size_t)n * rb) goto werr;
                    done += (uint64_t)n * rb;
                    if (tty && qz_now() - last > 0.2) {
                        double el = qz_now() - t0;
                        last = qz_now();
                        fprintf(stderr, "\r[%3d/%3d] %-28s %-5s %5.1f%%  %6.1f s  %6.1f MB/s ", i + 1, j.n_t, t->name, bl__types[t->type].name,
                                100.0 * (double)done / (double)(data_bytes ? data_bytes : 1), el, (double)done / 1e6 / (el > 0 ? el : 1));
                    }
                }
            }
            if (t->gen == QZ_SRC && t->src->type == t->type && !t->perm_heads) done += t->nbytes;
            {
                static const uint8_t zeros[32] = {0};
                size_t pad = (32 - t->nbytes % 32) % 32;
                if (pad && fwrite(zeros, 1, pad, f) != pad) goto werr;
            }
        }
    }
    if (fclose(f) != 0) { f = NULL; goto werr; }
    f = NULL;
    if (!o.quiet) {
        int counts[40] = {0}, k;
        double el = qz_now() - t0;
        if (tty) fprintf(stderr, "\r%78s\r", "");
        for (i = 0; i < j.n_t; i++) counts[j.t[i].type]++;
        fprintf(stderr, "berlin-quantize: wrote %s (%s, arch %s, %d tensors:", out, o.ft->name, j.hp.arch, j.n_t);
        for (k = 0; k < 40; k++) if (counts[k]) fprintf(stderr, " %d %s", counts[k], bl__types[k].name);
        fprintf(stderr, ", %.1f MB) in %.1f s\n", (double)(head.n + data_bytes) / 1e6, el);
    }
    rc = 0;
    goto done;
werr:
    fprintf(stderr, "berlin-quantize: %s: write failed (disk full?)\n", out);
    if (f) fclose(f);
    f = NULL;
    remove(out); /* no half-written model left behind */
done:
    if (f) fclose(f);
    free(chunk);
    free(rows);
    free(meta.b.p);
    free(head.p);
    qz_job_free(&j);
    return rc;
}

#ifndef QZ_NO_MAIN
int main(int argc, char **argv) { return qz_main(argc, argv); }
#endif
