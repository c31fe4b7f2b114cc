/* berlin-chat - complete a prompt, or chat, printing each token as it comes.

       berlin-chat -m models/stories260K.gguf -p "Once upon a time" -n 200
       berlin-chat -m MODEL                      (interactive: one turn per line)
       berlin-chat -m FOLDER --prompt-ids '[1,403,407]' --print-ids --temp 0
       berlin-chat --tokenize -m PATH -p TEXT   (ids as a JSON array, like llama-tokenize)
       berlin-chat --detokenize '[9906,1917]' -m PATH
       berlin-chat --tokenize -m PATH --inp FILE.inp   (one .out line per text)

   In the interactive loop every line is a user turn. When the model's own
   chat template is one berlin.h knows (ChatML, Llama-3, Llama-2, Mistral,
   Gemma, Phi-3), or --chat-template names one, each turn is wrapped in that
   format; a model without a template (llama2.c stories) just continues the
   text. Speeds go to stderr so that stdout holds only the text (or the ids).
   The tokenizer modes load only the tokenizer: PATH may be a GGUF, a model
   folder or a tokenizer.json. */
#define _POSIX_C_SOURCE 200809L
#define BERLIN_IMPLEMENTATION
#include "berlin.h"
#define TOOL_NAME "berlin-chat"
#include "tool.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>

static double t_start; /* when main began: --timing reports the time to the first token from here */

