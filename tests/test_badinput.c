/* test_badinput.c - broken model and tokenizer files fail cleanly.
   Every case writes a damaged copy of a real small model into a temp dir,
   loads it, and checks the result class and that bl_model_last_error names
   the file, tensor or field at fault. Leaks and overreads are the sanitizer
   build's job (no_mmap loads put the file in an exact-size heap block). */
#define _POSIX_C_SOURCE 200809L
#define BERLIN_IMPLEMENTATION
#include "berlin.h"
#include "testutil.h"
#include <stdint.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#define ANY_ERROR ((bl_result)1) /* any code but BL_OK */

static char tmp[256];

static const char *tpath(const char *name) {
    static char bufs[8][512];
    static int k;
    char *b = bufs[k++ & 7];
    snprintf(b, 512, "%s/%s", tmp, name);
    return b;
}

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(data, 1, n, f) != n)) { printf("cannot write %s\n", path); exit(2); }
    fclose(f);
}

static void put_u32(uint8_t *b, size_t off, uint32_t v) { memcpy(b + off, &v, 4); }
static void put_u64(uint8_t *b, size_t off, uint64_t v) { memcpy(b + off, &v, 8); }

/* s with the first occurrence of `from` at or after `after` (if given) replaced; malloc'd. */
static char *replace(const char *s, size_t n, const char *after, const char *from, const char *to, size_t *out_n) {
    const char *base = s, *at;
    size_t fl = strlen(from), tl = strlen(to);
    char *o;
    if (after) {
        base = strstr(s, after);
        if (!base) { printf("replace: '%s' not found\n", after); exit(2); }
    }
    at = strstr(base, from);
    if (!at) { printf("replace: '%s' not found\n", from); exit(2); }
    o = (char *)malloc(n - fl + tl + 1);
    memcpy(o, s, (size_t)(at - s));
    memcpy(o + (at - s), to, tl);
    memcpy(o + (at - s) + tl, at + fl, n - (size_t)(at - s) - fl);
    *out_n = n - fl + tl;
    o[*out_n] = 0;
    return o;
}

static int has(const char *msg, const char *needle) { return !needle || strstr(msg, needle) != NULL; }

/* Load and CHECK: the result (want, or any error), a non-empty message and up to three substrings. */
static void expect_load_desc(const char *what, const char *path, const bl_model_desc *desc, bl_result want, const char *n1, const char *n2,
                             const char *n3) {
    bl_model *m = NULL;
    bl_result r = bl_model_load(&m, path, desc);
    const char *msg = bl_model_last_error(m);
    int ok_code = want == ANY_ERROR ? r != BL_OK : r == want;
    CHECK(m != NULL, "%s: *out not set", what);
    CHECK(ok_code, "%s: got %d (%s), want %d; message: %s", what, r, bl_result_string(r), want, msg);
    if (r != BL_OK) {
        CHECK(msg && msg[0], "%s: empty error message", what);
        CHECK(has(msg, n1) && has(msg, n2) && has(msg, n3), "%s: message '%s' lacks '%s' / '%s' / '%s'", what, msg, n1 ? n1 : "",
              n2 ? n2 : "", n3 ? n3 : "");
    }
    bl_model_destroy(m);
}

static void expect_load(const char *what, const char *path, bl_result want, const char *n1, const char *n2, const char *n3) {
    expect_load_desc(what, path, NULL, want, n1, n2, n3);
}

static void expect_tok(const char *what, const char *path, int n_vocab, bl_result want, const char *n1, const char *n2) {
    bl_tokenizer *t = NULL;
    bl_result r = bl_tokenizer_load(&t, path, n_vocab);
    const char *msg = bl_tokenizer_last_error(t);
    CHECK(want == ANY_ERROR ? r != BL_OK : r == want, "%s: got %d (%s), want %d; message: %s", what, r, bl_result_string(r), want, msg);
    if (r != BL_OK) {
        CHECK(msg && msg[0], "%s: empty error message", what);
        CHECK(has(msg, n1) && has(msg, n2), "%s: message '%s' lacks '%s' / '%s'", what, msg, n1 ? n1 : "", n2 ? n2 : "");
    }
    bl_tokenizer_destroy(t);
}

/* ---- a small GGUF walker: where each key, value and tensor field sits ---- */
#define GG_MAX 128
typedef struct gg_map {
    int n_kv, n_t;
    size_t kv_key[GG_MAX], kv_type[GG_MAX], kv_val[GG_MAX]; /* offsets of key length, type, value */
    char kv_name[GG_MAX][64];
    size_t t_nd[GG_MAX], t_type[GG_MAX], t_off[GG_MAX];     /* offsets of n_dims, type, data offset */
    char t_name[GG_MAX][64];
    size_t info_end;                                         /* end of the tensor infos */
} gg_map;

static uint64_t get_u64(const uint8_t *b, size_t off) { uint64_t v; memcpy(&v, b + off, 8); return v; }
static uint32_t get_u32(const uint8_t *b, size_t off) { uint32_t v; memcpy(&v, b + off, 4); return v; }

static size_t gg_skip(const uint8_t *b, size_t p, uint32_t t) {
    static const int sz[13] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    if (t == 8) return p + 8 + (size_t)get_u64(b, p);
    if (t == 9) {
        uint32_t at = get_u32(b, p);
        uint64_t n = get_u64(b, p + 4), i;
        p += 12;
        for (i = 0; i < n; i++) p = gg_skip(b, p, at);
        return p;
    }
    return p + (size_t)sz[t];
}

