/* test_fuzz.c - a bounded, deterministic mutation fuzzer for every parser
   that reads outside input: the GGUF reader (in memory, and whole models
   from files), safetensors headers, config.json, the JSON reader itself,
   tokenizer.json (with its normalizers, split regexes, added tokens and
   decoders), gpt2-type GGUF vocabularies and llama2.c tokenizer.bin /
   checkpoint headers.

   Seeds are the real small files in $BERLIN_SHARED; each iteration applies a
   few byte flips, interesting integers, truncations, insertions and (for
   JSON) syntax tokens with a fixed-seed PRNG, so a run is reproducible.
   A crash or sanitizer report is the failure; beyond that every call must
   return BL_OK or an error with a non-empty message. The whole run stops
   after about 20 s (each target has its share), which keeps it usable under
   ASan/UBSan. Set BERLIN_FUZZ_TRACE=1 to print each iteration before it runs
   (the last line before a crash is the culprit), BERLIN_FUZZ_SCALE=N to run
   N times the iterations and time, BERLIN_FUZZ_SEED=S to explore elsewhere.

   Built with -DBL_LIBFUZZER and clang -fsanitize=fuzzer, the same targets
   sit behind LLVMFuzzerTestOneInput (the first input byte picks the target: GGUF in memory, JSON,
   tokenizer.bin, whole model file, tokenizer.json). */
#define _POSIX_C_SOURCE 200809L
#define BERLIN_IMPLEMENTATION
#include "berlin.h"
#include "testutil.h"
#include <time.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmp[256];
static int violations;
static const char *tpath(const char *name) {
    static char bufs[4][512];
    static int k;
    char *b = bufs[k++ & 3];
    snprintf(b, 512, "%s/%s", tmp, name);
    return b;
}

static int write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    int ok;
    if (!f) return 0;
    ok = !n || fwrite(data, 1, n, f) == n;
    return fclose(f) == 0 && ok;
}

static void violation(const char *target, long iter, const char *what) {
    if (violations++ < 10) printf("VIOLATION %s iteration %ld: %s\n", target, iter, what);
}

/* ---- one input per target (shared with the libFuzzer entry point) ---- */

/* Use a loaded tokenizer a little: encode, decode every id, look at pieces. */
static void use_tokenizer(const bl_tokenizer *t) {
    int32_t ids[64];
    char buf[32];
    int n = bl_tokenize(t, "Once upon a time, <s> caf\xc3\xa9 \xf0\x9f\x98\x80 \xff!", -1, ids, 64, BL_TOK_ADD_BOS | BL_TOK_PARSE_SPECIAL), i;
    for (i = 0; i < n && i < 64; i++) bl_token_to_text(t, i ? ids[i - 1] : -1, ids[i], buf, sizeof buf);
    for (i = 0; i < bl_tokenizer_n_vocab(t) && i < 600; i++) {
        int len;
        bl_token_piece(t, i, &len);
        bl_token_to_text(t, -1, i, buf, sizeof buf);
    }
    bl_tokenizer_is_eog(t, bl_tokenizer_eos(t));
}

/* The GGUF reader on an exact-size heap copy (so ASan sees any overread),
   then the tokenizer built from its metadata. */
static void fuzz_gguf_mem(const uint8_t *data, size_t n, long iter) {
    bl__file f;
    bl__gguf g;
    bl__tensor *ts = NULL;
    int nt = 0;
    char err[BL__ERRLEN];
    uint8_t *copy = (uint8_t *)malloc(n ? n : 1);
    bl_result r;
    memcpy(copy, data, n);
    memset(&f, 0, sizeof f);
    f.path = (char *)"fuzz.gguf";
    f.data = copy;
    f.size = n;
    err[0] = 0;
    r = bl__gguf_read(&g, &f, &ts, &nt, err);
    if (r != BL_OK && !err[0]) violation("gguf", iter, "error without a message");
    if (r == BL_OK) {
        bl_tokenizer *t = NULL;
        const char *s;
        size_t sl;
        int i;
        for (i = 0; i < nt; i++) /* every tensor must lie inside the buffer */
            if (ts[i].data < copy || ts[i].data + ts[i].nbytes > copy + n) violation("gguf", iter, "tensor outside the file");
        if (bl__gguf_str(&g, "general.architecture", &s, &sl) && sl > n) violation("gguf", iter, "string longer than the file");
        r = bl__tok_from_gguf(&t, &g, "fuzz.gguf");
        if (r != BL_OK && !bl_tokenizer_last_error(t)[0]) violation("gguf", iter, "tokenizer error without a message");
        if (r == BL_OK) use_tokenizer(t);
        bl_tokenizer_destroy(t);
    }
    while (nt) free(ts[--nt].name);
    free(ts);
    bl__gguf_free(&g);
    free(copy);
}