typedef struct chat_opts {
    const char *model, *prompt, *prompt_ids, *tokenizer;
    const char *file, *inp, *detok_ids, *template_name, *system;
    int tokenize_mode, no_bos, parse_special, timing;
    int n_gen, n_threads, n_ctx, no_mmap, weights, print_ids, have_seed, kv_f16;
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
    int tmpl;        /* BL_CHAT_* applied to interactive turns, 0: none */
    bl_detok dt;     /* holds back the bytes of a character split over tokens */
    char *reply;     /* text of the current assistant turn */
    size_t reply_len, reply_cap;
    int32_t stop_tok; /* the end-of-turn token that ended the last reply, -1 */
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
            "  -ctk f16|f32        KV cache type (f16: half the memory) [f32]\n"
            "  --tokenizer FILE    tokenizer file (GGUF, tokenizer.json or llama2.c tokenizer.bin)\n"
            "  --chat-template NAME  chat format for interactive turns: chatml, llama3, llama2,\n"
            "                      mistral, gemma, phi3 [recognised from the model's template];\n"
            "                      with -p, the prompt becomes one user turn in that format\n"
            "  --system TEXT       system message for the chat format (with -p: implies the model's format)\n"
            "tokenizer modes (only the tokenizer is loaded; -m may be a GGUF, folder or tokenizer.json):\n"
            "  --tokenize          print the ids of -p TEXT or -f FILE as one JSON array\n"
            "  -f FILE             read the text to tokenize from FILE\n"
            "  --inp FILE          tokenize every text of a llama.cpp vector file (texts separated\n"
            "                      by \"\\n__ggml_vocab_test__\\n\"), one \" id id\" line per text, no BOS\n"
            "  --no-bos            do not add BOS\n"
            "  --parse-special     match special-token text such as <|im_start|> in the input\n"
            "                      (with --detokenize: print special tokens as their text)\n"
            "  --detokenize JSON   print the text of a JSON array of ids\n"
            "  --timing            report tokenizer load time and MB/s on stderr; when generating,\n"
            "                      the time from start to the first token and the peak resident memory\n"
            "  --no-mmap           read the weights into memory\n"
            "  --weights MODE      auto, mapped (stay in the file's mapping), copied (read into huge\n"
            "                      pages, Q4_0 rearranged for decoding) or moved (mapped, then swapped\n"
            "                      for huge pages in the background) [auto: copied for Q4_0 and Q4_K\n"
            "                      models, moved for the others]\n"
            "  -h, --help          this help\n"
            "In the chat loop, '/reset' forgets the conversation.\n");
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
        else if (!strcmp(a, "--weights")) {
            if (!v || (strcmp(v, "auto") && strcmp(v, "mapped") && strcmp(v, "copied") && strcmp(v, "moved"))) {
                fprintf(stderr, "berlin-chat: --weights takes auto, mapped, copied or moved\n");
                return -1;
            }
            o->weights = !strcmp(v, "mapped") ? BL_WEIGHTS_MAPPED : !strcmp(v, "copied") ? BL_WEIGHTS_COPIED : !strcmp(v, "moved") ? BL_WEIGHTS_MOVED : BL_WEIGHTS_AUTO;
        }
        else if (!strcmp(a, "-ctk") || !strcmp(a, "--cache-type")) {
            if (!v || (strcmp(v, "f16") && strcmp(v, "f32"))) { fprintf(stderr, "berlin-chat: %s takes f16 or f32\n", a); return -1; }
            o->kv_f16 = v[1] == '1';
        }
        else if (!strcmp(a, "--print-ids")) { o->print_ids = 1; takes = 0; }
        else if (!strcmp(a, "--tokenize")) { o->tokenize_mode = 1; takes = 0; }
        else if (!strcmp(a, "--no-bos")) { o->no_bos = 1; takes = 0; }
        else if (!strcmp(a, "--parse-special")) { o->parse_special = 1; takes = 0; }
        else if (!strcmp(a, "--timing")) { o->timing = 1; takes = 0; }
        else if (!v && (!strcmp(a, "-m") || !strcmp(a, "-p") || !strcmp(a, "--prompt-ids") || !strcmp(a, "-n") ||
                        !strcmp(a, "--temp") || !strcmp(a, "--top-k") || !strcmp(a, "--top-p") || !strcmp(a, "--min-p") ||
                        !strcmp(a, "--repeat-penalty") || !strcmp(a, "--repeat-last-n") || !strcmp(a, "--seed") ||
                        !strcmp(a, "-t") || !strcmp(a, "-c") || !strcmp(a, "--tokenizer") || !strcmp(a, "-f") ||
                        !strcmp(a, "--inp") || !strcmp(a, "--detokenize") || !strcmp(a, "--chat-template") || !strcmp(a, "--system"))) {
            fprintf(stderr, "berlin-chat: %s needs a value\n", a);
            return -1;
        }
        else if (!strcmp(a, "-m")) o->model = v;
        else if (!strcmp(a, "-p")) o->prompt = v;
        else if (!strcmp(a, "--prompt-ids")) o->prompt_ids = v;
        else if (!strcmp(a, "--tokenizer")) o->tokenizer = v;
        else if (!strcmp(a, "-f")) o->file = v;
        else if (!strcmp(a, "--inp")) o->inp = v;
        else if (!strcmp(a, "--detokenize")) o->detok_ids = v;
        else if (!strcmp(a, "--chat-template")) o->template_name = v;
        else if (!strcmp(a, "--system")) o->system = v;
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
    if (o->template_name && bl_chat_template_from_name(o->template_name) == BL_CHAT_UNKNOWN) {
        fprintf(stderr, "berlin-chat: unknown chat template '%s' (known: chatml, llama3, llama2, mistral, gemma, phi3)\n", o->template_name);
        return -1;
    }
    if (o->tokenize_mode && !o->prompt && !o->file && !o->inp) {
        fprintf(stderr, "berlin-chat: --tokenize needs -p TEXT, -f FILE or --inp FILE\n");
        return -1;
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
static int parse_ids(chat_state *s, const char *json, const char *opt) {
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
    fprintf(stderr, "berlin-chat: %s wants a non-empty JSON array of token ids such as '[1,403,407]', not '%s'\n", opt, json);
    return -1;
}

/* Tokenize text into s->buf (with BOS when the cache is empty); count or -1.
   Chat-template text is tokenized with its special tokens. */
static int tokenize(chat_state *s, const char *text) {
    int flags = (bl_ctx_pos(s->c) == 0 && s->pending < 0 ? BL_TOK_ADD_BOS : 0) | (s->tmpl ? BL_TOK_PARSE_SPECIAL : 0);
    int n = bl_tokenize(s->tok, text, -1, s->buf, s->buf_cap, flags);
    if (n > s->buf_cap) {
        if (!reserve(s, n)) return -1;
        n = bl_tokenize(s->tok, text, -1, s->buf, s->buf_cap, flags);
    }
    if (n < 0) fprintf(stderr, "berlin-chat: cannot tokenize the prompt: %s\n", bl_result_string((bl_result)n));
    return n;
}

/* Print a token's text; bytes of a character split over tokens wait in s->dt. */
static void print_token(chat_state *s, int32_t t) {
    char piece[1024];
    int n;
    s->dt.prev = s->last;
    n = bl_detok_push(&s->dt, t, piece, (int)sizeof piece);
    if (n > 0) {
        fwrite(piece, 1, (size_t)n, stdout);
        if (s->tmpl && s->reply_len + (size_t)n + 1 > s->reply_cap) {
            size_t nc = (s->reply_cap + (size_t)n + 1) * 2;
            char *nr = (char *)realloc(s->reply, nc);
            if (nr) { s->reply = nr; s->reply_cap = nc; }
        }
        if (s->tmpl && s->reply_len + (size_t)n + 1 <= s->reply_cap) {
            memcpy(s->reply + s->reply_len, piece, (size_t)n);
            s->reply_len += (size_t)n;
            s->reply[s->reply_len] = 0;
        }
    }
    fflush(stdout);
}

/* Feed the n ids in s->buf (after any pending token) and generate. Returns 0,
   or 1 when the context could not take the input or a decode failed. */
static int run_turn(chat_state *s, int n) {
    const chat_opts *o = s->o;
    int32_t bos = s->tok ? bl_tokenizer_bos(s->tok) : -1;
    int n_gen = 0, i, first_id = 1, stop = 0;
    double t0, t1, t2, t_first = 0;
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
        if (i == 0) t_first = now_sec();
        /* llama2.c story models end a story with BOS, as run.c knows */
        if (t < 0 || (s->tok && bl_tokenizer_is_eog(s->tok, t)) || t == bos) {
            if (s->tmpl && t >= 0) { s->pending = t; s->stop_tok = t; } /* the end-of-turn token opens the next turn's input */
            break;
        }
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
    if (!o->print_ids) {
        char rest[8];
        if (bl_detok_flush(&s->dt, rest, (int)sizeof rest) > 0) fputs(rest, stdout);
    }
    fputs(o->print_ids ? "]\n" : "\n", stdout);
    fflush(stdout);
    if (stop) fprintf(stderr, "berlin-chat: the context of %d tokens is full\n", bl_ctx_n_ctx(s->c));
    fprintf(stderr, "prompt: %d tokens, %.1f tok/s | generation: %d tokens, %.1f tok/s\n", n,
            t1 > t0 ? n / (t1 - t0) : 0.0, n_gen, t2 > t1 ? n_gen / (t2 - t1) : 0.0);
    if (o->timing && t_first > 0) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        fprintf(stderr, "timing: first token %.3f s after start (prompt %.3f s); peak resident memory %.1f MiB\n", t_first - t_start, t1 - t0,
                (double)ru.ru_maxrss / 1024.0);
    }
    return 0;
}

