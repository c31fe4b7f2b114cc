/* berlin-perplexity - perplexity of a model on a text file, as llama.cpp's
   llama-perplexity computes it by default, so the two can be compared.

       berlin-perplexity -m models/stories260K.gguf -f text.txt -c 128

   The method: tokenize the whole file (one trailing newline dropped, BOS
   added); cut it into n_tokens / n_ctx chunks of n_ctx tokens; put BOS in
   place of each chunk's first token; run each chunk from an empty KV cache;
   score only its second half, so every scored token sees at least n_ctx/2
   tokens of context: positions j = n_ctx/2 .. n_ctx-2 predict token j+1.
   PPL = exp(mean nll); the error is llama.cpp's, PPL * the standard error
   of the mean nll. Running values go to stdout as "[chunk]ppl,". */
#define _POSIX_C_SOURCE 200809L
#define BERLIN_IMPLEMENTATION
#include "berlin.h"
#define TOOL_NAME "berlin-perplexity"
#include "tool.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: berlin-perplexity -m MODEL -f TEXTFILE [options]\n"
            "  -m MODEL          model file or folder\n"
            "  -f TEXTFILE       text to score\n"
            "  -c CTX            tokens per chunk [512]\n"
            "  -b BATCH          tokens per forward step [512]\n"
            "  -t THREADS        threads [all cores]\n"
            "  --tokenizer FILE  tokenizer file (GGUF or llama2.c tokenizer.bin)\n"
            "  --no-mmap         read the weights into memory\n"
            "  -h, --help        this help\n");
}

/* The whole file, NUL-terminated, or NULL (reported). */
static char *read_text(const char *path, long *len) {
    FILE *f = fopen(path, "rb");
    char *b = NULL;
    long n = -1;
    if (!f) { fprintf(stderr, "berlin-perplexity: cannot open '%s': %s\n", path, strerror(errno)); return NULL; }
    if (fseek(f, 0, SEEK_END) == 0) n = ftell(f);
    if (n >= 0 && fseek(f, 0, SEEK_SET) == 0 && (b = (char *)malloc((size_t)n + 1)) != NULL) {
        if (fread(b, 1, (size_t)n, f) != (size_t)n) { free(b); b = NULL; }
    }
    fclose(f);
    if (!b) { fprintf(stderr, "berlin-perplexity: cannot read '%s'\n", path); return NULL; }
    b[n] = 0;
    *len = n;
    return b;
}

/* -log softmax(logits)[tok], in double with the maximum taken out. */
static double nll_of(const float *logits, int n_vocab, int32_t tok) {
    double mx = logits[0], sum = 0;
    int i;
    for (i = 1; i < n_vocab; i++) if (logits[i] > mx) mx = logits[i];
    for (i = 0; i < n_vocab; i++) sum += exp((double)logits[i] - mx);
    return mx + log(sum) - (double)logits[tok];
}