static void gg_walk(const uint8_t *b, gg_map *g) {
    size_t p = 24;
    int i;
    memset(g, 0, sizeof *g);
    g->n_t = (int)get_u64(b, 8);
    g->n_kv = (int)get_u64(b, 16);
    if (g->n_t > GG_MAX || g->n_kv > GG_MAX) { printf("gg_walk: too many entries\n"); exit(2); }
    for (i = 0; i < g->n_kv; i++) {
        size_t kl = (size_t)get_u64(b, p);
        g->kv_key[i] = p;
        snprintf(g->kv_name[i], 64, "%.*s", (int)kl, (const char *)b + p + 8);
        p += 8 + kl;
        g->kv_type[i] = p;
        g->kv_val[i] = p + 4;
        p = gg_skip(b, p + 4, get_u32(b, p));
    }
    for (i = 0; i < g->n_t; i++) {
        size_t nl = (size_t)get_u64(b, p);
        snprintf(g->t_name[i], 64, "%.*s", (int)nl, (const char *)b + p + 8);
        p += 8 + nl;
        g->t_nd[i] = p;
        p += 4 + 8 * (size_t)get_u32(b, p);
        g->t_type[i] = p;
        g->t_off[i] = p + 4;
        p += 12;
    }
    g->info_end = p;
}

static int gg_kv(const gg_map *g, const char *name) {
    int i;
    for (i = 0; i < g->n_kv; i++) if (!strcmp(g->kv_name[i], name)) return i;
    printf("gg_kv: no key %s\n", name);
    exit(2);
}

static int gg_t(const gg_map *g, const char *name) {
    int i;
    for (i = 0; i < g->n_t; i++) if (!strcmp(g->t_name[i], name)) return i;
    printf("gg_t: no tensor %s\n", name);
    exit(2);
}

/* A heap copy of a file image, for the caller to damage. */
static uint8_t *gg_copy(const uint8_t *src, size_t n) {
    uint8_t *b = (uint8_t *)malloc(n);
    memcpy(b, src, n);
    return b;
}

/* The GGUF with one extra key-value pair (key, type, value bytes) after the header. */
static uint8_t *gg_insert_kv(const uint8_t *src, size_t n, const char *key, uint32_t type, const void *val, size_t vn, size_t *out_n) {
    size_t kl = strlen(key), add = 8 + kl + 4 + vn;
    uint8_t *b = (uint8_t *)malloc(n + add);
    memcpy(b, src, 24);
    put_u64(b, 16, get_u64(src, 16) + 1);
    put_u64(b, 24, (uint64_t)kl);
    memcpy(b + 32, key, kl);
    put_u32(b, 32 + kl, type);
    memcpy(b + 36 + kl, val, vn);
    memcpy(b + 24 + add, src + 24, n - 24);
    *out_n = n + add;
    return b;
}

