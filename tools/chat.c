/* berlin-chat - complete a prompt, or chat, printing each token as it comes.

       berlin-chat -m models/stories260K.gguf -p "Once upon a time" -n 200
       berlin-chat -m MODEL                      (interactive: one turn per line)
       berlin-chat -m FOLDER --prompt-ids '[1,403,407]' --print-ids --temp 0

   In the interactive loop every line is appended to the conversation in the
   KV cache and the model continues from there; no chat template is applied
   yet. Speeds go to stderr so that stdout holds only the text (or the ids). */
#define _POSIX_C_SOURCE 200809L
#define BERLIN_IMPLEMENTATION
#include "berlin.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct chat_opts {
    const char *model, *prompt, *prompt_ids, *tokenizer;
    int n_gen, n_threads, n_ctx, no_mmap, print_ids, have_seed;
    uint64_t seed;
    bl_sampler_desc samp;
} chat_opts;

typedef struct chat_state {
    bl_model *m;
    bl_ctx *c;
    const bl_tokenizer *tok;
    const chat_opts *o;
    int32_t *buf;   /* prompt ids of the current turn */
    int buf_cap;
    int32_t last;   /* the last token fed or printed (-1: none), for spacing */
    int32_t pending; /* printed but not yet in the KV cache (-1: none) */
} chat_state;

static void usage(FILE *f) {
    fprintf(f,
            "usage: berlin-chat [options]\n"
            "  -m MODEL            model file or folder [models/stories260K.gguf]\n"
            "  -p PROMPT           complete PROMPT once; without -p, chat on stdin\n"
            "  --prompt-ids JSON   the prompt as token ids, e.g. '[1,403,407]'\n"
            "  --print-ids         print the generated ids as one JSON array\n"
            "  -n N                tokens to generate, -1: until the context is full [256]\n"
            "  --temp T            temperature, 0 = greedy [0.8]\n"
            "  --top-k K           keep the K most likely tokens, 0 = off [40]\n"
            "  --top-p P           nucleus mass, 1 = off [0.95]\n"
            "  --min-p P           drop tokens below P * p(top), 0 = off [0.05]\n"
            "  --repeat-penalty R  penalise recent tokens, 1 = off [1.0]\n"
            "  --repeat-last-n N   tokens the penalty looks back on [64]\n"
            "  --seed S            sampler seed [from the clock]\n"
            "  -t THREADS          threads [all cores]\n"
            "  -c CTX              context length [min(trained, 4096)]\n"
            "  --tokenizer FILE    tokenizer file (GGUF or llama2.c tokenizer.bin)\n"
            "  --no-mmap           read the weights into memory\n"
            "  -h, --help          this help\n"
            "In the chat loop, '/reset' forgets the conversation.\n");
}

static double now_sec(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int parse_int(const char *s, const char *opt, int lo, int hi, int *out) {
    char *end;
    long v;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "berlin-chat: %s wants an integer in [%d, %d], not '%s'\n", opt, lo, hi, s);
        return 0;
    }
    *out = (int)v;
    return 1;
}

static int parse_float(const char *s, const char *opt, float *out) {
    char *end;
    double v;
    errno = 0;
    v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= 0) || v > 1e6) {
        fprintf(stderr, "berlin-chat: %s wants a non-negative number, not '%s'\n", opt, s);
        return 0;
    }
    *out = (float)v;
    return 1;
}