static char *format_prompt(chat_state *s, const char *prompt);

static int one_shot(chat_state *s) {
    const chat_opts *o = s->o;
    int n, i;
    char *text = NULL;
    if (s->tmpl && o->prompt && !(text = format_prompt(s, o->prompt))) return 1; /* one user turn in the chat format */
    n = o->prompt_ids ? parse_ids(s, o->prompt_ids, "--prompt-ids") : tokenize(s, text ? text : o->prompt);
    free(text);
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
    } else if (!o->print_ids && !s->tmpl) {
        fputs(o->prompt, stdout);
        fflush(stdout);
    }
    return run_turn(s, n);
}

/* The conversation so far, for the chat template. */
typedef struct convo { bl_chat_msg *m; int n, cap; } convo;

static int convo_add(convo *cv, const char *role, const char *content, size_t len) {
    char *c;
    if (cv->n == cv->cap) {
        int nc = cv->cap ? cv->cap * 2 : 8;
        bl_chat_msg *nm = (bl_chat_msg *)realloc(cv->m, (size_t)nc * sizeof *nm);
        if (!nm) return 0;
        cv->m = nm;
        cv->cap = nc;
    }
    c = (char *)malloc(len + 1);
    if (!c) return 0;
    memcpy(c, content, len);
    c[len] = 0;
    cv->m[cv->n].role = role;
    cv->m[cv->n].content = c;
    cv->n++;
    return 1;
}

static void convo_clear(convo *cv, const char *system) {
    int i;
    for (i = 0; i < cv->n; i++) free((void *)cv->m[i].content);
    cv->n = 0;
    if (system) convo_add(cv, "system", system, strlen(system));
}