static void test_gguf(void) {
    size_t gn, n2, cut;
    uint8_t *g = (uint8_t *)tu_read(tu_shared("models/stories260K.gguf"), &gn), *b;
    gg_map gm;
    const char *p = tpath("bad.gguf");
    char what[128];
    int bad_cuts = 0;
    if (!g) { CHECK(0, "cannot read stories260K.gguf"); return; }
    gg_walk(g, &gm);
    CHECK(gm.n_t == 48 && gm.n_kv == 19, "walker: %d tensors, %d keys", gm.n_t, gm.n_kv);

    /* sanity: the untouched copy loads */
    write_file(p, g, gn);
    expect_load("gguf intact", p, BL_OK, NULL, NULL, NULL);

    /* truncated at many points (cutting from the end down), mmap and read */
    for (cut = gn - 1;; cut = cut > 997 ? cut - 997 : 0) {
        bl_model *m = NULL;
        bl_model_desc d;
        bl_result r;
        const char *msg;
        int ok;
        memset(&d, 0, sizeof d);
        d.no_mmap = (cut / 997) % 4 == 0;
        if (truncate(p, (off_t)cut) != 0) { CHECK(0, "truncate failed"); break; }
        r = bl_model_load(&m, p, &d);
        msg = bl_model_last_error(m);
        ok = r != BL_OK && msg[0] && strstr(msg, p);
        if (cut < 4) ok = ok && r == BL_ERR_FORMAT && strstr(msg, "not a model file");
        else if (cut < 24) ok = ok && r == BL_ERR_FORMAT && strstr(msg, "truncated GGUF header");
        else if (cut >= gm.info_end) ok = ok && r == BL_ERR_FORMAT && strstr(msg, "runs past the end") && strstr(msg, "truncated");
        if (!ok && bad_cuts++ < 5) CHECK(0, "gguf cut at %zu: %d %s", cut, r, msg);
        bl_model_destroy(m);
        if (cut == 0) break;
    }
    CHECK(bad_cuts == 0, "%d truncated GGUFs gave a wrong result", bad_cuts);

    /* tensor offsets that point past the end */
    b = gg_copy(g, gn);
    put_u64(b, gm.t_off[gm.n_t - 1], (uint64_t)(gn + 31) / 32 * 32);
    write_file(p, b, gn);
    snprintf(what, sizeof what, "gguf offset past end (%s)", gm.t_name[gm.n_t - 1]);
    expect_load(what, p, BL_ERR_FORMAT, gm.t_name[gm.n_t - 1], "runs past the end", "bad.gguf");
    memcpy(b, g, gn);
    put_u64(b, gm.t_off[0], UINT64_MAX - 31); /* wraps if added carelessly */
    write_file(p, b, gn);
    expect_load("gguf offset near 2^64", p, BL_ERR_FORMAT, "token_embd.weight", "runs past the end", NULL);
    memcpy(b, g, gn);
    put_u64(b, gm.t_off[gg_t(&gm, "output.weight")], get_u64(g, gm.t_off[gg_t(&gm, "output.weight")]) + 4);
    write_file(p, b, gn);
    expect_load("gguf misaligned offset", p, BL_ERR_FORMAT, "output.weight", "aligned", NULL);

    /* unsupported tensor types: the error names the type and the tensor */
    memcpy(b, g, gn);
    put_u32(b, gm.t_type[gg_t(&gm, "blk.0.attn_q.weight")], 13);
    write_file(p, b, gn);
    expect_load("gguf Q5_K tensor", p, BL_ERR_UNSUPPORTED, "Q5_K", "blk.0.attn_q.weight", "bad.gguf");
    memcpy(b, g, gn);
    put_u32(b, gm.t_type[gg_t(&gm, "blk.3.ffn_down.weight")], 3);
    write_file(p, b, gn);
    expect_load("gguf Q4_1 tensor", p, BL_ERR_UNSUPPORTED, "Q4_1", "blk.3.ffn_down.weight", NULL);
    memcpy(b, g, gn);
    put_u32(b, gm.t_type[0], 1000);
    write_file(p, b, gn);
    expect_load("gguf type 1000", p, BL_ERR_UNSUPPORTED, "1000", "token_embd.weight", NULL);

    /* huge string lengths and array counts */
    memcpy(b, g, gn);
    put_u64(b, gm.kv_key[0], UINT64_MAX);
    write_file(p, b, gn);
    expect_load("gguf huge key length", p, BL_ERR_FORMAT, "metadata key 0", "bad.gguf", NULL);
    memcpy(b, g, gn);
    put_u64(b, gm.kv_val[gg_kv(&gm, "general.architecture")], (uint64_t)1 << 60);
    write_file(p, b, gn);
    expect_load("gguf huge string value", p, BL_ERR_FORMAT, "general.architecture", "runs past the end", NULL);
    memcpy(b, g, gn);
    put_u64(b, gm.kv_val[gg_kv(&gm, "tokenizer.ggml.tokens")] + 4, (uint64_t)1 << 62);
    write_file(p, b, gn);
    expect_load("gguf huge string array", p, BL_ERR_FORMAT, "tokenizer.ggml.tokens", NULL, NULL);
    memcpy(b, g, gn);
    put_u64(b, gm.kv_val[gg_kv(&gm, "tokenizer.ggml.scores")] + 4, UINT64_MAX / 2);
    write_file(p, b, gn);
    expect_load("gguf huge float array", p, BL_ERR_FORMAT, "tokenizer.ggml.scores", NULL, NULL);
    memcpy(b, g, gn);
    put_u64(b, gm.t_nd[0] - 8 - strlen(gm.t_name[0]), UINT64_MAX);
    write_file(p, b, gn);
    expect_load("gguf huge tensor name", p, BL_ERR_FORMAT, "tensor info 0", NULL, NULL);
    memcpy(b, g, gn);
    put_u64(b, 16, UINT64_MAX);
    write_file(p, b, gn);
    expect_load("gguf huge n_kv", p, BL_ERR_FORMAT, "keys", NULL, NULL);
    memcpy(b, g, gn);
    put_u64(b, 8, (uint64_t)1 << 40);
    write_file(p, b, gn);
    expect_load("gguf huge n_tensors", p, BL_ERR_FORMAT, "tensors", NULL, NULL);
    memcpy(b, g, gn);
    put_u32(b, gm.kv_type[gg_kv(&gm, "llama.block_count")], 99);
    write_file(p, b, gn);
    expect_load("gguf unknown value type", p, BL_ERR_FORMAT, "llama.block_count", "99", NULL);
    memcpy(b, g, gn);
    put_u32(b, gm.kv_val[gg_kv(&gm, "tokenizer.ggml.tokens")], 9); /* array of arrays read from string bytes */
    write_file(p, b, gn);
    expect_load("gguf nested array", p, ANY_ERROR, "bad.gguf", NULL, NULL);

    /* bad version */
    memcpy(b, g, gn);
    put_u32(b, 4, 1);
    write_file(p, b, gn);
    expect_load("gguf version 1", p, BL_ERR_UNSUPPORTED, "version 1", "bad.gguf", NULL);
    put_u32(b, 4, 0xFFFFFFFFu);
    write_file(p, b, gn);
    expect_load("gguf version 2^32-1", p, BL_ERR_UNSUPPORTED, "version", NULL, NULL);

    /* bad alignment */
    {
        uint32_t bad_u32[3] = {0, 3, 1u << 20};
        float nan_f = (float)NAN, neg = -32.0f;
        int i;
        for (i = 0; i < 3; i++) {
            uint8_t *c = gg_insert_kv(g, gn, "general.alignment", 4, &bad_u32[i], 4, &n2);
            write_file(p, c, n2);
            snprintf(what, sizeof what, "gguf alignment %u", bad_u32[i]);
            expect_load(what, p, BL_ERR_FORMAT, "general.alignment", "bad.gguf", NULL);
            free(c);
        }
        free(b);
        b = gg_insert_kv(g, gn, "general.alignment", 6, &nan_f, 4, &n2);
        write_file(p, b, n2);
        expect_load("gguf alignment NaN", p, BL_ERR_FORMAT, "general.alignment", NULL, NULL);
        free(b);
        b = gg_insert_kv(g, gn, "general.alignment", 6, &neg, 4, &n2);
        write_file(p, b, n2);
        expect_load("gguf alignment -32", p, BL_ERR_FORMAT, "general.alignment", NULL, NULL);
        free(b);
        b = gg_copy(g, gn);
    }

    /* missing keys and tensors, wrong architecture, bad dims */
    b[gm.kv_key[gg_kv(&gm, "general.architecture")] + 8 + 19] = 'X';
    write_file(p, b, gn);
    expect_load("gguf no architecture", p, BL_ERR_CONFIG, "general.architecture", "bad.gguf", NULL);
    memcpy(b, g, gn);
    b[gm.kv_key[gg_kv(&gm, "llama.embedding_length")] + 8 + 21] = 'X';
    write_file(p, b, gn);
    expect_load("gguf no embedding_length", p, BL_ERR_CONFIG, "llama.embedding_length", NULL, NULL);
    memcpy(b, g, gn);
    memcpy(b + gm.kv_val[gg_kv(&gm, "general.architecture")] + 8, "bloom", 5);
    write_file(p, b, gn);
    expect_load("gguf architecture bloom", p, BL_ERR_UNSUPPORTED, "bloom", NULL, NULL);
    memcpy(b, g, gn);
    b[gm.t_nd[gg_t(&gm, "output_norm.weight")] - 8] = 'X'; /* "output_norm.weighX" */
    write_file(p, b, gn);
    expect_load("gguf missing output_norm", p, BL_ERR_FORMAT, "output_norm.weight", "missing", NULL);
    memcpy(b, g, gn);
    put_u32(b, gm.t_nd[0], 7);
    write_file(p, b, gn);
    expect_load("gguf 7 dims", p, BL_ERR_FORMAT, "token_embd.weight", "7 dimensions", NULL);
    memcpy(b, g, gn);
    put_u64(b, gm.t_nd[0] + 4, 0);
    write_file(p, b, gn);
    expect_load("gguf zero dim", p, BL_ERR_FORMAT, "token_embd.weight", "dimension 0", NULL);
    memcpy(b, g, gn);
    put_u64(b, gm.t_nd[0] + 12, 511); /* token_embd [64, 511]: output.weight no longer matches */
    write_file(p, b, gn);
    expect_load("gguf vocab shape mismatch", p, BL_ERR_FORMAT, "output.weight", "[512, 64]", "[511, 64]");
    memcpy(b, g, gn);
    put_u32(b, gm.kv_val[gg_kv(&gm, "tokenizer.ggml.scores")], 5); /* scores as I32: not a float array */
    write_file(p, b, gn);
    expect_load("gguf scores not F32", p, BL_ERR_TOKENIZER, "tokenizer.ggml.scores", NULL, NULL);
    memcpy(b, g, gn);
    put_u32(b, gm.kv_val[gg_kv(&gm, "llama.attention.head_count_kv")], 3);
    write_file(p, b, gn);
    expect_load("gguf head_count_kv 3", p, BL_ERR_CONFIG, "n_head_kv 3", NULL, NULL);

    /* the GGUF as a tokenizer, truncated in the metadata */
    write_file(p, g, 9000);
    expect_tok("gguf tokenizer truncated", p, 0, BL_ERR_FORMAT, "bad.gguf", NULL);
    write_file(p, g, gn);
    expect_tok("gguf tokenizer intact", p, 0, BL_OK, NULL, NULL);

    free(b);
    free(g);
    remove(p);
}