/* 0 on success, 1 after -h, -1 on a bad argument (already reported). */
static int parse_args(int argc, char **argv, chat_opts *o) {
    int i;
    memset(o, 0, sizeof *o);
    o->model = "models/stories260K.gguf";
    o->n_gen = 256;
    o->samp.temperature = 0.8f;
    o->samp.top_k = 40;
    o->samp.top_p = 0.95f;
    o->samp.min_p = 0.05f;
    o->samp.repeat_penalty = 1.0f;
    o->samp.repeat_last_n = 64;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int ok = 1, takes = 1;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 1; }
        else if (!strcmp(a, "--no-mmap")) { o->no_mmap = 1; takes = 0; }
        else if (!strcmp(a, "--print-ids")) { o->print_ids = 1; takes = 0; }
        else if (!v && (!strcmp(a, "-m") || !strcmp(a, "-p") || !strcmp(a, "--prompt-ids") || !strcmp(a, "-n") ||
                        !strcmp(a, "--temp") || !strcmp(a, "--top-k") || !strcmp(a, "--top-p") || !strcmp(a, "--min-p") ||
                        !strcmp(a, "--repeat-penalty") || !strcmp(a, "--repeat-last-n") || !strcmp(a, "--seed") ||
                        !strcmp(a, "-t") || !strcmp(a, "-c") || !strcmp(a, "--tokenizer"))) {
            fprintf(stderr, "berlin-chat: %s needs a value\n", a);
            return -1;
        }
        else if (!strcmp(a, "-m")) o->model = v;
        else if (!strcmp(a, "-p")) o->prompt = v;
        else if (!strcmp(a, "--prompt-ids")) o->prompt_ids = v;
        else if (!strcmp(a, "--tokenizer")) o->tokenizer = v;
        else if (!strcmp(a, "-n")) ok = parse_int(v, a, -1, 1 << 30, &o->n_gen);
        else if (!strcmp(a, "-t")) ok = parse_int(v, a, 1, 1024, &o->n_threads);
        else if (!strcmp(a, "-c")) ok = parse_int(v, a, 1, 1 << 22, &o->n_ctx);
        else if (!strcmp(a, "--top-k")) ok = parse_int(v, a, 0, 1 << 30, &o->samp.top_k);
        else if (!strcmp(a, "--repeat-last-n")) ok = parse_int(v, a, 1, 1 << 30, &o->samp.repeat_last_n);
        else if (!strcmp(a, "--temp")) ok = parse_float(v, a, &o->samp.temperature);
        else if (!strcmp(a, "--top-p")) ok = parse_float(v, a, &o->samp.top_p);
        else if (!strcmp(a, "--min-p")) ok = parse_float(v, a, &o->samp.min_p);
        else if (!strcmp(a, "--repeat-penalty")) ok = parse_float(v, a, &o->samp.repeat_penalty);
        else if (!strcmp(a, "--seed")) {
            char *end;
            errno = 0;
            o->seed = (uint64_t)strtoull(v, &end, 10);
            ok = !errno && end != v && !*end && v[0] != '-';
            if (!ok) fprintf(stderr, "berlin-chat: --seed wants a non-negative integer, not '%s'\n", v);
            o->have_seed = 1;
        } else {
            fprintf(stderr, "berlin-chat: unknown argument '%s' (try -h)\n", a);
            return -1;
        }
        if (!ok) return -1;
        i += takes;
    }
    if (o->prompt && o->prompt_ids) {
        fprintf(stderr, "berlin-chat: give -p or --prompt-ids, not both\n");
        return -1;
    }
    return 0;
}

/* Room for n ids in s->buf. */
static int reserve(chat_state *s, int n) {
    int32_t *nb;
    if (n <= s->buf_cap) return 1;
    nb = (int32_t *)realloc(s->buf, (size_t)n * sizeof *nb);
    if (!nb) { fprintf(stderr, "berlin-chat: out of memory\n"); return 0; }
    s->buf = nb;
    s->buf_cap = n;
    return 1;
}

/* A JSON array of non-negative integers into s->buf; returns the count or -1. */
static int parse_ids(chat_state *s, const char *json) {
    const char *p = json;
    int n = 0;
    while (*p == ' ' || *p == '\t' || *p == '\n') p++;
    if (*p++ != '[') goto bad;
    for (;;) {
        char *end;
        long v;
        while (*p == ' ' || *p == '\t' || *p == '\n') p++;
        if (*p == ']' && n == 0) { p++; break; }
        errno = 0;
        v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX) goto bad;
        if (!reserve(s, n + 1)) return -1;
        s->buf[n++] = (int32_t)v;
        p = end;
        while (*p == ' ' || *p == '\t' || *p == '\n') p++;
        if (*p == ',') { p++; continue; }
        if (*p == ']') { p++; break; }
        goto bad;
    }
    while (*p == ' ' || *p == '\t' || *p == '\n') p++;
    if (*p || n == 0) goto bad;
    return n;
