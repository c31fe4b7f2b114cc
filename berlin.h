/* berlin.h - a CPU-native LLM inference engine in one C header.      v0.1.0

   Define BERLIN_IMPLEMENTATION in exactly one C or C++ file before including
   this header to compile the implementation; include it plainly elsewhere.

   QUICK START (compiles as written: cc -O2 -fopenmp demo.c -lm)

       #define BERLIN_IMPLEMENTATION
       #include "berlin.h"
       #include <stdio.h>

       int main(void) {
           bl_model *m = NULL;
           if (bl_model_load(&m, "models/stories260K.gguf", NULL) != BL_OK) {
               fprintf(stderr, "%s\n", bl_model_last_error(m));
               bl_model_destroy(m);
               return 1;
           }
           bl_ctx *c = NULL;
           bl_ctx_create(&c, m, NULL);
           int32_t toks[256];
           int n = bl_tokenize(bl_model_tokenizer(m), "Once upon a time", -1,
                               toks, 256, BL_TOK_ADD_BOS);
           bl_ctx_decode(c, toks, n, BL_LOGITS_LAST);
           for (int i = 0; i < 40; i++) {
               int32_t t = bl_ctx_sample(c, NULL);            // greedy
               char piece[64];
               bl_token_to_text(bl_model_tokenizer(m), toks[n - 1], t, piece, sizeof piece);
               fputs(piece, stdout);
               toks[n - 1] = t;
               if (bl_ctx_decode(c, &t, 1, BL_LOGITS_LAST) != BL_OK) break;
           }
           bl_ctx_destroy(c);
           bl_model_destroy(m);
           return 0;
       }

   TABLE OF CONTENTS (grep for the tag)
       >>base    results, allocation, errors, files (mmap or read)
       >>json    a small JSON reader (configs, safetensors headers, tokenizer.json)
       >>gguf    GGUF v2/v3 reader
       >>st      safetensors (single, sharded) reader
       >>l2c     llama2.c checkpoints
       >>map     one weight mapper for every format and naming
       >>tok     tokenizer (SentencePiece-style BPE)
       >>kern    kernels: conversion, dequantization, dot products, matmul
       >>ctx     contexts, batches of contexts, the llama forward pass
       >>kv      KV cache
       >>samp    sampling

   CONFIGURATION MACROS (defaults in brackets)
       BL_MALLOC/BL_REALLOC/BL_FREE  allocation hooks, all three or none [libc]
       BL_ASSERT(x)                  programmer-error check [assert]
       BL_NO_MMAP                    read files into memory instead of mmap [off]
       BL_NO_THREADS                 never use OpenMP even when compiled with it [off]
       BL_NO_SIMD                    plain C kernels only [off]
       BL_API                        linkage of public functions [extern]
     None of these changes a public struct's layout; they matter only in the file
     that defines BERLIN_IMPLEMENTATION. No -march flag is needed: the x86 SIMD
     kernels (AVX2+FMA+F16C; AVX-512 with VNNI, and BF16 where present) carry
     their own target attributes and are chosen from cpuid when a context is
     created. The environment variable BL_SIMD=scalar|avx2|avx512 caps the
     level (for testing a lower path on a newer CPU).

   CONCEPTS
       model    bl_model: weights (mmapped, read-only), hyper-parameters and the
                tokenizer. Loaded once; may be shared by any number of threads.
       context  bl_ctx: one sequence's KV cache, scratch memory, logits and
                sampler RNG. Belongs to one thread at a time.
       batch    bl_batch: scratch for decoding several contexts in one forward
                step, reading the weights once for all of them.
       tokenizer bl_tokenizer: text <-> token ids, read from the model's own files
                (GGUF metadata, llama2.c tokenizer.bin).
       adapter, speculation: planned (fluid learning, draft models).

   LICENSE: MIT, see the end of the file.
*/
#ifndef BERLIN_H
#define BERLIN_H

#define BERLIN_VERSION_MAJOR 0
#define BERLIN_VERSION_MINOR 1
#define BERLIN_VERSION_PATCH 0

#include <stddef.h>
#include <stdint.h>

#ifndef BL_API
#define BL_API extern
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* >>base  RESULTS ----------------------------------------------------------
   Every fallible call returns a bl_result; the words behind a failure live
   with the object that failed (bl_model_last_error, bl_ctx_last_error...). */

#define BL_RESULT_LIST(X)                                              \
    X(BL_OK,              0, "ok")                                     \
    X(BL_ERR_IO,         -1, "file cannot be opened or read")          \
    X(BL_ERR_FORMAT,     -2, "malformed file")                         \
    X(BL_ERR_UNSUPPORTED,-3, "unsupported feature")                    \
    X(BL_ERR_NOMEM,      -4, "out of memory")                          \
    X(BL_ERR_ARG,        -5, "invalid argument")                       \
    X(BL_ERR_CONFIG,     -6, "model configuration is wrong or missing") \
    X(BL_ERR_CTX_FULL,   -7, "context is full")                        \
    X(BL_ERR_TOKENIZER,  -8, "no usable tokenizer")

typedef enum bl_result {
#define BL__X(name, value, text) name = value,
    BL_RESULT_LIST(BL__X)
#undef BL__X
    BL_RESULT_MIN_ = -9
} bl_result;

/* Short text for a result code. Thread safety: any thread. */
BL_API const char *bl_result_string(bl_result r);

/* Weight types, numbered as GGUF numbers them. */
typedef enum bl_type {
    BL_TYPE_F32  = 0,
    BL_TYPE_F16  = 1,
    BL_TYPE_Q4_0 = 2,
    BL_TYPE_Q8_0 = 8,
    BL_TYPE_Q4_K = 12,
    BL_TYPE_Q6_K = 14,
    BL_TYPE_BF16 = 30,
    BL_TYPE_COUNT_ = 31
} bl_type;

/* Name of a weight type ("Q4_0"), or NULL if it is not one we read. */
BL_API const char *bl_type_name(int type);
/* What activations are rounded to before the dot products with weights of
   this type: BL_TYPE_F32 (nothing: exact math, for F32 and F16 weights),
   BL_TYPE_BF16 (BF16 weights), BL_TYPE_Q8_0 (int8 blocks of 32, for every
   quantized type); -1 if we do not read the type. Thread safety: any thread. */
BL_API int bl_type_activation(int type);

/* >>model  MODEL ------------------------------------------------------------ */
typedef struct bl_model bl_model;
typedef struct bl_tokenizer bl_tokenizer;
typedef struct bl_ctx bl_ctx;

typedef struct bl_model_desc {
    const char *tokenizer_path; /* NULL: the model's own tokenizer [NULL] */
    int no_mmap;                /* 1: read weights into memory [0: mmap] */
    int huge_pages;             /* 1: copy the matrices into anonymous memory backed by
                                   transparent huge pages (fewer TLB misses; costs a copy
                                   and private memory) [0: read them where they are] */
} bl_model_desc;

typedef struct bl_model_info {
    const char *format;   /* "gguf", "safetensors", "mistral", "llama2c" */
    const char *arch;     /* "llama", "qwen2", "mistral3"... */
    int n_vocab;
    int dim;              /* hidden size */
    int n_layer;
    int n_head;
    int n_head_kv;
    int head_dim;
    int n_ff;             /* feed-forward hidden size */
    int n_ctx_train;      /* trained context length, 0 if unknown */
    float norm_eps;
    float rope_theta;
    int rope_neox;        /* 1: pairs (j, j+head_dim/2); 0: pairs (2j, 2j+1) */
    int tied_output;      /* output projection is the token embedding */
    int has_qkv_bias;
    int weight_type;      /* bl_type of the attention/FFN matrices */
    int64_t n_params;
    size_t weight_bytes;  /* bytes of all weights the forward pass reads */
} bl_model_info;

/* Open a model from a file (GGUF, safetensors, llama2.c .bin) or a folder
   (Hugging Face config.json + safetensors, or Mistral params.json +
   consolidated.safetensors). The format is detected from the contents.
   *out is always set, also on failure, so that bl_model_last_error can say
   why; release it with bl_model_destroy. desc may be NULL.
   Thread safety: any thread; the loaded model is read-only and may be shared. */
BL_API bl_result bl_model_load(bl_model **out, const char *path, const bl_model_desc *desc);
BL_API void bl_model_destroy(bl_model *m);
/* Why the last call on m failed ("" if it did not). Thread safety: as m. */
BL_API const char *bl_model_last_error(const bl_model *m);
/* Thread safety: any thread. */
BL_API const bl_model_info *bl_model_get_info(const bl_model *m);
/* The model's tokenizer, or NULL when it has none. Thread safety: any thread. */
BL_API const bl_tokenizer *bl_model_tokenizer(const bl_model *m);

/* >>tok  TOKENIZER ---------------------------------------------------------- */
enum {
    BL_TOK_ADD_BOS       = 1, /* prepend BOS if the vocabulary wants one */
    BL_TOK_PARSE_SPECIAL = 2  /* match control-token text in the input */
};

/* Load a tokenizer alone: a GGUF (its tokenizer.ggml.* keys) or a llama2.c
   tokenizer.bin (n_vocab must then be given: the file does not store it).
   *out is always set; see bl_tokenizer_last_error. Thread safety: any thread. */
BL_API bl_result bl_tokenizer_load(bl_tokenizer **out, const char *path, int n_vocab);
BL_API void bl_tokenizer_destroy(bl_tokenizer *t);
BL_API const char *bl_tokenizer_last_error(const bl_tokenizer *t);
/* Encode text (len < 0: NUL-terminated). Returns the number of ids, which may
   exceed max (then only max were written: call again with more room), or a
   negative bl_result. Thread safety: any thread (the tokenizer is read-only). */
BL_API int bl_tokenize(const bl_tokenizer *t, const char *text, int len,
                       int32_t *out, int max, int flags);
/* The text of token `tok` following token `prev` (-1 at the start), with the
   SentencePiece word marker turned into a space, the space after BOS
   dropped and byte tokens as raw bytes. NUL-terminated; returns its length
   (truncated to cap-1) or a negative bl_result. Thread safety: any thread. */
BL_API int bl_token_to_text(const bl_tokenizer *t, int32_t prev, int32_t tok, char *buf, int cap);
/* The vocabulary entry as stored (no conversion); *len receives its length. */
BL_API const char *bl_token_piece(const bl_tokenizer *t, int32_t tok, int *len);
BL_API int bl_tokenizer_n_vocab(const bl_tokenizer *t);
BL_API int32_t bl_tokenizer_bos(const bl_tokenizer *t);   /* -1 if none */
BL_API int32_t bl_tokenizer_eos(const bl_tokenizer *t);   /* -1 if none */
/* 1 if tok ends generation (EOS, or an end-of-turn token). */
BL_API int bl_tokenizer_is_eog(const bl_tokenizer *t, int32_t tok);

/* >>ctx  CONTEXT ------------------------------------------------------------ */
typedef struct bl_ctx_desc {
    int n_ctx;        /* KV cache length in tokens [min(trained length, 4096)] */
    int n_batch;      /* tokens per forward step inside bl_ctx_decode [64] */
    int n_threads;    /* OpenMP threads [all cores] */
    uint64_t seed;    /* sampler RNG seed [0x5eed] */
} bl_ctx_desc;

enum {
    BL_LOGITS_LAST = 0, /* keep the logits of the last token only */
    BL_LOGITS_ALL  = 1, /* keep one row of logits per token given */
    BL_LOGITS_NONE = 2  /* keep none (feeding context only) */
};

/* Make a context on a loaded model. *out is always set on BL_ERR_NOMEM etc.
   (see bl_ctx_last_error). Thread safety: any thread; m may be shared. */
BL_API bl_result bl_ctx_create(bl_ctx **out, const bl_model *m, const bl_ctx_desc *desc);
BL_API void bl_ctx_destroy(bl_ctx *c);
BL_API const char *bl_ctx_last_error(const bl_ctx *c);
/* Run n tokens through the model at the current position, in batches of
   n_batch (one token is a decoding step; many are prompt processing).
   Thread safety: one thread per context. */
BL_API bl_result bl_ctx_decode(bl_ctx *c, const int32_t *tokens, int n, int logits_mode);
/* Row i of the logits of the last bl_ctx_decode (i = -1: the last row), or
   NULL if that row was not kept. n_vocab floats. */
BL_API float *bl_ctx_logits(bl_ctx *c, int i);
/* Number of tokens in the KV cache (the next position). */
BL_API int bl_ctx_pos(const bl_ctx *c);
BL_API int bl_ctx_n_ctx(const bl_ctx *c);
/* The tokens in the KV cache, bl_ctx_pos(c) of them. */
BL_API const int32_t *bl_ctx_tokens(const bl_ctx *c);
/* Forget everything at positions >= pos, in O(1). */
BL_API bl_result bl_kv_truncate(bl_ctx *c, int pos);
/* Empty the KV cache and reseed the sampler; the model stays loaded. */
BL_API void bl_ctx_reset(bl_ctx *c);
BL_API void bl_ctx_set_seed(bl_ctx *c, uint64_t seed);
BL_API void bl_ctx_set_threads(bl_ctx *c, int n_threads);

/* Several sequences in one forward step. The rows of every sequence are
   stacked, so each weight matrix is read once per step however many
   contexts take part (a server decoding one token for each of 8 clients
   reads the model once, not 8 times); positions, the KV cache and attention
   stay each context's own. bl_ctx_decode is this with one sequence. */
typedef struct bl_batch bl_batch;
typedef struct bl_batch_desc {
    int max_tokens;   /* rows per forward step, all sequences together [512] */
    int max_seqs;     /* sequences per bl_batch_decode call [64] */
    int n_threads;    /* OpenMP threads [all cores] */
} bl_batch_desc;
typedef struct bl_batch_seq {
    bl_ctx *ctx;            /* a context of the batch's model, at most once per call */
    const int32_t *tokens;  /* n_tokens ids to run at ctx's current position */
    int n_tokens;
    int logits_mode;        /* BL_LOGITS_LAST / _ALL / _NONE, kept in ctx */
} bl_batch_seq;

/* Scratch for up to max_tokens stacked rows on model m. *out is always set
   on error (see bl_batch_last_error). Thread safety: any thread; m may be
   shared. */
BL_API bl_result bl_batch_create(bl_batch **out, const bl_model *m, const bl_batch_desc *desc);
BL_API void bl_batch_destroy(bl_batch *b);
BL_API const char *bl_batch_last_error(const bl_batch *b);
/* Run seqs[0..n) together: afterwards each context holds its logits
   (bl_ctx_logits, bl_ctx_sample), position and tokens exactly as if it had
   been given to bl_ctx_decode alone. More rows than max_tokens take several
   steps (rows are taken in the order of seqs). A sequence that cannot run
   (cache full, token outside the vocabulary, context of another model or
   given twice) fails alone: per_seq[i] (when not NULL) receives its code,
   bl_ctx_last_error(ctx) the reason, and the others still run. Returns BL_OK
   when every sequence ran, else the first failing code.
   Thread safety: one thread per batch, and none of the contexts in use
   elsewhere during the call. */
BL_API bl_result bl_batch_decode(bl_batch *b, const bl_batch_seq *seqs, int n, bl_result *per_seq);

/* >>samp  SAMPLER ----------------------------------------------------------- */
typedef struct bl_sampler_desc {
    float temperature;    /* <= 0: greedy [0] */
    int top_k;            /* keep the k most likely, 0: off [0] */
    float top_p;          /* nucleus mass, 0 or >= 1: off [0] */
    float min_p;          /* drop below min_p * p(top), 0: off [0] */
    float repeat_penalty; /* llama.cpp-style, 0 or 1: off [0] */
    int repeat_last_n;    /* tokens the penalty looks back on [64] */
} bl_sampler_desc;

/* Pick the next token from the last row of logits, with the context's RNG.
   desc NULL: greedy. Thread safety: one thread per context. */
BL_API int32_t bl_ctx_sample(bl_ctx *c, const bl_sampler_desc *desc);
/* The same on any logits row, with an explicit RNG state (advanced). */
BL_API int32_t bl_sample_logits(float *logits, int n_vocab, const bl_sampler_desc *desc,
                                const int32_t *history, int n_history, uint64_t *rng,
                                void *scratch /* 8*n_vocab bytes */);

#ifdef __cplusplus
}
#endif
#endif /* BERLIN_H */

/* ======================================================================== */
/*                              IMPLEMENTATION                              */
/* ======================================================================== */
#if defined(BERLIN_IMPLEMENTATION) && !defined(BERLIN__IMPLEMENTED)
#define BERLIN__IMPLEMENTED

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <math.h>
#include <float.h>
#include <limits.h>

#if !defined(BL_NO_MMAP) && (defined(__unix__) || defined(__APPLE__))
#define BL__POSIX_MMAP 1
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#endif
/* madvise (read-ahead, huge pages) and anonymous maps are hidden by strict
   ISO C modes; on these Linux targets their values are fixed by the kernel. */
#if defined(BL__POSIX_MMAP) && defined(__linux__)
#if defined(MADV_HUGEPAGE) && defined(MADV_WILLNEED) && defined(MAP_ANONYMOUS)
#define BL__MADVISE 1
#define BL__MAP_ANON MAP_ANONYMOUS
#define BL__MADV_HUGEPAGE MADV_HUGEPAGE
#define BL__MADV_WILLNEED MADV_WILLNEED
#elif (defined(__x86_64__) || defined(__aarch64__) || defined(__i386__)) && !defined(__cplusplus)
extern int madvise(void *addr, size_t len, int advice);
#define BL__MADVISE 1
#define BL__MAP_ANON 0x20
#define BL__MADV_HUGEPAGE 14
#define BL__MADV_WILLNEED 3
#endif
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <dirent.h>
#include <sys/stat.h>
#define BL__POSIX 1
#endif

#if defined(_OPENMP) && !defined(BL_NO_THREADS)
#include <omp.h>
#define BL__OMP(x) _Pragma(#x)
#define BL__THREAD_ID() omp_get_thread_num()
#define BL__N_THREADS() omp_get_num_threads()
#else
#define BL__OMP(x)
#define BL__THREAD_ID() 0
#define BL__N_THREADS() 1
#endif

#if defined(BL_MALLOC) && defined(BL_REALLOC) && defined(BL_FREE)
#elif !defined(BL_MALLOC) && !defined(BL_REALLOC) && !defined(BL_FREE)
#define BL_MALLOC(sz) malloc(sz)
#define BL_REALLOC(p, sz) realloc(p, sz)
#define BL_FREE(p) free(p)
#else
#error "define all of BL_MALLOC, BL_REALLOC and BL_FREE, or none"
#endif

#ifndef BL_ASSERT
#include <assert.h>
#define BL_ASSERT(x) assert(x)
#endif

#ifdef __cplusplus
#define BL__STATIC_ASSERT(c, msg) static_assert(c, #msg)
#else
#define BL__STATIC_ASSERT(c, msg) typedef char bl__static_assert_##msg[(c) ? 1 : -1]
#endif

/* >>base  BASE ---------------------------------------------------------------
   Errors are formatted into a buffer owned by the failing object, so a
   caller can print one line that names the file, tensor or field. Files are
   mmapped read-only; BL_NO_MMAP (or desc.no_mmap) reads them instead, which
   costs memory but works where mmap does not. */

const char *bl_result_string(bl_result r) {
    switch (r) {
#define BL__X(name, value, text) case name: return text;
        BL_RESULT_LIST(BL__X)
#undef BL__X
    default: return "unknown result";
    }
}

#define BL__ERRLEN 512

static void *bl__alloc(size_t n) { return BL_MALLOC(n ? n : 1); }
static void *bl__calloc(size_t n) {
    void *p = BL_MALLOC(n ? n : 1);
    if (p) memset(p, 0, n ? n : 1);
    return p;
}
static char *bl__strndup(const char *s, size_t n) {
    char *p = (char *)bl__alloc(n + 1);
    if (p) { memcpy(p, s, n); p[n] = 0; }
    return p;
}

#if defined(__GNUC__) || defined(__clang__)
#define BL__PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define BL__PRINTF(a, b)
#endif

static bl_result bl__fmt(char *err, bl_result code, const char *fmt, ...) BL__PRINTF(3, 4);
static bl_result bl__fmt(char *err, bl_result code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, BL__ERRLEN, fmt, ap);
    va_end(ap);
    return code;
}

typedef struct bl__file {
    char *path;
    const uint8_t *data;
    size_t size;
    int mapped; /* 1: munmap on close, 0: BL_FREE */
} bl__file;

static bl_result bl__file_open(bl__file *f, const char *path, int no_mmap, char *err) {
    FILE *fp;
    long sz;
    memset(f, 0, sizeof *f);
    f->path = bl__strndup(path, strlen(path));
    if (!f->path) return bl__fmt(err, BL_ERR_NOMEM, "out of memory opening %s", path);
#ifdef BL__POSIX_MMAP
    if (!no_mmap) {
        struct stat st;
        int fd = open(path, O_RDONLY);
        if (fd < 0) return bl__fmt(err, BL_ERR_IO, "%s: cannot open", path);
        if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
            close(fd);
            return bl__fmt(err, BL_ERR_IO, "%s: not a regular file", path);
        }
        f->size = (size_t)st.st_size;
        if (f->size == 0) { close(fd); f->data = (const uint8_t *)""; return BL_OK; }
        {
            void *p = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
            close(fd);
            if (p != MAP_FAILED) {
                f->data = (const uint8_t *)p;
                f->mapped = 1;
#ifdef BL__MADVISE
                /* start reading ahead now: every page is read on the first token */
                madvise(p, f->size, BL__MADV_WILLNEED);
#endif
                return BL_OK;
            }
        }
    }
#else
    (void)no_mmap;
#endif
    fp = fopen(path, "rb");
    if (!fp) return bl__fmt(err, BL_ERR_IO, "%s: cannot open", path);
    if (fseek(fp, 0, SEEK_END) != 0 || (sz = ftell(fp)) < 0 || fseek(fp, 0, SEEK_SET) != 0) {
        fclose(fp);
        return bl__fmt(err, BL_ERR_IO, "%s: cannot size the file", path);
    }
    f->size = (size_t)sz;
    if (f->size == 0) { fclose(fp); f->data = (const uint8_t *)""; return BL_OK; } /* as the mmap path */
    f->data = (const uint8_t *)bl__alloc(f->size);
    if (!f->data) { fclose(fp); return bl__fmt(err, BL_ERR_NOMEM, "%s: out of memory reading %zu bytes", path, f->size); }
    if (f->size && fread((void *)f->data, 1, f->size, fp) != f->size) {
        fclose(fp);
        return bl__fmt(err, BL_ERR_IO, "%s: short read", path);
    }
    fclose(fp);
    return BL_OK;
}

static void bl__file_close(bl__file *f) {
#ifdef BL__POSIX_MMAP
    if (f->mapped && f->data) munmap((void *)f->data, f->size);
    else
#endif
    if (f->data && f->size) BL_FREE((void *)f->data);
    BL_FREE(f->path);
    memset(f, 0, sizeof *f);
}

static int bl__is_dir(const char *path) {
#ifdef BL__POSIX
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
#else
    (void)path;
    return 0;
#endif
}

static int bl__exists(const char *path) {
    FILE *fp = fopen(path, "rb");
    if (fp) fclose(fp);
    return fp != NULL;
}

static void bl__join(char *out, size_t cap, const char *dir, const char *name) {
    size_t n = strlen(dir);
    snprintf(out, cap, "%s%s%s", dir, (n && dir[n - 1] == '/') ? "" : "/", name);
}

/* Read a whole small file (configs) as a NUL-terminated string. */
static char *bl__read_text(const char *path, size_t *len, size_t max) {
    FILE *fp = fopen(path, "rb");
    char *buf;
    long sz;
    if (!fp) return NULL;
    if (fseek(fp, 0, SEEK_END) != 0 || (sz = ftell(fp)) < 0 || (size_t)sz > max || fseek(fp, 0, SEEK_SET) != 0) {
        fclose(fp);
        return NULL;
    }
    buf = (char *)bl__alloc((size_t)sz + 1);
    if (buf && fread(buf, 1, (size_t)sz, fp) != (size_t)sz) { BL_FREE(buf); buf = NULL; }
    fclose(fp);
    if (buf) { buf[sz] = 0; if (len) *len = (size_t)sz; }
    return buf;
}

/* >>json  JSON READER --------------------------------------------------------
   One pass builds a flat array of nodes; each node knows where its next
   sibling is, so walking an object is linear and lookups need no pointers.
   Strings stay in the source buffer and are unescaped on request. Depth and
   node counts are bounded, so hostile input fails cleanly. */

enum { BL__J_NULL, BL__J_FALSE, BL__J_TRUE, BL__J_NUM, BL__J_STR, BL__J_ARR, BL__J_OBJ };

typedef struct bl__jnode {
    int type;
    int next;   /* index of the next sibling (past all descendants) */
    int n;      /* children: array elements, or object members (key+value pairs) */
    size_t start, end; /* source span; strings without the quotes */
} bl__jnode;

typedef struct bl__json {
    const char *src;
    size_t len;
    bl__jnode *nodes;
    int n_nodes, cap;
    char err[128];
} bl__json;

#define BL__JSON_MAX_DEPTH 128

static int bl__json_new(bl__json *j, int type, size_t start) {
    if (j->n_nodes == j->cap) {
        int nc = j->cap ? j->cap * 2 : 256;
        bl__jnode *nn;
        if (nc > (1 << 28)) return -1;
        nn = (bl__jnode *)BL_REALLOC(j->nodes, (size_t)nc * sizeof *nn);
        if (!nn) return -1;
        j->nodes = nn;
        j->cap = nc;
    }
    j->nodes[j->n_nodes].type = type;
    j->nodes[j->n_nodes].n = 0;
    j->nodes[j->n_nodes].next = 0;
    j->nodes[j->n_nodes].start = start;
    j->nodes[j->n_nodes].end = start;
    return j->n_nodes++;
}

static size_t bl__json_ws(const bl__json *j, size_t p) {
    while (p < j->len && (j->src[p] == ' ' || j->src[p] == '\t' || j->src[p] == '\n' || j->src[p] == '\r')) p++;
    return p;
}

static int bl__json_value(bl__json *j, size_t *pp, int depth);

static int bl__json_string(bl__json *j, size_t *pp, int as_node) {
    size_t p = *pp + 1;
    int id = -1;
    while (p < j->len && j->src[p] != '"') {
        unsigned char ch = (unsigned char)j->src[p];
        if (ch < 0x20) { snprintf(j->err, sizeof j->err, "control character in string at byte %zu", p); return -2; }
        if (ch == '\\') {
            if (p + 1 >= j->len) { p = j->len; break; }
            if (j->src[p + 1] == 'u') {
                int k;
                for (k = 2; k < 6; k++)
                    if (p + (size_t)k >= j->len || !strchr("0123456789abcdefABCDEF", j->src[p + k]) || !j->src[p + k]) {
                        snprintf(j->err, sizeof j->err, "bad \\u escape at byte %zu", p);
                        return -2;
                    }
                p += 6;
                continue;
            }
            if (!strchr("\"\\/bfnrt", j->src[p + 1]) || !j->src[p + 1]) {
                snprintf(j->err, sizeof j->err, "bad escape at byte %zu", p);
                return -2;
            }
            p += 2;
            continue;
        }
        p++;
    }
    if (p >= j->len) { snprintf(j->err, sizeof j->err, "unterminated string at byte %zu", *pp); return -2; }
    if (as_node) {
        id = bl__json_new(j, BL__J_STR, *pp + 1);
        if (id < 0) return -1;
        j->nodes[id].end = p;
        j->nodes[id].next = id + 1;
    }
    *pp = p + 1;
    return id < 0 ? 0 : id;
}

static int bl__json_value(bl__json *j, size_t *pp, int depth) {
    size_t p = bl__json_ws(j, *pp);
    int id, r;
    if (depth > BL__JSON_MAX_DEPTH) { snprintf(j->err, sizeof j->err, "nesting deeper than %d", BL__JSON_MAX_DEPTH); return -2; }
    if (p >= j->len) { snprintf(j->err, sizeof j->err, "unexpected end of input"); return -2; }
    switch (j->src[p]) {
    case '{':
    case '[': {
        int is_obj = j->src[p] == '{';
        char close = is_obj ? '}' : ']';
        id = bl__json_new(j, is_obj ? BL__J_OBJ : BL__J_ARR, p);
        if (id < 0) return -1;
        p = bl__json_ws(j, p + 1);
        if (p < j->len && j->src[p] == close) { p++; goto done_container; }
        for (;;) {
            p = bl__json_ws(j, p);
            if (is_obj) {
                if (p >= j->len || j->src[p] != '"') { snprintf(j->err, sizeof j->err, "expected a key at byte %zu", p); return -2; }
                r = bl__json_string(j, &p, 1);
                if (r < 0) return r;
                p = bl__json_ws(j, p);
                if (p >= j->len || j->src[p] != ':') { snprintf(j->err, sizeof j->err, "expected ':' at byte %zu", p); return -2; }
                p++;
            }
            r = bl__json_value(j, &p, depth + 1);
            if (r < 0) return r;
            j->nodes[id].n++;
            p = bl__json_ws(j, p);
            if (p < j->len && j->src[p] == ',') { p++; continue; }
            if (p < j->len && j->src[p] == close) { p++; break; }
            snprintf(j->err, sizeof j->err, "expected ',' or '%c' at byte %zu", close, p);
            return -2;
        }
    done_container:
        j->nodes[id].end = p;
        j->nodes[id].next = j->n_nodes;
        *pp = p;
        return id;
    }
    case '"':
        r = bl__json_string(j, &p, 1);
        if (r < 0) return r;
        *pp = p;
        return r;
    case 't': case 'f': case 'n': {
        const char *w = j->src[p] == 't' ? "true" : j->src[p] == 'f' ? "false" : "null";
        size_t wl = strlen(w);
        if (p + wl > j->len || memcmp(j->src + p, w, wl) != 0) { snprintf(j->err, sizeof j->err, "bad literal at byte %zu", p); return -2; }
        id = bl__json_new(j, w[0] == 't' ? BL__J_TRUE : w[0] == 'f' ? BL__J_FALSE : BL__J_NULL, p);
        if (id < 0) return -1;
        j->nodes[id].end = p + wl;
        j->nodes[id].next = id + 1;
        *pp = p + wl;
        return id;
    }
    default: {
        size_t s = p;
        if (p < j->len && j->src[p] == '-') p++;
        if (p >= j->len || j->src[p] < '0' || j->src[p] > '9') { snprintf(j->err, sizeof j->err, "unexpected character at byte %zu", s); return -2; }
        while (p < j->len && strchr("0123456789+-.eE", j->src[p]) && j->src[p]) p++;
        id = bl__json_new(j, BL__J_NUM, s);
        if (id < 0) return -1;
        j->nodes[id].end = p;
        j->nodes[id].next = id + 1;
        *pp = p;
        return id;
    }
    }
}

/* Parse src[0..len). Returns 0, or -1 with j->err set. Free with bl__json_free. */
static int bl__json_parse(bl__json *j, const char *src, size_t len) {
    size_t p = 0;
    int r;
    memset(j, 0, sizeof *j);
    j->src = src;
    j->len = len;
    r = bl__json_value(j, &p, 0);
    if (r == -1) { snprintf(j->err, sizeof j->err, "out of memory"); return -1; }
    if (r < 0) return -1;
    p = bl__json_ws(j, p);
    if (p != len) { snprintf(j->err, sizeof j->err, "trailing characters at byte %zu", p); return -1; }
    return 0;
}

static void bl__json_free(bl__json *j) { BL_FREE(j->nodes); memset(j, 0, sizeof *j); }

/* Is node k a string equal to s? */
static int bl__json_is(const bl__json *j, int k, const char *s) {
    size_t n = strlen(s);
    return k >= 0 && j->nodes[k].type == BL__J_STR && j->nodes[k].end - j->nodes[k].start == n &&
           memcmp(j->src + j->nodes[k].start, s, n) == 0;
}

/* Value of member `key` in object obj, or -1. */
static int bl__json_get(const bl__json *j, int obj, const char *key) {
    int k, i;
    if (obj < 0 || j->nodes[obj].type != BL__J_OBJ) return -1;
    for (i = 0, k = obj + 1; i < j->nodes[obj].n; i++) {
        int v = j->nodes[k].next;
        if (bl__json_is(j, k, key)) return v;
        k = j->nodes[v].next;
    }
    return -1;
}