/* ---- safetensors ---- */
static void st_write(const char *path, const char *hdr, size_t hn, const uint8_t *data, size_t dn) {
    FILE *f = fopen(path, "wb");
    uint64_t h = hn;
    if (!f) { printf("cannot write %s\n", path); exit(2); }
    fwrite(&h, 8, 1, f);
    fwrite(hdr, 1, hn, f);
    fwrite(data, 1, dn, f);
    fclose(f);
}

static void test_safetensors(void) {
    size_t sn, cn, hn, n2, cut;
    uint8_t *s = (uint8_t *)tu_read(tu_shared("models/stories260K-hf/model.safetensors"), &sn);
    char *cfg = tu_read(tu_shared("models/stories260K-hf/config.json"), &cn);
    char *hdr, *h2, dir[300], wpath[400], cpath[400];
    const uint8_t *data;
    size_t dn;
    int bad_cuts = 0;
    if (!s || !cfg) { CHECK(0, "cannot read stories260K-hf"); free(s); free(cfg); return; }
    hn = (size_t)get_u64(s, 0);
    hdr = (char *)malloc(hn + 1);
    memcpy(hdr, s + 8, hn);
    hdr[hn] = 0;
    data = s + 8 + hn;
    dn = sn - 8 - hn;
    snprintf(dir, sizeof dir, "%s", tpath("st"));
    mkdir(dir, 0700);
    snprintf(wpath, sizeof wpath, "%s/model.safetensors", dir);
    snprintf(cpath, sizeof cpath, "%s/config.json", dir);

    /* a folder with nothing in it, then with weights and no config */
    expect_load("empty folder", dir, BL_ERR_CONFIG, "config.json", "st", NULL);
    write_file(wpath, s, sn);
    expect_load("folder without config", dir, BL_ERR_CONFIG, "config.json", NULL, NULL);
    write_file(cpath, cfg, cn);
    expect_load("safetensors intact", dir, BL_OK, NULL, NULL, NULL);
    expect_load("safetensors file path intact", wpath, BL_OK, NULL, NULL, NULL);

    /* truncated */
    for (cut = sn - 1;; cut = cut > 997 ? cut - 997 : 0) {
        bl_model *m = NULL;
        bl_model_desc d;
        bl_result r;
        const char *msg;
        int ok;
        memset(&d, 0, sizeof d);
        d.no_mmap = (cut / 997) % 4 == 1;
        if (truncate(wpath, (off_t)cut) != 0) { CHECK(0, "truncate failed"); break; }
        r = bl_model_load(&m, dir, &d);
        msg = bl_model_last_error(m);
        ok = r == BL_ERR_FORMAT && strstr(msg, "model.safetensors");
        if (cut < 8) ok = ok && strstr(msg, "too short");
        else if (cut < 8 + hn) ok = ok && strstr(msg, "header length");
        else ok = ok && strstr(msg, "data_offsets") && strstr(msg, "truncated");
        if (!ok && bad_cuts++ < 5) CHECK(0, "safetensors cut at %zu: %d %s", cut, r, msg);
        bl_model_destroy(m);
        if (cut == 0) break;
    }
    CHECK(bad_cuts == 0, "%d truncated safetensors gave a wrong result", bad_cuts);

    /* header length past the end */
    {
        uint8_t *b = gg_copy(s, sn);
        put_u64(b, 0, (uint64_t)sn);
        write_file(wpath, b, sn);
        expect_load("safetensors header length = file size", dir, BL_ERR_FORMAT, "header length", "model.safetensors", NULL);
        put_u64(b, 0, UINT64_MAX);
        write_file(wpath, b, sn);
        expect_load("safetensors header length 2^64-1", dir, BL_ERR_FORMAT, "header length", NULL, NULL);
        put_u64(b, 0, 0);
        write_file(wpath, b, sn);
        expect_load("safetensors header length 0", dir, ANY_ERROR, "model.safetensors", NULL, NULL);
        free(b);
    }

    /* data_offsets past the end, and bytes that do not match the shape */
    h2 = replace(hdr, hn, "\"model.embed_tokens.weight\"", "[0,131072]", "[0,99999999]", &n2);
    st_write(wpath, h2, n2, data, dn);
    expect_load("safetensors data_offsets past end", dir, BL_ERR_FORMAT, "model.embed_tokens.weight", "data_offsets", "99999999");
    free(h2);
    h2 = replace(hdr, hn, "\"model.embed_tokens.weight\"", "[0,131072]", "[131072,0]", &n2);
    st_write(wpath, h2, n2, data, dn);
    expect_load("safetensors data_offsets reversed", dir, BL_ERR_FORMAT, "model.embed_tokens.weight", "data_offsets", NULL);
    free(h2);
    h2 = replace(hdr, hn, "\"model.embed_tokens.weight\"", "[0,131072]", "[-1e300,131072]", &n2);
    st_write(wpath, h2, n2, data, dn);
    expect_load("safetensors data_offsets negative", dir, BL_ERR_FORMAT, "model.embed_tokens.weight", NULL, NULL);
    free(h2);
    h2 = replace(hdr, hn, "\"model.embed_tokens.weight\"", "[512,64]", "[512,63]", &n2);
    st_write(wpath, h2, n2, data, dn);
    expect_load("safetensors shape vs bytes", dir, BL_ERR_FORMAT, "model.embed_tokens.weight", "131072", "129024");
    free(h2);
    h2 = replace(hdr, hn, "\"model.embed_tokens.weight\"", "\"data_offsets\"", "\"data_offsetz\"", &n2);
    st_write(wpath, h2, n2, data, dn);
    expect_load("safetensors no data_offsets", dir, BL_ERR_FORMAT, "model.embed_tokens.weight", "data_offsets", NULL);
    free(h2);
    h2 = replace(hdr, hn, "\"model.embed_tokens.weight\"", "[512,64]", "[512,64,1,1,1]", &n2);
    st_write(wpath, h2, n2, data, dn);
    expect_load("safetensors 5 dims", dir, ANY_ERROR, "model.embed_tokens.weight", "dimensions", NULL);
    free(h2);

    /* unknown dtypes on mapped weights; an unknown dtype on a skipped tensor is fine */
    h2 = replace(hdr, hn, "\"model.layers.0.self_attn.q_proj.weight\"", "\"F32\"", "\"F8_E4M3\"", &n2);
    st_write(wpath, h2, n2, data, dn);
    expect_load("safetensors F8_E4M3", dir, BL_ERR_UNSUPPORTED, "F8_E4M3", "model.layers.0.self_attn.q_proj.weight", "model.safetensors");
    free(h2);
    h2 = replace(hdr, hn, "\"model.embed_tokens.weight\"", "\"F32\"", "\"I64\"", &n2);
    st_write(wpath, h2, n2, data, dn);
    expect_load("safetensors I64", dir, BL_ERR_UNSUPPORTED, "I64", "model.embed_tokens.weight", NULL);
    free(h2);
    h2 = replace(hdr, hn, NULL, "{\"__metadata__\"", "{\"vision_tower.patch.weight\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[0,16]},\"__metadata__\"",
                 &n2);
    st_write(wpath, h2, n2, data, dn);
    expect_load("safetensors skipped I64 tensor", dir, BL_OK, NULL, NULL, NULL);
    free(h2);

    /* invalid JSON headers */
    h2 = replace(hdr, hn, NULL, "\"shape\":[512,64]", "\"shape\":[512,64", &n2);
    st_write(wpath, h2, n2, data, dn);
    expect_load("safetensors bad JSON", dir, BL_ERR_FORMAT, "not valid JSON", "model.safetensors", NULL);
    free(h2);
    st_write(wpath, "[1, 2, 3]", 9, data, dn);
    expect_load("safetensors header is an array", dir, BL_ERR_FORMAT, "not an object", NULL, NULL);
    st_write(wpath, "{\"a\":\"\\x\"}", 10, data, dn);
    expect_load("safetensors bad escape", dir, BL_ERR_FORMAT, "not valid JSON", NULL, NULL);
    {
        char deep[600];
        memset(deep, '[', 300);
        memset(deep + 300, ']', 300);
        st_write(wpath, deep, 600, data, dn);
        expect_load("safetensors nesting 300 deep", dir, BL_ERR_FORMAT, "not valid JSON", NULL, NULL);
    }
    write_file(wpath, s, sn);

    /* config.json problems */
    h2 = replace(cfg, cn, NULL, "\"hidden_size\"", "\"hidden_sizX\"", &n2);
    write_file(cpath, h2, n2);
    expect_load("config without hidden_size", dir, BL_ERR_CONFIG, "hidden_size", "config.json", NULL);
    free(h2);
    h2 = replace(cfg, cn, NULL, "\"hidden_size\": 64", "\"hidden_size\": \"64\"", &n2);
    write_file(cpath, h2, n2);
    expect_load("config hidden_size a string", dir, BL_ERR_CONFIG, "hidden_size", NULL, NULL);
    free(h2);
    h2 = replace(cfg, cn, NULL, "\"hidden_size\": 64", "\"hidden_size\": -64", &n2);
    write_file(cpath, h2, n2);
    expect_load("config hidden_size negative", dir, BL_ERR_CONFIG, "hidden_size", NULL, NULL);
    free(h2);
    h2 = replace(cfg, cn, NULL, "\"intermediate_size\": 172", "\"intermediate_size\": 173", &n2);
    write_file(cpath, h2, n2);
    {   /* the tensor may be named canonically or as stored */
        bl_model *m = NULL;
        bl_result r = bl_model_load(&m, dir, NULL);
        const char *msg = bl_model_last_error(m);
        CHECK(r == BL_ERR_FORMAT || r == BL_ERR_CONFIG, "config intermediate_size 173: got %d: %s", r, msg);
        CHECK((strstr(msg, "ffn_gate") || strstr(msg, "gate_proj")) && strstr(msg, "172") && strstr(msg, "173"),
              "config intermediate_size 173: message lacks tensor or shapes: %s", msg);
        bl_model_destroy(m);
    }
    free(h2);
    h2 = replace(cfg, cn, NULL, "\"vocab_size\": 512", "\"vocab_size\": 511", &n2);
    write_file(cpath, h2, n2);
    expect_load("config vocab_size 511", dir, BL_ERR_FORMAT, "token_embd", "[512, 64]", "[511, 64]");
    free(h2);
    h2 = replace(cfg, cn, NULL, "\"num_key_value_heads\": 4", "\"num_key_value_heads\": 3", &n2);
    write_file(cpath, h2, n2);
    expect_load("config kv heads 3", dir, BL_ERR_CONFIG, "n_head_kv 3", NULL, NULL);
    free(h2);
    h2 = replace(cfg, cn, NULL, "\"model_type\": \"llama\"", "\"model_type\": \"gpt2\"", &n2);
    write_file(cpath, h2, n2);
    expect_load("config model_type gpt2", dir, BL_ERR_UNSUPPORTED, "gpt2", NULL, NULL);
    free(h2);
    h2 = replace(cfg, cn, NULL, "\"rope_theta\"", "\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4}, \"rope_theta\"", &n2);
    write_file(cpath, h2, n2);
    expect_load("config rope_scaling yarn", dir, BL_ERR_UNSUPPORTED, "yarn", NULL, NULL);
    free(h2);
    h2 = replace(cfg, cn, NULL, "\"rope_theta\"", "\"rope_scaling\": {\"rope_type\": \"linear\"}, \"rope_theta\"", &n2);
    write_file(cpath, h2, n2);
    expect_load("config rope_scaling without factor", dir, BL_ERR_CONFIG, "factor", NULL, NULL);
    free(h2);
    write_file(cpath, "this is not { JSON", 18);
    expect_load("config not JSON", dir, BL_ERR_CONFIG, "not valid JSON", "config.json", NULL);
    write_file(cpath, "", 0);
    expect_load("config empty", dir, BL_ERR_CONFIG, "config.json", NULL, NULL);
    write_file(cpath, cfg, cn);

    /* folder with a config and no weights; sharded index problems */
    remove(wpath);
    expect_load("config without weights", dir, BL_ERR_IO, "model.safetensors", NULL, NULL);
    {
        char ip[400];
        const char *idx_evil = "{\"weight_map\": {\"model.embed_tokens.weight\": \"../../etc/passwd\"}}";
        const char *idx_missing = "{\"weight_map\": {\"model.embed_tokens.weight\": \"model-00001-of-00002.safetensors\"}}";
        snprintf(ip, sizeof ip, "%s/model.safetensors.index.json", dir);
        write_file(ip, idx_evil, strlen(idx_evil));
        expect_load("index with ../ shard", dir, BL_ERR_FORMAT, "shard", "index.json", NULL);
        write_file(ip, idx_missing, strlen(idx_missing));
        expect_load("index with missing shard", dir, BL_ERR_IO, "model-00001-of-00002.safetensors", NULL, NULL);
        write_file(ip, "{\"weight_map\": [", 16);
        expect_load("index not JSON", dir, BL_ERR_FORMAT, "index.json", "not valid JSON", NULL);
        write_file(ip, "{\"metadata\": {}}", 16);
        expect_load("index without weight_map", dir, BL_ERR_FORMAT, "weight_map", NULL, NULL);
        remove(ip);
    }

    free(hdr);
    free(s);
    free(cfg);
}