/* The conversation formatted, in a new buffer. */
static char *format_convo(int tmpl, const convo *cv, int n, int gen) {
    int len = bl_chat_format(tmpl, cv->m, n, gen, NULL, 0);
    char *b;
    if (len < 0) {
        fprintf(stderr, "berlin-chat: the %s chat format cannot hold this conversation (%s)\n", bl_chat_template_name(tmpl), bl_result_string((bl_result)len));
        return NULL;
    }
    b = (char *)malloc((size_t)len + 1);
    if (b) bl_chat_format(tmpl, cv->m, n, gen, b, len + 1);
    return b;
}

/* What to feed for a new user turn: the rest of the previous assistant turn
   after its end-of-turn token (which is fed as the pending token), then the
   new user turn and the opening of the assistant's. */
static char *turn_text(chat_state *s, convo *cv, const char *line) {
    char *prev_gen = NULL, *full_prev = NULL, *full_new = NULL, *out = NULL;
    const char *closing = "";
    size_t lp = 0;
    if (cv->n > 0 && strcmp(cv->m[cv->n - 1].role, "system")) {
        /* cv ends with the assistant reply: cv->n - 1 messages were fed with the generation prompt */
        const char *reply = cv->m[cv->n - 1].content, *at;
        int stop_len = 0;
        if (!(prev_gen = format_convo(s->tmpl, cv, cv->n - 1, 1)) || !(full_prev = format_convo(s->tmpl, cv, cv->n, 0))) goto done;
        lp = strlen(full_prev);
        at = *reply ? strstr(full_prev + (strlen(prev_gen) > 8 ? strlen(prev_gen) - 8 : 0), reply) : full_prev + strlen(prev_gen);
        if (at) closing = at + strlen(reply);
        if (s->stop_tok >= 0) {
            const char *piece = bl_token_piece(s->tok, s->stop_tok, &stop_len);
            if (piece && stop_len > 0 && !strncmp(closing, piece, (size_t)stop_len)) closing += stop_len;
        }
    }
    if (!convo_add(cv, "user", line, strlen(line)) || !(full_new = format_convo(s->tmpl, cv, cv->n, 1))) goto done;
    if (lp > strlen(full_new) || (full_prev && strncmp(full_new, full_prev, lp))) lp = 0; /* not concatenative: feed it all */
    out = (char *)malloc(strlen(closing) + strlen(full_new + lp) + 1);
    if (out) { strcpy(out, closing); strcat(out, full_new + lp); }
done:
    free(prev_gen);
    free(full_prev);
    free(full_new);
    return out;
}

/* -p with a chat format: the system message (if any) and one user turn. */
static char *format_prompt(chat_state *s, const char *prompt) {
    convo cv;
    char *out;
    memset(&cv, 0, sizeof cv);
    convo_clear(&cv, s->o->system);
    out = convo_add(&cv, "user", prompt, strlen(prompt)) ? format_convo(s->tmpl, &cv, cv.n, 1) : NULL;
    convo_clear(&cv, NULL);
    free(cv.m);
    return out;
}

static void reset_chat(chat_state *s, convo *cv) {
    bl_ctx_reset(s->c);
    s->pending = -1;
    s->last = -1;
    s->stop_tok = -1;
    convo_clear(cv, s->o->system);
}

static int chat_loop(chat_state *s) {
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int tty = isatty(0), rc = 0;
    convo cv;
    memset(&cv, 0, sizeof cv);
    convo_clear(&cv, s->o->system);
    for (;;) {
        int n;
        char *text = NULL;
        if (tty) { fputs("> ", stdout); fflush(stdout); }
        len = getline(&line, &cap, stdin);
        if (len < 0) break;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (!strcmp(line, "/reset")) {
            reset_chat(s, &cv);
            continue;
        }
        if (s->tmpl && !(text = turn_text(s, &cv, line))) { rc = 1; break; }
        n = tokenize(s, text ? text : line);
        if (n < 0) { free(text); rc = 1; break; }
        if (n + (s->pending >= 0) > bl_ctx_n_ctx(s->c) - bl_ctx_pos(s->c)) {
            fprintf(stderr, "berlin-chat: the context is full; starting a new conversation\n");
            reset_chat(s, &cv);
            free(text);
            text = NULL;
            if (s->tmpl && !(text = turn_text(s, &cv, line))) { rc = 1; break; }
            n = tokenize(s, text ? text : line);
            if (n < 0) { free(text); rc = 1; break; }
        }
        free(text);
        s->reply_len = 0;
        s->stop_tok = -1;
        if (run_turn(s, n)) rc = 1; /* reported; the next line may still work */
        if (s->tmpl) {
            const char *r = s->reply ? s->reply : "";
            size_t rl = s->reply_len;
            while (rl && strchr(" \t\r\n", r[rl - 1])) rl--; /* the templates trim the content */
            while (rl && strchr(" \t\r\n", *r)) { r++; rl--; }
            if (!convo_add(&cv, "assistant", r, rl)) { rc = 1; break; }
        }
    }
    convo_clear(&cv, NULL);
    free(cv.m);
    free(line);
    return rc;
}