/* Element i of an array (or the i-th value of an object), or -1. */
static int bl__json_at(const bl__json *j, int arr, int i) {
    int k, c;
    if (arr < 0 || (j->nodes[arr].type != BL__J_ARR && j->nodes[arr].type != BL__J_OBJ) || i < 0 || i >= j->nodes[arr].n) return -1;
    k = arr + 1;
    for (c = 0; c < i; c++) {
        if (j->nodes[arr].type == BL__J_OBJ) k = j->nodes[k].next;
        k = j->nodes[k].next;
    }
    return j->nodes[arr].type == BL__J_OBJ ? j->nodes[k].next : k;
}

static int bl__json_num(const bl__json *j, int k, double *out) {
    char buf[64];
    size_t n;
    char *end;
    if (k < 0 || j->nodes[k].type != BL__J_NUM) return 0;
    n = j->nodes[k].end - j->nodes[k].start;
    if (n >= sizeof buf) return 0;
    memcpy(buf, j->src + j->nodes[k].start, n);
    buf[n] = 0;
    *out = strtod(buf, &end);
    return *end == 0;
}

static void bl__utf8_put(char **o, uint32_t cp) {
    char *p = *o;
    if (cp < 0x80) *p++ = (char)cp;
    else if (cp < 0x800) { *p++ = (char)(0xC0 | (cp >> 6)); *p++ = (char)(0x80 | (cp & 63)); }
    else if (cp < 0x10000) { *p++ = (char)(0xE0 | (cp >> 12)); *p++ = (char)(0x80 | ((cp >> 6) & 63)); *p++ = (char)(0x80 | (cp & 63)); }
    else { *p++ = (char)(0xF0 | (cp >> 18)); *p++ = (char)(0x80 | ((cp >> 12) & 63)); *p++ = (char)(0x80 | ((cp >> 6) & 63)); *p++ = (char)(0x80 | (cp & 63)); }
    *o = p;
}

static uint32_t bl__hex4(const char *s) {
    uint32_t v = 0;
    int i;
    for (i = 0; i < 4; i++) {
        char ch = s[i];
        v = v * 16 + (uint32_t)(ch >= 'a' ? ch - 'a' + 10 : ch >= 'A' ? ch - 'A' + 10 : ch - '0');
    }
    return v;
}

/* Unescape string node k into a new NUL-terminated buffer (length in *len). */
static char *bl__json_str(const bl__json *j, int k, size_t *len) {
    const char *s, *e;
    char *out, *o;
    if (k < 0 || j->nodes[k].type != BL__J_STR) return NULL;
    s = j->src + j->nodes[k].start;
    e = j->src + j->nodes[k].end;
    out = o = (char *)bl__alloc((size_t)(e - s) + 1);
    if (!out) return NULL;
    while (s < e) {
        if (*s != '\\') { *o++ = *s++; continue; }
        s++;
        switch (*s) {
        case 'b': *o++ = '\b'; s++; break;
        case 'f': *o++ = '\f'; s++; break;
        case 'n': *o++ = '\n'; s++; break;
        case 'r': *o++ = '\r'; s++; break;
        case 't': *o++ = '\t'; s++; break;
        case 'u': {
            uint32_t cp = bl__hex4(s + 1);
            s += 5;
            if (cp >= 0xD800 && cp < 0xDC00 && s + 6 <= e && s[0] == '\\' && s[1] == 'u') {
                uint32_t lo = bl__hex4(s + 2);
                if (lo >= 0xDC00 && lo < 0xE000) { cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00); s += 6; }
            }
            if (cp >= 0xD800 && cp < 0xE000) cp = 0xFFFD;
            bl__utf8_put(&o, cp);
            break;
        }
        default: *o++ = *s++; break;
        }
    }
    *o = 0;
    if (len) *len = (size_t)(o - out);
    return out;
}

/* >>gguf  GGUF READER --------------------------------------------------------
   GGUF v2/v3: header, key-value metadata, tensor infos, aligned data. Every
   length and offset is checked against the file before it is used; keys and
   arrays are kept as pointers into the mapped file (nothing is copied). */

typedef struct bl__type_traits { const char *name; int block; int bytes; } bl__type_traits;

/* Every GGUF type we can name; `bytes` = 0 where we do not read it. */
static const bl__type_traits bl__types[40] = {
    {"F32", 1, 4},   {"F16", 1, 2},   {"Q4_0", 32, 18}, {"Q4_1", 0, 0},  {"Q4_2", 0, 0},
    {"Q4_3", 0, 0},  {"Q5_0", 0, 0},  {"Q5_1", 0, 0},   {"Q8_0", 32, 34}, {"Q8_1", 0, 0},
    {"Q2_K", 0, 0},  {"Q3_K", 0, 0},  {"Q4_K", 256, 144}, {"Q5_K", 0, 0}, {"Q6_K", 256, 210},
    {"Q8_K", 0, 0},  {"IQ2_XXS", 0, 0}, {"IQ2_XS", 0, 0}, {"IQ3_XXS", 0, 0}, {"IQ1_S", 0, 0},
    {"IQ4_NL", 0, 0}, {"IQ3_S", 0, 0}, {"IQ2_S", 0, 0},  {"IQ4_XS", 0, 0}, {"I8", 0, 0},
    {"I16", 0, 0},   {"I32", 0, 0},   {"I64", 0, 0},    {"F64", 0, 0},   {"IQ1_M", 0, 0},
    {"BF16", 1, 2},  {"Q4_0_4_4", 0, 0}, {"Q4_0_4_8", 0, 0}, {"Q4_0_8_8", 0, 0}, {"TQ1_0", 0, 0},
    {"TQ2_0", 0, 0}, {"IQ4_NL_4_4", 0, 0}, {"IQ4_NL_4_8", 0, 0}, {"IQ4_NL_8_8", 0, 0}, {"MXFP4", 0, 0},
};

const char *bl_type_name(int type) {
    if (type < 0 || type >= 40 || !bl__types[type].bytes) return NULL;
    return bl__types[type].name;
}

static const char *bl__type_any_name(int type) {
    return (type >= 0 && type < 40) ? bl__types[type].name : "unknown";
}

/* Bytes of a row of n elements of a type, 0 if n is not a whole number of blocks. */
static size_t bl__row_bytes(int type, int64_t n) {
    const bl__type_traits *t = &bl__types[type];
    if (n % t->block) return 0;
    return (size_t)(n / t->block) * (size_t)t->bytes;
}

/* One tensor of any format, under its canonical (GGUF) name. */
typedef struct bl__tensor {
    char *name;           /* canonical name, owned */
    int type;             /* bl_type */
    int n_dims;
    int64_t ne[4];        /* ne[0] is the innermost (row) length */
    const uint8_t *data;
    size_t nbytes;
    const char *file;     /* path, for messages */
} bl__tensor;

enum { BL__G_U8, BL__G_I8, BL__G_U16, BL__G_I16, BL__G_U32, BL__G_I32, BL__G_F32, BL__G_BOOL,
       BL__G_STR, BL__G_ARR, BL__G_U64, BL__G_I64, BL__G_F64, BL__G_NTYPES };

static const int bl__gguf_scalar_size[BL__G_NTYPES] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

typedef struct bl__gkv {
    const char *key;
    size_t klen;
    int type;             /* BL__G_* */
    int arr_type;         /* element type for arrays */
    uint64_t n;           /* array length */
    const uint8_t *val;   /* value (for arrays: first element) */
} bl__gkv;

typedef struct bl__gguf {
    uint32_t version;
    bl__gkv *kv;
    int64_t n_kv;
    size_t alignment;
} bl__gguf;

typedef struct bl__rd { const uint8_t *p, *end; } bl__rd;

static int bl__rd_get(bl__rd *r, void *out, size_t n) {
    if ((size_t)(r->end - r->p) < n) return 0;
    memcpy(out, r->p, n);
    r->p += n;
    return 1;
}

static int bl__rd_str(bl__rd *r, const char **s, size_t *len) {
    uint64_t n;
    if (!bl__rd_get(r, &n, 8) || n > (uint64_t)(r->end - r->p)) return 0;
    *s = (const char *)r->p;
    *len = (size_t)n;
    r->p += n;
    return 1;
}

/* Skip one value of type t; 0 on overrun. */
static int bl__rd_skip(bl__rd *r, int t, int depth) {
    if (t < 0 || t >= BL__G_NTYPES) return 0;
    if (t == BL__G_STR) { const char *s; size_t n; return bl__rd_str(r, &s, &n); }
    if (t == BL__G_ARR) {
        uint32_t at;
        uint64_t n, i;
        if (depth > 2 || !bl__rd_get(r, &at, 4) || !bl__rd_get(r, &n, 8) || at >= BL__G_NTYPES) return 0;
        if (at != BL__G_STR && at != BL__G_ARR) {
            uint64_t sz = (uint64_t)bl__gguf_scalar_size[at];
            if (n > (uint64_t)(r->end - r->p) / sz) return 0;
            r->p += n * sz;
            return 1;
        }
        if (n > (uint64_t)(r->end - r->p) / 8) return 0;
        for (i = 0; i < n; i++) if (!bl__rd_skip(r, (int)at, depth + 1)) return 0;
        return 1;
    }
    if ((size_t)(r->end - r->p) < (size_t)bl__gguf_scalar_size[t]) return 0;
    r->p += bl__gguf_scalar_size[t];
    return 1;
}

static const bl__gkv *bl__gguf_find(const bl__gguf *g, const char *key) {
    size_t n = strlen(key);
    int64_t i;
    for (i = 0; i < g->n_kv; i++)
        if (g->kv[i].klen == n && memcmp(g->kv[i].key, key, n) == 0) return &g->kv[i];
    return NULL;
}

/* Read a scalar number of any numeric type as double. */
static int bl__gguf_num(const bl__gguf *g, const char *key, double *out) {
    const bl__gkv *kv = bl__gguf_find(g, key);
    const uint8_t *v;
    if (!kv) return 0;
    v = kv->val;
    switch (kv->type) {
    case BL__G_U8: *out = v[0]; return 1;
    case BL__G_I8: *out = (int8_t)v[0]; return 1;
    case BL__G_BOOL: *out = v[0] != 0; return 1;
    case BL__G_U16: { uint16_t x; memcpy(&x, v, 2); *out = x; return 1; }
    case BL__G_I16: { int16_t x; memcpy(&x, v, 2); *out = x; return 1; }
    case BL__G_U32: { uint32_t x; memcpy(&x, v, 4); *out = x; return 1; }
    case BL__G_I32: { int32_t x; memcpy(&x, v, 4); *out = x; return 1; }
    case BL__G_F32: { float x; memcpy(&x, v, 4); *out = x; return 1; }
    case BL__G_U64: { uint64_t x; memcpy(&x, v, 8); *out = (double)x; return 1; }
    case BL__G_I64: { int64_t x; memcpy(&x, v, 8); *out = (double)x; return 1; }
    case BL__G_F64: { double x; memcpy(&x, v, 8); *out = x; return 1; }
    default: return 0;
    }
}

/* A string value as pointer + length (not NUL-terminated). */
static int bl__gguf_str(const bl__gguf *g, const char *key, const char **s, size_t *n) {
    const bl__gkv *kv = bl__gguf_find(g, key);
    uint64_t len;
    if (!kv || kv->type != BL__G_STR) return 0;
    memcpy(&len, kv->val, 8);
    *s = (const char *)kv->val + 8;
    *n = (size_t)len;
    return 1;
}

/* Parse a GGUF file's metadata and tensor directory. Tensors are appended to
   *tensors (BL_REALLOC-grown), named as stored. */
static bl_result bl__gguf_read(bl__gguf *g, const bl__file *f, bl__tensor **tensors, int *n_tensors, char *err) {
    bl__rd r;
    char magic[4];
    uint64_t n_t, n_kv, i;
    size_t data_off;
    const char *path = f->path;
    memset(g, 0, sizeof *g);
    r.p = f->data;
    r.end = f->data + f->size;
    if (!bl__rd_get(&r, magic, 4) || memcmp(magic, "GGUF", 4) != 0)
        return bl__fmt(err, BL_ERR_FORMAT, "%s: not a GGUF file (bad magic)", path);
    if (!bl__rd_get(&r, &g->version, 4)) return bl__fmt(err, BL_ERR_FORMAT, "%s: truncated GGUF header", path);
    if (g->version != 2 && g->version != 3)
        return bl__fmt(err, BL_ERR_UNSUPPORTED, "%s: GGUF version %u (only 2 and 3 are read)", path, (unsigned)g->version);
    if (!bl__rd_get(&r, &n_t, 8) || !bl__rd_get(&r, &n_kv, 8)) return bl__fmt(err, BL_ERR_FORMAT, "%s: truncated GGUF header", path);
    if (n_kv > f->size / 13 || n_t > f->size / 24)
        return bl__fmt(err, BL_ERR_FORMAT, "%s: header claims %llu keys and %llu tensors, more than the file can hold", path,
                       (unsigned long long)n_kv, (unsigned long long)n_t);
    g->kv = (bl__gkv *)bl__calloc((size_t)n_kv * sizeof *g->kv);
    if (!g->kv) return bl__fmt(err, BL_ERR_NOMEM, "%s: out of memory", path);
    g->n_kv = (int64_t)n_kv;
    g->alignment = 32;
    for (i = 0; i < n_kv; i++) {
        bl__gkv *kv = &g->kv[i];
        uint32_t t;
        if (!bl__rd_str(&r, &kv->key, &kv->klen) || !bl__rd_get(&r, &t, 4))
            return bl__fmt(err, BL_ERR_FORMAT, "%s: metadata key %llu runs past the end of the file", path, (unsigned long long)i);
        if (t >= BL__G_NTYPES)
            return bl__fmt(err, BL_ERR_FORMAT, "%s: metadata key '%.*s' has unknown type %u", path, (int)kv->klen, kv->key, (unsigned)t);
        kv->type = (int)t;
        if (t == BL__G_ARR) {
            uint32_t at;
            const uint8_t *save = r.p;
            if (!bl__rd_get(&r, &at, 4) || !bl__rd_get(&r, &kv->n, 8) || at >= BL__G_NTYPES)
                return bl__fmt(err, BL_ERR_FORMAT, "%s: metadata array '%.*s' is malformed", path, (int)kv->klen, kv->key);
            kv->arr_type = (int)at;
            kv->val = r.p;
            r.p = save;
        } else {
            kv->val = r.p;
        }
        if (!bl__rd_skip(&r, (int)t, 0))
            return bl__fmt(err, BL_ERR_FORMAT, "%s: metadata value '%.*s' runs past the end of the file", path, (int)kv->klen, kv->key);
    }
    {
        double a;
        if (bl__gguf_num(g, "general.alignment", &a)) {
            if (!(a >= 1 && a <= 65536) || a != floor(a) || ((size_t)a & ((size_t)a - 1)))
                return bl__fmt(err, BL_ERR_FORMAT, "%s: general.alignment %g is not a power of two", path, a);
            g->alignment = (size_t)a;
        }
    }
    {
        bl__tensor *nt = (bl__tensor *)BL_REALLOC(*tensors, (size_t)(*n_tensors + (int)n_t + 1) * sizeof *nt);
        if (!nt) return bl__fmt(err, BL_ERR_NOMEM, "%s: out of memory", path);
        *tensors = nt;
    }
    for (i = 0; i < n_t; i++) {
        bl__tensor *t = &(*tensors)[*n_tensors];
        const char *name;
        size_t nlen;
        uint32_t nd, type, d;
        uint64_t off;
        memset(t, 0, sizeof *t);
        if (!bl__rd_str(&r, &name, &nlen) || !bl__rd_get(&r, &nd, 4))
            return bl__fmt(err, BL_ERR_FORMAT, "%s: tensor info %llu runs past the end of the file", path, (unsigned long long)i);
        if (nlen > 256) return bl__fmt(err, BL_ERR_FORMAT, "%s: tensor %llu has a %zu-byte name", path, (unsigned long long)i, nlen);
        if (nd < 1 || nd > 4) return bl__fmt(err, BL_ERR_FORMAT, "%s: tensor '%.*s' has %u dimensions", path, (int)nlen, name, (unsigned)nd);
        t->n_dims = (int)nd;
        t->ne[0] = t->ne[1] = t->ne[2] = t->ne[3] = 1;
        for (d = 0; d < nd; d++) {
            uint64_t v;
            if (!bl__rd_get(&r, &v, 8)) return bl__fmt(err, BL_ERR_FORMAT, "%s: tensor '%.*s' truncated", path, (int)nlen, name);
            if (v == 0 || v > ((uint64_t)1 << 40))
                return bl__fmt(err, BL_ERR_FORMAT, "%s: tensor '%.*s' has dimension %llu", path, (int)nlen, name, (unsigned long long)v);
            t->ne[d] = (int64_t)v;
        }
        if (!bl__rd_get(&r, &type, 4) || !bl__rd_get(&r, &off, 8))
            return bl__fmt(err, BL_ERR_FORMAT, "%s: tensor '%.*s' truncated", path, (int)nlen, name);
        t->name = bl__strndup(name, nlen);
        if (!t->name) return bl__fmt(err, BL_ERR_NOMEM, "%s: out of memory", path);
        (*n_tensors)++;
        if (type >= 40 || !bl__types[type].bytes)
            return bl__fmt(err, BL_ERR_UNSUPPORTED, "%s: tensor '%s' has type %s (%u), which berlin.h does not read "
                           "(it reads F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K)", path, t->name, bl__type_any_name((int)type), (unsigned)type);
        t->type = (int)type;
        {
            size_t rb = bl__row_bytes(t->type, t->ne[0]);
            uint64_t rows = (uint64_t)t->ne[1] * (uint64_t)t->ne[2] * (uint64_t)t->ne[3];
            if (!rb) return bl__fmt(err, BL_ERR_FORMAT, "%s: tensor '%s' row of %lld is not a whole number of %s blocks", path, t->name,
                                    (long long)t->ne[0], bl__types[type].name);
            if (rows > ((uint64_t)1 << 40) / rb) return bl__fmt(err, BL_ERR_FORMAT, "%s: tensor '%s' is impossibly large", path, t->name);
            t->nbytes = (size_t)(rb * rows);
        }
        t->data = (const uint8_t *)(uintptr_t)off; /* relative until the data section is known */
        t->file = f->path;
    }
    data_off = (size_t)(r.p - f->data);
    data_off = (data_off + g->alignment - 1) / g->alignment * g->alignment;
    for (i = 0; i < n_t; i++) {
        bl__tensor *t = &(*tensors)[*n_tensors - (int)n_t + (int)i];
        uint64_t off = (uint64_t)(uintptr_t)t->data;
        if (off % g->alignment)
            return bl__fmt(err, BL_ERR_FORMAT, "%s: tensor '%s' offset %llu is not aligned to %zu", path, t->name, (unsigned long long)off, g->alignment);
        if (data_off > f->size || off > f->size - data_off || t->nbytes > f->size - data_off - off)
            return bl__fmt(err, BL_ERR_FORMAT, "%s: tensor '%s' (%zu bytes at offset %llu) runs past the end of the file (%zu bytes): truncated file?",
                           path, t->name, t->nbytes, (unsigned long long)(data_off + off), f->size);
        t->data = f->data + data_off + off;
    }
    return BL_OK;
}

static void bl__gguf_free(bl__gguf *g) { BL_FREE(g->kv); memset(g, 0, sizeof *g); }

/* >>map  MODEL AND WEIGHT MAPPING --------------------------------------------
   Every format is read into one tensor directory under GGUF's canonical names
   (token_embd, blk.N.attn_q, ...) plus one set of hyper-parameters; a single
   builder then checks shapes against the configuration and wires the layers.
   The RoPE pairing is a property of the weights (Hugging Face stores q/k rows
   in rotate-half order, Meta/GGUF/llama2.c in interleaved pairs), so the
   mapper records it in rope_neox and the forward pass applies whichever
   pairing the weights were written for, without copying them. */

#define BL__MAX_FILES 64

typedef struct bl__hparams {
    int dim, n_layer, n_head, n_head_kv, head_dim, n_ff, n_vocab, n_ctx_train;
    double eps, theta;
    int rope_neox;
    int scaling;          /* 0 none, 1 linear, 2 llama3 */
    double factor, low_ff, high_ff, orig_ctx;
    int bos, eos;
} bl__hparams;

typedef struct bl__weight {
    const uint8_t *data;
    int type;
    int64_t rows, cols;   /* rows = outputs, cols = inputs */
    size_t row_bytes;
} bl__weight;

typedef struct bl__layer {
    float *attn_norm;     /* (dim) */
    float *ffn_norm;      /* (dim) */
    float *bq;            /* (n_head*head_dim) or NULL */
    float *bk, *bv;       /* (n_head_kv*head_dim) or NULL */
    bl__weight wq;        /* (n_head*head_dim, dim) */
    bl__weight wk, wv;    /* (n_head_kv*head_dim, dim) */
    bl__weight wo;        /* (dim, n_head*head_dim) */
    bl__weight w_gate;    /* (n_ff, dim) */
    bl__weight w_up;      /* (n_ff, dim) */
    bl__weight w_down;    /* (dim, n_ff) */
} bl__layer;

struct bl_model {
    char err[BL__ERRLEN];
    bl_model_info info;
    bl__hparams hp;
    char arch[32];
    int no_mmap;
    bl__file files[BL__MAX_FILES];
    int n_files;
    bl__tensor *tensors;  /* directory, canonical names */
    int n_tensors;
    bl__weight tok_embd;  /* (n_vocab, dim) */
    bl__weight output;    /* (n_vocab, dim), = tok_embd when tied */
    float *output_norm;   /* (dim) */
    bl__layer *layers;    /* (n_layer) */
    float *rope_freq;     /* (head_dim/2) angle per position for each pair */
    float *vecs;          /* storage of all norm/bias vectors as F32 */
    void *anon;           /* the matrices' copy with desc.huge_pages, or NULL */
    size_t anon_size;
    int anon_mapped;      /* 1: munmap anon, 0: BL_FREE it */
    bl_tokenizer *tok;
};

static bl_result bl__merr(bl_model *m, bl_result code, const char *fmt, ...) BL__PRINTF(3, 4);
static bl_result bl__merr(bl_model *m, bl_result code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->err, BL__ERRLEN, fmt, ap);
    va_end(ap);
    return code;
}

static bl_result bl__model_open_file(bl_model *m, const char *path, bl__file **out) {
    bl_result r;
    if (m->n_files == BL__MAX_FILES) return bl__merr(m, BL_ERR_UNSUPPORTED, "%s: more than %d weight files", path, BL__MAX_FILES);
    r = bl__file_open(&m->files[m->n_files], path, m->no_mmap, m->err);
    if (r != BL_OK) { bl__file_close(&m->files[m->n_files]); return r; }
    *out = &m->files[m->n_files++];
    return BL_OK;
}

static bl__tensor *bl__find_tensor(const bl_model *m, const char *name) {
    int i;
    for (i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0) return &m->tensors[i];
    return NULL;
}

/* >>st  SAFETENSORS ----------------------------------------------------------
   8-byte little-endian header length, a JSON header, then raw data. Names are
   translated from Hugging Face (model.layers.N.self_attn.q_proj...) or Mistral
   (layers.N.attention.wq...) naming to canonical names; VLM checkpoints'
   language_model prefixes are stripped and their vision tensors skipped. */

static const char *const bl__hf_names[][2] = {
    {"input_layernorm.weight", "attn_norm.weight"},
    {"self_attn.q_proj.weight", "attn_q.weight"},
    {"self_attn.k_proj.weight", "attn_k.weight"},
    {"self_attn.v_proj.weight", "attn_v.weight"},
    {"self_attn.q_proj.bias", "attn_q.bias"},
    {"self_attn.k_proj.bias", "attn_k.bias"},
    {"self_attn.v_proj.bias", "attn_v.bias"},
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"post_attention_layernorm.weight", "ffn_norm.weight"},
    {"mlp.gate_proj.weight", "ffn_gate.weight"},
    {"mlp.up_proj.weight", "ffn_up.weight"},
    {"mlp.down_proj.weight", "ffn_down.weight"},
    /* Mistral consolidated naming */
    {"attention_norm.weight", "attn_norm.weight"},
    {"attention.wq.weight", "attn_q.weight"},
    {"attention.wk.weight", "attn_k.weight"},
    {"attention.wv.weight", "attn_v.weight"},
    {"attention.wo.weight", "attn_output.weight"},
    {"ffn_norm.weight", "ffn_norm.weight"},
    {"feed_forward.w1.weight", "ffn_gate.weight"},
    {"feed_forward.w2.weight", "ffn_down.weight"},
    {"feed_forward.w3.weight", "ffn_up.weight"},
};

/* Canonical name for a safetensors tensor name, or 0 if it is not a text-model weight. */
static int bl__st_canonical(const char *name, size_t n, char *out, size_t cap) {
    char buf[300];
    const char *s = buf;
    size_t i;
    if (n >= sizeof buf) return 0;
    memcpy(buf, name, n);
    buf[n] = 0;
    if (strncmp(s, "language_model.", 15) == 0) s += 15;
    if (strncmp(s, "model.language_model.", 21) == 0) s += 21;
    else if (strncmp(s, "model.", 6) == 0) s += 6;
    if (!strcmp(s, "embed_tokens.weight") || !strcmp(s, "tok_embeddings.weight")) { snprintf(out, cap, "token_embd.weight"); return 1; }
    if (!strcmp(s, "norm.weight")) { snprintf(out, cap, "output_norm.weight"); return 1; }
    if (!strcmp(s, "lm_head.weight") || !strcmp(s, "output.weight")) { snprintf(out, cap, "output.weight"); return 1; }
    if (strncmp(s, "layers.", 7) == 0) {
        char *end;
        long l = strtol(s + 7, &end, 10);
        if (end == s + 7 || *end != '.' || l < 0 || l > 100000) return 0;
        for (i = 0; i < sizeof bl__hf_names / sizeof bl__hf_names[0]; i++)
            if (!strcmp(end + 1, bl__hf_names[i][0])) { snprintf(out, cap, "blk.%ld.%s", l, bl__hf_names[i][1]); return 1; }
    }
    return 0;
}

static bl_result bl__st_read(bl_model *m, const char *path) {
    bl__file *f = NULL;
    uint64_t hlen;
    bl__json j;
    int root, i, k;
    bl_result r = bl__model_open_file(m, path, &f);
    if (r != BL_OK) return r;
    if (f->size < 8) return bl__merr(m, BL_ERR_FORMAT, "%s: too short for a safetensors header", path);
    memcpy(&hlen, f->data, 8);
    if (hlen < 2 || hlen > f->size - 8 || hlen > ((uint64_t)1 << 30))
        return bl__merr(m, BL_ERR_FORMAT, "%s: safetensors header length %llu does not fit the file (%zu bytes): truncated?", path,
                        (unsigned long long)hlen, f->size);
    if (bl__json_parse(&j, (const char *)f->data + 8, (size_t)hlen) != 0) {
        r = bl__merr(m, BL_ERR_FORMAT, "%s: safetensors header is not valid JSON: %s", path, j.err);
        bl__json_free(&j);
        return r;
    }
    root = 0;
    if (j.nodes[root].type != BL__J_OBJ) { bl__json_free(&j); return bl__merr(m, BL_ERR_FORMAT, "%s: safetensors header is not an object", path); }
    {
        bl__tensor *nt = (bl__tensor *)BL_REALLOC(m->tensors, (size_t)(m->n_tensors + j.nodes[root].n + 1) * sizeof *nt);
        if (!nt) { bl__json_free(&j); return bl__merr(m, BL_ERR_NOMEM, "%s: out of memory", path); }
        m->tensors = nt;
    }
    for (i = 0, k = root + 1; i < j.nodes[root].n; i++) {
        int v = j.nodes[k].next, dt, sh, off, d;
        const char *key = j.src + j.nodes[k].start;
        size_t klen = j.nodes[k].end - j.nodes[k].start;
        char canon[320];
        double o0, o1;
        bl__tensor *t;
        int mapped, type = -1, esize = 0;
        int64_t ne[4] = {1, 1, 1, 1};
        uint64_t count = 1;
        k = j.nodes[v].next;
        if (klen == 12 && memcmp(key, "__metadata__", 12) == 0) continue;
        dt = bl__json_get(&j, v, "dtype");
        sh = bl__json_get(&j, v, "shape");
        off = bl__json_get(&j, v, "data_offsets");
        if (dt < 0 || sh < 0 || off < 0 || j.nodes[sh].type != BL__J_ARR || j.nodes[off].type != BL__J_ARR || j.nodes[off].n != 2 ||
            !bl__json_num(&j, bl__json_at(&j, off, 0), &o0) || !bl__json_num(&j, bl__json_at(&j, off, 1), &o1)) {
            r = bl__merr(m, BL_ERR_FORMAT, "%s: tensor '%.*s' lacks dtype, shape or data_offsets", path, (int)klen, key);
            goto fail;
        }
        if (j.nodes[sh].n > 4) { r = bl__merr(m, BL_ERR_UNSUPPORTED, "%s: tensor '%.*s' has %d dimensions", path, (int)klen, key, j.nodes[sh].n); goto fail; }
        for (d = 0; d < j.nodes[sh].n; d++) {
            double x;
            if (!bl__json_num(&j, bl__json_at(&j, sh, d), &x) || x < 0 || x > 1e12 || x != floor(x)) {
                r = bl__merr(m, BL_ERR_FORMAT, "%s: tensor '%.*s' has a bad shape", path, (int)klen, key);
                goto fail;
            }
            ne[j.nodes[sh].n - 1 - d] = (int64_t)x; /* safetensors is outermost first */
            count *= (uint64_t)x;
            if (count > ((uint64_t)1 << 40)) { r = bl__merr(m, BL_ERR_FORMAT, "%s: tensor '%.*s' is impossibly large", path, (int)klen, key); goto fail; }
        }
        if (bl__json_is(&j, dt, "F32")) { type = BL_TYPE_F32; esize = 4; }
        else if (bl__json_is(&j, dt, "F16")) { type = BL_TYPE_F16; esize = 2; }
        else if (bl__json_is(&j, dt, "BF16")) { type = BL_TYPE_BF16; esize = 2; }
        if (o0 < 0 || o1 < o0 || o1 > (double)(f->size - 8 - hlen) || o0 != floor(o0) || o1 != floor(o1)) {
            r = bl__merr(m, BL_ERR_FORMAT, "%s: tensor '%.*s' data_offsets [%.0f, %.0f] run past the end of the data (%llu bytes): truncated file?",
                         path, (int)klen, key, o0, o1, (unsigned long long)(f->size - 8 - hlen));
            goto fail;
        }
        mapped = bl__st_canonical(key, klen, canon, sizeof canon);
        if (!mapped) continue; /* vision tower, projector, rotary caches... */
        if (type < 0) {
            size_t dl = j.nodes[dt].end - j.nodes[dt].start;
            r = bl__merr(m, BL_ERR_UNSUPPORTED, "%s: tensor '%.*s' has dtype %.*s (berlin.h reads F32, F16 and BF16 safetensors)", path,
                         (int)klen, key, (int)(dl > 32 ? 32 : dl), j.src + j.nodes[dt].start);
            goto fail;
        }
        if ((double)count * esize != o1 - o0) {
            r = bl__merr(m, BL_ERR_FORMAT, "%s: tensor '%.*s' holds %.0f bytes but its shape needs %llu", path, (int)klen, key, o1 - o0,
                         (unsigned long long)count * (unsigned long long)esize);
            goto fail;
        }
        if (bl__find_tensor(m, canon)) { r = bl__merr(m, BL_ERR_FORMAT, "%s: tensor '%.*s' appears twice", path, (int)klen, key); goto fail; }
        t = &m->tensors[m->n_tensors];
        memset(t, 0, sizeof *t);
        t->name = bl__strndup(canon, strlen(canon));
        if (!t->name) { r = bl__merr(m, BL_ERR_NOMEM, "out of memory"); goto fail; }
        m->n_tensors++;
        t->type = type;
        t->n_dims = j.nodes[sh].n ? j.nodes[sh].n : 1;
        memcpy(t->ne, ne, sizeof ne);
        t->data = f->data + 8 + hlen + (size_t)o0;
        t->nbytes = (size_t)(o1 - o0);
        t->file = f->path;
    }
    bl__json_free(&j);
    return BL_OK;
fail:
    bl__json_free(&j);
    return r;
}

/* Config values: Hugging Face config.json (possibly under text_config) or
   Mistral params.json. Missing required fields are named in the error. */