bad:
    fprintf(stderr, "berlin-chat: --prompt-ids wants a non-empty JSON array of token ids such as '[1,403,407]', not '%s'\n", json);
    return -1;
}

/* Tokenize text into s->buf (with BOS when the cache is empty); count or -1. */
static int tokenize(chat_state *s, const char *text) {
    int flags = bl_ctx_pos(s->c) == 0 && s->pending < 0 ? BL_TOK_ADD_BOS : 0;
    int n = bl_tokenize(s->tok, text, -1, s->buf, s->buf_cap, flags);
    if (n > s->buf_cap) {
        if (!reserve(s, n)) return -1;
        n = bl_tokenize(s->tok, text, -1, s->buf, s->buf_cap, flags);
    }
    if (n < 0) fprintf(stderr, "berlin-chat: cannot tokenize the prompt: %s\n", bl_result_string((bl_result)n));
    return n;
}

static void print_token(chat_state *s, int32_t t) {
    char piece[1024];
    int n = bl_token_to_text(s->tok, s->last, t, piece, (int)sizeof piece);
    if (n > 0) fwrite(piece, 1, (size_t)n, stdout);
    fflush(stdout);
}

/* Feed the n ids in s->buf (after any pending token) and generate. Returns 0,
   or 1 when the context could not take the input or a decode failed. */
static int run_turn(chat_state *s, int n) {
    const chat_opts *o = s->o;
    int32_t bos = s->tok ? bl_tokenizer_bos(s->tok) : -1;
    int n_gen = 0, i, first_id = 1, stop = 0;
    double t0, t1, t2;
    bl_result r;
    if (s->pending >= 0) {
        if (!reserve(s, n + 1)) return 1;
        memmove(s->buf + 1, s->buf, (size_t)n * sizeof *s->buf);
        s->buf[0] = s->pending;
        n++;
        s->pending = -1;
    }
    if (n == 0) return 0;
    t0 = now_sec();
    r = bl_ctx_decode(s->c, s->buf, n, BL_LOGITS_LAST);
    if (r != BL_OK) {
        fprintf(stderr, "berlin-chat: %s\n", bl_ctx_last_error(s->c));
        return 1;
    }
    s->last = s->buf[n - 1];
    t1 = now_sec();
    if (o->print_ids) fputc('[', stdout);
    for (i = 0; o->n_gen < 0 || i < o->n_gen; i++) {
        int32_t t = bl_ctx_sample(s->c, &o->samp);
        /* llama2.c story models end a story with BOS, as run.c knows */
        if (t < 0 || (s->tok && bl_tokenizer_is_eog(s->tok, t)) || t == bos) break;
        if (o->print_ids) {
            printf(first_id ? "%d" : ",%d", (int)t);
            fflush(stdout);
            first_id = 0;
        } else {
            print_token(s, t);
        }
        s->last = t;
        n_gen++;
        if (o->n_gen >= 0 && i + 1 == o->n_gen) { s->pending = t; break; }
        if (bl_ctx_pos(s->c) >= bl_ctx_n_ctx(s->c)) {
            s->pending = t;
            stop = 1;
            break;
        }
        r = bl_ctx_decode(s->c, &t, 1, BL_LOGITS_LAST);
        if (r != BL_OK) {
            fprintf(stderr, "\nberlin-chat: %s\n", bl_ctx_last_error(s->c));
            return 1;
        }
    }
    t2 = now_sec();
    fputs(o->print_ids ? "]\n" : "\n", stdout);
    fflush(stdout);
    if (stop) fprintf(stderr, "berlin-chat: the context of %d tokens is full\n", bl_ctx_n_ctx(s->c));
    fprintf(stderr, "prompt: %d tokens, %.1f tok/s | generation: %d tokens, %.1f tok/s\n", n,
            t1 > t0 ? n / (t1 - t0) : 0.0, n_gen, t2 > t1 ? n_gen / (t2 - t1) : 0.0);
    return 0;
}