int main(int argc, char **argv) {
    const char *model = NULL, *file = NULL, *tokenizer = NULL;
    int n_ctx = 512, n_batch = 512, n_threads = 0, no_mmap = 0;
    int i, n_tok, n_chunk, n_vocab, first, count = 0, rc = 1;
    char *text = NULL;
    long text_len = 0;
    int32_t *toks = NULL, *chunk = NULL, bos;
    double nll = 0, nll2 = 0, t0;
    bl_model *m = NULL;
    bl_ctx *c = NULL;
    const bl_tokenizer *tok;
    bl_model_desc md;
    bl_ctx_desc cd;
    bl_result r;

    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int ok = 1;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        if (!strcmp(a, "--no-mmap")) { no_mmap = 1; continue; }
        if (strcmp(a, "-m") && strcmp(a, "-f") && strcmp(a, "-c") && strcmp(a, "-b") && strcmp(a, "-t") && strcmp(a, "--tokenizer")) {
            fprintf(stderr, "berlin-perplexity: unknown argument '%s' (try -h)\n", a);
            return 2;
        }
        if (!v) { fprintf(stderr, "berlin-perplexity: %s needs a value\n", a); return 2; }
        if (!strcmp(a, "-m")) model = v;
        else if (!strcmp(a, "-f")) file = v;
        else if (!strcmp(a, "--tokenizer")) tokenizer = v;
        else if (!strcmp(a, "-c")) ok = parse_int(v, a, 4, 1 << 22, &n_ctx);
        else if (!strcmp(a, "-b")) ok = parse_int(v, a, 1, 8192, &n_batch);
        else ok = parse_int(v, a, 1, 1024, &n_threads);
        if (!ok) return 2;
        i++;
    }
    if (!model || !file) {
        fprintf(stderr, "berlin-perplexity: give a model (-m) and a text file (-f); see -h\n");
        return 2;
    }

    memset(&md, 0, sizeof md);
    md.tokenizer_path = tokenizer;
    md.no_mmap = no_mmap;
    r = bl_model_load(&m, model, &md);
    if (r != BL_OK) {
        fprintf(stderr, "berlin-perplexity: cannot load '%s': %s\n", model, bl_model_last_error(m));
        goto done;
    }
    tok = bl_model_tokenizer(m);
    if (!tok) {
        fprintf(stderr, "berlin-perplexity: '%s' has no tokenizer: give one with --tokenizer\n", model);
        goto done;
    }
    n_vocab = bl_model_get_info(m)->n_vocab;
    text = read_text(file, &text_len);
    if (!text) goto done;
    /* as llama.cpp reads a prompt file: one trailing newline is not part of it */
    if (text_len > 0 && text[text_len - 1] == '\n') text[--text_len] = 0;

    n_tok = bl_tokenize(tok, text, (int)text_len, NULL, 0, BL_TOK_ADD_BOS);
    if (n_tok >= 0) {
        toks = (int32_t *)malloc((size_t)(n_tok > 0 ? n_tok : 1) * sizeof *toks);
        if (!toks) { fprintf(stderr, "berlin-perplexity: out of memory\n"); goto done; }
        n_tok = bl_tokenize(tok, text, (int)text_len, toks, n_tok, BL_TOK_ADD_BOS);
    }
    if (n_tok < 0) {
        fprintf(stderr, "berlin-perplexity: cannot tokenize '%s': %s\n", file, bl_result_string((bl_result)n_tok));
        goto done;
    }
    if (n_tok < 2 * n_ctx) {
        fprintf(stderr, "berlin-perplexity: '%s' gives %d tokens; a context of %d needs at least %d\n", file, n_tok, n_ctx, 2 * n_ctx);
        goto done;
    }
    /* BOS heads each chunk only if the vocabulary adds one at all */
    bos = bl_tokenizer_bos(tok);
    if (toks[0] != bos) bos = -1;

    memset(&cd, 0, sizeof cd);
    cd.n_ctx = n_ctx;
    cd.n_batch = n_batch;
    cd.n_threads = n_threads;
    r = bl_ctx_create(&c, m, &cd);
    if (r != BL_OK) {
        fprintf(stderr, "berlin-perplexity: cannot create a context: %s\n", bl_ctx_last_error(c));
        goto done;
    }
    chunk = (int32_t *)malloc((size_t)n_ctx * sizeof *chunk);
    if (!chunk) { fprintf(stderr, "berlin-perplexity: out of memory\n"); goto done; }

    n_chunk = n_tok / n_ctx;
    first = n_ctx / 2;
    fprintf(stderr, "perplexity: %d tokens, %d chunks of %d, scoring positions %d..%d of each\n", n_tok, n_chunk, n_ctx, first,
            n_ctx - 2);
    t0 = now_sec();
    for (i = 0; i < n_chunk; i++) {
        int j;
        memcpy(chunk, toks + (size_t)i * n_ctx, (size_t)n_ctx * sizeof *chunk);
        if (bos >= 0) chunk[0] = bos;
        bl_ctx_reset(c);
        /* The first half only builds the cache; keeping logits for the scored
           half alone halves the logits memory (n_ctx/2 rows of n_vocab). */
        r = bl_ctx_decode(c, chunk, first, BL_LOGITS_NONE);
        if (r == BL_OK) r = bl_ctx_decode(c, chunk + first, n_ctx - first, BL_LOGITS_ALL);
        if (r != BL_OK) {
            fprintf(stderr, "\nberlin-perplexity: chunk %d: %s\n", i + 1, bl_ctx_last_error(c));
            goto done;
        }
        for (j = first; j < n_ctx - 1; j++) {
            double v = nll_of(bl_ctx_logits(c, j - first), n_vocab, chunk[j + 1]);
            nll += v;
            nll2 += v * v;
            count++;
        }
        if (i == 0) fprintf(stderr, "perplexity: %.3f seconds per chunk\n", now_sec() - t0);
        printf("[%d]%.4f,", i + 1, exp(nll / count));
        fflush(stdout);
    }
    printf("\n");
    {
        double mean = nll / count, var = nll2 / count - mean * mean, ppl = exp(mean);
        double err = var > 0 && count > 1 ? ppl * sqrt(var / (count - 1)) : 0;
        printf("Final estimate: PPL = %.4f +/- %.5f\n", ppl, err);
        fprintf(stderr, "perplexity: %d tokens scored in %.2f s\n", count, now_sec() - t0);
    }
    rc = 0;
done:
    free(chunk);
    free(toks);
    free(text);
    bl_ctx_destroy(c);
    bl_model_destroy(m);
    return rc;
}