static int bl__cfg_num(const bl__json *j, int obj, const char *key, double *out) {
    return bl__json_num(j, bl__json_get(j, obj, key), out);
}

static bl_result bl__cfg_read(bl_model *m, const char *path, int mistral) {
    size_t len;
    char *txt = bl__read_text(path, &len, 1 << 24);
    bl__json j;
    int o, rs;
    double v;
    bl__hparams *hp = &m->hp;
    bl_result r = BL_OK;
    const char *need[7];
    double *dst[7];
    int i;
    if (!txt) return bl__merr(m, BL_ERR_IO, "%s: cannot read", path);
    if (bl__json_parse(&j, txt, len) != 0) {
        r = bl__merr(m, BL_ERR_CONFIG, "%s: not valid JSON: %s", path, j.err);
        goto done;
    }
    o = 0;
    if (bl__json_get(&j, o, "text_config") >= 0 && j.nodes[bl__json_get(&j, o, "text_config")].type == BL__J_OBJ)
        o = bl__json_get(&j, o, "text_config");
    {
        double dim = 0, nl = 0, nh = 0, ff = 0, nv = 0, eps = 0, hd = 0, nkv = 0;
        if (mistral) {
            need[0] = "dim"; need[1] = "n_layers"; need[2] = "n_heads"; need[3] = "hidden_dim"; need[4] = "vocab_size"; need[5] = "norm_eps";
        } else {
            need[0] = "hidden_size"; need[1] = "num_hidden_layers"; need[2] = "num_attention_heads"; need[3] = "intermediate_size";
            need[4] = "vocab_size"; need[5] = "rms_norm_eps";
        }
        dst[0] = &dim; dst[1] = &nl; dst[2] = &nh; dst[3] = &ff; dst[4] = &nv; dst[5] = &eps;
        for (i = 0; i < 6; i++) {
            if (!bl__cfg_num(&j, o, need[i], dst[i])) { r = bl__merr(m, BL_ERR_CONFIG, "%s: required field '%s' is missing or not a number", path, need[i]); goto done; }
            if (*dst[i] <= 0 || *dst[i] > 1e9) { r = bl__merr(m, BL_ERR_CONFIG, "%s: field '%s' = %g is out of range", path, need[i], *dst[i]); goto done; }
        }
        nkv = nh;
        bl__cfg_num(&j, o, mistral ? "n_kv_heads" : "num_key_value_heads", &nkv);
        hd = 0;
        if (!bl__cfg_num(&j, o, "head_dim", &hd) || !(hd > 0 && hd <= 1e4)) hd = dim / nh;
        if (!(nkv >= 1 && nkv <= 1e6)) { r = bl__merr(m, BL_ERR_CONFIG, "%s: the number of key/value heads is out of range", path); goto done; }
        hp->dim = (int)dim; hp->n_layer = (int)nl; hp->n_head = (int)nh; hp->n_ff = (int)ff; hp->n_vocab = (int)nv;
        hp->eps = eps; hp->head_dim = (int)hd; hp->n_head_kv = (int)nkv;
    }
    hp->theta = 10000.0;
    if (bl__cfg_num(&j, o, "rope_theta", &v)) hp->theta = v;
    hp->n_ctx_train = 0;
    if (bl__cfg_num(&j, o, "max_position_embeddings", &v) && v > 0 && v < (1 << 30)) hp->n_ctx_train = (int)v;
    hp->bos = hp->eos = -1;
    if ((bl__cfg_num(&j, o, "bos_token_id", &v) || bl__cfg_num(&j, 0, "bos_token_id", &v)) && v >= 0 && v < (1 << 30)) hp->bos = (int)v;
    if ((bl__cfg_num(&j, o, "eos_token_id", &v) || bl__cfg_num(&j, 0, "eos_token_id", &v)) && v >= 0 && v < (1 << 30)) hp->eos = (int)v;
    rs = bl__json_get(&j, o, "rope_scaling");
    if (rs >= 0 && j.nodes[rs].type == BL__J_OBJ) {
        int ty = bl__json_get(&j, rs, "rope_type");
        if (ty < 0) ty = bl__json_get(&j, rs, "type");
        if (bl__json_is(&j, ty, "default")) hp->scaling = 0;
        else if (bl__json_is(&j, ty, "linear") || bl__json_is(&j, ty, "llama3")) {
            hp->scaling = bl__json_is(&j, ty, "linear") ? 1 : 2;
            if (!bl__cfg_num(&j, rs, "factor", &hp->factor) || hp->factor <= 0) { r = bl__merr(m, BL_ERR_CONFIG, "%s: rope_scaling.factor is missing", path); goto done; }
            if (hp->scaling == 2 &&
                (!bl__cfg_num(&j, rs, "low_freq_factor", &hp->low_ff) || !bl__cfg_num(&j, rs, "high_freq_factor", &hp->high_ff) ||
                 !bl__cfg_num(&j, rs, "original_max_position_embeddings", &hp->orig_ctx) || hp->high_ff <= hp->low_ff || hp->orig_ctx <= 0)) {
                r = bl__merr(m, BL_ERR_CONFIG, "%s: rope_scaling llama3 needs low_freq_factor < high_freq_factor and original_max_position_embeddings", path);
                goto done;
            }
        } else {
            size_t n = ty >= 0 ? j.nodes[ty].end - j.nodes[ty].start : 7;
            r = bl__merr(m, BL_ERR_UNSUPPORTED, "%s: rope_scaling type '%.*s' is not supported (default, linear, llama3 are)", path,
                         (int)(n > 40 ? 40 : n), ty >= 0 ? j.src + j.nodes[ty].start : "missing");
            goto done;
        }
    }
    {
        int mt = bl__json_get(&j, o, "model_type");
        const char *arch = "llama";
        if (mistral) arch = "mistral";
        else if (bl__json_is(&j, mt, "qwen2")) arch = "qwen2";
        else if (bl__json_is(&j, mt, "mistral")) arch = "mistral";
        else if (mt >= 0 && !bl__json_is(&j, mt, "llama")) {
            size_t n = j.nodes[mt].end - j.nodes[mt].start;
            if (!(n == 7 && memcmp(j.src + j.nodes[mt].start, "mistral", 7) == 0)) {
                r = bl__merr(m, BL_ERR_UNSUPPORTED, "%s: model_type '%.*s' is not a llama-family model berlin.h runs (llama, mistral, qwen2)", path,
                             (int)(n > 40 ? 40 : n), j.src + j.nodes[mt].start);
                goto done;
            }
        }
        snprintf(m->arch, sizeof m->arch, "%s", arch);
    }
    hp->rope_neox = !mistral; /* HF stores q/k rows in rotate-half order */
done:
    bl__json_free(&j);
    BL_FREE(txt);
    return r;
}

/* A folder (or a .safetensors file with its config beside it). */
static bl_result bl__load_safetensors(bl_model *m, const char *path, int is_dir) {
    char dir[1024], p[1200];
    bl_result r;
    int mistral = 0;
    if (is_dir) snprintf(dir, sizeof dir, "%s", path);
    else {
        const char *sl = strrchr(path, '/');
        if (sl) snprintf(dir, sizeof dir, "%.*s", (int)(sl - path), path);
        else snprintf(dir, sizeof dir, ".");
    }
    bl__join(p, sizeof p, dir, "config.json");
    if (!bl__exists(p)) {
        bl__join(p, sizeof p, dir, "params.json");
        if (!bl__exists(p))
            return bl__merr(m, BL_ERR_CONFIG, "%s: no config.json or params.json beside the weights%s", dir,
                            is_dir ? " (and no single .gguf file in the folder)" : "");
        mistral = 1;
    }
    r = bl__cfg_read(m, p, mistral);
    if (r != BL_OK) return r;
    if (!is_dir) return bl__st_read(m, path);
    bl__join(p, sizeof p, dir, mistral ? "consolidated.safetensors" : "model.safetensors");
    if (bl__exists(p)) return bl__st_read(m, p);
    bl__join(p, sizeof p, dir, "model.safetensors.index.json");
    if (bl__exists(p)) {
        size_t len;
        char *txt = bl__read_text(p, &len, 1 << 26);
        bl__json j;
        int wm, i, k;
        char *seen[BL__MAX_FILES];
        int n_seen = 0;
        if (!txt) return bl__merr(m, BL_ERR_IO, "%s: cannot read", p);
        if (bl__json_parse(&j, txt, len) != 0) {
            r = bl__merr(m, BL_ERR_FORMAT, "%s: not valid JSON: %s", p, j.err);
            bl__json_free(&j); BL_FREE(txt);
            return r;
        }
        wm = bl__json_get(&j, 0, "weight_map");
        if (wm < 0 || j.nodes[wm].type != BL__J_OBJ) r = bl__merr(m, BL_ERR_FORMAT, "%s: no weight_map object", p);
        for (i = 0, k = wm + 1; r == BL_OK && wm >= 0 && i < j.nodes[wm].n; i++) {
            int v = j.nodes[k].next, s, dup = 0;
            char *fn = bl__json_str(&j, v, NULL);
            char sp[1200];
            k = j.nodes[v].next;
            if (!fn || strchr(fn, '/') || strstr(fn, "..")) { r = bl__merr(m, BL_ERR_FORMAT, "%s: bad shard file name", p); BL_FREE(fn); break; }
            for (s = 0; s < n_seen; s++) if (!strcmp(seen[s], fn)) dup = 1;
            if (dup) { BL_FREE(fn); continue; }
            if (n_seen == BL__MAX_FILES) { r = bl__merr(m, BL_ERR_UNSUPPORTED, "%s: more than %d shards", p, BL__MAX_FILES); BL_FREE(fn); break; }
            seen[n_seen++] = fn;
            bl__join(sp, sizeof sp, dir, fn);
            r = bl__st_read(m, sp);
        }
        while (n_seen) BL_FREE(seen[--n_seen]);
        bl__json_free(&j);
        BL_FREE(txt);
        return r;
    }
    return bl__merr(m, BL_ERR_IO, "%s: no %s or model.safetensors.index.json", dir, mistral ? "consolidated.safetensors" : "model.safetensors");
}

/* GGUF: hyper-parameters from {arch}.* keys. */
static bl_result bl__load_gguf(bl_model *m, const char *path, bl__gguf *g) {
    bl__file *f = NULL;
    bl_result r = bl__model_open_file(m, path, &f);
    const char *s;
    size_t n;
    char key[128];
    double v;
    bl__hparams *hp = &m->hp;
    if (r != BL_OK) return r;
    r = bl__gguf_read(g, f, &m->tensors, &m->n_tensors, m->err);
    if (r != BL_OK) return r;
    if (!bl__gguf_str(g, "general.architecture", &s, &n)) return bl__merr(m, BL_ERR_CONFIG, "%s: required key 'general.architecture' is missing", path);
    if (n >= sizeof m->arch) n = sizeof m->arch - 1;
    memcpy(m->arch, s, n);
    m->arch[n] = 0;
    if (!strcmp(m->arch, "llama") || !strcmp(m->arch, "mistral") || !strcmp(m->arch, "mistral3")) hp->rope_neox = 0;
    else if (!strcmp(m->arch, "qwen2")) hp->rope_neox = 1;
    else return bl__merr(m, BL_ERR_UNSUPPORTED, "%s: architecture '%s' is not supported (llama, mistral, mistral3, qwen2 are)", path, m->arch);
#define BL__GKEY(name, dst, required)                                                                        \
    snprintf(key, sizeof key, "%s." name, m->arch);                                                           \
    if (bl__gguf_num(g, key, &v)) dst = v;                                                                    \
    else if (required) return bl__merr(m, BL_ERR_CONFIG, "%s: required key '%s' is missing", path, key);
    v = 0;
    {
        double dim = 0, nl = 0, nh = 0, nkv = 0, ff = 0, eps = 1e-5, theta = 10000, ctx = 0, kl = 0, sf = 0;
        BL__GKEY("embedding_length", dim, 1)
        BL__GKEY("block_count", nl, 1)
        BL__GKEY("attention.head_count", nh, 1)
        BL__GKEY("feed_forward_length", ff, 1)
        nkv = nh;
        BL__GKEY("attention.head_count_kv", nkv, 0)
        BL__GKEY("attention.layer_norm_rms_epsilon", eps, 1)
        BL__GKEY("rope.freq_base", theta, 0)
        BL__GKEY("context_length", ctx, 0)
        BL__GKEY("attention.key_length", kl, 0)
        BL__GKEY("rope.scaling.factor", sf, 0)
        if (!(dim >= 1 && dim <= 1e6) || !(nl >= 1 && nl <= 1e4) || !(nh >= 1 && nh <= 1e4) || !(ff >= 1 && ff <= 1e7) ||
            !(nkv >= 1 && nkv <= 1e4) || !(ctx >= 0 && ctx <= 1e9) || !(kl >= 0 && kl <= 1e4) || !(eps > 0 && eps <= 1) ||
            !(theta > 0 && theta < 1e30) || !(sf >= 0 && sf < 1e9))
            return bl__merr(m, BL_ERR_CONFIG, "%s: hyper-parameters out of range", path);
        hp->dim = (int)dim; hp->n_layer = (int)nl; hp->n_head = (int)nh; hp->n_head_kv = (int)nkv; hp->n_ff = (int)ff;
        hp->eps = eps; hp->theta = theta; hp->n_ctx_train = (int)ctx;
        hp->head_dim = kl > 0 ? (int)kl : (int)(dim / nh);
        snprintf(key, sizeof key, "%s.rope.scaling.type", m->arch);
        if (bl__gguf_str(g, key, &s, &n) && !(n == 4 && !memcmp(s, "none", 4))) {
            if (n == 6 && !memcmp(s, "linear", 6) && sf > 0) { hp->scaling = 1; hp->factor = sf; }
            else return bl__merr(m, BL_ERR_UNSUPPORTED, "%s: rope scaling '%.*s' is not supported", path, (int)(n > 32 ? 32 : n), s);
        }
    }
#undef BL__GKEY
    {
        bl__tensor *e = bl__find_tensor(m, "token_embd.weight");
        hp->n_vocab = e ? (int)e->ne[1] : 0;
    }
    hp->bos = hp->eos = -1;
    if (bl__gguf_num(g, "tokenizer.ggml.bos_token_id", &v) && v >= 0 && v < (1 << 30)) hp->bos = (int)v;
    if (bl__gguf_num(g, "tokenizer.ggml.eos_token_id", &v) && v >= 0 && v < (1 << 30)) hp->eos = (int)v;
    return BL_OK;
}

/* >>l2c  LLAMA2.C CHECKPOINTS ------------------------------------------------
   Two exports are read. The legacy v0 export: seven int32 (dim, hidden_dim,
   n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a negative vocab_size
   means a separate classifier) and F32 arrays in a fixed order; it carries no
   magic, so it is recognised only when its size is exactly what the header
   implies. The v1 export: magic "ak42", version 1, the same seven ints and a
   shared-classifier byte in a 256-byte header, norms first, no RoPE tables.
   Both group each kind of weight across all layers. */

#define BL__L2C_MAGIC 0x616b3432u

/* Checks the header; fills h (seven ints), *shared, *v1. */
static int bl__l2c_layout(const uint8_t *d, size_t size, int32_t h[7], int *shared, int *v1) {
    uint64_t dim, hid, nl, nh, nkv, voc, seq, hs, kvd, n;
    uint32_t magic = 0;
    size_t head = 28;
    if (size < 28) return 0;
    memcpy(&magic, d, 4);
    *v1 = magic == BL__L2C_MAGIC;
    if (*v1) {
        int32_t ver;
        if (size < 256) return 0;
        memcpy(&ver, d + 4, 4);
        if (ver != 1) return 0;
        memcpy(h, d + 8, 28);
        head = 256;
    } else memcpy(h, d, 28);
    if (h[0] <= 0 || h[1] <= 0 || h[2] <= 0 || h[3] <= 0 || h[4] <= 0 || h[5] == 0 || h[6] <= 0) return 0;
    if (h[0] > (1 << 16) || h[1] > (1 << 18) || h[2] > 1024 || h[3] > 1024 || h[4] > h[3] || h[0] % h[3] || h[3] % h[4]) return 0;
    if (h[5] > (1 << 22) || h[5] < -(1 << 22) || h[6] > (1 << 22) || (*v1 && h[5] < 0)) return 0;
    dim = (uint64_t)h[0]; hid = (uint64_t)h[1]; nl = (uint64_t)h[2]; nh = (uint64_t)h[3]; nkv = (uint64_t)h[4];
    voc = (uint64_t)(h[5] < 0 ? -h[5] : h[5]); seq = (uint64_t)h[6];
    hs = dim / nh;
    kvd = hs * nkv;
    *shared = *v1 ? d[36] != 0 : h[5] > 0;
    n = voc * dim + nl * (2 * dim + 2 * dim * dim + 2 * dim * kvd + 3 * dim * hid) + dim;
    if (!*v1) n += seq * hs;
    if (!*shared) n += voc * dim;
    return size == head + n * 4;
}

static bl_result bl__load_l2c(bl_model *m, const char *path) {
    static const char *const kinds[9] = {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_down", "ffn_up"};
    static const int v1_order[9] = {0, 5, 1, 2, 3, 4, 6, 7, 8}; /* v1 writes both norms first */
    bl__file *f = NULL;
    int32_t h[7];
    int shared, v1, l, k;
    bl_result r = bl__model_open_file(m, path, &f);
    const uint8_t *p;
    int64_t dim, hid, nl, voc, kvd, hs, n0[9], n1[9];
    char nm[64];
    bl__hparams *hp = &m->hp;
    if (r != BL_OK) return r;
    if (!bl__l2c_layout(f->data, f->size, h, &shared, &v1))
        return bl__merr(m, BL_ERR_FORMAT, "%s: not a llama2.c checkpoint (header and file size disagree: truncated?)", path);
    dim = h[0]; hid = h[1]; nl = h[2]; voc = h[5] < 0 ? -h[5] : h[5];
    hs = dim / h[3];
    kvd = hs * h[4];
    hp->dim = (int)dim; hp->n_ff = (int)hid; hp->n_layer = (int)nl; hp->n_head = h[3]; hp->n_head_kv = h[4]; hp->n_vocab = (int)voc;
    hp->n_ctx_train = h[6]; hp->head_dim = (int)hs; hp->eps = 1e-5; hp->theta = 10000.0; hp->rope_neox = 0;
    hp->bos = 1; hp->eos = 2;
    snprintf(m->arch, sizeof m->arch, "llama");
    m->tensors = (bl__tensor *)bl__calloc((size_t)(nl * 9 + 3) * sizeof *m->tensors);
    if (!m->tensors) return bl__merr(m, BL_ERR_NOMEM, "out of memory");
    p = f->data + (v1 ? 256 : 28);
#define BL__L2C_T(nm_, a, b)                                                                \
    do {                                                                                    \
        bl__tensor *t_ = &m->tensors[m->n_tensors++];                                       \
        t_->name = bl__strndup(nm_, strlen(nm_));                                           \
        if (!t_->name) return bl__merr(m, BL_ERR_NOMEM, "out of memory");                   \
        t_->type = BL_TYPE_F32; t_->n_dims = (b) > 1 ? 2 : 1;                               \
        t_->ne[0] = (a); t_->ne[1] = (b); t_->ne[2] = t_->ne[3] = 1;                        \
        t_->data = p; t_->nbytes = (size_t)((a) * (b)) * 4; t_->file = f->path;             \
        p += t_->nbytes;                                                                    \
    } while (0)
    n0[0] = dim; n1[0] = 1;   n0[1] = dim; n1[1] = dim;  n0[2] = dim; n1[2] = kvd;
    n0[3] = dim; n1[3] = kvd; n0[4] = dim; n1[4] = dim;  n0[5] = dim; n1[5] = 1;
    n0[6] = dim; n1[6] = hid; n0[7] = hid; n1[7] = dim;  n0[8] = dim; n1[8] = hid;
    if (!v1) BL__L2C_T("token_embd.weight", dim, voc);
    for (k = 0; k < 9; k++) {
        int kk = v1 ? v1_order[k] : k;
        for (l = 0; l < nl; l++) {
            snprintf(nm, sizeof nm, "blk.%d.%s.weight", l, kinds[kk]);
            BL__L2C_T(nm, n0[kk], n1[kk]);
        }
        if (v1 && k == 1) { /* after both norms: final norm, then the embedding */
            BL__L2C_T("output_norm.weight", dim, 1);
            BL__L2C_T("token_embd.weight", dim, voc);
        }
    }
    if (!v1) {
        BL__L2C_T("output_norm.weight", dim, 1);
        p += (size_t)h[6] * (size_t)hs * 4; /* freq_cis_real, freq_cis_imag: recomputed instead */
    }
    if (!shared) BL__L2C_T("output.weight", dim, voc);
#undef BL__L2C_T
    return BL_OK;
}

static void bl__dequant_row(int type, const uint8_t *src, float *dst, int64_t n);
static bl_result bl__tok_from_gguf(bl_tokenizer **out, const bl__gguf *g, const char *path);
static bl_result bl__tok_from_l2c(bl_tokenizer **out, const char *path, int n_vocab);

/* Look up a matrix and check its shape against the configuration. */
static bl_result bl__model_weight(bl_model *m, bl__weight *w, const char *name, int64_t rows, int64_t cols, int optional) {
    bl__tensor *t = bl__find_tensor(m, name);
    memset(w, 0, sizeof *w);
    if (!t) {
        if (optional) return BL_OK;
        return bl__merr(m, BL_ERR_FORMAT, "tensor '%s' is missing from the model", name);
    }
    if (t->ne[0] != cols || t->ne[1] != rows || t->ne[2] != 1 || t->ne[3] != 1)
        return bl__merr(m, BL_ERR_FORMAT, "%s: tensor '%s' has shape [%lld, %lld] but the configuration implies [%lld, %lld]", t->file, name,
                        (long long)t->ne[1], (long long)t->ne[0], (long long)rows, (long long)cols);
    w->data = t->data;
    w->type = t->type;
    w->rows = rows;
    w->cols = cols;
    w->row_bytes = bl__row_bytes(t->type, cols);
    if (!w->row_bytes) return bl__merr(m, BL_ERR_FORMAT, "%s: tensor '%s' rows are not whole blocks", t->file, name);
    return BL_OK;
}

/* Look up a vector (norm weight or bias), converted to F32 into *dst. */
static bl_result bl__model_vec(bl_model *m, float **dst, float **pool, const char *name, int64_t n, int optional) {
    bl__tensor *t = bl__find_tensor(m, name);
    *dst = NULL;
    if (!t) {
        if (optional) return BL_OK;
        return bl__merr(m, BL_ERR_FORMAT, "tensor '%s' is missing from the model", name);
    }
    if (t->ne[0] != n || t->ne[1] != 1 || t->ne[2] != 1 || t->ne[3] != 1)
        return bl__merr(m, BL_ERR_FORMAT, "%s: tensor '%s' has %lld elements but the configuration implies %lld", t->file, name,
                        (long long)(t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]), (long long)n);
    bl__dequant_row(t->type, t->data, *pool, n);
    *dst = *pool;
    *pool += n;
    return BL_OK;
}

static bl_result bl__model_build(bl_model *m) {
    bl__hparams *hp = &m->hp;
    bl_model_info *in = &m->info;
    int64_t qd, kvd, dim, i;
    int l;
    bl_result r;
    size_t nvec;
    float *pool;
    char nm[96];
    if (hp->dim <= 0 || hp->n_layer <= 0 || hp->n_head <= 0 || hp->n_head_kv <= 0 || hp->head_dim <= 0 || hp->n_ff <= 0)
        return bl__merr(m, BL_ERR_CONFIG, "model hyper-parameters are missing or not positive");
    if (hp->n_head % hp->n_head_kv)
        return bl__merr(m, BL_ERR_CONFIG, "n_head %d is not a multiple of n_head_kv %d", hp->n_head, hp->n_head_kv);
    if (hp->head_dim % 2) return bl__merr(m, BL_ERR_CONFIG, "head_dim %d is odd: RoPE needs pairs", hp->head_dim);
    if (hp->dim > (1 << 16) || hp->n_ff > (1 << 18) || hp->head_dim > 1024 || hp->n_head > 1024 || hp->n_layer > 1024)
        return bl__merr(m, BL_ERR_CONFIG, "model hyper-parameters are implausibly large");
    if (!bl__find_tensor(m, "token_embd.weight")) return bl__merr(m, BL_ERR_FORMAT, "tensor 'token_embd.weight' (the token embedding) is missing");
    if (hp->n_vocab <= 0) hp->n_vocab = (int)bl__find_tensor(m, "token_embd.weight")->ne[1];
    if (!(hp->eps > 0 && hp->eps <= 1)) return bl__merr(m, BL_ERR_CONFIG, "RMSNorm epsilon %g is out of range", hp->eps);
    if (!(hp->theta > 0 && hp->theta < 1e30)) return bl__merr(m, BL_ERR_CONFIG, "rope theta %g is out of range", hp->theta);
    dim = hp->dim;
    qd = (int64_t)hp->n_head * hp->head_dim;
    kvd = (int64_t)hp->n_head_kv * hp->head_dim;
    r = bl__model_weight(m, &m->tok_embd, "token_embd.weight", hp->n_vocab, dim, 0);
    if (r != BL_OK) return r;
    r = bl__model_weight(m, &m->output, "output.weight", hp->n_vocab, dim, 1);
    if (r != BL_OK) return r;
    in->tied_output = m->output.data == NULL;
    if (in->tied_output) m->output = m->tok_embd;
    m->layers = (bl__layer *)bl__calloc((size_t)hp->n_layer * sizeof *m->layers);
    nvec = (size_t)dim * (size_t)(2 * hp->n_layer + 1) + (size_t)(qd + 2 * kvd) * (size_t)hp->n_layer + (size_t)hp->head_dim;
    m->vecs = (float *)bl__alloc(nvec * sizeof(float));
    if (!m->layers || !m->vecs) return bl__merr(m, BL_ERR_NOMEM, "out of memory");
    pool = m->vecs;
    r = bl__model_vec(m, &m->output_norm, &pool, "output_norm.weight", dim, 0);
    if (r != BL_OK) return r;
    in->weight_type = -1;
    for (l = 0; l < hp->n_layer; l++) {
        bl__layer *L = &m->layers[l];
#define BL__W(field, nmx, rows, cols)                                   \
        snprintf(nm, sizeof nm, "blk.%d." nmx, l);                      \
        if ((r = bl__model_weight(m, &L->field, nm, rows, cols, 0)) != BL_OK) return r;
#define BL__V(field, nmx, n, opt)                                       \
        snprintf(nm, sizeof nm, "blk.%d." nmx, l);                      \
        if ((r = bl__model_vec(m, &L->field, &pool, nm, n, opt)) != BL_OK) return r;
        BL__V(attn_norm, "attn_norm.weight", dim, 0)
        BL__V(ffn_norm, "ffn_norm.weight", dim, 0)
        BL__V(bq, "attn_q.bias", qd, 1)
        BL__V(bk, "attn_k.bias", kvd, 1)
        BL__V(bv, "attn_v.bias", kvd, 1)
        BL__W(wq, "attn_q.weight", qd, dim)
        BL__W(wk, "attn_k.weight", kvd, dim)
        BL__W(wv, "attn_v.weight", kvd, dim)
        BL__W(wo, "attn_output.weight", dim, qd)
        BL__W(w_gate, "ffn_gate.weight", hp->n_ff, dim)
        BL__W(w_up, "ffn_up.weight", hp->n_ff, dim)
        BL__W(w_down, "ffn_down.weight", dim, hp->n_ff)
#undef BL__W
#undef BL__V
        if (L->bq || L->bk || L->bv) in->has_qkv_bias = 1;
        if (in->weight_type < 0) in->weight_type = L->wq.type;
    }
    /* RoPE: the angle step of each pair, scaling folded in. */
    m->rope_freq = pool;
    {
        bl__tensor *rf = bl__find_tensor(m, "rope_freqs.weight");
        float *div = NULL;
        if (rf) {
            if (rf->ne[0] != hp->head_dim / 2 || rf->ne[1] != 1)
                return bl__merr(m, BL_ERR_FORMAT, "%s: tensor 'rope_freqs.weight' has %lld elements, head_dim/2 = %d", rf->file,
                                (long long)rf->ne[0], hp->head_dim / 2);
            div = (float *)bl__alloc((size_t)hp->head_dim / 2 * sizeof(float));
            if (!div) return bl__merr(m, BL_ERR_NOMEM, "out of memory");
            bl__dequant_row(rf->type, rf->data, div, hp->head_dim / 2);
        }
        for (i = 0; i < hp->head_dim / 2; i++) {
            double f = pow(hp->theta, -2.0 * (double)i / hp->head_dim);
            if (div) f /= div[i];
            else if (hp->scaling == 1) f /= hp->factor;
            else if (hp->scaling == 2) {
                double wl = 2.0 * 3.14159265358979323846 / f;
                double lo_wl = hp->orig_ctx / hp->low_ff, hi_wl = hp->orig_ctx / hp->high_ff;
                if (wl > lo_wl) f /= hp->factor;
                else if (wl >= hi_wl) {
                    double sm = (hp->orig_ctx / wl - hp->low_ff) / (hp->high_ff - hp->low_ff);
                    f = (1 - sm) * f / hp->factor + sm * f;
                }
            }
            m->rope_freq[i] = (float)f;
        }
        BL_FREE(div);
    }
    in->arch = m->arch;
    in->n_vocab = hp->n_vocab;
    in->dim = hp->dim;
    in->n_layer = hp->n_layer;
    in->n_head = hp->n_head;
    in->n_head_kv = hp->n_head_kv;
    in->head_dim = hp->head_dim;
    in->n_ff = hp->n_ff;
    in->n_ctx_train = hp->n_ctx_train;
    in->norm_eps = (float)hp->eps;
    in->rope_theta = (float)hp->theta;
    in->rope_neox = hp->rope_neox;
    {
        size_t wb = 0;
        int64_t np = 0;
        for (i = 0; i < m->n_tensors; i++) {
            bl__tensor *t = &m->tensors[i];
            np += t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
            if (strcmp(t->name, "token_embd.weight") || in->tied_output) wb += t->nbytes;
        }
        in->n_params = np;
        in->weight_bytes = wb;
    }
    return BL_OK;
}

/* A folder without config.json/params.json that holds exactly one .gguf. */
static int bl__dir_single_gguf(const char *dir, char *out, size_t cap) {
#ifdef BL__POSIX
    DIR *d;
    struct dirent *e;
    int n = 0;
    char p[1200];
    bl__join(p, sizeof p, dir, "config.json");
    if (bl__exists(p)) return 0;
    bl__join(p, sizeof p, dir, "params.json");
    if (bl__exists(p) || !(d = opendir(dir))) return 0;
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (l > 5 && strcmp(e->d_name + l - 5, ".gguf") == 0) {
            if (n++ == 0) bl__join(out, cap, dir, e->d_name);
        }
    }
    closedir(d);
    return n == 1;
#else
    (void)dir; (void)out; (void)cap;
    return 0;
#endif
}

/* Copy every matrix the forward pass reads into one anonymous region,
   2 MiB-aligned and marked for transparent huge pages, and point the
   weights there. The forward pass touches all of it per token, so 4 KiB
   pages cost a TLB miss every 4 KiB; 2 MiB pages almost never. */