/* A whole model from a file or folder: load (read into an exact-size
   buffer), then a context, a short decode and a sample. */
static void fuzz_model_path(const char *target, const char *path, const char *tok_path, long iter) {
    bl_model *m = NULL;
    bl_model_desc d;
    bl_result r;
    memset(&d, 0, sizeof d);
    d.no_mmap = 1;
    d.tokenizer_path = tok_path;
    r = bl_model_load(&m, path, &d);
    if (r != BL_OK && !bl_model_last_error(m)[0]) violation(target, iter, "load error without a message");
    if (r == BL_OK) {
        bl_ctx *c = NULL;
        bl_ctx_desc cd;
        const bl_model_info *in = bl_model_get_info(m);
        memset(&cd, 0, sizeof cd);
        cd.n_ctx = 8;
        cd.n_threads = 1;
        if (!in->format || !in->arch || in->n_vocab <= 0 || in->dim <= 0) violation(target, iter, "loaded model with empty info");
        r = bl_ctx_create(&c, m, &cd);
        if (r != BL_OK && !bl_ctx_last_error(c)[0]) violation(target, iter, "ctx error without a message");
        if (r == BL_OK) {
            int32_t toks[3];
            bl_sampler_desc s;
            int i;
            for (i = 0; i < 3; i++) toks[i] = (int32_t)((i + 1) % in->n_vocab);
            memset(&s, 0, sizeof s);
            s.temperature = 0.9f;
            s.top_p = 0.9f;
            r = bl_ctx_decode(c, toks, 3, BL_LOGITS_ALL);
            if (r != BL_OK) violation(target, iter, "decode failed on a loaded model");
            else {
                int32_t t = bl_ctx_sample(c, &s);
                if (t < 0 || t >= in->n_vocab) violation(target, iter, "sampled id outside the vocabulary");
            }
        }
        bl_ctx_destroy(c);
        if (bl_model_tokenizer(m)) use_tokenizer(bl_model_tokenizer(m));
    }
    bl_model_destroy(m);
}

/* Walk every node of a parsed document through the accessors. */
static void fuzz_json_mem(const uint8_t *data, size_t n, long iter) {
    bl__json j;
    char *copy = (char *)malloc(n ? n : 1);
    memcpy(copy, data, n);
    if (bl__json_parse(&j, copy, n) != 0) {
        if (!j.err[0]) violation("json", iter, "parse error without a message");
    } else {
        int k;
        if (j.n_nodes < 1) violation("json", iter, "parsed to no nodes");
        for (k = 0; k < j.n_nodes; k++) {
            const bl__jnode *nd = &j.nodes[k];
            double v;
            size_t len;
            if (nd->end < nd->start || nd->end > n || nd->next <= k || nd->next > j.n_nodes) violation("json", iter, "node out of bounds");
            if (nd->type == BL__J_STR) {
                char *s = bl__json_str(&j, k, &len);
                if (!s || len > 4 * (nd->end - nd->start)) violation("json", iter, "string unescape");
                free(s);
            } else if (nd->type == BL__J_NUM) {
                bl__json_num(&j, k, &v);
            } else if (nd->type == BL__J_OBJ || nd->type == BL__J_ARR) {
                bl__json_get(&j, k, "dtype");
                bl__json_at(&j, k, 0);
                bl__json_at(&j, k, nd->n - 1);
                bl__json_at(&j, k, nd->n);
            }
        }
    }
    bl__json_free(&j);
    free(copy);
}

/* A tokenizer file (llama2.c tokenizer.bin or tokenizer.json): loaded (or
   refused with a message), then used to encode and decode. */