/* Whole file into a NUL-terminated buffer. */
static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    char *b = NULL;
    size_t cap = 0, n = 0;
    if (!f) return NULL;
    for (;;) {
        size_t got;
        if (n + 65536 + 1 > cap) {
            char *nb = (char *)realloc(b, cap = (n + 65536 + 1) * 2);
            if (!nb) { free(b); fclose(f); return NULL; }
            b = nb;
        }
        got = fread(b + n, 1, 65536, f);
        n += got;
        if (got < 65536) break;
    }
    fclose(f);
    b[n] = 0;
    *len = n;
    return b;
}

/* Encode len bytes and print the ids: as a JSON array, or as a .out line. */
static int print_encoded(const bl_tokenizer *t, const char *text, size_t len, int flags, int out_format, int timing) {
    int32_t stack[1024], *ids = stack;
    int n, i;
    double t0 = now_sec();
    if (len > (size_t)1 << 30) { fprintf(stderr, "berlin-chat: text too large\n"); return 1; }
    if (timing) { /* room for every id up front, so that the time is one pass */
        ids = (int32_t *)malloc((len + 16) * sizeof *ids);
        if (!ids) { fprintf(stderr, "berlin-chat: out of memory\n"); return 1; }
        t0 = now_sec();
        n = bl_tokenize(t, text, (int)len, ids, (int)len + 16, flags);
    } else n = bl_tokenize(t, text, (int)len, ids, 1024, flags);
    if (timing && n >= 0) {
        double dt = now_sec() - t0;
        fprintf(stderr, "tokenized %zu bytes into %d tokens in %.3f s: %.2f MB/s, %.2f bytes/token\n", len, n, dt,
                dt > 0 ? (double)len / dt / 1e6 : 0.0, n > 0 ? (double)len / n : 0.0);
    }
    if (n > 1024 && ids == stack) {
        ids = (int32_t *)malloc((size_t)n * sizeof *ids);
        if (!ids) { fprintf(stderr, "berlin-chat: out of memory\n"); return 1; }
        n = bl_tokenize(t, text, (int)len, ids, n, flags);
    }
    if (n < 0) {
        fprintf(stderr, "berlin-chat: cannot tokenize: %s\n", bl_result_string((bl_result)n));
        if (ids != stack) free(ids);
        return 1;
    }
    if (!out_format) fputc('[', stdout);
    for (i = 0; i < n; i++) printf(out_format ? " %d" : i ? ", %d" : "%d", (int)ids[i]);
    fputs(out_format ? "\n" : "]\n", stdout);
    if (ids != stack) free(ids);
    return 0;
}