static bl_result bl__model_huge_pages(bl_model *m) {
    bl__weight *ws[2 + 7 * 1024];
    int n = 0, l, i;
    size_t total = 0, off = 0, align = (size_t)2 << 20;
    uint8_t *base = NULL;
    ws[n++] = &m->tok_embd;
    if (!m->info.tied_output) ws[n++] = &m->output;
    for (l = 0; l < m->hp.n_layer; l++) {
        bl__layer *L = &m->layers[l];
        ws[n++] = &L->wq; ws[n++] = &L->wk; ws[n++] = &L->wv; ws[n++] = &L->wo;
        ws[n++] = &L->w_gate; ws[n++] = &L->w_up; ws[n++] = &L->w_down;
    }
    for (i = 0; i < n; i++) total += ((size_t)ws[i]->rows * ws[i]->row_bytes + 63) & ~(size_t)63;
    m->anon_size = (total + align - 1) & ~(align - 1);
#ifdef BL__MADVISE
    {
        /* over-allocate by 2 MiB and trim so the region starts on a huge page */
        void *p = mmap(NULL, m->anon_size + align, PROT_READ | PROT_WRITE, MAP_PRIVATE | BL__MAP_ANON, -1, 0);
        if (p != MAP_FAILED) {
            uintptr_t a = ((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1);
            if (a > (uintptr_t)p) munmap(p, a - (uintptr_t)p);
            if ((uintptr_t)p + align > a) munmap((void *)(a + m->anon_size), (uintptr_t)p + align - a);
            madvise((void *)a, m->anon_size, BL__MADV_HUGEPAGE);
            base = (uint8_t *)a;
            m->anon = base;
            m->anon_mapped = 1;
        }
    }
#endif
    if (!base) {
        m->anon = bl__alloc(total + 64);
        if (!m->anon) return bl__merr(m, BL_ERR_NOMEM, "out of memory copying %zu bytes of weights", total);
        base = (uint8_t *)m->anon + ((64 - ((uintptr_t)m->anon & 63)) & 63);
    }
    for (i = 0; i < n; i++) {
        size_t sz = (size_t)ws[i]->rows * ws[i]->row_bytes;
        memcpy(base + off, ws[i]->data, sz);
        ws[i]->data = base + off;
        off += (sz + 63) & ~(size_t)63;
    }
    if (m->info.tied_output) m->output = m->tok_embd;
    return BL_OK;
}

bl_result bl_model_load(bl_model **out, const char *path, const bl_model_desc *desc) {
    bl_model *m = (bl_model *)bl__calloc(sizeof *m);
    bl_result r;
    bl__gguf g;
    uint8_t head[16];
    size_t nh = 0;
    char gpath[1200];
    memset(&g, 0, sizeof g);
    *out = m;
    if (!m) return BL_ERR_NOMEM;
    if (!path) return bl__merr(m, BL_ERR_ARG, "no model path given");
    m->no_mmap = desc ? desc->no_mmap : 0;
    if (bl__is_dir(path) && bl__dir_single_gguf(path, gpath, sizeof gpath)) {
        r = bl__load_gguf(m, gpath, &g);
        m->info.format = "gguf";
    } else if (bl__is_dir(path)) {
        r = bl__load_safetensors(m, path, 1);
        m->info.format = strcmp(m->arch, "mistral") == 0 && m->hp.rope_neox == 0 ? "mistral" : "safetensors";
    } else {
        FILE *fp = fopen(path, "rb");
        if (!fp) return bl__merr(m, BL_ERR_IO, "%s: cannot open", path);
        nh = fread(head, 1, sizeof head, fp);
        fclose(fp);
        if (nh >= 4 && memcmp(head, "GGUF", 4) == 0) {
            r = bl__load_gguf(m, path, &g);
            m->info.format = "gguf";
        } else if (nh >= 9 && head[8] == '{') {
            r = bl__load_safetensors(m, path, 0);
            m->info.format = m->hp.rope_neox ? "safetensors" : "mistral";
        } else if (nh >= 8 && memcmp(head, "24ka", 4) == 0 && head[4] != 1) {
            r = bl__merr(m, BL_ERR_UNSUPPORTED, "%s: llama2.c version-%d export (the F32 exports v0 and v1 are read; re-export with --version 1)",
                         path, (int)head[4]);
        } else {
            r = bl__load_l2c(m, path);
            m->info.format = "llama2c";
            if (r == BL_ERR_FORMAT && (m->n_files ? m->files[0].size : nh) < 28) r = bl__merr(m, BL_ERR_FORMAT, "%s: not a model file berlin.h recognises (GGUF, safetensors, llama2.c)", path);
            else if (r == BL_ERR_FORMAT)
                r = bl__merr(m, BL_ERR_FORMAT, "%s: not a model file berlin.h recognises (no GGUF magic, no safetensors header, and not a llama2.c "
                             "checkpoint whose size matches its header: truncated?)", path);
        }
    }
    if (r == BL_OK) r = bl__model_build(m);
    if (r == BL_OK && desc && desc->huge_pages) r = bl__model_huge_pages(m);
    if (r == BL_OK) {
        const char *tp = desc ? desc->tokenizer_path : NULL;
        if (tp) {
            bl_result tr = bl_tokenizer_load(&m->tok, tp, m->hp.n_vocab);
            if (tr != BL_OK) {
                r = bl__merr(m, tr, "%s", bl_tokenizer_last_error(m->tok));
                bl_tokenizer_destroy(m->tok);
                m->tok = NULL;
            }
        } else if (g.kv) {
            const char *s;
            size_t n;
            if (bl__gguf_str(&g, "tokenizer.ggml.model", &s, &n) && n == 5 && !memcmp(s, "llama", 5)) {
                bl_result tr = bl__tok_from_gguf(&m->tok, &g, path);
                if (tr != BL_OK) {
                    r = bl__merr(m, tr, "%s", bl_tokenizer_last_error(m->tok));
                    bl_tokenizer_destroy(m->tok);
                    m->tok = NULL;
                }
            }
        }
        if (r == BL_OK && m->tok && bl_tokenizer_n_vocab(m->tok) > m->hp.n_vocab)
            r = bl__merr(m, BL_ERR_TOKENIZER, "tokenizer has %d tokens but the model only %d", bl_tokenizer_n_vocab(m->tok), m->hp.n_vocab);
    }
    bl__gguf_free(&g);
    if (r == BL_OK) m->err[0] = 0;
    return r;
}

void bl_model_destroy(bl_model *m) {
    int i;
    if (!m) return;
    for (i = 0; i < m->n_files; i++) bl__file_close(&m->files[i]);
    for (i = 0; i < m->n_tensors; i++) BL_FREE(m->tensors[i].name);
    BL_FREE(m->tensors);
    BL_FREE(m->layers);
    BL_FREE(m->vecs);
#ifdef BL__POSIX_MMAP
    if (m->anon && m->anon_mapped) munmap(m->anon, m->anon_size);
    else
#endif
    BL_FREE(m->anon);
    bl_tokenizer_destroy(m->tok);
    BL_FREE(m);
}

const char *bl_model_last_error(const bl_model *m) { return m ? m->err : "out of memory"; }
const bl_model_info *bl_model_get_info(const bl_model *m) { return &m->info; }
const bl_tokenizer *bl_model_tokenizer(const bl_model *m) { return m->tok; }

/* >>tok  TOKENIZER -----------------------------------------------------------
   SentencePiece-style BPE as llama.cpp and llama2.c run it: a dummy-prefix
   space, spaces as U+2581, start from UTF-8 characters and repeatedly merge
   the adjacent pair whose concatenation is the highest-scoring vocabulary
   entry (leftmost on ties), then fall back to <0xNN> byte tokens for what is
   left unknown. Pieces live in one blob; a hash maps text to id. */

enum { BL__TT_NORMAL = 1, BL__TT_UNKNOWN = 2, BL__TT_CONTROL = 3, BL__TT_USER = 4, BL__TT_UNUSED = 5, BL__TT_BYTE = 6 };

struct bl_tokenizer {
    char err[BL__ERRLEN];
    int n_vocab;
    char *blob;           /* every piece, NUL-terminated */
    uint32_t *off;        /* (n_vocab + 1) piece offsets into blob */
    float *scores;        /* (n_vocab) */
    uint8_t *types;       /* (n_vocab) BL__TT_* */
    int32_t *hash;        /* (hash_cap) token ids, -1 empty */
    uint32_t hash_cap;
    int32_t bos, eos, unk, eot;
    int add_bos, add_space_prefix;
    int32_t byte_tok[256];
    int32_t *specials;    /* ids matched in text, longest first */
    int n_specials;
};

static bl_result bl__terr(bl_tokenizer *t, bl_result code, const char *fmt, ...) BL__PRINTF(3, 4);
static bl_result bl__terr(bl_tokenizer *t, bl_result code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->err, BL__ERRLEN, fmt, ap);
    va_end(ap);
    return code;
}

static uint32_t bl__hash_bytes(const char *s, size_t n) {
    uint32_t h = 2166136261u;
    size_t i;
    for (i = 0; i < n; i++) { h ^= (uint8_t)s[i]; h *= 16777619u; }
    return h;
}

static const char *bl__tok_text(const bl_tokenizer *t, int32_t id, size_t *len) {
    *len = t->off[id + 1] - t->off[id] - 1;
    return t->blob + t->off[id];
}

static int32_t bl__tok_find(const bl_tokenizer *t, const char *s, size_t n) {
    uint32_t h = bl__hash_bytes(s, n) & (t->hash_cap - 1);
    for (;;) {
        int32_t id = t->hash[h];
        size_t len;
        const char *p;
        if (id < 0) return -1;
        p = bl__tok_text(t, id, &len);
        if (len == n && memcmp(p, s, n) == 0) return id;
        h = (h + 1) & (t->hash_cap - 1);
    }
}

/* Allocate the arrays for n pieces of blob_bytes total (NULs included). */
static bl_result bl__tok_alloc(bl_tokenizer *t, int n, size_t blob_bytes) {
    t->n_vocab = n;
    t->blob = (char *)bl__alloc(blob_bytes);
    t->off = (uint32_t *)bl__alloc(((size_t)n + 1) * sizeof *t->off);
    t->scores = (float *)bl__calloc((size_t)n * sizeof *t->scores);
    t->types = (uint8_t *)bl__calloc((size_t)n);
    t->hash_cap = 16;
    while (t->hash_cap < (uint32_t)n * 2) t->hash_cap *= 2;
    t->hash = (int32_t *)bl__alloc((size_t)t->hash_cap * sizeof *t->hash);
    if (!t->blob || !t->off || !t->scores || !t->types || !t->hash) return bl__terr(t, BL_ERR_NOMEM, "out of memory for %d tokens", n);
    memset(t->hash, 0xff, (size_t)t->hash_cap * sizeof *t->hash);
    t->bos = t->eos = t->unk = t->eot = -1;
    t->add_bos = 1;
    t->add_space_prefix = 1;
    return BL_OK;
}

static int bl__spec_cmp_len(const bl_tokenizer *t, int32_t a, int32_t b) {
    return (int)(t->off[b + 1] - t->off[b]) - (int)(t->off[a + 1] - t->off[a]);
}

/* After pieces, scores and types are filled: hash, byte table, specials. */
static bl_result bl__tok_finish(bl_tokenizer *t) {
    int32_t i;
    int n_sp = 0;
    for (i = 0; i < 256; i++) t->byte_tok[i] = -1;
    for (i = 0; i < t->n_vocab; i++) {
        size_t len;
        const char *p = bl__tok_text(t, i, &len);
        uint32_t h = bl__hash_bytes(p, len) & (t->hash_cap - 1);
        for (;;) {
            int32_t o = t->hash[h];
            size_t ol;
            const char *op;
            if (o < 0) { t->hash[h] = i; break; }
            op = bl__tok_text(t, o, &ol);
            if (ol == len && memcmp(op, p, len) == 0) { t->hash[h] = i; break; } /* last duplicate wins */
            h = (h + 1) & (t->hash_cap - 1);
        }
        if (t->types[i] == BL__TT_BYTE && len == 6 && p[0] == '<' && p[1] == '0' && p[2] == 'x' && p[5] == '>') {
            unsigned v;
            if (sscanf(p + 3, "%2x", &v) == 1) t->byte_tok[v & 255] = i;
        }
        if ((t->types[i] == BL__TT_CONTROL || t->types[i] == BL__TT_USER || t->types[i] == BL__TT_UNKNOWN) && len > 0) n_sp++;
    }
    t->specials = (int32_t *)bl__alloc((size_t)(n_sp + 1) * sizeof *t->specials);
    if (!t->specials) return bl__terr(t, BL_ERR_NOMEM, "out of memory");
    for (i = 0; i < t->n_vocab; i++) {
        size_t len;
        bl__tok_text(t, i, &len);
        if ((t->types[i] == BL__TT_CONTROL || t->types[i] == BL__TT_USER || t->types[i] == BL__TT_UNKNOWN) && len > 0) {
            int k = t->n_specials++;
            while (k > 0 && bl__spec_cmp_len(t, t->specials[k - 1], i) > 0) { t->specials[k] = t->specials[k - 1]; k--; }
            t->specials[k] = i;
        }
    }
    if (t->unk < 0) t->unk = bl__tok_find(t, "<unk>", 5);
    return BL_OK;
}

static bl_result bl__tok_from_gguf(bl_tokenizer **out, const bl__gguf *g, const char *path) {
    bl_tokenizer *t = (bl_tokenizer *)bl__calloc(sizeof *t);
    const bl__gkv *tk = bl__gguf_find(g, "tokenizer.ggml.tokens");
    const bl__gkv *sc = bl__gguf_find(g, "tokenizer.ggml.scores");
    const bl__gkv *ty = bl__gguf_find(g, "tokenizer.ggml.token_type");
    const uint8_t *p;
    size_t blob = 0;
    uint64_t i;
    double v;
    bl_result r;
    *out = t;
    if (!t) return BL_ERR_NOMEM;
    if (!tk || tk->type != BL__G_ARR || tk->arr_type != BL__G_STR || tk->n == 0 || tk->n > (1u << 24))
        return bl__terr(t, BL_ERR_TOKENIZER, "%s: tokenizer.ggml.tokens is missing or not a string array", path);
    if (sc && (sc->type != BL__G_ARR || sc->arr_type != BL__G_F32 || sc->n != tk->n))
        return bl__terr(t, BL_ERR_TOKENIZER, "%s: tokenizer.ggml.scores does not match the tokens", path);
    if (ty && (ty->type != BL__G_ARR || ty->arr_type != BL__G_I32 || ty->n != tk->n))
        return bl__terr(t, BL_ERR_TOKENIZER, "%s: tokenizer.ggml.token_type does not match the tokens", path);
    for (i = 0, p = tk->val; i < tk->n; i++) { /* lengths were bounds-checked by the reader */
        uint64_t n;
        memcpy(&n, p, 8);
        blob += (size_t)n + 1;
        p += 8 + n;
    }
    if ((r = bl__tok_alloc(t, (int)tk->n, blob)) != BL_OK) return r;
    blob = 0;
    for (i = 0, p = tk->val; i < tk->n; i++) {
        uint64_t n;
        memcpy(&n, p, 8);
        t->off[i] = (uint32_t)blob;
        memcpy(t->blob + blob, p + 8, (size_t)n);
        t->blob[blob + n] = 0;
        blob += (size_t)n + 1;
        p += 8 + n;
        if (sc) memcpy(&t->scores[i], sc->val + 4 * i, 4);
        if (ty) { int32_t x; memcpy(&x, ty->val + 4 * i, 4); t->types[i] = (uint8_t)(x >= 1 && x <= 6 ? x : BL__TT_NORMAL); }
        else t->types[i] = BL__TT_NORMAL;
    }
    t->off[tk->n] = (uint32_t)blob;
    if (bl__gguf_num(g, "tokenizer.ggml.bos_token_id", &v) && v >= 0 && v < (double)tk->n) t->bos = (int32_t)v;
    if (bl__gguf_num(g, "tokenizer.ggml.eos_token_id", &v) && v >= 0 && v < (double)tk->n) t->eos = (int32_t)v;
    if (bl__gguf_num(g, "tokenizer.ggml.unknown_token_id", &v) && v >= 0 && v < (double)tk->n) t->unk = (int32_t)v;
    if (bl__gguf_num(g, "tokenizer.ggml.eot_token_id", &v) && v >= 0 && v < (double)tk->n) t->eot = (int32_t)v;
    if (bl__gguf_num(g, "tokenizer.ggml.add_bos_token", &v)) t->add_bos = v != 0;
    if (bl__gguf_num(g, "tokenizer.ggml.add_space_prefix", &v)) t->add_space_prefix = v != 0;
    return bl__tok_finish(t);
}

/* llama2.c tokenizer.bin: int32 max_token_length, then per token a float
   score, an int32 length and the bytes; spaces are stored as spaces. */
static bl_result bl__tok_from_l2c(bl_tokenizer **out, const char *path, int n_vocab) {
    bl_tokenizer *t = (bl_tokenizer *)bl__calloc(sizeof *t);
    bl__file f;
    bl_result r;
    size_t pos = 4, blob = 0;
    int i;
    char err[BL__ERRLEN];
    *out = t;
    if (!t) return BL_ERR_NOMEM;
    if (n_vocab <= 0) return bl__terr(t, BL_ERR_ARG, "%s: a llama2.c tokenizer needs the vocabulary size of its model", path);
    r = bl__file_open(&f, path, 1, err);
    if (r != BL_OK) { bl__file_close(&f); return bl__terr(t, r, "%s", err); }
    for (i = 0; i < n_vocab; i++) {
        int32_t len;
        if (pos + 8 > f.size) break;
        memcpy(&len, f.data + pos + 4, 4);
        if (len < 0 || (size_t)len > f.size - pos - 8) break;
        blob += (size_t)len * 3 + 1; /* room for spaces written as U+2581 */
        pos += 8 + (size_t)len;
    }
    if (f.size < 4 || i < n_vocab) {
        bl__file_close(&f);
        return bl__terr(t, BL_ERR_TOKENIZER, "%s: not a llama2.c tokenizer for %d tokens (truncated at token %d)", path, n_vocab, i);
    }
    if ((r = bl__tok_alloc(t, n_vocab, blob)) != BL_OK) { bl__file_close(&f); return r; }
    for (pos = 4, blob = 0, i = 0; i < n_vocab; i++) {
        int32_t len;
        const char *p;
        memcpy(&t->scores[i], f.data + pos, 4);
        memcpy(&len, f.data + pos + 4, 4);
        p = (const char *)f.data + pos + 8;
        t->off[i] = (uint32_t)blob;
        {   /* llama2.c stores the word marker as a plain space */
            int32_t k;
            for (k = 0; k < len; k++) {
                if (p[k] == ' ') { memcpy(t->blob + blob, "\xE2\x96\x81", 3); blob += 3; }
                else t->blob[blob++] = p[k];
            }
        }
        t->blob[blob++] = 0;
        pos += 8 + (size_t)len;
        if (len == 6 && p[0] == '<' && p[1] == '0' && p[2] == 'x' && p[5] == '>') t->types[i] = BL__TT_BYTE;
        else if (i == 0) t->types[i] = BL__TT_UNKNOWN;
        else if (i == 1 || i == 2) t->types[i] = BL__TT_CONTROL;
        else t->types[i] = BL__TT_NORMAL;
    }
    t->off[n_vocab] = (uint32_t)blob;
    t->unk = 0;
    t->bos = 1;
    t->eos = 2;
    bl__file_close(&f);
    return bl__tok_finish(t);
}

bl_result bl_tokenizer_load(bl_tokenizer **out, const char *path, int n_vocab) {
    bl__file f;
    char err[BL__ERRLEN];
    bl_result r;
    *out = NULL;
    r = bl__file_open(&f, path, 0, err);
    if (r != BL_OK) {
        bl__file_close(&f);
        *out = (bl_tokenizer *)bl__calloc(sizeof **out);
        if (!*out) return BL_ERR_NOMEM;
        return bl__terr(*out, r, "%s", err);
    }
    if (f.size >= 4 && memcmp(f.data, "GGUF", 4) == 0) {
        bl__gguf g;
        int nt = 0;
        bl__tensor *ts = NULL;
        r = bl__gguf_read(&g, &f, &ts, &nt, err);
        while (nt) BL_FREE(ts[--nt].name);
        BL_FREE(ts);
        if (r == BL_OK) {
            const char *s = "(missing)";
            size_t n = 9;
            if (bl__gguf_str(&g, "tokenizer.ggml.model", &s, &n) && n == 5 && !memcmp(s, "llama", 5)) r = bl__tok_from_gguf(out, &g, path);
            else {
                *out = (bl_tokenizer *)bl__calloc(sizeof **out);
                r = *out ? bl__terr(*out, BL_ERR_UNSUPPORTED, "%s: tokenizer.ggml.model '%.*s' is not supported yet (llama is)", path,
                                    (int)(n > 32 ? 32 : n), s) : BL_ERR_NOMEM;
            }
        } else {
            *out = (bl_tokenizer *)bl__calloc(sizeof **out);
            if (*out) bl__terr(*out, r, "%s", err);
        }
        bl__gguf_free(&g);
        bl__file_close(&f);
        return *out ? r : BL_ERR_NOMEM;
    }
    bl__file_close(&f);
    return bl__tok_from_l2c(out, path, n_vocab);
}

void bl_tokenizer_destroy(bl_tokenizer *t) {
    if (!t) return;
    BL_FREE(t->blob);
    BL_FREE(t->off);
    BL_FREE(t->scores);
    BL_FREE(t->types);
    BL_FREE(t->hash);
    BL_FREE(t->specials);
    BL_FREE(t);
}

const char *bl_tokenizer_last_error(const bl_tokenizer *t) { return t ? t->err : "out of memory"; }
int bl_tokenizer_n_vocab(const bl_tokenizer *t) { return t->n_vocab; }
int32_t bl_tokenizer_bos(const bl_tokenizer *t) { return t->bos; }
int32_t bl_tokenizer_eos(const bl_tokenizer *t) { return t->eos; }
int bl_tokenizer_is_eog(const bl_tokenizer *t, int32_t tok) { return tok >= 0 && (tok == t->eos || tok == t->eot); }

const char *bl_token_piece(const bl_tokenizer *t, int32_t tok, int *len) {
    size_t n;
    const char *p;
    if (tok < 0 || tok >= t->n_vocab) { if (len) *len = 0; return NULL; }
    p = bl__tok_text(t, tok, &n);
    if (len) *len = (int)n;
    return p;
}

static int bl__utf8_len(uint8_t c) {
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0) return 2;
    if ((c & 0xF0) == 0xE0) return 3;
    if ((c & 0xF8) == 0xF0) return 4;
    return 1;
}

typedef struct bl__sym { int prev, next; size_t start, n; } bl__sym;
typedef struct bl__bigram { float score; int left; size_t size; } bl__bigram;

/* Max-heap on (score, then lower left index). */
static int bl__bigram_less(const bl__bigram *a, const bl__bigram *b) {
    return a->score < b->score || (a->score == b->score && a->left > b->left);
}

static void bl__heap_push(bl__bigram *h, int *n, bl__bigram b) {
    int i = (*n)++;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!bl__bigram_less(&h[p], &b)) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = b;
}

static bl__bigram bl__heap_pop(bl__bigram *h, int *n) {
    bl__bigram top = h[0], last = h[--(*n)];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && bl__bigram_less(&h[c], &h[c + 1])) c++;
        if (!bl__bigram_less(&last, &h[c])) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = last;
    return top;
}

static void bl__spm_try_pair(const bl_tokenizer *t, const char *text, const bl__sym *sy, int left, int right, bl__bigram *heap, int *nh) {
    int32_t id;
    bl__bigram b;
    if (left < 0 || right < 0) return;
    id = bl__tok_find(t, text + sy[left].start, sy[left].n + sy[right].n);
    if (id < 0) return;
    b.score = t->scores[id];
    b.left = left;
    b.size = sy[left].n + sy[right].n;
    bl__heap_push(heap, nh, b);
}

/* Encode one stretch of plain text (already escaped). Returns ids written
   (counting beyond max) or -1 on allocation failure. */
static int bl__spm_encode(const bl_tokenizer *t, const char *text, size_t n, int32_t *out, int max, int count) {
    bl__sym *sy;
    bl__bigram *heap;
    int ns = 0, nh = 0, i;
    size_t p = 0;
    if (n == 0) return count;
    sy = (bl__sym *)bl__alloc(n * sizeof *sy);
    heap = (bl__bigram *)bl__alloc((3 * n + 1) * sizeof *heap);
    if (!sy || !heap) { BL_FREE(sy); BL_FREE(heap); return -1; }
    while (p < n) {
        size_t l = (size_t)bl__utf8_len((uint8_t)text[p]);
        if (l > n - p) l = n - p;
        sy[ns].start = p;
        sy[ns].n = l;
        sy[ns].prev = ns - 1;
        sy[ns].next = p + l < n ? ns + 1 : -1;
        ns++;
        p += l;
    }
    for (i = 1; i < ns; i++) bl__spm_try_pair(t, text, sy, i - 1, i, heap, &nh);
    while (nh) {
        bl__bigram b = bl__heap_pop(heap, &nh);
        int l = b.left, r = sy[l].next;
        if (r < 0 || sy[l].n == 0 || sy[l].n + sy[r].n != b.size) continue; /* stale */
        sy[l].n += sy[r].n;
        sy[r].n = 0;
        sy[l].next = sy[r].next;
        if (sy[r].next >= 0) sy[sy[r].next].prev = l;
        bl__spm_try_pair(t, text, sy, sy[l].prev, l, heap, &nh);
        bl__spm_try_pair(t, text, sy, l, sy[l].next, heap, &nh);
    }
    for (i = 0; i >= 0 && i < ns; i = sy[i].next) {
        int32_t id = bl__tok_find(t, text + sy[i].start, sy[i].n);
        if (id >= 0) {
            if (count < max) out[count] = id;
            count++;
            continue;
        }
        {
            size_t k;
            for (k = 0; k < sy[i].n; k++) {
                int32_t bt = t->byte_tok[(uint8_t)text[sy[i].start + k]];
                if (bt < 0) bt = t->unk;
                if (bt < 0) continue;
                if (count < max) out[count] = bt;
                count++;
            }
        }
    }
    BL_FREE(sy);
    BL_FREE(heap);
    return count;
}

/* Find the leftmost (then longest) special token in s[0..n). */
static int32_t bl__find_special(const bl_tokenizer *t, const char *s, size_t n, int parse_special, size_t *at) {
    size_t best = n;
    int32_t best_id = -1;
    int k;
    for (k = 0; k < t->n_specials; k++) {
        int32_t id = t->specials[k];
        size_t len;
        const char *p = bl__tok_text(t, id, &len);
        size_t i;
        if (!parse_special && t->types[id] != BL__TT_USER) continue;
        if (len > n) continue;
        for (i = 0; i + len <= n && i < best; i++)
            if (s[i] == p[0] && memcmp(s + i, p, len) == 0) {
                best = i;
                best_id = id; /* specials are sorted longest first: first hit at i is the longest */
                break;
            }
    }
    *at = best;
    return best_id;
}

int bl_tokenize(const bl_tokenizer *t, const char *text, int len, int32_t *out, int max, int flags) {
    size_t n, pos = 0;
    int count = 0, prev_special = 1;
    char *buf;
    if (!t || !text) return BL_ERR_ARG;
    n = len < 0 ? strlen(text) : (size_t)len;
    if (n > (size_t)INT_MAX / 4) return BL_ERR_ARG;
    if (!out) max = 0;
    if ((flags & BL_TOK_ADD_BOS) && t->add_bos && t->bos >= 0) {
        if (count < max) out[count] = t->bos;
        count++;
    }
    buf = (char *)bl__alloc(n * 3 + 4);
    if (!buf) return BL_ERR_NOMEM;
    while (pos < n) {
        size_t at, seg, i, bn = 0;
        int32_t sp = bl__find_special(t, text + pos, n - pos, (flags & BL_TOK_PARSE_SPECIAL) != 0, &at);
        seg = at;
        if (seg > 0) {
            if (t->add_space_prefix && prev_special) { memcpy(buf, "\xE2\x96\x81", 3); bn = 3; }
            for (i = 0; i < seg; i++) {
                if (text[pos + i] == ' ') { memcpy(buf + bn, "\xE2\x96\x81", 3); bn += 3; }
                else buf[bn++] = text[pos + i];
            }
            count = bl__spm_encode(t, buf, bn, out, max, count);
            if (count < 0) { BL_FREE(buf); return BL_ERR_NOMEM; }
            prev_special = 0;
        }
        pos += seg;
        if (sp >= 0) {
            size_t sl;
            bl__tok_text(t, sp, &sl);
            if (count < max) out[count] = sp;
            count++;
            pos += sl;
            prev_special = 1;
        }
    }
    BL_FREE(buf);
    return count;
}

int bl_token_to_text(const bl_tokenizer *t, int32_t prev, int32_t tok, char *buf, int cap) {
    size_t n, i;
    const char *p;
    int o = 0;
    if (!t || !buf || cap <= 0) return BL_ERR_ARG;
    buf[0] = 0;
    if (tok < 0 || tok >= t->n_vocab) return BL_ERR_ARG;
    p = bl__tok_text(t, tok, &n);
    if (t->types[tok] == BL__TT_CONTROL || t->types[tok] == BL__TT_UNKNOWN || t->types[tok] == BL__TT_UNUSED) return 0;
    if (t->types[tok] == BL__TT_BYTE) {
        unsigned v = 0;
        if (n == 6 && sscanf(p + 3, "%2x", &v) == 1 && cap > 1) { buf[0] = (char)v; buf[1] = 0; return 1; }
    }
    for (i = 0; i < n && o < cap - 1; i++) {
        if (i + 2 < n && (uint8_t)p[i] == 0xE2 && (uint8_t)p[i + 1] == 0x96 && (uint8_t)p[i + 2] == 0x81) {
            if (!(o == 0 && i == 0 && (prev < 0 || prev == t->bos))) buf[o++] = ' ';
            i += 2;
            continue;
        }
        buf[o++] = p[i];
    }
    buf[o] = 0;
    return o;
}

/* >>kern  KERNELS ------------------------------------------------------------
   bl__dequant_row converts any weight type to float exactly (F16, BF16, and
   GGUF quant blocks dequantized): the definition every kernel is tested
   against. The matrix kernels follow llama.cpp's precision contract: F32 and
   F16 weights meet float activations (exact math), BF16 weights meet
   BF16-rounded activations (vdpbf16ps), quantized weights meet activations
   quantized to int8 blocks of 32 (integer dot products: vpdpbusd, or
   pmaddubsw on AVX2); bl_type_activation says which, per type.
   Each kernel has a plain C reference, always compiled and tested, and SIMD
   variants beside it; one table per context holds the chosen ones, and the
   forward pass calls only through the table. Decoding (one token) runs one
   weight row against one activation row, straight from the GGUF blocks;
   prompt batches unpack 32 rows at a time into a tile of bytes interleaved
   for the dot-product instructions, reused by every token of the batch.
   Block layouts follow GGUF; their sizes are checked below. */

typedef struct bl__block_q4_0 { uint16_t d; uint8_t qs[16]; } bl__block_q4_0;          /* 32 weights */
typedef struct bl__block_q8_0 { uint16_t d; int8_t qs[32]; } bl__block_q8_0;           /* 32 weights */
typedef struct bl__block_q4_k { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; } bl__block_q4_k; /* 256 */
typedef struct bl__block_q6_k { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; } bl__block_q6_k; /* 256 */
BL__STATIC_ASSERT(sizeof(bl__block_q4_0) == 18, q4_0_size);
BL__STATIC_ASSERT(sizeof(bl__block_q8_0) == 34, q8_0_size);
BL__STATIC_ASSERT(sizeof(bl__block_q4_k) == 144, q4_k_size);
BL__STATIC_ASSERT(sizeof(bl__block_q6_k) == 210, q6_k_size);

static float bl__f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 31, man = h & 1023, bits;
    float f;
    if (exp == 0) {
        if (man == 0) bits = sign;
        else { /* subnormal: renormalize */
            int e = -1;
            do { man <<= 1; e++; } while (!(man & 1024));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 1023) << 13);
        }
    } else if (exp == 31) bits = sign | 0x7f800000u | (man << 13);
    else bits = sign | ((exp + 112) << 23) | (man << 13);
    memcpy(&f, &bits, 4);
    return f;
}

static float bl__bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static void bl__k4_scale_min(int j, const uint8_t *q, int *sc, int *mn) {
    if (j < 4) { *sc = q[j] & 63; *mn = q[j + 4] & 63; }
    else { *sc = (q[j + 4] & 15) | ((q[j - 4] >> 6) << 4); *mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4); }
}