static void fuzz_tokenizer(const uint8_t *data, size_t n, long iter, const char *name, const char *file, int n_vocab) {
    const char *p = tpath(file);
    bl_tokenizer *t = NULL;
    bl_result r;
    if (!write_file(p, data, n)) { violation(name, iter, "cannot write the temp file"); return; }
    r = bl_tokenizer_load(&t, p, n_vocab);
    if (r != BL_OK && !bl_tokenizer_last_error(t)[0]) violation(name, iter, "error without a message");
    if (r == BL_OK) {
        int32_t ids[64];
        char text[256];
        int k = bl_tokenize(t, "<s>Hello  world's 123 \xC3\xA9\xCC\x81\n\tx", -1, ids, 64, BL_TOK_PARSE_SPECIAL);
        if (k < 0) violation(name, iter, "bl_tokenize failed on a loaded tokenizer");
        else bl_detokenize(t, ids, k < 64 ? k : 64, text, sizeof text, BL_DETOK_SPECIAL);
        use_tokenizer(t);
    }
    bl_tokenizer_destroy(t);
}
static void fuzz_tok_file(const uint8_t *data, size_t n, long iter) { fuzz_tokenizer(data, n, iter, "tokenizer", "tok.bin", 512); }
static void fuzz_tokjson_file(const uint8_t *data, size_t n, long iter) { fuzz_tokenizer(data, n, iter, "tokenizer.json", "tokenizer.json", 0); }

#ifndef BL_LIBFUZZER
/* ---- the bounded driver ---- */
static int trace;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t rng_state = 0x0123456789abcdefull;