/* ---- llama2.c checkpoints, odd files, tokenizers ---- */
static void test_l2c_and_misc(void) {
    size_t bn, tn, cut;
    uint8_t *b = (uint8_t *)tu_read(tu_shared("models/stories260K.bin"), &bn);
    uint8_t *tk = (uint8_t *)tu_read(tu_shared("models/tok512.bin"), &tn);
    const char *p = tpath("bad.bin"), *tp = tpath("tok.bin");
    int bad_cuts = 0;
    bl_model_desc d;
    if (!b || !tk) { CHECK(0, "cannot read stories260K.bin / tok512.bin"); free(b); free(tk); return; }
    write_file(p, b, bn);
    expect_load("llama2.c intact", p, BL_OK, NULL, NULL, NULL);
    for (cut = bn - 1;; cut = cut > 997 ? cut - 997 : 0) {
        bl_model *m = NULL;
        bl_result r;
        const char *msg;
        if (truncate(p, (off_t)cut) != 0) { CHECK(0, "truncate failed"); break; }
        r = bl_model_load(&m, p, NULL);
        msg = bl_model_last_error(m);
        if (!(r == BL_ERR_FORMAT && strstr(msg, p) && strstr(msg, "not a model file")) && bad_cuts++ < 5)
            CHECK(0, "llama2.c cut at %zu: %d %s", cut, r, msg);
        bl_model_destroy(m);
        if (cut == 0) break;
    }
    CHECK(bad_cuts == 0, "%d truncated llama2.c files gave a wrong result", bad_cuts);
    {   /* a lying header: more layers than the file holds */
        uint8_t *c = gg_copy(b, bn);
        put_u32(c, 8, 6);
        write_file(p, c, bn);
        expect_load("llama2.c header says 6 layers", p, BL_ERR_FORMAT, "bad.bin", NULL, NULL);
        {   /* the same weights as a v1 export ("ak42", 256-byte header, no RoPE tables) */
            size_t body = bn - 28 - 512 * 8 * 4, v1n = 256 + body;
            uint8_t *v1 = (uint8_t *)calloc(v1n, 1);
            memcpy(v1, "24ka\x01\0\0\0", 8);
            memcpy(v1 + 8, b, 28);
            v1[36] = 1;
            memcpy(v1 + 256, b + 28, body);
            write_file(p, v1, v1n);
            expect_load("llama2.c v1 intact", p, BL_OK, NULL, NULL, NULL);
            write_file(p, v1, v1n - 4);
            expect_load("llama2.c v1 short by 4 bytes", p, BL_ERR_FORMAT, "bad.bin", "truncated", NULL);
            write_file(p, v1, 200);
            expect_load("llama2.c v1 cut inside the header", p, BL_ERR_FORMAT, "bad.bin", NULL, NULL);
            v1[36] = 0; /* says it has its own classifier, which the file lacks */
            write_file(p, v1, v1n);
            expect_load("llama2.c v1 unshared without a classifier", p, BL_ERR_FORMAT, "bad.bin", NULL, NULL);
            free(v1);
        }
        memcpy(c, "24ka\x02\0\0\0", 8);
        write_file(p, c, bn);
        expect_load("llama2.c version-2 export", p, BL_ERR_UNSUPPORTED, "version-2", NULL, NULL);
        free(c);
    }

    /* empty file, missing file, NULL path, a directory with nothing */
    write_file(p, "", 0);
    expect_load("empty file", p, BL_ERR_FORMAT, "bad.bin", "not a model file", NULL);
    expect_load("missing file", tpath("no-such-file.gguf"), BL_ERR_IO, "no-such-file.gguf", NULL, NULL);
    expect_load("NULL path", NULL, BL_ERR_ARG, "path", NULL, NULL);
    {
        char ed[400];
        snprintf(ed, sizeof ed, "%s", tpath("empty-dir"));
        mkdir(ed, 0700);
        expect_load("empty directory", ed, BL_ERR_CONFIG, "empty-dir", NULL, NULL);
    }

    /* tokenizers: intact, truncated, garbage, wrong sizes */
    write_file(tp, tk, tn);
    expect_tok("tok512 intact", tp, 512, BL_OK, NULL, NULL);
    expect_tok("tok512 with n_vocab 0", tp, 0, BL_ERR_ARG, "tok.bin", NULL);
    expect_tok("tok512 with n_vocab 513", tp, 513, BL_ERR_TOKENIZER, "tok.bin", "512");
    expect_tok("missing tokenizer", tpath("nope.bin"), 512, BL_ERR_IO, "nope.bin", NULL);
    for (cut = tn - 1;; cut = cut > 97 ? cut - 97 : 0) {
        bl_tokenizer *t = NULL;
        bl_result r;
        const char *msg;
        if (truncate(tp, (off_t)cut) != 0) { CHECK(0, "truncate failed"); break; }
        r = bl_tokenizer_load(&t, tp, 512);
        msg = bl_tokenizer_last_error(t);
        if (!(r == BL_ERR_TOKENIZER && strstr(msg, "tok.bin") && strstr(msg, "truncated")) && bad_cuts++ < 5)
            CHECK(0, "tok512 cut at %zu: %d %s", cut, r, msg);
        bl_tokenizer_destroy(t);
        if (cut == 0) break;
    }
    CHECK(bad_cuts == 0, "%d truncated tokenizers gave a wrong result", bad_cuts);
    {
        uint8_t junk[4096];
        uint64_t x = 0x9e3779b97f4a7c15ull;
        size_t i;
        for (i = 0; i < sizeof junk; i++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; junk[i] = (uint8_t)x; }
        write_file(tp, junk, sizeof junk);
        expect_tok("garbage tokenizer", tp, 512, BL_ERR_TOKENIZER, "tok.bin", NULL);
        memcpy(junk, "GGUF", 4);
        write_file(tp, junk, sizeof junk);
        expect_tok("garbage tokenizer with GGUF magic", tp, 512, ANY_ERROR, "tok.bin", NULL);
        /* a good model with a garbage tokenizer beside it */
        write_file(p, b, bn);
        memset(&d, 0, sizeof d);
        d.tokenizer_path = tp;
        expect_load_desc("model with garbage tokenizer", p, &d, ANY_ERROR, "tok.bin", NULL, NULL);
        d.tokenizer_path = tpath("nope.bin");
        expect_load_desc("model with missing tokenizer", p, &d, BL_ERR_IO, "nope.bin", NULL, NULL);
        write_file(tp, tk, tn);
        d.tokenizer_path = tp;
        expect_load_desc("model with tok512", p, &d, BL_OK, NULL, NULL, NULL);
    }
    free(b);
    free(tk);
}