/* Convert n elements (a whole number of blocks) of any readable type to float. */
static void bl__dequant_row(int type, const uint8_t *src, float *dst, int64_t n) {
    int64_t i, b;
    int j;
    switch (type) {
    case BL_TYPE_F32: memcpy(dst, src, (size_t)n * 4); break;
    case BL_TYPE_F16:
        for (i = 0; i < n; i++) { uint16_t h; memcpy(&h, src + 2 * i, 2); dst[i] = bl__f16_to_f32(h); }
        break;
    case BL_TYPE_BF16:
        for (i = 0; i < n; i++) { uint16_t h; memcpy(&h, src + 2 * i, 2); dst[i] = bl__bf16_to_f32(h); }
        break;
    case BL_TYPE_Q4_0:
        for (b = 0; b < n / 32; b++) {
            const bl__block_q4_0 *q = (const bl__block_q4_0 *)(const void *)(src + b * 18);
            float d = bl__f16_to_f32(q->d);
            for (j = 0; j < 16; j++) {
                dst[b * 32 + j] = d * (float)((q->qs[j] & 15) - 8);
                dst[b * 32 + j + 16] = d * (float)((q->qs[j] >> 4) - 8);
            }
        }
        break;
    case BL_TYPE_Q8_0:
        for (b = 0; b < n / 32; b++) {
            const bl__block_q8_0 *q = (const bl__block_q8_0 *)(const void *)(src + b * 34);
            float d = bl__f16_to_f32(q->d);
            for (j = 0; j < 32; j++) dst[b * 32 + j] = d * (float)q->qs[j];
        }
        break;
    case BL_TYPE_Q4_K:
        for (b = 0; b < n / 256; b++) {
            const bl__block_q4_k *q = (const bl__block_q4_k *)(const void *)(src + b * 144);
            float d = bl__f16_to_f32(q->d), dmin = bl__f16_to_f32(q->dmin);
            float *y = dst + b * 256;
            int c, l;
            for (c = 0; c < 4; c++) {
                int sc1, m1, sc2, m2;
                const uint8_t *qs = q->qs + 32 * c;
                bl__k4_scale_min(2 * c, q->scales, &sc1, &m1);
                bl__k4_scale_min(2 * c + 1, q->scales, &sc2, &m2);
                for (l = 0; l < 32; l++) {
                    y[64 * c + l] = d * (float)sc1 * (float)(qs[l] & 15) - dmin * (float)m1;
                    y[64 * c + 32 + l] = d * (float)sc2 * (float)(qs[l] >> 4) - dmin * (float)m2;
                }
            }
        }
        break;
    case BL_TYPE_Q6_K:
        for (b = 0; b < n / 256; b++) {
            const bl__block_q6_k *q = (const bl__block_q6_k *)(const void *)(src + b * 210);
            float d = bl__f16_to_f32(q->d);
            float *y = dst + b * 256;
            int h, l;
            for (h = 0; h < 2; h++) {
                const uint8_t *ql = q->ql + 64 * h, *qh = q->qh + 32 * h;
                const int8_t *sc = q->scales + 8 * h;
                for (l = 0; l < 32; l++) {
                    int is = l / 16;
                    int q1 = (int)((ql[l] & 15) | (((qh[l] >> 0) & 3) << 4)) - 32;
                    int q2 = (int)((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32;
                    int q3 = (int)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                    int q4 = (int)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                    y[128 * h + l] = d * (float)sc[is] * (float)q1;
                    y[128 * h + l + 32] = d * (float)sc[is + 2] * (float)q2;
                    y[128 * h + l + 64] = d * (float)sc[is + 4] * (float)q3;
                    y[128 * h + l + 96] = d * (float)sc[is + 6] * (float)q4;
                }
            }
        }
        break;
    default: BL_ASSERT(0 && "unreadable type"); break;
    }
}

/* ---- activation formats ---------------------------------------------------
   Where the weights are quantized, the activations are quantized too, to
   int8 blocks of 32 with a float scale (finer than the Q8_K blocks of 256,
   so at least as accurate), and integer dot products do the work. The
   block sums (scaled) are kept beside the quants: Q4_0, Q4_K and Q6_K store
   unsigned codes with an offset, and sum(a) times the offset corrects the
   integer dot. BF16 weights meet BF16-rounded activations; F32 and F16
   weights meet the float activations unchanged (exact math). */

enum { BL__ACT_F32 = 0, BL__ACT_BF16 = 1, BL__ACT_Q8 = 2 };

static int bl__act_kind(int type) {
    switch (type) {
    case BL_TYPE_BF16: return BL__ACT_BF16;
    case BL_TYPE_Q4_0: case BL_TYPE_Q8_0: case BL_TYPE_Q4_K: case BL_TYPE_Q6_K: return BL__ACT_Q8;
    default: return BL__ACT_F32;
    }
}

int bl_type_activation(int type) {
    if (type < 0 || type >= 40 || !bl__types[type].bytes) return -1;
    switch (bl__act_kind(type)) {
    case BL__ACT_BF16: return BL_TYPE_BF16;
    case BL__ACT_Q8: return BL_TYPE_Q8_0;
    default: return BL_TYPE_F32;
    }
}

/* One row of Q8 activations (K a multiple of 32), as six arrays:
   q (K int8), qp (the same with the middle 16-byte quarters of each pair of
   blocks swapped, so a 32-byte load meets the low or high nibbles of two
   Q4_0 blocks), d (K/32 scales), s32 (K/32: d * sum of the block's q),
   s16 (K/16: d * sum of each half block), i32 (K/32: the block sums). */
typedef struct bl__q8a { const int8_t *q, *qp; const float *d, *s32, *s16; const int32_t *i32; } bl__q8a;

static size_t bl__q8a_stride(int64_t K) {
    size_t n = 2 * (size_t)K + (size_t)K / 32 * 12 + (size_t)K / 16 * 4;
    return (n + 63) & ~(size_t)63;
}
static bl__q8a bl__q8a_at(const uint8_t *p, int64_t K) {
    bl__q8a a;
    a.q = (const int8_t *)p;
    a.qp = (const int8_t *)p + K;
    a.d = (const float *)(const void *)(p + 2 * K);
    a.s32 = a.d + K / 32;
    a.s16 = a.s32 + K / 32;
    a.i32 = (const int32_t *)(const void *)(a.s16 + K / 16);
    return a;
}
static size_t bl__bf16a_stride(int64_t K) { return ((size_t)K * 2 + 63) & ~(size_t)63; }

static uint16_t bl__f32_to_bf16(float f) { /* round to nearest even; NaN stays NaN */
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 64);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

static void bl__bf16a_ref(const float *x, int64_t n, uint16_t *o) {
    int64_t i;
    for (i = 0; i < n; i++) o[i] = bl__f32_to_bf16(x[i]);
}

/* Fill qp and i32 from q (see bl__q8a); an odd last block stays as it is. */
static void bl__q8a_permute(uint8_t *out, int64_t K) {
    int32_t *is = (int32_t *)(void *)(out + 2 * K + K / 32 * 8 + K / 16 * 4);
    int64_t b;
    int j;
    for (b = 0; b < K / 32; b++) {
        int s = 0;
        for (j = 0; j < 32; j++) s += ((const int8_t *)out)[32 * b + j];
        is[b] = s;
    }
    memcpy(out + K, out, (size_t)K);
    for (b = 0; b + 2 <= K / 32; b += 2) {
        memcpy(out + K + 32 * b + 16, out + 32 * b + 32, 16);
        memcpy(out + K + 32 * b + 32, out + 32 * b + 16, 16);
    }
}

static void bl__q8a_ref(const float *x, int64_t K, uint8_t *out) {
    int8_t *q = (int8_t *)out;
    float *d = (float *)(void *)(out + 2 * K), *s32 = d + K / 32, *s16 = s32 + K / 32;
    int64_t b;
    int j;
    for (b = 0; b < K / 32; b++) {
        float amax = 0, id;
        int sum0 = 0, sum1 = 0;
        for (j = 0; j < 32; j++) { float v = fabsf(x[32 * b + j]); if (v > amax) amax = v; }
        id = amax > 0 ? 127.0f / amax : 0.0f;
        d[b] = amax / 127.0f;
        for (j = 0; j < 32; j++) {
            int v = (int)lrintf(x[32 * b + j] * id);
            q[32 * b + j] = (int8_t)v;
            if (j < 16) sum0 += v; else sum1 += v;
        }
        s16[2 * b] = d[b] * (float)sum0;
        s16[2 * b + 1] = d[b] * (float)sum1;
        s32[b] = d[b] * (float)(sum0 + sum1);
    }
    bl__q8a_permute(out, K);
}

/* Q4_K's 8 6-bit scales and mins, unpacked four at a time in 32-bit words. */
static void bl__k4_scales8(const uint8_t *q, uint8_t sc[8], uint8_t mn[8]) {
    uint32_t a, b, c, v;
    memcpy(&a, q, 4);
    memcpy(&b, q + 4, 4);
    memcpy(&c, q + 8, 4);
    v = a & 0x3f3f3f3fu; memcpy(sc, &v, 4);
    v = (c & 0x0f0f0f0fu) | ((a >> 2) & 0x30303030u); memcpy(sc + 4, &v, 4);
    v = b & 0x3f3f3f3fu; memcpy(mn, &v, 4);
    v = ((c >> 4) & 0x0f0f0f0fu) | ((b >> 2) & 0x30303030u); memcpy(mn + 4, &v, 4);
}

/* ---- reference dot products of one weight row with one activation row --- */

static float bl__vdot_q4_0_ref(const uint8_t *w, bl__q8a a, int64_t K) {
    float acc = 0;
    int64_t b;
    int j;
    for (b = 0; b < K / 32; b++) {
        const bl__block_q4_0 *x = (const bl__block_q4_0 *)(const void *)(w + b * 18);
        const int8_t *q = a.q + 32 * b;
        int is = 0;
        for (j = 0; j < 16; j++) is += (x->qs[j] & 15) * q[j] + (x->qs[j] >> 4) * q[j + 16];
        acc += bl__f16_to_f32(x->d) * (a.d[b] * (float)is - 8.0f * a.s32[b]);
    }
    return acc;
}

static float bl__vdot_q8_0_ref(const uint8_t *w, bl__q8a a, int64_t K) {
    float acc = 0;
    int64_t b;
    int j;
    for (b = 0; b < K / 32; b++) {
        const bl__block_q8_0 *x = (const bl__block_q8_0 *)(const void *)(w + b * 34);
        const int8_t *q = a.q + 32 * b;
        int is = 0;
        for (j = 0; j < 32; j++) is += x->qs[j] * q[j];
        acc += bl__f16_to_f32(x->d) * a.d[b] * (float)is;
    }
    return acc;
}

static float bl__vdot_q4_k_ref(const uint8_t *w, bl__q8a a, int64_t K) {
    float acc = 0;
    int64_t b;
    int j, l;
    for (b = 0; b < K / 256; b++) {
        const bl__block_q4_k *x = (const bl__block_q4_k *)(const void *)(w + b * 144);
        float d = bl__f16_to_f32(x->d), dmin = bl__f16_to_f32(x->dmin);
        for (j = 0; j < 8; j++) {
            const uint8_t *qs = x->qs + 32 * (j / 2);
            const int8_t *q = a.q + 256 * b + 32 * j;
            int sc, mn, is = 0;
            bl__k4_scale_min(j, x->scales, &sc, &mn);
            for (l = 0; l < 32; l++) is += ((j & 1) ? qs[l] >> 4 : qs[l] & 15) * q[l];
            acc += d * (float)sc * a.d[8 * b + j] * (float)is - dmin * (float)mn * a.s32[8 * b + j];
        }
    }
    return acc;
}

/* The 6-bit code of element e (0..255) of a Q6_K block, 0..63. */
static int bl__q6k_code(const bl__block_q6_k *x, int e) {
    int h = e / 128, k = (e % 128) / 32, l = e % 32;
    int lo = x->ql[64 * h + l + 32 * (k & 1)];
    lo = k < 2 ? lo & 15 : lo >> 4;
    return lo | (((x->qh[32 * h + l] >> (2 * k)) & 3) << 4);
}

static float bl__vdot_q6_k_ref(const uint8_t *w, bl__q8a a, int64_t K) {
    float acc = 0;
    int64_t b;
    int g, l;
    for (b = 0; b < K / 256; b++) {
        const bl__block_q6_k *x = (const bl__block_q6_k *)(const void *)(w + b * 210);
        float d = bl__f16_to_f32(x->d);
        for (g = 0; g < 16; g++) {
            const int8_t *q = a.q + 256 * b + 16 * g;
            int is = 0;
            for (l = 0; l < 16; l++) is += bl__q6k_code(x, 16 * g + l) * q[l];
            acc += d * (float)x->scales[g] * (a.d[8 * b + g / 2] * (float)is - 32.0f * a.s16[16 * b + g]);
        }
    }
    return acc;
}

static float bl__dot_f32(const float *a, const float *b, int64_t n) {
    float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i;
    int k;
    for (i = 0; i + 8 <= n; i += 8)
        for (k = 0; k < 8; k++) s[k] += a[i + k] * b[i + k];
    for (; i < n; i++) s[0] += a[i] * b[i];
    return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
}

/* Float-type weights (F32, F16, BF16): y[t*ldy + r] = dot(row r, x_t) for
   r < nr, t < nt; x rows are float (F32, F16 weights) or bf16 (BF16). */
static void bl__gemm_f_ref(int type, const uint8_t *w, size_t row_bytes, int nr, const uint8_t *x, size_t xstride, int nt,
                           int64_t K, float *y, size_t ldy) {
    int r, t, k;
    int64_t i;
    for (r = 0; r < nr; r++) {
        const uint8_t *wr = w + (size_t)r * row_bytes;
        for (t = 0; t < nt; t++) {
            const uint8_t *xt = x + (size_t)t * xstride;
            float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            if (type == BL_TYPE_F32) { y[(size_t)t * ldy + r] = bl__dot_f32((const float *)(const void *)wr, (const float *)(const void *)xt, K); continue; }
            for (i = 0; i < K; i++) {
                uint16_t h, xb;
                float wv, xv;
                memcpy(&h, wr + 2 * i, 2);
                if (type == BL_TYPE_F16) { wv = bl__f16_to_f32(h); memcpy(&xv, xt + 4 * i, 4); }
                else { wv = bl__bf16_to_f32(h); memcpy(&xb, xt + 2 * i, 2); xv = bl__bf16_to_f32(xb); }
                s[i & 7] += wv * xv;
            }
            for (k = 0; k < 4; k++) s[k] += s[k + 4];
            y[(size_t)t * ldy + r] = (s[0] + s[1]) + (s[2] + s[3]);
        }
    }
}

/* ---- tiles for prompt batches ---------------------------------------------
   A tile holds 32 rows of a quantized matrix unpacked to one unsigned byte
   per weight, interleaved so that one 64-byte vector holds 4 consecutive
   weights of 16 rows: u[(k/4)*64 + r*4 + k%4] for rows 0..15, then the same
   for rows 16..31. Each row's value is s*u - o per sub-block (S = 32
   weights; 16 for Q6_K), with s[j][32] and o[j][32] floats after the bytes.
   An integer dot product of a 64-byte vector with 4 broadcast activation
   bytes then advances 16 rows at once, and a tile is reused by every token
   of the batch. */

static int bl__tile_sub(int type) { return type == BL_TYPE_Q6_K ? 16 : 32; }
static size_t bl__tile_bytes(int64_t K) { return (size_t)K * 32 + (size_t)(K / 16) * 32 * 4 * 2; }

/* Unpack one row into codes u[K] and per-sub-block s, o (stride sstride). */
static void bl__unpack_row(int type, const uint8_t *w, int64_t K, uint8_t *u, float *s, float *o, int sstride) {
    int64_t b;
    int j, l;
    switch (type) {
    case BL_TYPE_Q4_0:
        for (b = 0; b < K / 32; b++) {
            const bl__block_q4_0 *x = (const bl__block_q4_0 *)(const void *)(w + b * 18);
            float d = bl__f16_to_f32(x->d);
            for (j = 0; j < 16; j++) { u[32 * b + j] = (uint8_t)(x->qs[j] & 15); u[32 * b + j + 16] = (uint8_t)(x->qs[j] >> 4); }
            s[b * sstride] = d;
            o[b * sstride] = 8.0f * d;
        }
        break;
    case BL_TYPE_Q8_0:
        for (b = 0; b < K / 32; b++) {
            const bl__block_q8_0 *x = (const bl__block_q8_0 *)(const void *)(w + b * 34);
            float d = bl__f16_to_f32(x->d);
            for (j = 0; j < 32; j++) u[32 * b + j] = (uint8_t)(x->qs[j] ^ 0x80);
            s[b * sstride] = d;
            o[b * sstride] = 128.0f * d;
        }
        break;
    case BL_TYPE_Q4_K:
        for (b = 0; b < K / 256; b++) {
            const bl__block_q4_k *x = (const bl__block_q4_k *)(const void *)(w + b * 144);
            float d = bl__f16_to_f32(x->d), dmin = bl__f16_to_f32(x->dmin);
            uint8_t sc[8], mn[8];
            bl__k4_scales8(x->scales, sc, mn);
            for (j = 0; j < 8; j++) {
                const uint8_t *qs = x->qs + 32 * (j / 2);
                for (l = 0; l < 32; l++) u[256 * b + 32 * j + l] = (uint8_t)((j & 1) ? qs[l] >> 4 : qs[l] & 15);
                s[(8 * b + j) * sstride] = d * (float)sc[j];
                o[(8 * b + j) * sstride] = dmin * (float)mn[j];
            }
        }
        break;
    default: /* Q6_K */
        for (b = 0; b < K / 256; b++) {
            const bl__block_q6_k *x = (const bl__block_q6_k *)(const void *)(w + b * 210);
            float d = bl__f16_to_f32(x->d);
            for (j = 0; j < 256; j++) u[256 * b + j] = (uint8_t)bl__q6k_code(x, j);
            for (j = 0; j < 16; j++) {
                s[(16 * b + j) * sstride] = d * (float)x->scales[j];
                o[(16 * b + j) * sstride] = 32.0f * d * (float)x->scales[j];
            }
        }
        break;
    }
}

/* Build the tile of rows [0, nr) (nr <= 32; the rest are zero) in tile,
   with rowbuf (16*K bytes) as scratch. */
static void bl__tile_pack(int type, const uint8_t *w, size_t row_bytes, int nr, int64_t K, uint8_t *tile, uint8_t *rowbuf) {
    int64_t nsub = K / bl__tile_sub(type), k4;
    float *s = (float *)(void *)(tile + (size_t)K * 32), *o = s + nsub * 32;
    int r;
    for (r = 0; r < 32; r++) {
        uint8_t *dst = tile + (size_t)(r / 16) * (size_t)K * 16 + (size_t)(r % 16) * 4;
        if (r >= nr) {
            int64_t j;
            for (k4 = 0; k4 < K / 4; k4++) memset(dst + k4 * 64, 0, 4);
            for (j = 0; j < nsub; j++) { s[j * 32 + r] = 0; o[j * 32 + r] = 0; }
            continue;
        }
        bl__unpack_row(type, w + (size_t)r * row_bytes, K, rowbuf, s + r, o + r, 32);
        for (k4 = 0; k4 < K / 4; k4++) memcpy(dst + k4 * 64, rowbuf + 4 * k4, 4);
    }
}

/* y[t*ldy + r] for the tile's rows r < nr and tokens t < nt (activation
   rows at act + t*astride). */
static void bl__tile_gemm_ref(int type, const uint8_t *tile, int64_t K, const uint8_t *act, size_t astride, int nt, float *y, size_t ldy, int nr) {
    int S = bl__tile_sub(type), r, t, l;
    int64_t nsub = K / S, j;
    const float *s = (const float *)(const void *)(tile + (size_t)K * 32), *o = s + nsub * 32;
    for (t = 0; t < nt; t++) {
        bl__q8a a = bl__q8a_at(act + (size_t)t * astride, K);
        const float *sd = S == 32 ? a.s32 : a.s16;
        for (r = 0; r < nr; r++) {
            const uint8_t *u = tile + (size_t)(r / 16) * (size_t)K * 16 + (size_t)(r % 16) * 4;
            float acc = 0;
            for (j = 0; j < nsub; j++) {
                int is = 0;
                for (l = 0; l < S; l++) {
                    int64_t k = j * S + l;
                    is += u[(k / 4) * 64 + k % 4] * a.q[k];
                }
                acc += s[j * 32 + r] * (a.d[j * S / 32] * (float)is) - o[j * 32 + r] * sd[j];
            }
            y[(size_t)t * ldy + r] = acc;
        }
    }
}

/* ---- other reference kernels --------------------------------------------- */

static void bl__axpy_ref(float *y, float a, const float *x, int64_t n) {
    int64_t i;
    for (i = 0; i < n; i++) y[i] += a * x[i];
}

static void bl__softmax_ref(float *x, int n) {
    float mx = x[0], sum = 0;
    int i;
    for (i = 1; i < n; i++) if (x[i] > mx) mx = x[i];
    for (i = 0; i < n; i++) { x[i] = expf(x[i] - mx); sum += x[i]; }
    for (i = 0; i < n; i++) x[i] /= sum;
}

/* g[i] = silu(g[i]) * u[i] */
static void bl__swiglu_ref(float *g, const float *u, int64_t n) {
    int64_t i;
    for (i = 0; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

/* Attention for one query head over n_att cached positions (rows kvs floats
   apart): scores into s (n_att floats of scratch), the softmax-weighted sum
   of the values into o (hd floats). */
static void bl__attn_ref(const float *q, const float *kc, const float *vc, size_t kvs, int n_att, int hd, float scale, float *s, float *o) {
    int t;
    for (t = 0; t < n_att; t++) s[t] = bl__dot_f32(q, kc + (size_t)t * kvs, hd) * scale;
    bl__softmax_ref(s, n_att);
    memset(o, 0, (size_t)hd * sizeof(float));
    for (t = 0; t < n_att; t++) bl__axpy_ref(o, s[t], vc + (size_t)t * kvs, hd);
}

/* ---- x86 SIMD variants ----------------------------------------------------
   Compiled with per-function target attributes, so the header needs no
   -march flag and one binary runs on any x86-64; bl__kern_select picks the
   level once per context from cpuid (and BL_SIMD=scalar|avx2|avx512 may ask
   for a lower one). */
#if !defined(BL_NO_SIMD) && (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define BL__X86 1
#if defined(__GNUC__) && !defined(__clang__)
/* GCC 12's AVX-512 intrinsics start from _mm512_undefined_*(), which g++
   -Wall reports as maybe-uninitialized at every use. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define BL__DIAG_PUSHED 1
#endif
#include <immintrin.h>
#include <cpuid.h>
#define BL__AVX2 __attribute__((target("avx2,fma,f16c")))
#define BL__AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))
#define BL__AVX512BF __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512bf16")))
#define BL__INLINE static inline __attribute__((always_inline))
#define BL__UNROLL16 _Pragma("GCC unroll 16")

static int32_t bl__ld32(const void *p) { int32_t v; memcpy(&v, p, 4); return v; }

/* -- AVX2 -- */

BL__AVX2 static float bl__hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
BL__AVX2 static int bl__hsum256i(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}
BL__AVX2 static __m256i bl__u8dot256(__m256i u, __m256i q) { /* 8 int32 sums of 4 u8*s8 products */
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, q), _mm256_set1_epi16(1));
}

BL__AVX2 static void bl__q8a_avx2(const float *x, int64_t K, uint8_t *out) {
    int8_t *q = (int8_t *)out;
    float *d = (float *)(void *)(out + 2 * K), *s32 = d + K / 32, *s16 = s32 + K / 32;
    const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    int64_t b;
    for (b = 0; b < K / 32; b++) {
        const float *xb = x + 32 * b;
        __m256 v0 = _mm256_loadu_ps(xb), v1 = _mm256_loadu_ps(xb + 8), v2 = _mm256_loadu_ps(xb + 16), v3 = _mm256_loadu_ps(xb + 24);
        __m256 mx = _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(v0, absm), _mm256_and_ps(v1, absm)),
                                  _mm256_max_ps(_mm256_and_ps(v2, absm), _mm256_and_ps(v3, absm)));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
        float amax, id;
        __m256 vid;
        __m256i i0, i1, i2, i3, p;
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        amax = _mm_cvtss_f32(m4);
        id = amax > 0 ? 127.0f / amax : 0.0f;
        d[b] = amax / 127.0f;
        vid = _mm256_set1_ps(id);
        i0 = _mm256_cvtps_epi32(_mm256_mul_ps(v0, vid));
        i1 = _mm256_cvtps_epi32(_mm256_mul_ps(v1, vid));
        i2 = _mm256_cvtps_epi32(_mm256_mul_ps(v2, vid));
        i3 = _mm256_cvtps_epi32(_mm256_mul_ps(v3, vid));
        {
            int sa = bl__hsum256i(_mm256_add_epi32(i0, i1)), sb = bl__hsum256i(_mm256_add_epi32(i2, i3));
            s16[2 * b] = d[b] * (float)sa;
            s16[2 * b + 1] = d[b] * (float)sb;
            s32[b] = d[b] * (float)(sa + sb);
        }
        p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
        _mm256_storeu_si256((__m256i *)(void *)(q + 32 * b), _mm256_permutevar8x32_epi32(p, perm));
    }
    bl__q8a_permute(out, K);
}

BL__AVX2 static float bl__vdot_q4_0_avx2(const uint8_t *w, bl__q8a a, int64_t K) {
    __m256 acc = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(15);
    float cor = 0;
    int64_t b;
    for (b = 0; b < K / 32; b++) {
        const uint8_t *x = w + b * 18;
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(x + 2));
        __m256i u = _mm256_and_si256(_mm256_inserti128_si256(_mm256_castsi128_si256(v), _mm_srli_epi16(v, 4), 1), m4);
        __m256i s = bl__u8dot256(u, _mm256_loadu_si256((const __m256i *)(const void *)(a.q + 32 * b)));
        float dw = _cvtsh_ss((unsigned short)(x[0] | (x[1] << 8)));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(dw * a.d[b]), acc);
        cor += dw * a.s32[b];
    }
    return bl__hsum256(acc) - 8.0f * cor;
}

BL__AVX2 static float bl__vdot_q8_0_avx2(const uint8_t *w, bl__q8a a, int64_t K) {
    __m256 acc = _mm256_setzero_ps();
    int64_t b;
    for (b = 0; b < K / 32; b++) {
        const uint8_t *x = w + b * 34;
        __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)(x + 2));
        __m256i q = _mm256_loadu_si256((const __m256i *)(const void *)(a.q + 32 * b));
        __m256i s = bl__u8dot256(_mm256_abs_epi8(v), _mm256_sign_epi8(q, v));
        float dw = _cvtsh_ss((unsigned short)(x[0] | (x[1] << 8)));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(dw * a.d[b]), acc);
    }
    return bl__hsum256(acc);
}

BL__AVX2 static float bl__vdot_q4_k_avx2(const uint8_t *w, bl__q8a a, int64_t K) {
    __m256 acc = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(15);
    float cor = 0;
    int64_t b;
    int j;
    for (b = 0; b < K / 256; b++) {
        const bl__block_q4_k *x = (const bl__block_q4_k *)(const void *)(w + b * 144);
        float d = _cvtsh_ss(x->d), dmin = _cvtsh_ss(x->dmin);
        for (j = 0; j < 8; j += 2) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)(x->qs + 16 * j));
            const int8_t *q = a.q + 256 * b + 32 * j;
            int sc0, mn0, sc1, mn1;
            __m256i s0 = bl__u8dot256(_mm256_and_si256(v, m4), _mm256_loadu_si256((const __m256i *)(const void *)q));
            __m256i s1 = bl__u8dot256(_mm256_and_si256(_mm256_srli_epi16(v, 4), m4), _mm256_loadu_si256((const __m256i *)(const void *)(q + 32)));
            bl__k4_scale_min(j, x->scales, &sc0, &mn0);
            bl__k4_scale_min(j + 1, x->scales, &sc1, &mn1);
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s0), _mm256_set1_ps(d * (float)sc0 * a.d[8 * b + j]), acc);
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s1), _mm256_set1_ps(d * (float)sc1 * a.d[8 * b + j + 1]), acc);
            cor += dmin * ((float)mn0 * a.s32[8 * b + j] + (float)mn1 * a.s32[8 * b + j + 1]);
        }
    }
    return bl__hsum256(acc) - cor;
}

BL__AVX2 static float bl__vdot_q6_k_avx2(const uint8_t *w, bl__q8a a, int64_t K) {
    __m256 acc = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(15), m3 = _mm256_set1_epi8(3);
    float cor = 0;
    int64_t b;
    int h, k, g;
    for (b = 0; b < K / 256; b++) {
        const bl__block_q6_k *x = (const bl__block_q6_k *)(const void *)(w + b * 210);
        float d = _cvtsh_ss(x->d), sg[16];
        for (g = 0; g < 16; g++) {
            float ds = d * (float)x->scales[g];
            sg[g] = ds * a.d[8 * b + g / 2];
            cor += ds * a.s16[16 * b + g];
        }
        for (h = 0; h < 2; h++) {
            __m256i qh = _mm256_loadu_si256((const __m256i *)(const void *)(x->qh + 32 * h));
            for (k = 0; k < 4; k++) {
                __m256i ql = _mm256_loadu_si256((const __m256i *)(const void *)(x->ql + 64 * h + 32 * (k & 1)));
                __m256i lo = k < 2 ? _mm256_and_si256(ql, m4) : _mm256_and_si256(_mm256_srli_epi16(ql, 4), m4);
                __m256i hi = _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * k)), m3), 4);
                __m256i s = bl__u8dot256(_mm256_or_si256(lo, hi), _mm256_loadu_si256((const __m256i *)(const void *)(a.q + 256 * b + 128 * h + 32 * k)));
                int g0 = 8 * h + 2 * k;
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set_m128(_mm_set1_ps(sg[g0 + 1]), _mm_set1_ps(sg[g0])), acc);
            }
        }
    }
    return bl__hsum256(acc) - 32.0f * cor;
}

/* 8 weights of row p from element i, as floats. */
BL__AVX2 static __m256 bl__ld8_avx2(int type, const uint8_t *p, int64_t i) {
    if (type == BL_TYPE_F32) return _mm256_loadu_ps((const float *)(const void *)p + i);
    if (type == BL_TYPE_F16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(p + 2 * i)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)(p + 2 * i))), 16));
}

BL__AVX2 static void bl__gemm_f_avx2(int type, const uint8_t *w, size_t row_bytes, int nr, const uint8_t *x, size_t xstride, int nt,
                                     int64_t K, float *y, size_t ldy) {
    int xtype = type == BL_TYPE_BF16 ? BL_TYPE_BF16 : BL_TYPE_F32;
    int t, r;
    for (t = 0; t < nt; t += 2) {
        const uint8_t *x0 = x + (size_t)t * xstride, *x1 = t + 1 < nt ? x0 + xstride : x0;
        const uint8_t *wr[4];
        __m256 acc[4][2];
        int64_t i;
        for (r = 0; r < 4; r++) { wr[r] = w + (size_t)(r < nr ? r : 0) * row_bytes; acc[r][0] = acc[r][1] = _mm256_setzero_ps(); }
        for (i = 0; i + 8 <= K; i += 8) {
            __m256 a0 = bl__ld8_avx2(xtype, x0, i), a1 = bl__ld8_avx2(xtype, x1, i);
            for (r = 0; r < 4; r++) {
                __m256 wv = bl__ld8_avx2(type, wr[r], i);
                acc[r][0] = _mm256_fmadd_ps(wv, a0, acc[r][0]);
                acc[r][1] = _mm256_fmadd_ps(wv, a1, acc[r][1]);
            }
        }
        for (r = 0; r < nr; r++) {
            float s0 = bl__hsum256(acc[r][0]), s1 = bl__hsum256(acc[r][1]);
            if (i < K) {
                float tail[2];
                bl__gemm_f_ref(type, wr[r] + (size_t)i * (type == BL_TYPE_F32 ? 4 : 2), row_bytes, 1, x0 + (size_t)i * (xtype == BL_TYPE_F32 ? 4 : 2), xstride,
                               t + 1 < nt ? 2 : 1, K - i, tail, 1);
                s0 += tail[0];
                if (t + 1 < nt) s1 += tail[1];
            }
            y[(size_t)t * ldy + r] = s0;
            if (t + 1 < nt) y[(size_t)(t + 1) * ldy + r] = s1;
        }
    }
}

BL__AVX2 static float bl__dot_avx2(const float *a, const float *b, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t i = 0;
    float r;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    r = bl__hsum256(_mm256_add_ps(s0, s1));
    for (; i < n; i++) r += a[i] * b[i];
    return r;
}

BL__AVX2 static void bl__axpy_avx2(float *y, float a, const float *x, int64_t n) {
    __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}

/* e^x to about 2 ulp on [-87, 88]: 2^n * p(r), r = x - n ln2, |r| <= ln2/2. */
BL__AVX2 static __m256 bl__exp256(__m256 x) {
    __m256 n, r, p;
    __m256i e;
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187e-06f), r);
    p = _mm256_set1_ps(1.0f / 5040);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