static uint64_t rnd(void) { /* splitmix64 */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static size_t below(size_t n) { return n ? (size_t)(rnd() % n) : 0; }

/* ---- mutations ---- */
static const char *const json_dict[] = {
    "{", "}", "[", "]", "\"", ":", ",", "\\", "\\u", "\\ud800", "\\udc00", "\\u0000", "1e999", "-0", "-", "0.5e-3", "null",
    "true", "false", "\"dtype\"", "\"shape\"", "\"data_offsets\"", "\"F32\"", "\"BF16\"", "\"I64\"", "[0,0]", "[1e20,1e21]",
    "\"hidden_size\"", "\"text_config\"", "\"rope_scaling\"", "{\"rope_type\":\"llama3\"}", "\"__metadata__\"", "\"model.norm.weight\"",
    "\"lm_head.weight\"", "\"model.layers.99999.mlp.up_proj.weight\"", " ", "\t\n", "\x01", "\xff", "\xe2\x96\x81",
};

static void put_interesting(uint8_t *b, size_t n, size_t pos, size_t width, size_t file_size) {
    static const uint64_t vals[] = {0, 1, 2, 3, 7, 8, 13, 30, 31, 32, 64, 255, 256, 512, 4096, 65535, 65536, 0x7fffffffull,
                                    0x80000000ull, 0xffffffffull, 1ull << 32, 1ull << 40, 1ull << 62, 1ull << 63, ~0ull, ~0ull - 7};
    uint64_t v = below(5) ? vals[below(sizeof vals / sizeof vals[0])] : (uint64_t)file_size + below(64) - 32;
    if (pos + width > n) return;
    memcpy(b + pos, &v, width); /* little-endian low bytes */
}

/* Mutate b[0..*n) in place, capacity cap. Positions fall in [0, hot) three times in four (when hot > 0). */
static void mutate(uint8_t *b, size_t *n, size_t cap, size_t hot, int json) {
    int k, rounds = 1 + (int)below(json ? 3 : 4);
    for (k = 0; k < rounds; k++) {
        size_t len = *n, pos, m;
        if (len == 0) {
            if (cap) { b[0] = (uint8_t)rnd(); *n = 1; }
            continue;
        }
        pos = hot && hot < len && below(4) ? below(hot) : below(len);
        switch (below(json ? 9 : 8)) {
        case 0: b[pos] ^= (uint8_t)(1u << below(8)); break;
        case 1: { static const uint8_t v8[] = {0, 1, 0x7f, 0x80, 0xff, '"', '\\', '{', '0'}; b[pos] = v8[below(sizeof v8)]; break; }
        case 2: put_interesting(b, len, pos, 4, len); break;
        case 3: put_interesting(b, len, pos, 8, len); break;
        case 4: if (below(3) == 0) *n = pos; else b[pos] = (uint8_t)rnd(); break;
        case 5: /* insert random bytes */
            m = 1 + below(16);
            if (len + m > cap) break;
            memmove(b + pos + m, b + pos, len - pos);
            { size_t i; for (i = 0; i < m; i++) b[pos + i] = (uint8_t)rnd(); }
            *n = len + m;
            break;
        case 6: /* delete a run */
            m = 1 + below(16);
            if (pos + m > len) m = len - pos;
            memmove(b + pos, b + pos + m, len - pos - m);
            *n = len - m;
            break;
        case 7: { /* copy a chunk over another place */
            size_t from = below(len);
            m = 1 + below(32);
            if (from + m > len) m = len - from;
            if (pos + m > len) m = len - pos;
            memmove(b + pos, b + from, m);
            break;
        }
        default: { /* JSON syntax token */
            const char *t = json_dict[below(sizeof json_dict / sizeof json_dict[0])];
            m = strlen(t);
            if (len + m > cap) break;
            if (below(2)) { memmove(b + pos + m, b + pos, len - pos); *n = len + m; }
            else if (pos + m > len) break;
            memcpy(b + pos, t, m);
            break;
        }
        }
    }
}

typedef struct seed { uint8_t *data; size_t n, hot; } seed;

static int load_seed(seed *s, const char *rel, size_t max, size_t hot) {
    char *b = tu_read(tu_shared(rel), &s->n);
    if (!b) { CHECK(0, "cannot read seed %s", rel); return 0; }
    if (s->n > max) s->n = max;
    s->data = (uint8_t *)b;
    s->hot = hot;
    return 1;
}

static double scale = 1;

/* Run `fn` on mutations of the seeds for at most iters iterations / secs seconds. */
static long drive(const char *target, seed *seeds, int n_seeds, long iters, double secs,
                  void (*fn)(const uint8_t *, size_t, long), int json) {
    double t0 = now();
    size_t cap = 0;
    uint8_t *buf;
    long it;
    int i;
    for (i = 0; i < n_seeds; i++) if (seeds[i].n + 4096 > cap) cap = seeds[i].n + 4096;
    buf = (uint8_t *)malloc(cap);
    iters = (long)(iters * scale);
    secs *= scale;
    if (trace) printf("%s empty input\n", target);
    fn(buf, 0, -1); /* the empty input first */
    for (it = 0; it < iters && now() - t0 < secs; it++) {
        const seed *s = &seeds[it % n_seeds];
        size_t n = s->n;
        memcpy(buf, s->data, n);
        if (it >= n_seeds) mutate(buf, &n, cap, s->hot, json); /* the first pass runs the seeds as they are */
        if (trace) printf("%s %ld (%zu bytes)\n", target, it, n);
        fn(buf, n, it);
    }
    free(buf);
    printf("%-12s %6ld iterations in %.1f s\n", target, it, now() - t0);
    return it;
}

/* Targets that need a folder or extra arguments go through these. */
static void st_one(const uint8_t *d, size_t n, long it) {
    if (!write_file(tpath("st/model.safetensors"), d, n)) { violation("safetensors", it, "cannot write"); return; }
    fuzz_model_path("safetensors", tpath("st"), NULL, it);
}
static void cfg_one(const uint8_t *d, size_t n, long it) {
    if (!write_file(tpath("cfg/config.json"), d, n)) { violation("config", it, "cannot write"); return; }
    fuzz_model_path("config", tpath("cfg"), NULL, it);
}
static void gguf_file_one(const uint8_t *d, size_t n, long it) {
    if (!write_file(tpath("m.gguf"), d, n)) { violation("gguf-model", it, "cannot write"); return; }
    fuzz_model_path("gguf-model", tpath("m.gguf"), NULL, it);
}
static void l2c_one(const uint8_t *d, size_t n, long it) {
    if (!write_file(tpath("m.bin"), d, n)) { violation("llama2c", it, "cannot write"); return; }
    fuzz_model_path("llama2c", tpath("m.bin"), below(2) ? tu_shared("models/tok512.bin") : NULL, it);
}

/* Fixed inputs the JSON reader must reject or read exactly. */
static void json_cases(void) {
    static const char *const bad[] = {
        "", " ", "[", "]", "{", "{\"a\"}", "{\"a\":}", "{\"a\":1,}", "[1,]", "[1 2]", "{\"a\":1}x", "-", "-x", "tru", "nul", "\"abc",
        "\"abc\\", "\"\\u12\"", "\"\\u12g4\"", "\"\\q\"", "\"a\nb\"", "{1:2}", "[\"a\":1]",
    };
    size_t i;
    bl__json j;
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int r = bl__json_parse(&j, bad[i], strlen(bad[i]));
        CHECK(r != 0 && j.err[0], "JSON reader accepted invalid input '%s'", bad[i]);
        bl__json_free(&j);
    }
    {
        const char *s = "{\"k\": [\"\\ud83d\\ude00\", \"\\ud800x\", \"a\\u00e9\\n\", 1.5e3, -2, true, null], \"x\": {}}";
        CHECK(bl__json_parse(&j, s, strlen(s)) == 0, "valid JSON rejected: %s", j.err);
        if (j.n_nodes) {
            int arr = bl__json_get(&j, 0, "k");
            char *a = bl__json_str(&j, bl__json_at(&j, arr, 0), NULL), *b = bl__json_str(&j, bl__json_at(&j, arr, 1), NULL);
            char *c = bl__json_str(&j, bl__json_at(&j, arr, 2), NULL);
            double v = 0;
            CHECK(a && !strcmp(a, "\xf0\x9f\x98\x80"), "surrogate pair");
            CHECK(b && !strcmp(b, "\xef\xbf\xbdx"), "lone surrogate should become U+FFFD");
            CHECK(c && !strcmp(c, "a\xc3\xa9\n"), "escapes");
            CHECK(bl__json_num(&j, bl__json_at(&j, arr, 3), &v) && v == 1500, "number");
            CHECK(bl__json_at(&j, arr, 7) == -1 && bl__json_get(&j, 0, "nope") == -1, "missing members");
            CHECK(bl__json_get(&j, bl__json_get(&j, 0, "x"), "a") == -1, "empty object");
            free(a); free(b); free(c);
        }
        bl__json_free(&j);
    }
    {   /* nesting: 100 deep is fine, 10000 deep is refused without a stack overflow */
        char *deep = (char *)malloc(20000);
        memset(deep, '[', 100);
        memset(deep + 100, ']', 100);
        CHECK(bl__json_parse(&j, deep, 200) == 0, "100-deep array rejected: %s", j.err);
        bl__json_free(&j);
        memset(deep, '[', 10000);
        memset(deep + 10000, ']', 10000);
        CHECK(bl__json_parse(&j, deep, 20000) != 0 && j.err[0], "10000-deep array accepted");
        bl__json_free(&j);
        free(deep);
    }
}