static int one_shot(chat_state *s) {
    const chat_opts *o = s->o;
    int n, i;
    n = o->prompt_ids ? parse_ids(s, o->prompt_ids) : tokenize(s, o->prompt);
    if (n < 0) return 1;
    if (n > bl_ctx_n_ctx(s->c)) {
        fprintf(stderr, "berlin-chat: the prompt has %d tokens but the context only %d (see -c)\n", n, bl_ctx_n_ctx(s->c));
        return 1;
    }
    if (n == 0) {
        fprintf(stderr, "berlin-chat: the prompt is empty\n");
        return 1;
    }
    /* with --print-ids only the generated ids go to stdout */
    if (!o->print_ids && o->prompt_ids) {
        for (i = 0; i < n; i++) { print_token(s, s->buf[i]); s->last = s->buf[i]; }
    } else if (!o->print_ids) {
        fputs(o->prompt, stdout);
        fflush(stdout);
    }
    return run_turn(s, n);
}

static int chat_loop(chat_state *s) {
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int tty = isatty(0), rc = 0;
    for (;;) {
        int n;
        if (tty) { fputs("> ", stdout); fflush(stdout); }
        len = getline(&line, &cap, stdin);
        if (len < 0) break;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (!strcmp(line, "/reset")) {
            bl_ctx_reset(s->c);
            s->pending = -1;
            s->last = -1;
            continue;
        }
        n = tokenize(s, line);
        if (n < 0) { rc = 1; break; }
        if (n + (s->pending >= 0) > bl_ctx_n_ctx(s->c) - bl_ctx_pos(s->c)) {
            fprintf(stderr, "berlin-chat: the context is full; starting a new conversation\n");
            bl_ctx_reset(s->c);
            s->pending = -1;
            s->last = -1;
            n = tokenize(s, line);
            if (n < 0) { rc = 1; break; }
        }
        if (run_turn(s, n)) rc = 1; /* reported; the next line may still work */
    }
    free(line);
    return rc;
}

int main(int argc, char **argv) {
    chat_opts o;
    chat_state s;
    bl_model_desc md;
    bl_ctx_desc cd;
    int rc;
    bl_result r;
    rc = parse_args(argc, argv, &o);
    if (rc) return rc > 0 ? 0 : 2;
    memset(&s, 0, sizeof s);
    s.o = &o;
    s.last = s.pending = -1;
    memset(&md, 0, sizeof md);
    md.tokenizer_path = o.tokenizer;
    md.no_mmap = o.no_mmap;
    r = bl_model_load(&s.m, o.model, &md);
    if (r != BL_OK) {
        fprintf(stderr, "berlin-chat: cannot load '%s': %s\n", o.model, bl_model_last_error(s.m));
        bl_model_destroy(s.m);
        return 1;
    }
    s.tok = bl_model_tokenizer(s.m);
    if (!s.tok && !(o.prompt_ids && o.print_ids)) {
        fprintf(stderr, "berlin-chat: '%s' has no tokenizer: give one with --tokenizer, or use --prompt-ids with --print-ids\n", o.model);
        bl_model_destroy(s.m);
        return 1;
    }
    memset(&cd, 0, sizeof cd);
    cd.n_ctx = o.n_ctx;
    cd.n_threads = o.n_threads;
    if (!o.have_seed) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        o.seed = (uint64_t)ts.tv_sec * 1000000007u ^ (uint64_t)ts.tv_nsec;
    }
    cd.seed = o.seed;
    r = bl_ctx_create(&s.c, s.m, &cd);
    if (r != BL_OK) {
        fprintf(stderr, "berlin-chat: cannot create a context: %s\n", bl_ctx_last_error(s.c));
        bl_ctx_destroy(s.c);
        bl_model_destroy(s.m);
        return 1;
    }
    rc = o.prompt || o.prompt_ids ? one_shot(&s) : chat_loop(&s);
    free(s.buf);
    bl_ctx_destroy(s.c);
    bl_model_destroy(s.m);
    return rc;
}