BL__AVX2 static void bl__softmax_avx2(float *x, int n) {
    __m256 vm = _mm256_set1_ps(-FLT_MAX), vs = _mm256_setzero_ps();
    float mx = -FLT_MAX, sum, inv;
    int i = 0;
    for (; i + 8 <= n; i += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(x + i));
    {
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vm), _mm256_extractf128_ps(vm, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        mx = _mm_cvtss_f32(m4);
    }
    for (; i < n; i++) if (x[i] > mx) mx = x[i];
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 e = bl__exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), _mm256_set1_ps(mx)));
        _mm256_storeu_ps(x + i, e);
        vs = _mm256_add_ps(vs, e);
    }
    sum = bl__hsum256(vs);
    for (; i < n; i++) { x[i] = expf(x[i] - mx); sum += x[i]; }
    inv = 1.0f / sum;
    for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), _mm256_set1_ps(inv)));
    for (; i < n; i++) x[i] *= inv;
}

BL__AVX2 static void bl__swiglu_avx2(float *g, const float *u, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(g + i);
        __m256 den = _mm256_add_ps(_mm256_set1_ps(1.0f), bl__exp256(_mm256_sub_ps(_mm256_setzero_ps(), v)));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(_mm256_div_ps(v, den), _mm256_loadu_ps(u + i)));
    }
    bl__swiglu_ref(g + i, u + i, n - i);
}

BL__AVX2 static void bl__attn_avx2(const float *q, const float *kc, const float *vc, size_t kvs, int n_att, int hd, float scale, float *s, float *o) {
    int t;
    for (t = 0; t < n_att; t++) s[t] = bl__dot_avx2(q, kc + (size_t)t * kvs, hd) * scale;
    bl__softmax_avx2(s, n_att);
    memset(o, 0, (size_t)hd * sizeof(float));
    for (t = 0; t < n_att; t++) bl__axpy_avx2(o, s[t], vc + (size_t)t * kvs, hd);
}

/* Tiles on AVX2: 16 rows by 2 tokens per pass; pmaddubsw needs codes <= 63
   so that pairs of products fit in 16 bits (Q4_0, Q4_K, Q6_K; Q8_0 uses vdot). */
BL__INLINE BL__AVX2 void bl__tile_pass_avx2(const uint8_t *tile, int64_t K, int S, int zoff, int g, const uint8_t *act, size_t astride, int nt,
                                           int t0, float *y, size_t ldy, int nr) {
    const int64_t nsub = K / S;
    const float *sv = (const float *)(const void *)(tile + (size_t)K * 32) + 16 * g, *ov = sv + nsub * 32;
    const uint8_t *u = tile + (size_t)g * (size_t)K * 16;
    const bl__q8a a0 = bl__q8a_at(act + (size_t)(t0 < nt ? t0 : nt - 1) * astride, K);
    const bl__q8a a1 = bl__q8a_at(act + (size_t)(t0 + 1 < nt ? t0 + 1 : nt - 1) * astride, K);
    const float *sd0 = S == 32 ? a0.s32 : a0.s16, *sd1 = S == 32 ? a1.s32 : a1.s16;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 f00 = _mm256_setzero_ps(), f01 = f00, f10 = f00, f11 = f00;
    int64_t j;
    int k4, r, t;
    for (j = 0; j < nsub; j++) {
        __m256i i00 = zoff ? _mm256_set1_epi32(-zoff * a0.i32[j]) : _mm256_setzero_si256(), i10 = i00;
        __m256i i01 = zoff ? _mm256_set1_epi32(-zoff * a1.i32[j]) : _mm256_setzero_si256(), i11 = i01;
        const uint8_t *wp = u + (size_t)j * (size_t)S * 16;
        const int8_t *q0 = a0.q + j * S, *q1 = a1.q + j * S;
        __m256 d, s0, s1;
        for (k4 = 0; k4 < S / 4; k4++) {
            __m256i w0 = _mm256_loadu_si256((const __m256i *)(const void *)(wp + 64 * k4));
            __m256i w1 = _mm256_loadu_si256((const __m256i *)(const void *)(wp + 64 * k4 + 32));
            __m256i v = _mm256_set1_epi32(bl__ld32(q0 + 4 * k4));
            i00 = _mm256_add_epi32(i00, _mm256_madd_epi16(_mm256_maddubs_epi16(w0, v), ones));
            i10 = _mm256_add_epi32(i10, _mm256_madd_epi16(_mm256_maddubs_epi16(w1, v), ones));
            v = _mm256_set1_epi32(bl__ld32(q1 + 4 * k4));
            i01 = _mm256_add_epi32(i01, _mm256_madd_epi16(_mm256_maddubs_epi16(w0, v), ones));
            i11 = _mm256_add_epi32(i11, _mm256_madd_epi16(_mm256_maddubs_epi16(w1, v), ones));
        }
        s0 = _mm256_loadu_ps(sv + 32 * j);
        s1 = _mm256_loadu_ps(sv + 32 * j + 8);
        d = _mm256_set1_ps(a0.d[j * S / 32]);
        f00 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i00), _mm256_mul_ps(s0, d), f00);
        f10 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i10), _mm256_mul_ps(s1, d), f10);
        d = _mm256_set1_ps(a1.d[j * S / 32]);
        f01 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i01), _mm256_mul_ps(s0, d), f01);
        f11 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i11), _mm256_mul_ps(s1, d), f11);
        if (!zoff) {
            __m256 o0 = _mm256_loadu_ps(ov + 32 * j), o1 = _mm256_loadu_ps(ov + 32 * j + 8);
            d = _mm256_set1_ps(sd0[j]);
            f00 = _mm256_fnmadd_ps(o0, d, f00);
            f10 = _mm256_fnmadd_ps(o1, d, f10);
            d = _mm256_set1_ps(sd1[j]);
            f01 = _mm256_fnmadd_ps(o0, d, f01);
            f11 = _mm256_fnmadd_ps(o1, d, f11);
        }
    }
    for (t = 0; t < 2 && t0 + t < nt; t++) {
        float o[16];
        _mm256_storeu_ps(o, t ? f01 : f00);
        _mm256_storeu_ps(o + 8, t ? f11 : f10);
        for (r = 0; r < 16 && 16 * g + r < nr; r++) y[(size_t)(t0 + t) * ldy + (size_t)(16 * g + r)] = o[r];
    }
}

BL__AVX2 static void bl__tile_gemm_avx2(int type, const uint8_t *tile, int64_t K, const uint8_t *act, size_t astride, int nt, float *y, size_t ldy, int nr) {
    int t0, g;
    if (type == BL_TYPE_Q8_0) { bl__tile_gemm_ref(type, tile, K, act, astride, nt, y, ldy, nr); return; } /* not reached: Q8_0 uses vdot here */
    for (g = 0; g < 2 && 16 * g < nr; g++)
        for (t0 = 0; t0 < nt; t0 += 2) {
            if (type == BL_TYPE_Q4_0) bl__tile_pass_avx2(tile, K, 32, 8, g, act, astride, nt, t0, y, ldy, nr);
            else if (type == BL_TYPE_Q4_K) bl__tile_pass_avx2(tile, K, 32, 0, g, act, astride, nt, t0, y, ldy, nr);
            else bl__tile_pass_avx2(tile, K, 16, 0, g, act, astride, nt, t0, y, ldy, nr);
        }
}

/* -- AVX-512 (F, BW, VL, DQ, VNNI; BF16 where noted) -- */
static bl__q8a bl__q8a_skip(bl__q8a a, int64_t k) { /* the same row from element k (k % 32 == 0) */
    a.q += k; a.qp += k; a.d += k / 32; a.s32 += k / 32; a.s16 += k / 16; a.i32 += k / 32;
    return a;
}

/* Horizontal sums and maxima (GCC 12's _mm512_reduce_* trip -Wuninitialized in C++). */
BL__AVX512 static float bl__hsum512(__m512 v) {
    return bl__hsum256(_mm256_add_ps(_mm512_castps512_ps256(v), _mm512_castps512_ps256(_mm512_shuffle_f32x4(v, v, 0xee))));
}
BL__AVX512 static float bl__hmax512(__m512 v) {
    __m256 m8 = _mm256_max_ps(_mm512_castps512_ps256(v), _mm512_castps512_ps256(_mm512_shuffle_f32x4(v, v, 0xee)));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m8), _mm256_extractf128_ps(m8, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    return _mm_cvtss_f32(m4);
}
BL__AVX512 static int bl__hsum512i(__m512i v) {
    return bl__hsum256i(_mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_castsi512_si256(_mm512_shuffle_i64x2(v, v, 0xee))));
}

BL__AVX512 static void bl__q8a_avx512(const float *x, int64_t K, uint8_t *out) {
    int8_t *q = (int8_t *)out;
    float *d = (float *)(void *)(out + 2 * K), *s32 = d + K / 32, *s16 = s32 + K / 32;
    int64_t b;
    for (b = 0; b < K / 32; b++) {
        __m512 v0 = _mm512_loadu_ps(x + 32 * b), v1 = _mm512_loadu_ps(x + 32 * b + 16);
        float amax = bl__hmax512(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        float id = amax > 0 ? 127.0f / amax : 0.0f;
        __m512i i0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, _mm512_set1_ps(id)));
        __m512i i1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, _mm512_set1_ps(id)));
        int sa = bl__hsum512i(i0), sb = bl__hsum512i(i1);
        d[b] = amax / 127.0f;
        s16[2 * b] = d[b] * (float)sa;
        s16[2 * b + 1] = d[b] * (float)sb;
        s32[b] = d[b] * (float)(sa + sb);
        _mm_storeu_si128((__m128i *)(void *)(q + 32 * b), _mm512_cvtepi32_epi8(i0));
        _mm_storeu_si128((__m128i *)(void *)(q + 32 * b + 16), _mm512_cvtepi32_epi8(i1));
    }
    bl__q8a_permute(out, K);
}

BL__AVX512 static void bl__bf16a_avx512(const float *x, int64_t n, uint16_t *o) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i u = _mm512_castps_si512(_mm512_loadu_ps(x + i));
        __m512i r = _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1)));
        __mmask16 nan = _mm512_cmp_ps_mask(_mm512_castsi512_ps(u), _mm512_castsi512_ps(u), _CMP_UNORD_Q);
        r = _mm512_mask_or_epi32(r, nan, u, _mm512_set1_epi32(0x400000));
        _mm256_storeu_si256((__m256i *)(void *)(o + i), _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16)));
    }
    bl__bf16a_ref(x + i, n - i, o + i);
}

/* The f16 scales of 16 blocks of `stride` bytes, as floats (gathered by
   scalar loads: a vpgatherdd costs more than the 16 blocks' arithmetic). */
BL__AVX512 static __m512 bl__scales16(const uint8_t *blk, int stride) {
    uint16_t h[16];
    int i;
    for (i = 0; i < 16; i++) memcpy(&h[i], blk + i * stride, 2);
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(void *)h));
}

/* Decoding kernels work on 256-bit vectors: on Zen 4, which splits 512-bit
   operations in two, they cost the same per byte and need fewer shuffles. */
BL__AVX512 static float bl__vdot_q4_0_avx512(const uint8_t *w, bl__q8a a, int64_t K) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
    __m512 cor = _mm512_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(15);
    int64_t nb = K / 32, b = 0;
    int p;
    float r, scs[16];
    for (; b + 16 <= nb; b += 16) {
        const uint8_t *blk = w + b * 18;
        const int8_t *qp = a.qp + 32 * b;
        __m512 dw = bl__scales16(blk, 18);
        _mm512_storeu_ps(scs, _mm512_mul_ps(dw, _mm512_loadu_ps(a.d + b)));
        cor = _mm512_fmadd_ps(dw, _mm512_loadu_ps(a.s32 + b), cor);
        for (p = 0; p < 8; p += 2) {
#define BL__Q40_PAIR(pp, acc)                                                                                                \
            {                                                                                                                \
                const uint8_t *x0 = blk + 36 * (pp) + 2;                                                                     \
                __m256i v = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)x0)), \
                                                    _mm_loadu_si128((const __m128i *)(const void *)(x0 + 18)), 1);           \
                __m256i s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_and_si256(v, m4),                             \
                                                _mm256_loadu_si256((const __m256i *)(const void *)(qp + 64 * (pp))));        \
                __m256 sv = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_set1_ps(scs[2 * (pp)])), _mm_set1_ps(scs[2 * (pp) + 1]), 1); \
                s = _mm256_dpbusd_epi32(s, _mm256_and_si256(_mm256_srli_epi16(v, 4), m4),                                    \
                                        _mm256_loadu_si256((const __m256i *)(const void *)(qp + 64 * (pp) + 32)));           \
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), sv, acc);                                                       \
            }
            BL__Q40_PAIR(p, acc0)
            BL__Q40_PAIR(p + 1, acc1)
#undef BL__Q40_PAIR
        }
    }
    r = bl__hsum256(_mm256_add_ps(acc0, acc1)) - 8.0f * bl__hsum512(cor);
    if (b < nb) r += bl__vdot_q4_0_avx2(w + b * 18, bl__q8a_skip(a, b * 32), (nb - b) * 32);
    return r;
}

BL__AVX512 static float bl__vdot_q8_0_avx512(const uint8_t *w, bl__q8a a, int64_t K) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
    int64_t nb = K / 32, b = 0;
    int p;
    float r, scs[16];
    for (; b + 16 <= nb; b += 16) {
        const uint8_t *blk = w + b * 34;
        _mm512_storeu_ps(scs, _mm512_mul_ps(bl__scales16(blk, 34), _mm512_loadu_ps(a.d + b)));
        for (p = 0; p < 16; p += 2) {
#define BL__Q80_BLOCK(pp, acc)                                                                                               \
            {                                                                                                                \
                __m256i z = _mm256_loadu_si256((const __m256i *)(const void *)(blk + 34 * (pp) + 2));                       \
                __m256i q = _mm256_loadu_si256((const __m256i *)(const void *)(a.q + 32 * (b + (pp))));                      \
                __m256i qs = _mm256_mask_sub_epi8(q, _mm256_movepi8_mask(z), _mm256_setzero_si256(), q);                     \
                __m256i s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_abs_epi8(z), qs);                             \
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(scs[pp]), acc);                                  \
            }
            BL__Q80_BLOCK(p, acc0)
            BL__Q80_BLOCK(p + 1, acc1)
#undef BL__Q80_BLOCK
        }
    }
    r = bl__hsum256(_mm256_add_ps(acc0, acc1));
    if (b < nb) r += bl__vdot_q8_0_avx2(w + b * 34, bl__q8a_skip(a, b * 32), (nb - b) * 32);
    return r;
}

BL__AVX512 static float bl__vdot_q4_k_avx512(const uint8_t *w, bl__q8a a, int64_t K) {
    __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0;
    __m256 cor = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(15);
    const __m512i idx0 = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0), two = _mm512_set1_epi32(2);
    int64_t b;
    int c;
    for (b = 0; b < K / 256; b++) {
        const bl__block_q4_k *x = (const bl__block_q4_k *)(const void *)(w + b * 144);
        uint8_t sc[8], mn[8];
        __m512 s8;
        __m512i idx = idx0;
        bl__k4_scales8(x->scales, sc, mn);
        s8 = _mm512_castps256_ps512(_mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(void *)sc))),
                                                                _mm256_set1_ps(_cvtsh_ss(x->d))),
                                                  _mm256_loadu_ps(a.d + 8 * b)));
        cor = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(void *)mn))), _mm256_set1_ps(_cvtsh_ss(x->dmin))),
                              _mm256_loadu_ps(a.s32 + 8 * b), cor);
        for (c = 0; c < 4; c += 2) {
#define BL__Q4K_CHUNK(cc, acc)                                                                                              \
            {                                                                                                               \
                __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)(x->qs + 32 * (cc)));                         \
                __m512i z = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_and_si256(v, m4)), _mm256_and_si256(_mm256_srli_epi16(v, 4), m4), 1); \
                __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), z, _mm512_loadu_si512((const void *)(a.q + 256 * b + 64 * (cc)))); \
                acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_permutexvar_ps(idx, s8), acc);                          \
                idx = _mm512_add_epi32(idx, two);                                                                           \
            }
            BL__Q4K_CHUNK(c, acc0)
            BL__Q4K_CHUNK(c + 1, acc1)
#undef BL__Q4K_CHUNK
        }
    }
    return bl__hsum512(_mm512_add_ps(acc0, acc1)) - bl__hsum256(cor);
}

BL__AVX512 static float bl__vdot_q6_k_avx512(const uint8_t *w, bl__q8a a, int64_t K) {
    __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0, cor = acc0;
    const __m512i m4 = _mm512_set1_epi8(15), m3 = _mm512_set1_epi8(3);
    const __m512i half = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    const __m512i quad = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    const __m512i q4 = _mm512_add_epi32(quad, _mm512_set1_epi32(4)), q8 = _mm512_add_epi32(quad, _mm512_set1_epi32(8)), q12 = _mm512_add_epi32(quad, _mm512_set1_epi32(12));
    int64_t b;
    for (b = 0; b < K / 256; b++) {
        const bl__block_q6_k *x = (const bl__block_q6_k *)(const void *)(w + b * 210);
        __m512 ds = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(const void *)x->scales))), _mm512_set1_ps(_cvtsh_ss(x->d)));
        __m512 sg = _mm512_mul_ps(ds, _mm512_permutexvar_ps(half, _mm512_castps256_ps512(_mm256_loadu_ps(a.d + 8 * b))));
        cor = _mm512_fmadd_ps(ds, _mm512_loadu_ps(a.s16 + 16 * b), cor);
#define BL__Q6K_HALF(h, ia, ib)                                                                                            \
        {                                                                                                                  \
            __m512i l = _mm512_loadu_si512((const void *)(x->ql + 64 * (h)));                                             \
            __m256i qh = _mm256_loadu_si256((const __m256i *)(const void *)(x->qh + 32 * (h)));                           \
            __m512i qz = _mm512_inserti64x4(_mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 2), 1);                     \
            __m512i u01 = _mm512_or_si512(_mm512_and_si512(l, m4), _mm512_slli_epi16(_mm512_and_si512(qz, m3), 4));       \
            __m512i u23 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), m4), _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(qz, 4), m3), 4)); \
            const int8_t *q = a.q + 256 * b + 128 * (h);                                                                  \
            __m512i s01 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u01, _mm512_loadu_si512((const void *)q));          \
            __m512i s23 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u23, _mm512_loadu_si512((const void *)(q + 64)));   \
            acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s01), _mm512_permutexvar_ps(ia, sg), acc0);                         \
            acc1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s23), _mm512_permutexvar_ps(ib, sg), acc1);                         \
        }
        BL__Q6K_HALF(0, quad, q4)
        BL__Q6K_HALF(1, q8, q12)
#undef BL__Q6K_HALF
    }
    return bl__hsum512(_mm512_add_ps(acc0, acc1)) - 32.0f * bl__hsum512(cor);
}

/* 4 rows by 4 tokens of float-type weights, 16 accumulators in registers.
   LOADW(r, i, m) yields row r's vector at element i under mask m, LOADX
   token t's; STEP is the element count per vector and FMA the multiply-add. */
#define BL__GEMM4X4(LOADW, LOADX, FMA, STEP, MASKT, MASKALL, MASKTAIL)                                               \
    {                                                                                                                 \
        __m512 c00 = _mm512_setzero_ps(), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00, c13 = c00; \
        __m512 c20 = c00, c21 = c00, c22 = c00, c23 = c00, c30 = c00, c31 = c00, c32 = c00, c33 = c00;                \
        for (i = 0; i < K; i += STEP) {                                                                               \
            const MASKT m = K - i >= STEP ? MASKALL : MASKTAIL;                                                       \
            x0 = LOADX(0, i, m); x1 = LOADX(1, i, m); x2 = LOADX(2, i, m); x3 = LOADX(3, i, m);                     \
            w0 = LOADW(0, i, m);                                                                                      \
            c00 = FMA(c00, w0, x0); c01 = FMA(c01, w0, x1); c02 = FMA(c02, w0, x2); c03 = FMA(c03, w0, x3);           \
            w0 = LOADW(1, i, m);                                                                                      \
            c10 = FMA(c10, w0, x0); c11 = FMA(c11, w0, x1); c12 = FMA(c12, w0, x2); c13 = FMA(c13, w0, x3);           \
            w0 = LOADW(2, i, m);                                                                                      \
            c20 = FMA(c20, w0, x0); c21 = FMA(c21, w0, x1); c22 = FMA(c22, w0, x2); c23 = FMA(c23, w0, x3);           \
            w0 = LOADW(3, i, m);                                                                                      \
            c30 = FMA(c30, w0, x0); c31 = FMA(c31, w0, x1); c32 = FMA(c32, w0, x2); c33 = FMA(c33, w0, x3);           \
        }                                                                                                             \
        out[0] = c00; out[1] = c01; out[2] = c02; out[3] = c03; out[4] = c10; out[5] = c11; out[6] = c12; out[7] = c13; \
        out[8] = c20; out[9] = c21; out[10] = c22; out[11] = c23; out[12] = c30; out[13] = c31; out[14] = c32; out[15] = c33; \
    }

#define BL__F32W(r, i, m) _mm512_maskz_loadu_ps(m, (const float *)(const void *)wr[r] + (i))
#define BL__F16W(r, i, m) _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const void *)(wr[r] + 2 * (i))))
#define BL__F32X(t, i, m) _mm512_maskz_loadu_ps(m, (const float *)(const void *)xt[t] + (i))
#define BL__FMA(c, a, b) _mm512_fmadd_ps(a, b, c)

/* F32 and F16 weights: 4 rows x 4 tokens, 16 lanes along k, masked tail. */
BL__AVX512 static void bl__gemm_f_avx512(int type, const uint8_t *w, size_t row_bytes, int nr, const uint8_t *x, size_t xstride, int nt,
                                         int64_t K, float *y, size_t ldy) {
    const uint8_t *wr[4], *xt[4];
    __m512 out[16], x0, x1, x2, x3, w0;
    int64_t i;
    int r, t;
    if (type == BL_TYPE_BF16) { bl__gemm_f_avx2(type, w, row_bytes, nr, x, xstride, nt, K, y, ldy); return; }
    for (r = 0; r < 4; r++) wr[r] = w + (size_t)(r < nr ? r : 0) * row_bytes;
    if (nt == 1) { /* one token: four rows, nothing computed twice */
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        const float *xf = (const float *)(const void *)x;
        for (i = 0; i < K; i += 16) {
            const __mmask16 m = K - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (K - i)) - 1);
            x0 = _mm512_maskz_loadu_ps(m, xf + i);
            if (type == BL_TYPE_F32) {
                a0 = _mm512_fmadd_ps(BL__F32W(0, i, m), x0, a0); a1 = _mm512_fmadd_ps(BL__F32W(1, i, m), x0, a1);
                a2 = _mm512_fmadd_ps(BL__F32W(2, i, m), x0, a2); a3 = _mm512_fmadd_ps(BL__F32W(3, i, m), x0, a3);
            } else {
                a0 = _mm512_fmadd_ps(BL__F16W(0, i, m), x0, a0); a1 = _mm512_fmadd_ps(BL__F16W(1, i, m), x0, a1);
                a2 = _mm512_fmadd_ps(BL__F16W(2, i, m), x0, a2); a3 = _mm512_fmadd_ps(BL__F16W(3, i, m), x0, a3);
            }
        }
        out[0] = a0; out[4] = a1; out[8] = a2; out[12] = a3;
        for (r = 0; r < nr; r++) y[r] = bl__hsum512(out[4 * r]);
        return;
    }
    for (t = 0; t < 4; t++) xt[t] = x + (size_t)(t < nt ? t : 0) * xstride;
    if (type == BL_TYPE_F32) BL__GEMM4X4(BL__F32W, BL__F32X, BL__FMA, 16, __mmask16, (__mmask16)0xffff, (__mmask16)((1u << (K - i)) - 1))
    else BL__GEMM4X4(BL__F16W, BL__F32X, BL__FMA, 16, __mmask16, (__mmask16)0xffff, (__mmask16)((1u << (K - i)) - 1))
    for (r = 0; r < nr; r++) for (t = 0; t < nt; t++) y[(size_t)t * ldy + r] = bl__hsum512(out[4 * r + t]);
}

#define BL__BF16W(r, i, m) _mm512_maskz_loadu_epi16(m, (const void *)(wr[r] + 2 * (i)))
#define BL__BF16X(t, i, m) _mm512_maskz_loadu_epi16(m, (const void *)(xt[t] + 2 * (i)))
#define BL__DPBF(c, a, b) _mm512_dpbf16_ps(c, (__m512bh)(a), (__m512bh)(b))

/* BF16 weights and BF16 activations: vdpbf16ps, 32 per step. */
BL__AVX512BF static void bl__gemm_bf16_avx512(int type, const uint8_t *w, size_t row_bytes, int nr, const uint8_t *x, size_t xstride, int nt,
                                              int64_t K, float *y, size_t ldy) {
    const uint8_t *wr[4], *xt[4];
    __m512 out[16];
    __m512i x0, x1, x2, x3, w0;
    int64_t i;
    int r, t;
    (void)type;
    for (r = 0; r < 4; r++) wr[r] = w + (size_t)(r < nr ? r : 0) * row_bytes;
    if (nt == 1) { /* one token: four rows, nothing computed twice */
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (i = 0; i < K; i += 32) {
            const __mmask32 m = K - i >= 32 ? (__mmask32)0xffffffffu : (__mmask32)((1u << (K - i)) - 1);
            x0 = _mm512_maskz_loadu_epi16(m, (const void *)(x + 2 * i));
            a0 = BL__DPBF(a0, BL__BF16W(0, i, m), x0); a1 = BL__DPBF(a1, BL__BF16W(1, i, m), x0);
            a2 = BL__DPBF(a2, BL__BF16W(2, i, m), x0); a3 = BL__DPBF(a3, BL__BF16W(3, i, m), x0);
        }
        out[0] = a0; out[4] = a1; out[8] = a2; out[12] = a3;
        for (r = 0; r < nr; r++) y[r] = bl__hsum512(out[4 * r]);
        return;
    }
    for (t = 0; t < 4; t++) xt[t] = x + (size_t)(t < nt ? t : 0) * xstride;
    BL__GEMM4X4(BL__BF16W, BL__BF16X, BL__DPBF, 32, __mmask32, (__mmask32)0xffffffffu, (__mmask32)((1u << (K - i)) - 1))
    for (r = 0; r < nr; r++) for (t = 0; t < nt; t++) y[(size_t)t * ldy + r] = bl__hsum512(out[4 * r + t]);
}
#undef BL__F32W
#undef BL__F16W
#undef BL__F32X
#undef BL__FMA
#undef BL__BF16W
#undef BL__BF16X
#undef BL__DPBF
#undef BL__GEMM4X4

/* One row's codes, and per-sub-block s and o (stride sstride), as
   bl__unpack_row does, 64 codes at a time. */
BL__AVX512 static void bl__unpack_row_avx512(int type, const uint8_t *w, int64_t K, uint8_t *u, float *s, float *o, int sstride) {
    const __m512i m4 = _mm512_set1_epi8(15), m3 = _mm512_set1_epi8(3);
    int64_t b;
    int j, h;
    switch (type) {
    case BL_TYPE_Q4_0:
        for (b = 0; b < K / 32; b++) {
            const uint8_t *x = w + b * 18;
            __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(x + 2));
            __m256i z = _mm256_and_si256(_mm256_inserti128_si256(_mm256_castsi128_si256(v), _mm_srli_epi16(v, 4), 1), _mm512_castsi512_si256(m4));
            float d = _cvtsh_ss((unsigned short)(x[0] | (x[1] << 8)));
            _mm256_storeu_si256((__m256i *)(void *)(u + 32 * b), z);
            s[b * sstride] = d;
            o[b * sstride] = 8.0f * d;
        }
        break;
    case BL_TYPE_Q8_0:
        for (b = 0; b < K / 32; b++) {
            const uint8_t *x = w + b * 34;
            __m256i z = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(const void *)(x + 2)), _mm256_set1_epi8((char)0x80));
            float d = _cvtsh_ss((unsigned short)(x[0] | (x[1] << 8)));
            _mm256_storeu_si256((__m256i *)(void *)(u + 32 * b), z);
            s[b * sstride] = d;
            o[b * sstride] = 128.0f * d;
        }
        break;
    case BL_TYPE_Q4_K:
        for (b = 0; b < K / 256; b++) {
            const bl__block_q4_k *x = (const bl__block_q4_k *)(const void *)(w + b * 144);
            float d = _cvtsh_ss(x->d), dmin = _cvtsh_ss(x->dmin);
            for (j = 0; j < 4; j++) {
                __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)(x->qs + 32 * j));
                __m512i z = _mm512_and_si512(_mm512_inserti64x4(_mm512_castsi256_si512(v), _mm256_srli_epi16(v, 4), 1), m4);
                _mm512_storeu_si512((void *)(u + 256 * b + 64 * j), z);
            }
            for (j = 0; j < 8; j++) {
                int sc, mn;
                bl__k4_scale_min(j, x->scales, &sc, &mn);
                s[(8 * b + j) * sstride] = d * (float)sc;
                o[(8 * b + j) * sstride] = dmin * (float)mn;
            }
        }
        break;
    default: /* Q6_K */
        for (b = 0; b < K / 256; b++) {
            const bl__block_q6_k *x = (const bl__block_q6_k *)(const void *)(w + b * 210);
            float d = _cvtsh_ss(x->d);
            for (h = 0; h < 2; h++) {
                __m512i l = _mm512_loadu_si512((const void *)(x->ql + 64 * h));
                __m256i qh = _mm256_loadu_si256((const __m256i *)(const void *)(x->qh + 32 * h));
                __m512i qz = _mm512_inserti64x4(_mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 2), 1);
                _mm512_storeu_si512((void *)(u + 256 * b + 128 * h), _mm512_or_si512(_mm512_and_si512(l, m4), _mm512_slli_epi16(_mm512_and_si512(qz, m3), 4)));
                _mm512_storeu_si512((void *)(u + 256 * b + 128 * h + 64),
                                    _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), m4), _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(qz, 4), m3), 4)));
            }
            for (j = 0; j < 16; j++) {
                s[(16 * b + j) * sstride] = d * (float)x->scales[j];
                o[(16 * b + j) * sstride] = 32.0f * d * (float)x->scales[j];
            }
        }
        break;
    }
}

/* bl__tile_pack with SIMD: 16 rows are unpacked into rowbuf (16*K bytes),
   then each 16x16 block of 4-byte groups is transposed in registers. */
BL__AVX512 static void bl__tile_pack_avx512(int type, const uint8_t *w, size_t row_bytes, int nr, int64_t K, uint8_t *tile, uint8_t *rowbuf) {
    const int64_t nsub = K / bl__tile_sub(type);
    float *s = (float *)(void *)(tile + (size_t)K * 32), *o = s + nsub * 32;
    const __m512i i1a = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
    const __m512i i1b = _mm512_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    const __m512i i2a = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13), i2b = _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15);
    const __m512i i3a = _mm512_setr_epi64(0, 8, 2, 10, 4, 12, 6, 14), i3b = _mm512_setr_epi64(1, 9, 3, 11, 5, 13, 7, 15);
    const __m512i i4a = _mm512_setr_epi32(0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30);
    const __m512i i4b = _mm512_setr_epi32(1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31);
    int g, r, i;
    for (g = 0; g < 2; g++) {
        uint8_t *dst = tile + (size_t)g * (size_t)K * 16;
        int64_t k;
        for (r = 0; r < 16; r++) {
            int row = 16 * g + r;
            if (row < nr) bl__unpack_row_avx512(type, w + (size_t)row * row_bytes, K, rowbuf + (size_t)r * (size_t)K, s + row, o + row, 32);
            else {
                int64_t j;
                memset(rowbuf + (size_t)r * (size_t)K, 0, (size_t)K);
                for (j = 0; j < nsub; j++) { s[j * 32 + row] = 0; o[j * 32 + row] = 0; }
            }
        }
        for (k = 0; k < K; k += 64) {
            __mmask16 m = K - k >= 64 ? (__mmask16)0xffff : (__mmask16)0x00ff;
            int nc = K - k >= 64 ? 16 : 8;
            __m512i x[16], y[16];
            /* fully unrolled, so x and y live in registers */
            BL__UNROLL16 for (r = 0; r < 16; r++) x[r] = _mm512_maskz_loadu_epi32(m, (const void *)(rowbuf + (size_t)r * (size_t)K + k));
            BL__UNROLL16 for (i = 0; i < 8; i++) { y[i] = _mm512_permutex2var_epi32(x[i], i1a, x[i + 8]); y[i + 8] = _mm512_permutex2var_epi32(x[i], i1b, x[i + 8]); }
            BL__UNROLL16 for (i = 0; i < 16; i++) if (!(i & 4)) { x[i] = _mm512_permutex2var_epi64(y[i], i2a, y[i + 4]); x[i + 4] = _mm512_permutex2var_epi64(y[i], i2b, y[i + 4]); }
            BL__UNROLL16 for (i = 0; i < 16; i++) if (!(i & 2)) { y[i] = _mm512_permutex2var_epi64(x[i], i3a, x[i + 2]); y[i + 2] = _mm512_permutex2var_epi64(x[i], i3b, x[i + 2]); }
            BL__UNROLL16 for (i = 0; i < 16; i += 2) { x[i] = _mm512_permutex2var_epi32(y[i], i4a, y[i + 1]); x[i + 1] = _mm512_permutex2var_epi32(y[i], i4b, y[i + 1]); }
            if (nc == 16) { BL__UNROLL16 for (i = 0; i < 16; i++) _mm512_storeu_si512((void *)(dst + (size_t)(k / 4 + i) * 64), x[i]); }
            else for (i = 0; i < nc; i++) _mm512_storeu_si512((void *)(dst + (size_t)(k / 4 + i) * 64), x[i]);
        }
    }
}