#else
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int init;
    if (!init) {
        snprintf(tmp, sizeof tmp, "/tmp/berlin-libfuzzer-XXXXXX");
        if (!mkdtemp(tmp)) return 0;
        init = 1;
        (void)tu_shared; (void)tu_read; (void)tu_finish; /* used by the driver, not here */
    }
    if (size < 1) return 0;
    switch (data[0] % 5) {
    case 0: fuzz_gguf_mem(data + 1, size - 1, 0); break;
    case 1: fuzz_json_mem(data + 1, size - 1, 0); break;
    case 2: fuzz_tok_file(data + 1, size - 1, 0); break;
    case 3: fuzz_tokjson_file(data + 1, size - 1, 0); break;
    default: /* a whole model file: GGUF, safetensors (no config beside it) or llama2.c */
        if (write_file(tpath("m.gguf"), data + 1, size - 1)) fuzz_model_path("model", tpath("m.gguf"), NULL, 0);
        break;
    }
    return 0;
}
#endif

#ifndef BL_LIBFUZZER
int main(void) {
    seed gg[2], st[1], cfg[3], js[7], tok[1], l2c[2], spm[1], tj[3];
    static const char *const tj_seeds[3] = {
        /* byte-level: NFC, a Split regex, ByteLevel, added tokens */
        "{\"added_tokens\": [{\"id\": 6, \"content\": \"<s>\", \"special\": true}, {\"id\": 7, \"content\": \"<t>\", \"special\": false, \"rstrip\": true}],"
        " \"normalizer\": {\"type\": \"NFC\"}, \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\":"
        " {\"Regex\": \"(?i:'s|'t)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s+(?!\\\\S)|\\\\s+\"},"
        " \"behavior\": \"Isolated\", \"invert\": false}, {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": false}]},"
        " \"decoder\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\", \"ignore_merges\": true,"
        " \"vocab\": {\"H\": 0, \"e\": 1, \"l\": 2, \"o\": 3, \"He\": 4, \"ll\": 5, \"\\u0120\": 8}, \"merges\": [\"H e\", [\"l\", \"l\"]]}}",
        /* SentencePiece-style: Prepend/Replace, byte fallback, the decoder chain */
        "{\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", \"prepend\": \"\\u2581\"}, {\"type\": \"Replace\","
        " \"pattern\": {\"String\": \" \"}, \"content\": \"\\u2581\"}]}, \"pre_tokenizer\": null, \"decoder\": {\"type\": \"Sequence\", \"decoders\":"
        " [{\"type\": \"Replace\", \"pattern\": {\"String\": \"\\u2581\"}, \"content\": \" \"}, {\"type\": \"ByteFallback\"}, {\"type\": \"Fuse\"},"
        " {\"type\": \"Strip\", \"content\": \" \", \"start\": 1, \"stop\": 0}]}, \"added_tokens\": [{\"id\": 0, \"content\": \"<unk>\", \"special\": true}],"
        " \"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"byte_fallback\": true, \"fuse_unk\": true, \"vocab\": {\"<unk>\": 0, \"<0x41>\": 1,"
        " \"\\u2581\": 2, \"H\": 3, \"\\u2581H\": 4}, \"merges\": [\"\\u2581 H\"]}}",
        /* Metaspace and Digits */
        "{\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Digits\", \"individual_digits\": true},"
        " {\"type\": \"Metaspace\", \"replacement\": \"\\u2581\", \"prepend_scheme\": \"first\", \"split\": true}]},"
        " \"decoder\": {\"type\": \"Metaspace\", \"replacement\": \"\\u2581\", \"prepend_scheme\": \"first\"},"
        " \"model\": {\"type\": \"BPE\", \"vocab\": {\"\\u2581\": 0, \"a\": 1, \"1\": 2}, \"merges\": []}}"};
    const char *e = getenv("BERLIN_FUZZ_TRACE");
    size_t n, hn;
    char *cfg_txt, *st_buf;
    memset(gg, 0, sizeof gg);
    setvbuf(stdout, NULL, _IONBF, 0);
    trace = e && *e && *e != '0';
    if ((e = getenv("BERLIN_FUZZ_SCALE")) && atof(e) > 0) scale = atof(e);
    if ((e = getenv("BERLIN_FUZZ_SEED")) && *e) rng_state = strtoull(e, NULL, 0);
    snprintf(tmp, sizeof tmp, "/tmp/berlin-fuzz-XXXXXX");
    if (!mkdtemp(tmp)) { printf("mkdtemp failed\n"); return 2; }
    json_cases();

    /* GGUF: the full model, and its metadata alone (n_tensors = 0, cut after the keys) */
    if (load_seed(&gg[0], "models/stories260K.gguf", (size_t)-1, 14200) && load_seed(&gg[1], "models/stories260K.gguf", 11347, 0)) {
        memset(gg[1].data + 8, 0, 8);
        drive("gguf", gg, 2, 6000, 4.5, fuzz_gguf_mem, 0);
        drive("gguf-model", gg, 1, 150, 2.0, gguf_file_one, 0);
        if (load_seed(&spm[0], "tokenizers/gguf/ggml-vocab-llama-spm.gguf", (size_t)-1, 4096)) {
            drive("gguf-vocab", spm, 1, 200, 1.5, fuzz_gguf_mem, 0);
            free(spm[0].data);
        }
    }

    /* safetensors and config.json in folders beside the real other half */
    mkdir(tpath("st"), 0700);
    mkdir(tpath("cfg"), 0700);
    cfg_txt = tu_read(tu_shared("models/stories260K-hf/config.json"), &n);
    st_buf = tu_read(tu_shared("models/stories260K-hf/model.safetensors"), &hn);
    if (cfg_txt && st_buf) {
        uint64_t hl;
        write_file(tpath("st/config.json"), cfg_txt, n);
        write_file(tpath("cfg/model.safetensors"), st_buf, hn);
        memcpy(&hl, st_buf, 8);
        st[0].data = (uint8_t *)st_buf;
        st[0].n = hn;
        st[0].hot = (size_t)hl + 8;
        drive("safetensors", st, 1, 600, 3.5, st_one, 1);
        cfg[0].data = (uint8_t *)cfg_txt;
        cfg[0].n = n;
        cfg[0].hot = 0;
        load_seed(&cfg[1], "golden/llama3-gqa/hf-f32/config.json", (size_t)-1, 0);
        load_seed(&cfg[2], "golden/vlm-text-config/hf-f32/config.json", (size_t)-1, 0);
        drive("config", cfg, 3, 600, 2.5, cfg_one, 1);

        /* the JSON reader alone: configs, a safetensors header, tokenizer-ish JSON, random bytes */
        js[0] = cfg[0];
        js[1] = cfg[1];
        js[2] = cfg[2];
        js[3].data = (uint8_t *)st_buf + 8;
        js[3].n = (size_t)hl;
        js[3].hot = 0;
        load_seed(&js[4], "tokenizers/json/mistral7b/tokenizer_config.json", (size_t)-1, 0);
        load_seed(&js[5], "tokenizers/json/llama3/tokenizer.json", 6000, 0);
        {
            size_t i;
            js[6].n = 512;
            js[6].hot = 0;
            js[6].data = (uint8_t *)malloc(512);
            for (i = 0; i < 512; i++) js[6].data[i] = (uint8_t)rnd();
        }
        drive("json", js, 7, 30000, 3.0, fuzz_json_mem, 1);
        free(js[4].data);
        free(js[5].data);
        free(js[6].data);
        free(cfg[1].data);
        free(cfg[2].data);
    }
    free(cfg_txt);
    free(st_buf);

    /* tokenizer.json (small seeds with every supported feature), gpt2-type GGUF vocabularies */
    {
        int k;
        for (k = 0; k < 3; k++) {
            tj[k].n = strlen(tj_seeds[k]);
            tj[k].hot = 0;
            tj[k].data = (uint8_t *)malloc(tj[k].n + 1);
            memcpy(tj[k].data, tj_seeds[k], tj[k].n);
        }
        drive("tok-json", tj, 3, 4000, 2.0, fuzz_tokjson_file, 1);
        for (k = 0; k < 3; k++) free(tj[k].data);
        if (load_seed(&spm[0], "tokenizers/gguf/ggml-vocab-gpt-2.gguf", (size_t)-1, 0)) {
            drive("gguf-bpe", spm, 1, 300, 1.5, fuzz_gguf_mem, 0);
            free(spm[0].data);
        }
    }

    /* llama2.c tokenizer.bin, and checkpoint headers (the rest of the file kept) */
    if (load_seed(&tok[0], "models/tok512.bin", (size_t)-1, 0)) {
        drive("tokenizer", tok, 1, 600, 1.5, fuzz_tok_file, 0);
        free(tok[0].data);
    }
    if (load_seed(&l2c[0], "models/stories260K.bin", (size_t)-1, 28)) {
        /* and the same weights as a v1 export: 256-byte header, no RoPE tables */
        size_t rope = 512 * 8 * 4, body = l2c[0].n - 28 - rope;
        uint32_t magic_ver[2] = {0x616b3432u, 1};
        l2c[1].n = 256 + body;
        l2c[1].hot = 256;
        l2c[1].data = (uint8_t *)calloc(l2c[1].n, 1);
        memcpy(l2c[1].data, magic_ver, 8);
        memcpy(l2c[1].data + 8, l2c[0].data, 28);
        l2c[1].data[36] = 1; /* shared classifier */
        memcpy(l2c[1].data + 256, l2c[0].data + 28, body);
        drive("llama2c", l2c, 2, 300, 1.5, l2c_one, 0);
        free(l2c[0].data);
        free(l2c[1].data);
    }
    free(gg[0].data);
    free(gg[1].data);
    rm_tree(tmp);
    CHECK(violations == 0, "%d calls broke the error contract (see VIOLATION lines)", violations);
    return tu_finish();
}
#endif