/* --tokenize / --inp / --detokenize: the tokenizer alone, no weights. */
static int tokenizer_mode(const chat_opts *o) {
    bl_tokenizer *t = NULL;
    const char *path = o->tokenizer ? o->tokenizer : o->model;
    int rc = 0, flags = (o->no_bos ? 0 : BL_TOK_ADD_BOS) | (o->parse_special ? BL_TOK_PARSE_SPECIAL : 0);
    double t0 = now_sec();
    if (bl_tokenizer_load(&t, path, 0) != BL_OK) {
        fprintf(stderr, "berlin-chat: cannot load a tokenizer from '%s': %s\n", path, bl_tokenizer_last_error(t));
        bl_tokenizer_destroy(t);
        return 1;
    }
    if (o->timing) fprintf(stderr, "loaded %d tokens from %s in %.3f s\n", bl_tokenizer_n_vocab(t), path, now_sec() - t0);
    if (o->detok_ids) {
        chat_state s;
        int n, i, len;
        char *text;
        memset(&s, 0, sizeof s);
        n = parse_ids(&s, o->detok_ids, "--detokenize");
        for (i = 0; i < n; i++)
            if (s.buf[i] >= bl_tokenizer_n_vocab(t)) {
                fprintf(stderr, "berlin-chat: id %d is outside the vocabulary of %d\n", (int)s.buf[i], bl_tokenizer_n_vocab(t));
                n = -1;
                break;
            }
        if (n < 0) rc = 1;
        else {
            len = bl_detokenize(t, s.buf, n, NULL, 0, o->parse_special ? BL_DETOK_SPECIAL : 0);
            text = (char *)malloc((size_t)(len > 0 ? len : 0) + 1);
            if (!text || len < 0) rc = 1;
            else {
                bl_detokenize(t, s.buf, n, text, len + 1, o->parse_special ? BL_DETOK_SPECIAL : 0);
                fwrite(text, 1, (size_t)len, stdout);
                fputc('\n', stdout);
            }
            free(text);
        }
        free(s.buf);
    } else if (o->inp) { /* llama.cpp's vector format: add_special = 0 */
        static const char sep[] = "\n__ggml_vocab_test__\n";
        size_t len, pos = 0;
        char *buf = read_file(o->inp, &len);
        if (!buf) { fprintf(stderr, "berlin-chat: cannot read '%s'\n", o->inp); rc = 1; }
        while (buf && pos < len && !rc) {
            const char *nx = NULL;
            size_t k, end;
            for (k = pos; k + sizeof sep - 1 <= len; k++)
                if (buf[k] == '\n' && !memcmp(buf + k, sep, sizeof sep - 1)) { nx = buf + k; break; }
            end = nx ? (size_t)(nx - buf) : len;
            rc = print_encoded(t, buf + pos, end - pos, flags & ~BL_TOK_ADD_BOS, 1, 0);
            pos = nx ? end + sizeof sep - 1 : len;
        }
        free(buf);
    } else if (o->file) {
        size_t len;
        char *buf = read_file(o->file, &len);
        if (!buf) { fprintf(stderr, "berlin-chat: cannot read '%s'\n", o->file); rc = 1; }
        else rc = print_encoded(t, buf, len, flags, 0, o->timing);
        free(buf);
    } else {
        rc = print_encoded(t, o->prompt, strlen(o->prompt), flags, 0, o->timing);
    }
    bl_tokenizer_destroy(t);
    return rc;
}

int main(int argc, char **argv) {
    chat_opts o;
    chat_state s;
    bl_model_desc md;
    bl_ctx_desc cd;
    int rc;
    bl_result r;
    t_start = now_sec();
    rc = parse_args(argc, argv, &o);
    if (rc) return rc > 0 ? 0 : 2;
    if (o.tokenize_mode || o.detok_ids) return tokenizer_mode(&o);
    memset(&s, 0, sizeof s);
    s.o = &o;
    s.last = s.pending = s.stop_tok = -1;
    memset(&md, 0, sizeof md);
    md.tokenizer_path = o.tokenizer;
    md.no_mmap = o.no_mmap;
    md.weights = o.weights;
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
    bl_detok_init(&s.dt, s.tok);
    if (s.tok && !o.prompt_ids && (!o.prompt || o.template_name || o.system)) { /* interactive, or -p as a chat turn: pick the format */
        const char *own = bl_tokenizer_chat_template(s.tok);
        s.tmpl = o.template_name ? bl_chat_template_from_name(o.template_name) : bl_chat_template_detect(own);
        if (s.tmpl) fprintf(stderr, "berlin-chat: chat format %s%s\n", bl_chat_template_name(s.tmpl), o.template_name ? "" : " (recognised from the model's template)");
        else if (own) fprintf(stderr, "berlin-chat: the model's chat template is not one berlin.h recognises; turns are fed as plain text "
                                      "(name a format with --chat-template chatml|llama3|llama2|mistral|gemma|phi3)\n");
    }
    memset(&cd, 0, sizeof cd);
    cd.n_ctx = o.n_ctx;
    cd.kv_type = o.kv_f16 ? BL_TYPE_F16 : BL_TYPE_F32;
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
    free(s.reply);
    bl_ctx_destroy(s.c);
    bl_model_destroy(s.m);
    return rc;
}