/* zoff > 0: the weights are s*(u - zoff) (Q4_0, Q8_0), and the integer
   sums start from -zoff*sum(a) instead of a float correction afterwards. */
BL__INLINE BL__AVX512 void bl__tile_pass_avx512(const uint8_t *tile, int64_t K, int S, int zoff, const uint8_t *act, size_t astride, int nt, int t0,
                                               float *y, size_t ldy, int nr) {
    const int64_t nsub = K / S;
    const float *sv = (const float *)(const void *)(tile + (size_t)K * 32), *ov = sv + nsub * 32;
    const uint8_t *u1 = tile + (size_t)K * 16;
    const __mmask16 m0 = nr >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << nr) - 1);
    const __mmask16 m1 = nr >= 32 ? (__mmask16)0xffff : nr <= 16 ? (__mmask16)0 : (__mmask16)((1u << (nr - 16)) - 1);
    /* four tokens; past the end of the batch the last one is repeated */
    const bl__q8a a0 = bl__q8a_at(act + (size_t)(t0 < nt ? t0 : nt - 1) * astride, K);
    const bl__q8a a1 = bl__q8a_at(act + (size_t)(t0 + 1 < nt ? t0 + 1 : nt - 1) * astride, K);
    const bl__q8a a2 = bl__q8a_at(act + (size_t)(t0 + 2 < nt ? t0 + 2 : nt - 1) * astride, K);
    const bl__q8a a3 = bl__q8a_at(act + (size_t)(t0 + 3 < nt ? t0 + 3 : nt - 1) * astride, K);
    const float *sd0 = S == 32 ? a0.s32 : a0.s16, *sd1 = S == 32 ? a1.s32 : a1.s16;
    const float *sd2 = S == 32 ? a2.s32 : a2.s16, *sd3 = S == 32 ? a3.s32 : a3.s16;
    __m512 f00 = _mm512_setzero_ps(), f01 = f00, f02 = f00, f03 = f00, f10 = f00, f11 = f00, f12 = f00, f13 = f00;
    int64_t j;
    int k4;
    for (j = 0; j < nsub; j++) {
        __m512i i00 = zoff ? _mm512_set1_epi32(-zoff * a0.i32[j]) : _mm512_setzero_si512(), i10 = i00;
        __m512i i01 = zoff ? _mm512_set1_epi32(-zoff * a1.i32[j]) : _mm512_setzero_si512(), i11 = i01;
        __m512i i02 = zoff ? _mm512_set1_epi32(-zoff * a2.i32[j]) : _mm512_setzero_si512(), i12 = i02;
        __m512i i03 = zoff ? _mm512_set1_epi32(-zoff * a3.i32[j]) : _mm512_setzero_si512(), i13 = i03;
        const uint8_t *w0p = tile + (size_t)j * (size_t)S * 16, *w1p = u1 + (size_t)j * (size_t)S * 16;
        const int8_t *q0 = a0.q + j * S, *q1 = a1.q + j * S, *q2 = a2.q + j * S, *q3 = a3.q + j * S;
        __m512 s0, s1, o0, o1, d;
        for (k4 = 0; k4 < S / 4; k4++) {
            __m512i w0 = _mm512_loadu_si512((const void *)(w0p + 64 * k4)), w1 = _mm512_loadu_si512((const void *)(w1p + 64 * k4)), v;
            v = _mm512_set1_epi32(bl__ld32(q0 + 4 * k4)); i00 = _mm512_dpbusd_epi32(i00, w0, v); i10 = _mm512_dpbusd_epi32(i10, w1, v);
            v = _mm512_set1_epi32(bl__ld32(q1 + 4 * k4)); i01 = _mm512_dpbusd_epi32(i01, w0, v); i11 = _mm512_dpbusd_epi32(i11, w1, v);
            v = _mm512_set1_epi32(bl__ld32(q2 + 4 * k4)); i02 = _mm512_dpbusd_epi32(i02, w0, v); i12 = _mm512_dpbusd_epi32(i12, w1, v);
            v = _mm512_set1_epi32(bl__ld32(q3 + 4 * k4)); i03 = _mm512_dpbusd_epi32(i03, w0, v); i13 = _mm512_dpbusd_epi32(i13, w1, v);
        }
        s0 = _mm512_loadu_ps(sv + 32 * j); s1 = _mm512_loadu_ps(sv + 32 * j + 16);
        o0 = _mm512_loadu_ps(ov + 32 * j); o1 = _mm512_loadu_ps(ov + 32 * j + 16);
#define BL__TILE_ACC(t)                                                                                        \
        d = _mm512_set1_ps(a##t.d[j * S / 32]);                                                                \
        f0##t = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i0##t), _mm512_mul_ps(s0, d), f0##t);                       \
        f1##t = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i1##t), _mm512_mul_ps(s1, d), f1##t);                       \
        if (!zoff) {                                                                                           \
            d = _mm512_set1_ps(sd##t[j]);                                                                      \
            f0##t = _mm512_fnmadd_ps(o0, d, f0##t);                                                            \
            f1##t = _mm512_fnmadd_ps(o1, d, f1##t);                                                            \
        }
        BL__TILE_ACC(0) BL__TILE_ACC(1) BL__TILE_ACC(2) BL__TILE_ACC(3)
#undef BL__TILE_ACC
    }
#define BL__TILE_STORE(t)                                                                                      \
    if (t0 + t < nt) {                                                                                         \
        _mm512_mask_storeu_ps(y + (size_t)(t0 + t) * ldy, m0, f0##t);                                          \
        if (m1) _mm512_mask_storeu_ps(y + (size_t)(t0 + t) * ldy + 16, m1, f1##t);                             \
    }
    BL__TILE_STORE(0) BL__TILE_STORE(1) BL__TILE_STORE(2) BL__TILE_STORE(3)
#undef BL__TILE_STORE
}

BL__AVX512 static void bl__tile_gemm_avx512(int type, const uint8_t *tile, int64_t K, const uint8_t *act, size_t astride, int nt, float *y, size_t ldy, int nr) {
    int t0;
    for (t0 = 0; t0 < nt; t0 += 4) {
        if (type == BL_TYPE_Q4_0) bl__tile_pass_avx512(tile, K, 32, 8, act, astride, nt, t0, y, ldy, nr);
        else if (type == BL_TYPE_Q8_0) bl__tile_pass_avx512(tile, K, 32, 128, act, astride, nt, t0, y, ldy, nr);
        else if (type == BL_TYPE_Q4_K) bl__tile_pass_avx512(tile, K, 32, 0, act, astride, nt, t0, y, ldy, nr);
        else bl__tile_pass_avx512(tile, K, 16, 0, act, astride, nt, t0, y, ldy, nr);
    }
}

BL__AVX512 static float bl__dot_avx512(const float *a, const float *b, int64_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
    }
    for (; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s0);
    }
    return bl__hsum512(_mm512_add_ps(s0, s1));
}

BL__AVX512 static void bl__axpy_avx512(float *y, float a, const float *x, int64_t n) {
    __m512 va = _mm512_set1_ps(a);
    int64_t i;
    for (i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i)));
    }
}

BL__AVX512 static __m512 bl__exp512(__m512 x) {
    __m512 n, r, p;
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
    n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);
    p = _mm512_set1_ps(1.0f / 5040);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

BL__AVX512 static void bl__softmax_avx512(float *x, int n) {
    __m512 vm = _mm512_set1_ps(-FLT_MAX), vs = _mm512_setzero_ps(), inv;
    float mx;
    int i;
    for (i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        vm = _mm512_mask_max_ps(vm, m, vm, _mm512_maskz_loadu_ps(m, x + i));
    }
    mx = bl__hmax512(vm);
    for (i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 e = _mm512_maskz_mov_ps(m, bl__exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), _mm512_set1_ps(mx))));
        _mm512_mask_storeu_ps(x + i, m, e);
        vs = _mm512_add_ps(vs, e);
    }
    inv = _mm512_set1_ps(1.0f / bl__hsum512(vs));
    for (i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), inv));
    }
}

BL__AVX512 static void bl__swiglu_avx512(float *g, const float *u, int64_t n) {
    int64_t i;
    for (i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 v = _mm512_maskz_loadu_ps(m, g + i);
        __m512 den = _mm512_add_ps(_mm512_set1_ps(1.0f), bl__exp512(_mm512_sub_ps(_mm512_setzero_ps(), v)));
        _mm512_mask_storeu_ps(g + i, m, _mm512_mul_ps(_mm512_div_ps(v, den), _mm512_maskz_loadu_ps(m, u + i)));
    }
}

/* Attention for one query head over n_att cached positions: scores into s
   (n_att floats of scratch), the weighted sum of values into o (hd). */
BL__AVX512 static void bl__attn_avx512(const float *q, const float *kc, const float *vc, size_t kvs, int n_att, int hd, float scale, float *s, float *o) {
    const __m512i fix = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    int t0, j, c;
    if (hd % 16) {
        /* short heads: 16 positions at a time, one gathered column per element */
        const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32((int)kvs));
        for (t0 = 0; t0 < n_att; t0 += 16) {
            __mmask16 m = n_att - t0 >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n_att - t0)) - 1);
            __m512 acc = _mm512_setzero_ps();
            for (j = 0; j < hd; j++)
                acc = _mm512_fmadd_ps(_mm512_set1_ps(q[j]), _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, kc + (size_t)t0 * kvs + j, 4), acc);
            _mm512_mask_storeu_ps(s + t0, m, _mm512_mul_ps(acc, _mm512_set1_ps(scale)));
        }
    } else
    /* q.k for 16 positions at a time, the 16 sums reduced together */
    for (t0 = 0; t0 < n_att; t0 += 16) {
        __m512 p[16], a[8], r;
        __mmask16 m = n_att - t0 >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n_att - t0)) - 1);
        BL__UNROLL16 for (j = 0; j < 16; j++) {
            const float *k = kc + (size_t)(t0 + j < n_att ? t0 + j : t0) * kvs;
            p[j] = _mm512_mul_ps(_mm512_loadu_ps(q), _mm512_loadu_ps(k));
            for (c = 16; c < hd; c += 16) p[j] = _mm512_fmadd_ps(_mm512_loadu_ps(q + c), _mm512_loadu_ps(k + c), p[j]);
        }
        BL__UNROLL16 for (j = 0; j < 8; j++)
            a[j] = _mm512_add_ps(_mm512_shuffle_f32x4(p[2 * j], p[2 * j + 1], 0x44), _mm512_shuffle_f32x4(p[2 * j], p[2 * j + 1], 0xee));
        BL__UNROLL16 for (j = 0; j < 4; j++)
            p[j] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * j], a[2 * j + 1], 0x88), _mm512_shuffle_f32x4(a[2 * j], a[2 * j + 1], 0xdd));
        BL__UNROLL16 for (j = 0; j < 2; j++)
            a[j] = _mm512_add_ps(_mm512_shuffle_ps(p[2 * j], p[2 * j + 1], 0x88), _mm512_shuffle_ps(p[2 * j], p[2 * j + 1], 0xdd));
        r = _mm512_add_ps(_mm512_shuffle_ps(a[0], a[1], 0x88), _mm512_shuffle_ps(a[0], a[1], 0xdd));
        _mm512_mask_storeu_ps(s + t0, m, _mm512_mul_ps(_mm512_permutexvar_ps(fix, r), _mm512_set1_ps(scale)));
    }
    bl__softmax_avx512(s, n_att);
    if (hd % 16 || hd > 128) { /* o = sum_t s[t] v_t, 16 elements at a time */
        for (c = 0; c < hd; c += 16) {
            __mmask16 m = hd - c >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (hd - c)) - 1);
            __m512 e0 = _mm512_setzero_ps(), e1 = e0;
            int t;
            for (t = 0; t + 1 < n_att; t += 2) {
                e0 = _mm512_fmadd_ps(_mm512_set1_ps(s[t]), _mm512_maskz_loadu_ps(m, vc + (size_t)t * kvs + c), e0);
                e1 = _mm512_fmadd_ps(_mm512_set1_ps(s[t + 1]), _mm512_maskz_loadu_ps(m, vc + (size_t)(t + 1) * kvs + c), e1);
            }
            if (t < n_att) e0 = _mm512_fmadd_ps(_mm512_set1_ps(s[t]), _mm512_maskz_loadu_ps(m, vc + (size_t)t * kvs + c), e0);
            _mm512_mask_storeu_ps(o + c, m, _mm512_add_ps(e0, e1));
        }
        return;
    }
    /* o = sum_t s[t] v_t, two sets of accumulators for even and odd t */
    {
        __m512 e[8], d[8];
        int nc = hd / 16, t;
        for (c = 0; c < 8; c++) e[c] = d[c] = _mm512_setzero_ps();
        for (t = 0; t + 1 < n_att; t += 2) {
            const float *v0 = vc + (size_t)t * kvs, *v1 = v0 + kvs;
            __m512 w0 = _mm512_set1_ps(s[t]), w1 = _mm512_set1_ps(s[t + 1]);
            BL__UNROLL16 for (c = 0; c < 8; c++)
                if (c < nc) { e[c] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(v0 + 16 * c), e[c]); d[c] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(v1 + 16 * c), d[c]); }
        }
        if (t < n_att) {
            const float *v0 = vc + (size_t)t * kvs;
            __m512 w0 = _mm512_set1_ps(s[t]);
            for (c = 0; c < nc; c++) e[c] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(v0 + 16 * c), e[c]);
        }
        for (c = 0; c < nc; c++) _mm512_storeu_ps(o + 16 * c, _mm512_add_ps(e[c], d[c]));
    }
}


static void bl__cpuid(unsigned leaf, unsigned sub, unsigned r[4]) {
    __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
}
#ifdef BL__DIAG_PUSHED
#pragma GCC diagnostic pop
#endif
#endif /* BL__X86 */

/* ---- the kernel table -----------------------------------------------------
   One table per context, filled once at creation for the best level the CPU
   supports (or a lower one named by BL_SIMD); the forward pass only ever
   calls through it. */

typedef float (*bl__vdot_fn)(const uint8_t *w, bl__q8a a, int64_t K);
typedef void (*bl__gemm_fn)(int type, const uint8_t *w, size_t row_bytes, int nr, const uint8_t *x, size_t xstride, int nt,
                            int64_t K, float *y, size_t ldy);
typedef void (*bl__tile_fn)(int type, const uint8_t *tile, int64_t K, const uint8_t *act, size_t astride, int nt, float *y, size_t ldy, int nr);

typedef struct bl__kern {
    const char *name;      /* "scalar", "avx2", "avx512" */
    int level;             /* BL__SIMD_* */
    void (*q8a)(const float *x, int64_t K, uint8_t *out);
    void (*bf16a)(const float *x, int64_t n, uint16_t *out);
    bl__vdot_fn vdot[4];   /* Q4_0, Q8_0, Q4_K, Q6_K: one row by one token */
    bl__gemm_fn gemm_f;    /* F32, F16 weights: up to 4 rows by 4 tokens */
    bl__gemm_fn gemm_bf16; /* BF16 weights, BF16 activations */
    void (*tile_pack)(int type, const uint8_t *w, size_t row_bytes, int nr, int64_t K, uint8_t *tile, uint8_t *rowbuf);
    bl__tile_fn tile_gemm; /* quantized tiles by a batch of tokens */
    int tile_min;          /* batches at least this long use tile_gemm, shorter ones vdot */
    int tile_q8_0;         /* 1: Q8_0 goes through tiles too (its codes need vpdpbusd) */
    float (*dot)(const float *a, const float *b, int64_t n);
    void (*axpy)(float *y, float a, const float *x, int64_t n);
    void (*softmax)(float *x, int n);
    void (*swiglu)(float *g, const float *u, int64_t n);
    void (*attn)(const float *q, const float *kc, const float *vc, size_t kvs, int n_att, int hd, float scale, float *s, float *o);
} bl__kern;

enum { BL__SIMD_SCALAR = 0, BL__SIMD_AVX2 = 1, BL__SIMD_AVX512 = 2 };
enum { BL__CPU_AVX2 = 1, BL__CPU_AVX512 = 2, BL__CPU_AVX512BF16 = 4 };

static int bl__qslot(int type) {
    return type == BL_TYPE_Q4_0 ? 0 : type == BL_TYPE_Q8_0 ? 1 : type == BL_TYPE_Q4_K ? 2 : 3;
}

/* What this CPU and OS can run (BL__CPU_* bits). */
static int bl__cpu_features(void) {
    int f = 0;
#ifdef BL__X86
    unsigned r[4], r7[4], r71[4], lo, hi, max;
    bl__cpuid(0, 0, r);
    max = r[0];
    if (max < 7) return 0;
    bl__cpuid(1, 0, r);
    if (!(r[2] & (1u << 27))) return 0; /* OSXSAVE */
    __asm__ __volatile__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    (void)hi;
    bl__cpuid(7, 0, r7);
    bl__cpuid(7, 1, r71);
    if ((lo & 6) == 6 && (r[2] & (1u << 12)) && (r[2] & (1u << 28)) && (r[2] & (1u << 29)) && (r7[1] & (1u << 5))) f |= BL__CPU_AVX2;
    if ((f & BL__CPU_AVX2) && (lo & 0xe6) == 0xe6 && (r7[1] & (1u << 16)) && (r7[1] & (1u << 17)) && (r7[1] & (1u << 30)) &&
        (r7[1] & (1u << 31)) && (r7[2] & (1u << 11))) {
        f |= BL__CPU_AVX512;
        if (r71[0] & (1u << 5)) f |= BL__CPU_AVX512BF16;
    }
#endif
    return f;
}

/* Fill k for `level`, lowered to what the CPU supports; returns the level. */
static int bl__kern_init(bl__kern *k, int level) {
    int f = bl__cpu_features();
    if (level >= BL__SIMD_AVX512 && !(f & BL__CPU_AVX512)) level = BL__SIMD_AVX2;
    if (level >= BL__SIMD_AVX2 && !(f & BL__CPU_AVX2)) level = BL__SIMD_SCALAR;
    memset(k, 0, sizeof *k);
    k->name = "scalar";
    k->level = BL__SIMD_SCALAR;
    k->q8a = bl__q8a_ref;
    k->bf16a = bl__bf16a_ref;
    k->vdot[0] = bl__vdot_q4_0_ref;
    k->vdot[1] = bl__vdot_q8_0_ref;
    k->vdot[2] = bl__vdot_q4_k_ref;
    k->vdot[3] = bl__vdot_q6_k_ref;
    k->gemm_f = bl__gemm_f_ref;
    k->gemm_bf16 = bl__gemm_f_ref;
    k->tile_pack = bl__tile_pack;
    k->tile_gemm = bl__tile_gemm_ref;
    k->tile_min = INT_MAX; /* the plain C tile kernel is for testing: vdot is faster */
    k->dot = bl__dot_f32;
    k->axpy = bl__axpy_ref;
    k->softmax = bl__softmax_ref;
    k->swiglu = bl__swiglu_ref;
    k->attn = bl__attn_ref;
#ifdef BL__X86
    if (level >= BL__SIMD_AVX2) {
        k->name = "avx2";
        k->level = BL__SIMD_AVX2;
        k->q8a = bl__q8a_avx2;
        k->vdot[0] = bl__vdot_q4_0_avx2;
        k->vdot[1] = bl__vdot_q8_0_avx2;
        k->vdot[2] = bl__vdot_q4_k_avx2;
        k->vdot[3] = bl__vdot_q6_k_avx2;
        k->gemm_f = bl__gemm_f_avx2;
        k->gemm_bf16 = bl__gemm_f_avx2;
        k->dot = bl__dot_avx2;
        k->axpy = bl__axpy_avx2;
        k->softmax = bl__softmax_avx2;
        k->swiglu = bl__swiglu_avx2;
        k->attn = bl__attn_avx2;
        k->tile_gemm = bl__tile_gemm_avx2;
        k->tile_min = 8;
    }
    if (level >= BL__SIMD_AVX512) {
        k->name = "avx512";
        k->level = BL__SIMD_AVX512;
        k->q8a = bl__q8a_avx512;
        k->bf16a = bl__bf16a_avx512;
        k->vdot[0] = bl__vdot_q4_0_avx512;
        k->vdot[1] = bl__vdot_q8_0_avx512;
        k->vdot[2] = bl__vdot_q4_k_avx512;
        k->vdot[3] = bl__vdot_q6_k_avx512;
        k->gemm_f = bl__gemm_f_avx512;
        if (f & BL__CPU_AVX512BF16) k->gemm_bf16 = bl__gemm_bf16_avx512;
        k->tile_pack = bl__tile_pack_avx512;
        k->tile_gemm = bl__tile_gemm_avx512;
        k->tile_min = 4;
        k->tile_q8_0 = 1;
        k->dot = bl__dot_avx512;
        k->axpy = bl__axpy_avx512;
        k->softmax = bl__softmax_avx512;
        k->swiglu = bl__swiglu_avx512;
        k->attn = bl__attn_avx512;
    }
#else
    (void)f;
#endif
    return k->level;
}

/* The best level, or the lower one BL_SIMD names (scalar, avx2, avx512). */
static int bl__kern_select(bl__kern *k) {
    const char *e = getenv("BL_SIMD");
    int level = BL__SIMD_AVX512;
    if (e && strcmp(e, "scalar") == 0) level = BL__SIMD_SCALAR;
    else if (e && strcmp(e, "avx2") == 0) level = BL__SIMD_AVX2;
    return bl__kern_init(k, level);
}

static void bl__rmsnorm(float *o, const float *x, const float *w, int64_t n, float eps) {
    double s[4] = {0, 0, 0, 0};
    int64_t i;
    float sc;
    for (i = 0; i + 4 <= n; i += 4) {
        s[0] += (double)x[i] * x[i];
        s[1] += (double)x[i + 1] * x[i + 1];
        s[2] += (double)x[i + 2] * x[i + 2];
        s[3] += (double)x[i + 3] * x[i + 3];
    }
    for (; i < n; i++) s[0] += (double)x[i] * x[i];
    sc = (float)(1.0 / sqrt(((s[0] + s[1]) + (s[2] + s[3])) / (double)n + eps));
    for (i = 0; i < n; i++) o[i] = x[i] * sc * w[i];
}

/* Rotate the pairs of one head: (j, j+half) for rotate-half weights,
   (2j, 2j+1) for interleaved ones. */
static void bl__rope(float *v, const float *cs, const float *sn, int head_dim, int neox) {
    int half = head_dim / 2, j;
    int stride = neox ? 1 : 2, gap = neox ? half : 1;
    for (j = 0; j < half; j++) {
        float *a = v + j * stride, *b = a + gap;
        float x0 = *a, x1 = *b;
        *a = x0 * cs[j] - x1 * sn[j];
        *b = x0 * sn[j] + x1 * cs[j];
    }
}

#define BL__SMALL_BATCH 4 /* batches below this are prepared by every thread for itself */

/* >>ctx  CONTEXT AND FORWARD PASS ------------------------------------------
   A forward step runs on a workspace (bl__ws): one arena sized at creation
   for n_batch rows holds every activation. A context owns one for its own
   decode calls and a bl_batch owns one for several contexts at once; either
   way the step is a list of segments (a context and its next tokens) whose
   rows are stacked, so each weight row is read once per step. Each row
   remembers its context and position: the embedding, RoPE, the cache write
   and attention are per row, the matrices are for all rows at once. After
   the last layer the rows that keep logits are gathered to the front so
   the output matrix is read once too. The KV cache (F32) lives in the
   context. bl_ctx_decode is a batch of one sequence: there is one path.
   One OpenMP team runs a whole forward step: every thread walks the same
   code, the matrices are split by rows between them (worksharing loops,
   each ending in a barrier), so no team is started per matrix. Models too
   small to share run on one thread. */

/* One context's part of a forward step. */
typedef struct bl__seg {
    bl_ctx *c;
    const int32_t *toks;  /* (n) at positions c->pos.. */
    int n;
    int n_out;            /* logits are kept for the last n_out rows */
    float *out;           /* (n_out, n_vocab): where they go */
} bl__seg;

typedef struct bl__ws {
    const bl_model *m;
    int n_batch;          /* rows per step */
    int n_threads;        /* threads used, at most max_threads */
    int max_threads;      /* the per-thread buffers exist for this many */
    float *arena;
    float *x, *xn;        /* (n_batch, dim) */
    float *q, *att;       /* (n_batch, n_head*head_dim) */
    float *k, *v;         /* (n_batch, n_head_kv*head_dim) */
    float *g, *u;         /* (n_batch, n_ff) */
    float *rope_cs;       /* (n_batch, head_dim): cos then sin per row */
    float *scores;        /* (max_threads, scores_cap) */
    int scores_cap;       /* the longest attention span scores holds */
    size_t max_cols;      /* the longest row of any matrix */
    uint8_t *act;         /* (n_batch, q8 stride) then (n_batch, bf16 stride): converted activations */
    uint8_t *priv;        /* (max_threads, priv_cap): each thread's own activations for small batches */
    size_t priv_cap;
    uint8_t *tiles;       /* (max_threads, tile_cap): unpacked weight tiles */
    size_t tile_cap;
    float *ytmp;          /* (max_threads, n_batch, 32): rows before they are added to the residual */
    void *act_mem, *tiles_mem; /* the allocations behind act, priv, tiles, ytmp (64-byte aligned) */
    bl__kern kern;        /* kernels for this CPU, chosen once at creation */
    int32_t *row_tok;     /* (n_batch) the token of each row of a step */
    int *row_pos;         /* (n_batch) its position in its sequence */
    bl_ctx **row_ctx;     /* (n_batch) the context whose cache it reads and writes */
    int *out_row;         /* (n_batch) the rows that keep logits, in output order */
    bl__seg *segs;        /* (max_segs) the segments of a step */
    int max_segs;
    bl_result *seq_res;   /* (max_segs) per sequence of a decode call */
    int *seq_done;        /* (max_segs) tokens run so far */
    float *stage;         /* (stage_cap, n_vocab): logits of a step of several segments */
    int stage_cap;
} bl__ws;

struct bl_ctx {
    char err[BL__ERRLEN];
    const bl_model *m;
    int n_ctx;
    int pos;              /* tokens in the cache */
    int32_t *tokens;      /* (n_ctx) */
    uint64_t rng;
    uint64_t seed;
    float *k_cache;       /* (n_layer, n_ctx, n_head_kv*head_dim) */
    float *v_cache;       /* (n_layer, n_ctx, n_head_kv*head_dim) */
    bl__ws ws;            /* scratch of its own decode calls */
    float *logits;        /* (logits_cap, n_vocab) */
    int logits_cap, logits_rows;
    int logits_first;     /* the position of row 0 relative to the last decode call */
    void *samp_scratch;   /* (n_vocab) candidates */
};

struct bl_batch {
    char err[BL__ERRLEN];
    bl__ws ws;
};