/* ---- bad calls on a good context ---- */
static void test_ctx(void) {
    bl_model *m = NULL;
    bl_ctx *c = NULL;
    bl_ctx_desc cd;
    int32_t toks[8] = {1, 403, 407, 261, 378, 5, 6, 7}, bad[2];
    bl_result r;
    if (bl_model_load(&m, tu_shared("models/stories260K.gguf"), NULL) != BL_OK) {
        CHECK(0, "load: %s", bl_model_last_error(m));
        bl_model_destroy(m);
        return;
    }
    memset(&cd, 0, sizeof cd);
    cd.n_ctx = 8;
    cd.n_threads = 1;
    r = bl_ctx_create(&c, m, &cd);
    CHECK(r == BL_OK && bl_ctx_n_ctx(c) == 8, "ctx create: %d %s", r, bl_ctx_last_error(c));

    bad[0] = 1; bad[1] = 512;
    r = bl_ctx_decode(c, bad, 2, BL_LOGITS_LAST);
    CHECK(r == BL_ERR_ARG && strstr(bl_ctx_last_error(c), "512") && strstr(bl_ctx_last_error(c), "vocabulary"), "id 512: %d %s", r,
          bl_ctx_last_error(c));
    bad[1] = -1;
    r = bl_ctx_decode(c, bad, 2, BL_LOGITS_LAST);
    CHECK(r == BL_ERR_ARG && strstr(bl_ctx_last_error(c), "-1"), "id -1: %d %s", r, bl_ctx_last_error(c));
    bad[1] = INT32_MAX;
    r = bl_ctx_decode(c, bad, 2, BL_LOGITS_LAST);
    CHECK(r == BL_ERR_ARG, "id INT32_MAX: %d %s", r, bl_ctx_last_error(c));
    CHECK(bl_ctx_pos(c) == 0, "a rejected decode moved the position to %d", bl_ctx_pos(c));
    r = bl_ctx_decode(c, toks, 0, BL_LOGITS_LAST);
    CHECK(r == BL_ERR_ARG && bl_ctx_last_error(c)[0], "zero tokens: %d", r);
    r = bl_ctx_decode(c, NULL, 3, BL_LOGITS_LAST);
    CHECK(r == BL_ERR_ARG, "NULL tokens: %d", r);
    r = bl_ctx_decode(c, toks, -4, BL_LOGITS_LAST);
    CHECK(r == BL_ERR_ARG, "negative count: %d", r);

    r = bl_ctx_decode(c, toks, 5, BL_LOGITS_LAST);
    CHECK(r == BL_OK && bl_ctx_pos(c) == 5, "decode 5: %d pos %d", r, bl_ctx_pos(c));
    r = bl_ctx_decode(c, toks, 4, BL_LOGITS_LAST);
    CHECK(r == BL_ERR_CTX_FULL && strstr(bl_ctx_last_error(c), "do not fit"), "overfill by 1: %d %s", r, bl_ctx_last_error(c));
    CHECK(bl_ctx_pos(c) == 5, "overfill moved the position to %d", bl_ctx_pos(c));
    CHECK(bl_ctx_logits(c, -1) != NULL, "logits lost after a rejected decode");
    r = bl_ctx_decode(c, toks + 5, 3, BL_LOGITS_LAST);
    CHECK(r == BL_OK && bl_ctx_pos(c) == 8, "fill to the brim: %d pos %d", r, bl_ctx_pos(c));
    r = bl_ctx_decode(c, toks, 1, BL_LOGITS_LAST);
    CHECK(r == BL_ERR_CTX_FULL, "decode on a full context: %d", r);
    r = bl_ctx_decode(c, toks, INT32_MAX, BL_LOGITS_ALL);
    CHECK(r == BL_ERR_CTX_FULL || r == BL_ERR_ARG, "INT32_MAX tokens: %d", r);

    r = bl_kv_truncate(c, 9);
    CHECK(r == BL_ERR_ARG && strstr(bl_ctx_last_error(c), "9"), "truncate beyond pos: %d %s", r, bl_ctx_last_error(c));
    r = bl_kv_truncate(c, -1);
    CHECK(r == BL_ERR_ARG, "truncate to -1: %d", r);
    CHECK(bl_ctx_pos(c) == 8, "bad truncates moved the position to %d", bl_ctx_pos(c));
    r = bl_kv_truncate(c, 3);
    CHECK(r == BL_OK && bl_ctx_pos(c) == 3, "truncate to 3: %d pos %d", r, bl_ctx_pos(c));
    r = bl_kv_truncate(c, 4);
    CHECK(r == BL_ERR_ARG, "truncate forward after shrinking: %d", r);
    CHECK(bl_ctx_logits(c, 0) == NULL && bl_ctx_logits(c, 7) == NULL, "logits survive a truncate");
    CHECK(bl_ctx_sample(c, NULL) == -1, "sampling without logits should give -1");
    bl_ctx_destroy(c);

    c = NULL;
    cd.n_ctx = 1 << 23;
    r = bl_ctx_create(&c, m, &cd);
    CHECK(r == BL_ERR_ARG && bl_ctx_last_error(c)[0], "n_ctx 2^23: %d", r);
    bl_ctx_destroy(c);
    c = NULL;
    r = bl_ctx_create(&c, NULL, NULL);
    CHECK(r == BL_ERR_ARG && strstr(bl_ctx_last_error(c), "model"), "ctx on NULL model: %d", r);
    bl_ctx_destroy(c);

    {   /* tokenizer calls with bad arguments */
        const bl_tokenizer *t = bl_model_tokenizer(m);
        char buf[16];
        int32_t ids[4];
        CHECK(bl_tokenize(t, NULL, -1, ids, 4, 0) == BL_ERR_ARG, "tokenize NULL text");
        CHECK(bl_tokenize(NULL, "x", -1, ids, 4, 0) == BL_ERR_ARG, "tokenize NULL tokenizer");
        CHECK(bl_token_to_text(t, -1, 512, buf, sizeof buf) == BL_ERR_ARG, "token_to_text 512");
        CHECK(bl_token_to_text(t, -1, -7, buf, sizeof buf) == BL_ERR_ARG, "token_to_text -7");
        CHECK(bl_token_to_text(t, -1, 403, buf, 0) == BL_ERR_ARG, "token_to_text cap 0");
        CHECK(bl_token_to_text(t, -1, 403, buf, 1) == 0 && buf[0] == 0, "token_to_text cap 1");
        CHECK(bl_token_piece(t, 9999, NULL) == NULL, "token_piece 9999");
        CHECK(bl_tokenize(t, "\xff\xfe\xc3", -1, ids, 4, 0) > 0, "invalid UTF-8 should fall back to bytes");
        CHECK(bl_tokenize(t, "Once upon a time", -1, ids, 2, BL_TOK_ADD_BOS) == 5 && ids[0] == 1, "short output buffer");
        CHECK(bl_tokenize(t, "Once upon a time", -1, NULL, 0, 0) == 4, "count only");
    }
    bl_model_destroy(m);
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0); /* results print even if LeakSanitizer ends the process */
    snprintf(tmp, sizeof tmp, "/tmp/berlin-badinput-XXXXXX");
    if (!mkdtemp(tmp)) { printf("mkdtemp failed\n"); return 2; }
    test_gguf();
    test_safetensors();
    test_l2c_and_misc();
    test_ctx();
    rm_tree(tmp);
    return tu_finish();
}