static int bl__default_threads(void) {
#if defined(_OPENMP) && !defined(BL_NO_THREADS)
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static void bl__ws_free(bl__ws *w) {
    BL_FREE(w->arena);
    BL_FREE(w->scores);
    BL_FREE(w->act_mem);
    BL_FREE(w->tiles_mem);
    BL_FREE(w->row_tok);
    BL_FREE(w->row_pos);
    BL_FREE(w->row_ctx);
    BL_FREE(w->out_row);
    BL_FREE(w->segs);
    BL_FREE(w->seq_res);
    BL_FREE(w->seq_done);
    BL_FREE(w->stage);
    memset(w, 0, sizeof *w);
}

/* Scratch for nb rows, n_threads threads, max_segs segments per step and
   attention over up to scores_cap positions. Returns 0, or -1 when out of
   memory (then bl__ws_free releases what was made). */
static int bl__ws_init(bl__ws *w, const bl_model *m, int nb_rows, int n_threads, int max_segs, int scores_cap) {
    const bl__hparams *hp = &m->hp;
    const size_t kvd = (size_t)hp->n_head_kv * (size_t)hp->head_dim, qd = (size_t)hp->n_head * (size_t)hp->head_dim;
    const size_t dim = (size_t)hp->dim, ff = (size_t)hp->n_ff, nb = (size_t)nb_rows, nt = (size_t)n_threads;
    size_t maxc = dim > ff ? dim : ff, as;
    memset(w, 0, sizeof *w);
    if (qd > maxc) maxc = qd;
    w->m = m;
    w->n_batch = nb_rows;
    w->n_threads = w->max_threads = n_threads;
    w->max_segs = max_segs;
    w->scores_cap = scores_cap;
    w->max_cols = maxc;
    bl__kern_select(&w->kern);
    as = bl__q8a_stride((int64_t)maxc) + bl__bf16a_stride((int64_t)maxc);
    w->priv_cap = (BL__SMALL_BATCH * (maxc * 4 + as) + 63) & ~(size_t)63;
    w->tile_cap = (bl__tile_bytes((int64_t)maxc) + 16 * maxc + 63) & ~(size_t)63;
    w->act_mem = bl__alloc(nb * as + nt * w->priv_cap + 128);
    w->tiles_mem = bl__alloc(nt * w->tile_cap + nt * nb * 32 * sizeof(float) + 64);
    if (w->act_mem) {
        w->act = (uint8_t *)w->act_mem + (64 - ((uintptr_t)w->act_mem & 63));
        w->priv = w->act + nb * as;
        w->priv += (64 - ((uintptr_t)w->priv & 63)) & 63;
    }
    if (w->tiles_mem) {
        w->tiles = (uint8_t *)w->tiles_mem + (64 - ((uintptr_t)w->tiles_mem & 63));
        w->ytmp = (float *)(void *)(w->tiles + nt * w->tile_cap);
    }
    w->arena = (float *)bl__alloc(nb * (2 * dim + 2 * qd + 2 * kvd + 2 * ff + (size_t)hp->head_dim) * sizeof(float));
    w->scores = (float *)bl__alloc(nt * (size_t)scores_cap * sizeof(float));
    w->row_tok = (int32_t *)bl__alloc(nb * sizeof *w->row_tok);
    w->row_pos = (int *)bl__alloc(nb * sizeof *w->row_pos);
    w->row_ctx = (bl_ctx **)bl__alloc(nb * sizeof *w->row_ctx);
    w->out_row = (int *)bl__alloc(nb * sizeof *w->out_row);
    w->segs = (bl__seg *)bl__alloc((size_t)max_segs * sizeof *w->segs);
    w->seq_res = (bl_result *)bl__alloc((size_t)max_segs * sizeof *w->seq_res);
    w->seq_done = (int *)bl__alloc((size_t)max_segs * sizeof *w->seq_done);
    if (!w->act || !w->tiles || !w->arena || !w->scores || !w->row_tok || !w->row_pos || !w->row_ctx || !w->out_row || !w->segs ||
        !w->seq_res || !w->seq_done)
        return -1;
    {
        float *p = w->arena;
        w->x = p; p += nb * dim;
        w->xn = p; p += nb * dim;
        w->q = p; p += nb * qd;
        w->att = p; p += nb * qd;
        w->k = p; p += nb * kvd;
        w->v = p; p += nb * kvd;
        w->g = p; p += nb * ff;
        w->u = p; p += nb * ff;
        w->rope_cs = p;
    }
    return 0;
}

static int bl__ctx_default_len(const bl_model *m) {
    int t = m->hp.n_ctx_train;
    return t > 0 && t < 4096 ? t : 4096;
}

bl_result bl_ctx_create(bl_ctx **out, const bl_model *m, const bl_ctx_desc *desc) {
    bl_ctx *c = (bl_ctx *)bl__calloc(sizeof *c);
    const bl__hparams *hp;
    size_t kvd;
    int n_batch, n_threads;
    *out = c;
    if (!c) return BL_ERR_NOMEM;
    if (!m || !m->layers) return bl__fmt(c->err, BL_ERR_ARG, "no loaded model");
    hp = &m->hp;
    c->m = m;
    c->n_ctx = desc && desc->n_ctx > 0 ? desc->n_ctx : bl__ctx_default_len(m);
    n_batch = desc && desc->n_batch > 0 ? desc->n_batch : 64;
    n_threads = desc && desc->n_threads > 0 ? desc->n_threads : bl__default_threads();
    c->seed = desc && desc->seed ? desc->seed : 0x5eed;
    if (c->n_ctx > (1 << 22) || n_batch > 8192 || n_threads > 1024) return bl__fmt(c->err, BL_ERR_ARG, "context sizes out of range");
    if (n_batch > c->n_ctx) n_batch = c->n_ctx;
    kvd = (size_t)hp->n_head_kv * (size_t)hp->head_dim;
    c->k_cache = (float *)bl__alloc((size_t)hp->n_layer * (size_t)c->n_ctx * kvd * sizeof(float));
    c->v_cache = (float *)bl__alloc((size_t)hp->n_layer * (size_t)c->n_ctx * kvd * sizeof(float));
    c->tokens = (int32_t *)bl__alloc((size_t)c->n_ctx * sizeof(int32_t));
    c->samp_scratch = bl__alloc((size_t)hp->n_vocab * 8);
    c->logits_cap = 1;
    c->logits = (float *)bl__alloc((size_t)hp->n_vocab * sizeof(float));
    if (bl__ws_init(&c->ws, m, n_batch, n_threads, 1, c->n_ctx) < 0 || !c->k_cache || !c->v_cache || !c->tokens || !c->samp_scratch ||
        !c->logits)
        return bl__fmt(c->err, BL_ERR_NOMEM, "out of memory for a context of %d tokens", c->n_ctx);
    c->rng = c->seed;
    return BL_OK;
}

void bl_ctx_destroy(bl_ctx *c) {
    if (!c) return;
    BL_FREE(c->k_cache);
    BL_FREE(c->v_cache);
    BL_FREE(c->tokens);
    BL_FREE(c->samp_scratch);
    BL_FREE(c->logits);
    bl__ws_free(&c->ws);
    BL_FREE(c);
}

const char *bl_ctx_last_error(const bl_ctx *c) { return c ? c->err : "out of memory"; }
int bl_ctx_pos(const bl_ctx *c) { return c->pos; }
int bl_ctx_n_ctx(const bl_ctx *c) { return c->n_ctx; }
const int32_t *bl_ctx_tokens(const bl_ctx *c) { return c->tokens; }
void bl_ctx_set_seed(bl_ctx *c, uint64_t seed) { c->seed = seed ? seed : 0x5eed; c->rng = c->seed; }
void bl_ctx_set_threads(bl_ctx *c, int n) {
    /* the scratch holds per-thread buffers allocated at creation */
    int cap = c->ws.max_threads;
    c->ws.n_threads = n > 0 && n <= cap ? n : cap;
}

bl_result bl_batch_create(bl_batch **out, const bl_model *m, const bl_batch_desc *desc) {
    bl_batch *b = (bl_batch *)bl__calloc(sizeof *b);
    int max_tokens, max_seqs, n_threads;
    *out = b;
    if (!b) return BL_ERR_NOMEM;
    if (!m || !m->layers) return bl__fmt(b->err, BL_ERR_ARG, "no loaded model");
    max_tokens = desc && desc->max_tokens > 0 ? desc->max_tokens : 512;
    max_seqs = desc && desc->max_seqs > 0 ? desc->max_seqs : 64;
    n_threads = desc && desc->n_threads > 0 ? desc->n_threads : bl__default_threads();
    if (max_tokens > 8192 || max_seqs > 4096 || n_threads > 1024) return bl__fmt(b->err, BL_ERR_ARG, "batch sizes out of range");
    if (bl__ws_init(&b->ws, m, max_tokens, n_threads, max_seqs, bl__ctx_default_len(m)) < 0)
        return bl__fmt(b->err, BL_ERR_NOMEM, "out of memory for a batch of %d rows", max_tokens);
    return BL_OK;
}

void bl_batch_destroy(bl_batch *b) {
    if (!b) return;
    bl__ws_free(&b->ws);
    BL_FREE(b);
}

const char *bl_batch_last_error(const bl_batch *b) { return b ? b->err : "out of memory"; }

/* >>kv  KV CACHE ---------------------------------------------------------- */
bl_result bl_kv_truncate(bl_ctx *c, int pos) {
    if (pos < 0 || pos > c->pos) return bl__fmt(c->err, BL_ERR_ARG, "cannot truncate to %d: the cache holds %d tokens", pos, c->pos);
    c->pos = pos;
    c->logits_rows = 0;
    return BL_OK;
}

void bl_ctx_reset(bl_ctx *c) {
    c->pos = 0;
    c->logits_rows = 0;
    c->rng = c->seed;
}

/* Activations ready for the matrices that read them: float rows (F32 and
   F16 weights), Q8 rows (quantized weights), BF16 rows (BF16 weights). */
typedef struct bl__acts {
    const float *f;
    const uint8_t *q8, *bf;
    size_t sq8, sbf;      /* bytes per token */
} bl__acts;


/* Bit mask of the activation kinds a list of matrices reads. */
static int bl__kinds(const bl__weight *a, const bl__weight *b, const bl__weight *c) {
    int k = 1 << bl__act_kind(a->type);
    if (b) k |= 1 << bl__act_kind(b->type);
    if (c) k |= 1 << bl__act_kind(c->type);
    return k;
}

/* Normalize (when norm is given) and convert nb rows of x (K floats) into
   every activation kind in `kinds`. A small batch is prepared by each thread
   into its own buffer, so no barrier is needed; a larger one is split by
   tokens between the threads and ends in a barrier. */
static void bl__prep(bl__ws *c, bl__acts *A, const float *x, const float *norm, int nb, int64_t K, int kinds) {
    const bl__kern *k = &c->kern;
    float *xf;
    uint8_t *q8, *bf;
    int b;
    A->sq8 = bl__q8a_stride(K);
    A->sbf = bl__bf16a_stride(K);
    if (nb < BL__SMALL_BATCH) {
        uint8_t *p = c->priv + (size_t)BL__THREAD_ID() * c->priv_cap;
        xf = (float *)(void *)p;
        q8 = p + (size_t)BL__SMALL_BATCH * c->max_cols * 4;
        bf = q8 + (size_t)BL__SMALL_BATCH * bl__q8a_stride((int64_t)c->max_cols);
    } else {
        xf = c->xn;
        q8 = c->act;
        bf = c->act + (size_t)c->n_batch * bl__q8a_stride((int64_t)c->max_cols);
    }
    A->f = norm ? xf : x;
    A->q8 = q8;
    A->bf = bf;
    if (nb < BL__SMALL_BATCH) {
        for (b = 0; b < nb; b++) {
            const float *src = x + (size_t)b * (size_t)K;
            if (norm) { bl__rmsnorm(xf + (size_t)b * (size_t)K, src, norm, K, (float)c->m->hp.eps); src = xf + (size_t)b * (size_t)K; }
            if (kinds & (1 << BL__ACT_Q8)) k->q8a(src, K, q8 + (size_t)b * A->sq8);
            if (kinds & (1 << BL__ACT_BF16)) k->bf16a(src, K, (uint16_t *)(void *)(bf + (size_t)b * A->sbf));
        }
        return;
    }
    BL__OMP(omp for schedule(static))
    for (b = 0; b < nb; b++) {
        const float *src = x + (size_t)b * (size_t)K;
        if (norm) { bl__rmsnorm(xf + (size_t)b * (size_t)K, src, norm, K, (float)c->m->hp.eps); src = xf + (size_t)b * (size_t)K; }
        if (kinds & (1 << BL__ACT_Q8)) k->q8a(src, K, q8 + (size_t)b * A->sq8);
        if (kinds & (1 << BL__ACT_BF16)) k->bf16a(src, K, (uint16_t *)(void *)(bf + (size_t)b * A->sbf));
    }
}

/* y[b][r] = sum_c W[r][c] * x[b][c] for rows r0 <= r < r1 and b < nb, or
   y[b][r] += ... when acc. One thread; the caller splits the rows. */
static void bl__rows(bl__ws *c, const bl__weight *W, int64_t r0, int64_t r1, const bl__acts *A, int nb, float *y, int64_t ldy, int acc) {
    const bl__kern *k = &c->kern;
    const int kind = bl__act_kind(W->type);
    const int64_t K = W->cols;
    const size_t rb = W->row_bytes;
    float *tmp = c->ytmp + (size_t)BL__THREAD_ID() * (size_t)c->n_batch * 32;
    int64_t r, n;
    int b;
    for (r = r0; r < r1; r += n) {
        int nr;
        float *dst;
        size_t ld;
        n = r1 - r < 32 ? r1 - r : 32;
        nr = (int)n;
        dst = acc ? tmp : y + r;
        ld = acc ? 32 : (size_t)ldy;
        if (kind == BL__ACT_Q8 && nb >= k->tile_min && (W->type != BL_TYPE_Q8_0 || k->tile_q8_0)) {
            uint8_t *tile = c->tiles + (size_t)BL__THREAD_ID() * c->tile_cap;
            k->tile_pack(W->type, W->data + (size_t)r * rb, rb, nr, K, tile, tile + bl__tile_bytes(K));
            k->tile_gemm(W->type, tile, K, A->q8, A->sq8, nb, dst, ld, nr);
        } else if (kind == BL__ACT_Q8) {
            bl__vdot_fn vd = k->vdot[bl__qslot(W->type)];
            int i;
            for (i = 0; i < nr; i++)
                for (b = 0; b < nb; b++) dst[(size_t)b * ld + (size_t)i] = vd(W->data + (size_t)(r + i) * rb, bl__q8a_at(A->q8 + (size_t)b * A->sq8, K), K);
        } else {
            bl__gemm_fn gm = kind == BL__ACT_BF16 ? k->gemm_bf16 : k->gemm_f;
            const uint8_t *xa = kind == BL__ACT_BF16 ? A->bf : (const uint8_t *)A->f;
            size_t xs = kind == BL__ACT_BF16 ? A->sbf : (size_t)K * 4;
            int i;
            for (i = 0; i < nr; i += 4)
                for (b = 0; b < nb; b += 4)
                    gm(W->type, W->data + (size_t)(r + i) * rb, rb, nr - i < 4 ? nr - i : 4, xa + (size_t)b * xs, xs, nb - b < 4 ? nb - b : 4, K,
                       dst + (size_t)b * ld + (size_t)i, ld);
        }
        if (acc) {
            int i;
            for (b = 0; b < nb; b++)
                for (i = 0; i < nr; i++) y[(size_t)b * (size_t)ldy + (size_t)(r + i)] += tmp[(size_t)b * 32 + (size_t)i];
        }
    }
}

/* Work items are handed out dynamically, about eight per thread at a time:
   when another process shares a core, the thread that runs takes the work
   instead of waiting at the next barrier for the one that does not. */
static int bl__chunk(int64_t n_units) {
    int64_t ch = n_units / (8 * (int64_t)BL__N_THREADS());
    if (BL__N_THREADS() == 1) return n_units < INT_MAX ? (int)n_units + 1 : INT_MAX; /* one grab */
    return ch < 1 ? 1 : ch > 64 ? 64 : (int)ch;
}

/* Rows per work item: tiles of 32 for batches, 16 for single tokens. */
static int64_t bl__unit_rows(const bl__ws *c, int nb) { return nb >= c->kern.tile_min ? 32 : 16; }

/* y (+)= W x for all rows, split between the threads of the team. */
static void bl__matmul(bl__ws *c, const bl__weight *W, const bl__acts *A, int nb, float *y, int64_t ldy, int acc) {
    const int64_t ur = bl__unit_rows(c, nb), n_units = (W->rows + ur - 1) / ur;
    const int ch = bl__chunk(n_units);
    int64_t u;
    (void)ch;
    BL__OMP(omp for schedule(dynamic, ch))
    for (u = 0; u < n_units; u++) bl__rows(c, W, u * ur, (u + 1) * ur < W->rows ? (u + 1) * ur : W->rows, A, nb, y, ldy, acc);
}

/* The body of one forward step over the nb rows the workspace c describes;
   every thread of the team runs it. Per layer there are five barriers for a
   single token: after q/k/v (with RoPE and the cache write done by the
   thread that made each head), after the attention, after the output
   projection, after gate/up/SwiGLU and after the down projection. The
   projections back into the residual stream add into x directly. Logits of
   the n_out rows c->out_row lists go to out; out_first >= 0 says they are
   already consecutive from that row, else they are gathered first. */
static void bl__forward_team(bl__ws *c, int nb, float *out, int n_out, int out_first) {
    const bl_model *m = c->m;
    const bl__hparams *hp = &m->hp;
    const bl__kern *kn = &c->kern;
    const int dim = hp->dim, hd = hp->head_dim, nh = hp->n_head, nkv = hp->n_head_kv;
    const int qd = nh * hd, kvd = nkv * hd, ff = hp->n_ff, group = nh / nkv;
    const float scale = 1.0f / sqrtf((float)hd);
    bl__acts A;
    int b, l;
    BL__OMP(omp for schedule(static))
    for (b = 0; b < nb; b++) {
        int j;
        bl__dequant_row(m->tok_embd.type, m->tok_embd.data + (size_t)c->row_tok[b] * m->tok_embd.row_bytes, c->x + (size_t)b * dim, dim);
        for (j = 0; j < hd / 2; j++) {
            double a = (double)c->row_pos[b] * (double)m->rope_freq[j];
            c->rope_cs[(size_t)b * hd + j] = (float)cos(a);
            c->rope_cs[(size_t)b * hd + hd / 2 + j] = (float)sin(a);
        }
    }
    for (l = 0; l < hp->n_layer; l++) {
        const bl__layer *L = &m->layers[l];
        const int64_t ur = bl__unit_rows(c, nb), n_ff_units = (ff + ur - 1) / ur;
        const int ff_ch = bl__chunk(n_ff_units), qkv_ch = BL__N_THREADS() == 1 ? nh + 2 * nkv : 1, att_ch = BL__N_THREADS() == 1 ? nb * nh : 1;
        (void)ff_ch;
        (void)qkv_ch;
        (void)att_ch;
        int u, bh;
        int64_t fu;
        bl__prep(c, &A, c->x, L->attn_norm, nb, dim, bl__kinds(&L->wq, &L->wk, &L->wv));
        /* q, k and v, one head per work item */
        BL__OMP(omp for schedule(dynamic, qkv_ch))
        for (u = 0; u < nh + 2 * nkv; u++) {
            const bl__weight *W = u < nh ? &L->wq : u < nh + nkv ? &L->wk : &L->wv;
            const float *bias = u < nh ? L->bq : u < nh + nkv ? L->bk : L->bv;
            float *y = u < nh ? c->q : u < nh + nkv ? c->k : c->v;
            const int ld = u < nh ? qd : kvd, h = u < nh ? u : u < nh + nkv ? u - nh : u - nh - nkv;
            bl__rows(c, W, (int64_t)h * hd, (int64_t)(h + 1) * hd, &A, nb, y, ld, 0);
            for (b = 0; b < nb; b++) {
                float *v = y + (size_t)b * ld + (size_t)h * hd;
                int i;
                if (bias) for (i = 0; i < hd; i++) v[i] += bias[(size_t)h * hd + i];
                if (u < nh + nkv) bl__rope(v, c->rope_cs + (size_t)b * hd, c->rope_cs + (size_t)b * hd + hd / 2, hd, hp->rope_neox);
                if (u >= nh) {
                    const bl_ctx *sc = c->row_ctx[b];
                    float *cache = u < nh + nkv ? sc->k_cache : sc->v_cache;
                    memcpy(cache + ((size_t)l * (size_t)sc->n_ctx + (size_t)c->row_pos[b]) * kvd + (size_t)h * hd, v, (size_t)hd * sizeof(float));
                }
            }
        }
        BL__OMP(omp for schedule(dynamic, att_ch))
        for (bh = 0; bh < nb * nh; bh++) {
            int bb = bh / nh, h = bh % nh, kh = h / group, n_att = c->row_pos[bb] + 1;
            const bl_ctx *sc = c->row_ctx[bb];
            const size_t lo = (size_t)l * (size_t)sc->n_ctx * kvd + (size_t)kh * hd;
            kn->attn(c->q + (size_t)bb * qd + (size_t)h * hd, sc->k_cache + lo, sc->v_cache + lo, (size_t)kvd, n_att, hd, scale,
                     c->scores + (size_t)BL__THREAD_ID() * (size_t)c->scores_cap, c->att + (size_t)bb * qd + (size_t)h * hd);
        }
        bl__prep(c, &A, c->att, NULL, nb, qd, bl__kinds(&L->wo, NULL, NULL));
        bl__matmul(c, &L->wo, &A, nb, c->x, dim, 1);
        bl__prep(c, &A, c->x, L->ffn_norm, nb, dim, bl__kinds(&L->w_gate, &L->w_up, NULL));
        /* gate and up for a block of rows, then SwiGLU on that block */
        BL__OMP(omp for schedule(dynamic, ff_ch))
        for (fu = 0; fu < n_ff_units; fu++) {
            int64_t r0 = fu * ur, r1 = r0 + ur < ff ? r0 + ur : ff;
            bl__rows(c, &L->w_gate, r0, r1, &A, nb, c->g, ff, 0);
            bl__rows(c, &L->w_up, r0, r1, &A, nb, c->u, ff, 0);
            for (b = 0; b < nb; b++) kn->swiglu(c->g + (size_t)b * ff + r0, c->u + (size_t)b * ff + r0, r1 - r0);
        }
        bl__prep(c, &A, c->g, NULL, nb, ff, bl__kinds(&L->w_down, NULL, NULL));
        bl__matmul(c, &L->w_down, &A, nb, c->x, dim, 1);
    }
    if (n_out > 0) {
        if (out_first < 0) {
            /* row i comes from row out_row[i] >= i, so in order nothing is
               overwritten before it is read */
            BL__OMP(omp single)
            for (b = 0; b < n_out; b++)
                if (c->out_row[b] != b) memmove(c->x + (size_t)b * dim, c->x + (size_t)c->out_row[b] * dim, (size_t)dim * sizeof(float));
            out_first = 0;
        }
        bl__prep(c, &A, c->x + (size_t)out_first * dim, m->output_norm, n_out, dim, bl__kinds(&m->output, NULL, NULL));
        bl__matmul(c, &m->output, &A, n_out, out, hp->n_vocab, 0);
    }
}

/* One forward step over the segments w->segs[0..n_segs): stacks their
   rows, runs them, hands each segment its logits and advances its context. */
static void bl__forward(bl__ws *w, int n_segs) {
    const size_t nv = (size_t)w->m->hp.n_vocab;
    int nt = w->n_threads, nb = 0, n_out = 0, out_first, s, b;
    float *out = n_segs == 1 ? w->segs[0].out : w->stage;
    for (s = 0; s < n_segs; s++) {
        const bl__seg *g = &w->segs[s];
        memcpy(g->c->tokens + g->c->pos, g->toks, (size_t)g->n * sizeof(int32_t));
        for (b = 0; b < g->n; b++, nb++) {
            w->row_tok[nb] = g->toks[b];
            w->row_pos[nb] = g->c->pos + b;
            w->row_ctx[nb] = g->c;
            if (b >= g->n - g->n_out) w->out_row[n_out++] = nb;
        }
    }
    out_first = n_out ? w->out_row[0] : 0;
    for (b = 1; b < n_out; b++)
        if (w->out_row[b] != out_first + b) { out_first = -1; break; }
    /* A model this small (stories260K: 1 MB) gains nothing from a second
       thread: its matrices take less time than the barriers between them,
       and a barrier waiting on a preempted thread costs a whole time slice. */
    if (w->m->info.weight_bytes < ((size_t)16 << 20) || (double)w->m->info.weight_bytes * (double)nb < 64e6) nt = 1;
#if defined(_OPENMP) && !defined(BL_NO_THREADS)
    /* One thread needs no team of its own, unless the caller is inside a
       parallel region: the worksharing loops would then bind to that one. */
    if (nt > 1 || omp_in_parallel()) {
        BL__OMP(omp parallel num_threads(nt) proc_bind(spread))
        bl__forward_team(w, nb, out, n_out, out_first);
    } else
#endif
    bl__forward_team(w, nb, out, n_out, out_first);
    (void)nt;
    for (s = 0, b = 0; s < n_segs; s++) {
        bl__seg *g = &w->segs[s];
        if (n_segs > 1 && g->n_out) memcpy(g->out, w->stage + (size_t)b * nv, (size_t)g->n_out * nv * sizeof(float));
        b += g->n_out;
        g->c->pos += g->n;
    }
}

/* Whether sequence i of seqs can run on w; the reason goes to its context. */
static bl_result bl__seq_check(const bl__ws *w, const bl_batch_seq *seqs, int i) {
    const bl_batch_seq *q = &seqs[i];
    bl_ctx *c = q->ctx;
    const int nv = w->m->hp.n_vocab, n = q->n_tokens;
    int j;
    if (!c) return BL_ERR_ARG;
    if (c->m != w->m) return bl__fmt(c->err, BL_ERR_ARG, "the context belongs to another model than the batch");
    for (j = 0; j < i; j++)
        if (seqs[j].ctx == c) return bl__fmt(c->err, BL_ERR_ARG, "the context is given twice in one batch (sequences %d and %d)", j, i);
    if (n <= 0 || !q->tokens) return bl__fmt(c->err, BL_ERR_ARG, "no tokens to decode");
    if (n > c->n_ctx - c->pos) return bl__fmt(c->err, BL_ERR_CTX_FULL, "%d tokens do not fit: %d of %d positions are used", n, c->pos, c->n_ctx);
    for (j = 0; j < n; j++)
        if (q->tokens[j] < 0 || q->tokens[j] >= nv) return bl__fmt(c->err, BL_ERR_ARG, "token %d (id %d) is outside the vocabulary of %d", j, q->tokens[j], nv);
    if (q->logits_mode == BL_LOGITS_ALL && n > c->logits_cap) {
        float *nl = (float *)BL_REALLOC(c->logits, (size_t)n * (size_t)nv * sizeof(float));
        if (!nl) return bl__fmt(c->err, BL_ERR_NOMEM, "out of memory for %d rows of logits", n);
        c->logits = nl;
        c->logits_cap = n;
    }
    return BL_OK;
}

/* Make room in w for attention over span positions and, when several
   sequences share a step, for out_rows rows of staged logits. */
static int bl__ws_grow(bl__ws *w, int span, int out_rows) {
    if (span > w->scores_cap) {
        float *s = (float *)bl__alloc((size_t)w->max_threads * (size_t)span * sizeof(float));
        if (!s) return -1;
        BL_FREE(w->scores);
        w->scores = s;
        w->scores_cap = span;
    }
    if (out_rows > w->stage_cap) {
        float *s = (float *)BL_REALLOC(w->stage, (size_t)out_rows * (size_t)w->m->hp.n_vocab * sizeof(float));
        if (!s) return -1;
        w->stage = s;
        w->stage_cap = out_rows;
    }
    return 0;
}

/* Run seqs[0..n) (n <= w->max_segs) on workspace w, in steps of at most
   w->n_batch rows; w->seq_res receives each sequence's result. The one path
   of bl_ctx_decode and bl_batch_decode. Returns the first failing code. */
static bl_result bl__decode(bl__ws *w, const bl_batch_seq *seqs, int n) {
    const size_t nv = (size_t)w->m->hp.n_vocab;
    bl_result first = BL_OK;
    int i, span = 0, out_rows = 0;
    for (i = 0; i < n; i++) {
        w->seq_res[i] = bl__seq_check(w, seqs, i);
        w->seq_done[i] = 0;
        if (w->seq_res[i] != BL_OK) continue;
        if (seqs[i].ctx->n_ctx > span) span = seqs[i].ctx->n_ctx;
        out_rows += seqs[i].logits_mode == BL_LOGITS_ALL ? seqs[i].n_tokens : seqs[i].logits_mode == BL_LOGITS_LAST ? 1 : 0;
    }
    if (bl__ws_grow(w, span, n > 1 ? (out_rows < w->n_batch ? out_rows : w->n_batch) : 0) < 0)
        for (i = 0; i < n; i++)
            if (w->seq_res[i] == BL_OK)
                w->seq_res[i] = bl__fmt(seqs[i].ctx->err, BL_ERR_NOMEM, "out of memory for the scratch of a batch");
    for (;;) {
        int ns = 0, rows = 0;
        for (i = 0; i < n && rows < w->n_batch; i++) {
            const bl_batch_seq *q = &seqs[i];
            bl__seg *g;
            int left = q->n_tokens - w->seq_done[i], take;
            if (w->seq_res[i] != BL_OK || left <= 0) continue;
            take = left < w->n_batch - rows ? left : w->n_batch - rows;
            g = &w->segs[ns++];
            g->c = q->ctx;
            g->toks = q->tokens + w->seq_done[i];
            g->n = take;
            g->n_out = 0;
            g->out = q->ctx->logits;
            if (q->logits_mode == BL_LOGITS_ALL) { g->n_out = take; g->out = q->ctx->logits + (size_t)w->seq_done[i] * nv; }
            else if (q->logits_mode == BL_LOGITS_LAST && take == left) g->n_out = 1;
            w->seq_done[i] += take;
            rows += take;
        }
        if (!ns) break;
        bl__forward(w, ns);
    }
    for (i = 0; i < n; i++) {
        if (w->seq_res[i] != BL_OK) {
            if (first == BL_OK) first = w->seq_res[i];
            continue;
        }
        seqs[i].ctx->logits_rows = seqs[i].logits_mode == BL_LOGITS_ALL ? seqs[i].n_tokens : seqs[i].logits_mode == BL_LOGITS_LAST ? 1 : 0;
    }
    return first;
}

bl_result bl_ctx_decode(bl_ctx *c, const int32_t *tokens, int n, int logits_mode) {
    bl_batch_seq s;
    s.ctx = c;
    s.tokens = tokens;
    s.n_tokens = n;
    s.logits_mode = logits_mode;
    return bl__decode(&c->ws, &s, 1);
}

bl_result bl_batch_decode(bl_batch *b, const bl_batch_seq *seqs, int n, bl_result *per_seq) {
    bl_result r;
    int i, n_bad = 0, first_bad = -1;
    if (!b) return BL_ERR_ARG;
    if (n <= 0 || !seqs) return bl__fmt(b->err, BL_ERR_ARG, "no sequences to decode");
    if (n > b->ws.max_segs) return bl__fmt(b->err, BL_ERR_ARG, "%d sequences: the batch takes at most %d", n, b->ws.max_segs);
    r = bl__decode(&b->ws, seqs, n);
    for (i = 0; i < n; i++) {
        if (per_seq) per_seq[i] = b->ws.seq_res[i];
        if (b->ws.seq_res[i] != BL_OK && n_bad++ == 0) first_bad = i;
    }
    b->err[0] = 0;
    if (n_bad)
        bl__fmt(b->err, r, "%d of %d sequences failed; sequence %d: %s", n_bad, n, first_bad,
                seqs[first_bad].ctx ? seqs[first_bad].ctx->err : "no context");
    return r;
}

float *bl_ctx_logits(bl_ctx *c, int i) {
    if (i < 0) i += c->logits_rows;
    if (i < 0 || i >= c->logits_rows) return NULL;
    return c->logits + (size_t)i * (size_t)c->m->hp.n_vocab;
}

/* >>samp  SAMPLING -----------------------------------------------------------
   Penalty, temperature, then top-k, top-p and min-p on the sorted candidates,
   then one draw from the context's own xorshift RNG. */

typedef struct bl__cand { float p; int32_t id; } bl__cand;

static int bl__cand_cmp(const void *a, const void *b) {
    float x = ((const bl__cand *)a)->p, y = ((const bl__cand *)b)->p;
    return x < y ? 1 : x > y ? -1 : 0;
}

static double bl__rand(uint64_t *s) {
    uint64_t x = *s;
    x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
    *s = x;
    return (double)((x * 0x2545F4914F6CDD1DULL) >> 11) / 9007199254740992.0;
}

int32_t bl_sample_logits(float *logits, int nv, const bl_sampler_desc *d, const int32_t *hist, int nhist, uint64_t *rng, void *scratch) {
    bl__cand *cd = (bl__cand *)scratch;
    int i, n, best = 0;
    float mx;
    double sum, r, acc;
    if (d && d->repeat_penalty > 0 && d->repeat_penalty != 1.0f) {
        int look = d->repeat_last_n > 0 ? d->repeat_last_n : 64, k;
        for (k = nhist - look < 0 ? 0 : nhist - look; k < nhist; k++) {
            int32_t t = hist[k];
            int dup = 0, j;
            if (t < 0 || t >= nv) continue;
            for (j = nhist - look < 0 ? 0 : nhist - look; j < k; j++) if (hist[j] == t) dup = 1;
            if (dup) continue;
            logits[t] = logits[t] > 0 ? logits[t] / d->repeat_penalty : logits[t] * d->repeat_penalty;
        }
    }
    for (i = 1; i < nv; i++) if (logits[i] > logits[best]) best = i;
    if (!d || d->temperature <= 0) return best;
    mx = logits[best];
    for (i = 0, sum = 0; i < nv; i++) {
        cd[i].id = i;
        cd[i].p = expf((logits[i] - mx) / d->temperature);
        sum += cd[i].p;
    }
    n = nv;
    qsort(cd, (size_t)n, sizeof *cd, bl__cand_cmp);
    if (d->top_k > 0 && d->top_k < n) n = d->top_k;
    if (d->min_p > 0) {
        float cut = cd[0].p * d->min_p;
        int k = 1;
        while (k < n && cd[k].p >= cut) k++;
        n = k;
    }
    for (i = 0, sum = 0; i < n; i++) sum += cd[i].p;
    if (d->top_p > 0 && d->top_p < 1) {
        double target = d->top_p * sum, a = 0;
        int k;
        for (k = 0; k < n; k++) { a += cd[k].p; if (a >= target) { k++; break; } }
        n = k < n ? k : n;
        for (i = 0, sum = 0; i < n; i++) sum += cd[i].p;
    }
    r = bl__rand(rng) * sum;
    for (i = 0, acc = 0; i < n; i++) {
        acc += cd[i].p;
        if (r < acc) return cd[i].id;
    }
    return cd[n - 1].id;
}

int32_t bl_ctx_sample(bl_ctx *c, const bl_sampler_desc *d) {
    float *lg = bl_ctx_logits(c, -1);
    if (!lg) return -1;
    return bl_sample_logits(lg, c->m->hp.n_vocab, d, c->tokens, c->pos, &c->rng, c->samp_scratch);
}

#endif /* BERLIN_IMPLEMENTATION */

/*
   HISTORY
       0.1.0  loaders (GGUF, safetensors, llama2.c), llama forward pass,
              SentencePiece tokenizer, sampler. SIMD kernels (AVX2, AVX-512
              VNNI/BF16) with int8/BF16 activations, tiled prompt GEMM, one
              OpenMP team per forward step, huge-page weight copies.
              bl_batch_decode: several contexts in one forward step (the
              weights read once per step); bl_ctx_decode is its one-sequence
              case.

   LICENSE
   MIT License. Copyright (c) 2026 the berlin.h authors.
   Permission is hereby granted, free of charge, to any person obtaining a copy
   of this software and associated documentation files (the "Software"), to deal
   in the Software without restriction, including without limitation the rights
   to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
   copies of the Software, and to permit persons to whom the Software is
   furnished to do so, subject to the following conditions: The above copyright
   notice and this permission notice shall be included in all copies or
   substantial portions of the Software. THE SOFTWARE IS PROVIDED "AS IS",
   WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT LIMITED TO
   THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
   NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE
   FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT,
   TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR
   THE USE OR OTHER DEALINGS IN THE SOFTWARE.
*/
