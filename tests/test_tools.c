/* test_tools.c - run the built berlin-chat and berlin-perplexity binaries
   (make builds them first; paths are relative to the repository root) and
   check their output against the golden manifests in $BERLIN_SHARED. */
#define _POSIX_C_SOURCE 200809L
#define BERLIN_IMPLEMENTATION
#include "berlin.h"
#include "testutil.h"

#include <math.h>
#include <sys/wait.h>

#define CHAT "./build/berlin-chat"
#define PPL "./build/berlin-perplexity"

/* s in single quotes for the shell, in a static buffer ring. */
static const char *q(const char *s) {
    static char bufs[8][1100];
    static int k;
    char *b = bufs[k++ & 7], *o = b;
    *o++ = '\'';
    for (; *s && o < b + sizeof bufs[0] - 6; s++) {
        if (*s == '\'') { memcpy(o, "'\\''", 4); o += 4; }
        else *o++ = *s;
    }
    *o++ = '\'';
    *o = 0;
    return b;
}

/* Run a shell command; its stdout (malloc'd) and exit status (-1: killed). */
static char *run(const char *cmd, int *status) {
    FILE *p = popen(cmd, "r");
    char *out = NULL;
    size_t n = 0, cap = 0;
    int st;
    *status = -1;
    if (!p) return NULL;
    for (;;) {
        size_t got;
        if (cap - n < 4096) {
            char *nb = (char *)realloc(out, cap + 65536);
            if (!nb) break;
            out = nb;
            cap += 65536;
        }
        got = fread(out + n, 1, cap - n - 1, p);
        if (got == 0) break;
        n += got;
    }
    if (out) out[n] = 0;
    st = pclose(p);
    if (st != -1 && WIFEXITED(st)) *status = WEXITSTATUS(st);
    return out;
}

typedef struct manifest {
    char *src;
    bl__json j;
    int ok;
} manifest;

static int manifest_open(manifest *mf, const char *fixture) {
    char rel[256];
    size_t len = 0;
    snprintf(rel, sizeof rel, "golden/%s/manifest.json", fixture);
    memset(mf, 0, sizeof *mf);
    mf->src = tu_read(tu_shared(rel), &len);
    CHECK(mf->src != NULL, "cannot read %s", tu_shared(rel));
    if (!mf->src) return 0;
    mf->ok = bl__json_parse(&mf->j, mf->src, len) == 0;
    CHECK(mf->ok, "%s: %s", rel, mf->j.err);
    return mf->ok;
}

static void manifest_close(manifest *mf) {
    if (mf->ok) bl__json_free(&mf->j);
    free(mf->src);
}

/* The variant object whose "id" is id, or -1. */
static int manifest_variant(const manifest *mf, const char *id) {
    int vs = bl__json_get(&mf->j, 0, "variants"), i;
    for (i = 0; vs >= 0 && i < mf->j.nodes[vs].n; i++) {
        int v = bl__json_at(&mf->j, vs, i);
        if (bl__json_is(&mf->j, bl__json_get(&mf->j, v, "id"), id)) return v;
    }
    return -1;
}

/* A JSON array of integers, as text "[a,b,...]" into buf. */
static void ids_text(const bl__json *j, int arr, char *buf, size_t cap) {
    size_t n = 0;
    int i;
    buf[n++] = '[';
    for (i = 0; arr >= 0 && i < j->nodes[arr].n && n + 16 < cap; i++) {
        double v = -1;
        bl__json_num(j, bl__json_at(j, arr, i), &v);
        n += (size_t)snprintf(buf + n, cap - n, i ? ",%d" : "%d", (int)v);
    }
    buf[n++] = ']';
    buf[n] = 0;
}

/* The value after "Final estimate: PPL = ", or -1. */
static double final_ppl(const char *out) {
    const char *p = out ? strstr(out, "Final estimate: PPL = ") : NULL;
    return p ? atof(p + strlen("Final estimate: PPL = ")) : -1;
}

static void check_story_text(const char *what, const char *model, const char *tok, const char *expect) {
    char cmd[4096];
    int st;
    char *out;
    snprintf(cmd, sizeof cmd, CHAT " -m %s %s%s -p 'Once upon a time' --temp 0 -n 48 2>/dev/null", q(model), tok ? "--tokenizer " : "",
             tok ? q(tok) : "");
    out = run(cmd, &st);
    CHECK(st == 0, "%s: exit status %d", what, st);
    CHECK(out && expect && strncmp(out, expect, strlen(expect)) == 0, "%s: greedy text\n  got    %s\n  wanted %s", what, out ? out : "(none)",
          expect ? expect : "(none)");
    free(out);
}

static void test_chat_text(void) {
    manifest mf;
    char *expect = NULL, *out;
    int st;
    if (!manifest_open(&mf, "stories260K")) { manifest_close(&mf); return; }
    expect = bl__json_str(&mf.j, bl__json_get(&mf.j, 0, "expected_greedy_text"), NULL);
    CHECK(expect != NULL, "stories260K manifest has no expected_greedy_text");
    if (expect) {
        check_story_text("gguf", "models/stories260K.gguf", NULL, expect);
        check_story_text("llama2.c .bin", tu_shared("models/stories260K.bin"), tu_shared("models/tok512.bin"), expect);
        check_story_text("hf folder", tu_shared("models/stories260K-hf"), tu_shared("models/tok512.bin"), expect);

        /* the speed line goes to stderr */
        out = run(CHAT " -p 'Once upon a time' --temp 0 -n 8 2>&1 >/dev/null", &st);
        CHECK(st == 0 && out && strstr(out, "prompt: 5 tokens, ") && strstr(out, " | generation: 8 tokens, ") && strstr(out, "tok/s"),
              "speed line: %s", out ? out : "(none)");
        free(out);

        /* the chat loop: the first line continues like -p, the second goes on from there */
        out = run("printf 'Once upon a time\\nShe\\n' | " CHAT " --temp 0 -n 12 2>&1", &st);
        {
            const char *cont = expect + strlen("Once upon a time"), *p = out;
            int turns = 0;
            while (p && (p = strstr(p, "prompt: ")) != NULL) { turns++; p++; }
            CHECK(st == 0 && out && strncmp(out, cont, 20) == 0 && turns == 2, "chat loop (status %d): %s", st, out ? out : "(none)");
        }
        free(out);
    }
    BL_FREE(expect);
    manifest_close(&mf);
}

/* --prompt-ids / --print-ids on a model folder without a tokenizer. */
static void test_chat_ids(const char *fixture, const char *variant, const char *dir) {
    manifest mf;
    char prompt[2048], want[2048], cmd[4096], rel[256], *out;
    int v, st;
    if (!manifest_open(&mf, fixture)) { manifest_close(&mf); return; }
    v = manifest_variant(&mf, variant);
    CHECK(v >= 0, "%s: no variant %s", fixture, variant);
    if (v >= 0) {
        ids_text(&mf.j, bl__json_get(&mf.j, bl__json_get(&mf.j, 0, "prompt"), "tokens"), prompt, sizeof prompt);
        ids_text(&mf.j, bl__json_get(&mf.j, bl__json_get(&mf.j, v, "greedy"), "ids"), want, sizeof want);
        snprintf(rel, sizeof rel, "golden/%s/%s", fixture, dir);
        snprintf(cmd, sizeof cmd, CHAT " -m %s --prompt-ids %s --print-ids --temp 0 -n 16 2>/dev/null", q(tu_shared(rel)), q(prompt));
        out = run(cmd, &st);
        CHECK(st == 0, "%s %s: exit status %d", fixture, variant, st);
        if (out) { char *e = out + strlen(out); while (e > out && (e[-1] == '\n' || e[-1] == ' ')) *--e = 0; }
        CHECK(out && strcmp(out, want) == 0, "%s %s greedy ids\n  got    %s\n  wanted %s", fixture, variant, out ? out : "(none)", want);
        free(out);
    }
    manifest_close(&mf);
}

static void check_ppl(const char *what, const char *model, const char *tok, int n_ctx, double want) {
    char cmd[4096], *out;
    int st;
    double got;
    snprintf(cmd, sizeof cmd, PPL " -m %s %s%s -f %s -c %d 2>/dev/null", q(model), tok ? "--tokenizer " : "", tok ? q(tok) : "",
             q(tu_shared("golden/ppl_text.txt")), n_ctx);
    out = run(cmd, &st);
    got = final_ppl(out);
    CHECK(st == 0, "%s: exit status %d", what, st);
    CHECK(out && strncmp(out, "[1]", 3) == 0, "%s: running values: %s", what, out ? out : "(none)");
    CHECK(want > 0 && fabs(got - want) <= 1e-3 * want, "%s: PPL %.4f, wanted %.4f (0.1%%)", what, got, want);
    free(out);
}

static void test_perplexity(void) {
    manifest mf;
    double want = -1;
    if (manifest_open(&mf, "stories260K")) {
        int p = bl__json_get(&mf.j, 0, "perplexity");
        double n_ctx = 0;
        bl__json_num(&mf.j, bl__json_get(&mf.j, p, "torch_f32"), &want);
        bl__json_num(&mf.j, bl__json_get(&mf.j, p, "n_ctx"), &n_ctx);
        CHECK(want > 0 && n_ctx > 0, "stories260K manifest has no perplexity");
        check_ppl("stories260K gguf", "models/stories260K.gguf", NULL, (int)n_ctx, want);
    }
    manifest_close(&mf);
    /* random models at n_ctx 64: a GGUF with its own tok512 vocabulary, and a folder given one */
    if (manifest_open(&mf, "llama3-gqa")) {
        want = -1;
        bl__json_num(&mf.j, bl__json_get(&mf.j, manifest_variant(&mf, "gguf-F32"), "perplexity_torch"), &want);
        check_ppl("llama3-gqa gguf-F32", tu_shared("golden/llama3-gqa/gguf/model-F32.gguf"), NULL, 64, want);
    }
    manifest_close(&mf);
    if (manifest_open(&mf, "smollm-tied")) {
        want = -1;
        bl__json_num(&mf.j, bl__json_get(&mf.j, manifest_variant(&mf, "hf-f32"), "perplexity_torch"), &want);
        check_ppl("smollm-tied hf-f32", tu_shared("golden/smollm-tied/hf-f32"), "models/stories260K.gguf", 64, want);
    }
    manifest_close(&mf);
}

/* Each command must fail (non-zero exit) and say something containing msg. */
static void check_fails(const char *cmd, const char *msg) {
    char full[4096], *out;
    int st;
    snprintf(full, sizeof full, "%s 2>&1", cmd);
    out = run(full, &st);
    CHECK(st > 0, "'%s' exited with %d", cmd, st);
    CHECK(out && strstr(out, msg), "'%s' said '%s', wanted '%s'", cmd, out ? out : "(none)", msg);
    free(out);
}

static void test_errors(void) {
    char cmd[4096], *out;
    int st;
    check_fails(CHAT " -m no/such/model.gguf -p hi", "no/such/model.gguf");
    check_fails(CHAT " --no-such-flag", "unknown argument");
    check_fails(CHAT " -n", "needs a value");
    check_fails(CHAT " -n many", "-n wants an integer");
    check_fails(CHAT " --prompt-ids '[1,2,'", "--prompt-ids");
    check_fails(CHAT " --prompt-ids '[1,99999]' --print-ids", "outside the vocabulary");
    check_fails(CHAT " -m models/stories260K.gguf -ctk q8", "takes f16 or f32");
    { /* an F16 KV cache tells the same greedy story on stories260K as a float one */
        char *a = run(CHAT " -m models/stories260K.gguf -p 'Once upon a time' -n 48 --temp 0 2>/dev/null", &st), *b;
        int st2;
        b = run(CHAT " -m models/stories260K.gguf -p 'Once upon a time' -n 48 --temp 0 -ctk f16 2>/dev/null", &st2);
        CHECK(st == 0 && st2 == 0 && a && b && strlen(a) > 100 && !strcmp(a, b), "berlin-chat -ctk f16: status %d, greedy text differs:\n%s\n%s", st2,
              a ? a : "", b ? b : "");
        free(a);
        free(b);
    }
    snprintf(cmd, sizeof cmd, CHAT " -m %s -p hi", q(tu_shared("golden/llama3-gqa/hf-f32")));
    check_fails(cmd, "no tokenizer");
    check_fails(PPL " -m models/stories260K.gguf", "-f");
    check_fails(PPL " -m no/such/model.gguf -f /dev/null", "no/such/model.gguf");
    check_fails(PPL " -m models/stories260K.gguf -f no/such/text.txt", "no/such/text.txt");
    snprintf(cmd, sizeof cmd, PPL " -m models/stories260K.gguf -f %s -c 4096", q(tu_shared("golden/ppl_text.txt")));
    check_fails(cmd, "needs at least");
    out = run(CHAT " -h", &st);
    CHECK(st == 0 && out && strstr(out, "usage"), "berlin-chat -h: status %d", st);
    free(out);
    out = run(PPL " -h", &st);
    CHECK(st == 0 && out && strstr(out, "usage"), "berlin-perplexity -h: status %d", st);
    free(out);
}

/* berlin-chat's tokenizer modes: every vector file of ../shared/tokenizers
   through --inp gives its .out file byte for byte; --tokenize, --detokenize. */
static void test_tokenize_cli(void) {
    char *man = tu_read(tu_shared("tokenizers/MANIFEST.tsv"), NULL), *line, *next, cmd[4096], *out;
    int row = 0, st;
    CHECK(man != NULL, "cannot read the tokenizer MANIFEST.tsv");
    for (line = man; man && line && *line; line = next, row++) {
        char tok[512], vec[512], kind[16], path[1100], *want;
        int add_special, parse_special;
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        if (row == 0 || sscanf(line, "%511s\t%511s\t%15s\t%d\t%d", tok, vec, kind, &add_special, &parse_special) != 5) continue;
        snprintf(path, sizeof path, "tokenizers/%s", tok);
        snprintf(cmd, sizeof cmd, CHAT " --tokenize -m %s", q(tu_shared(path)));
        snprintf(path, sizeof path, "tokenizers/%s.inp", vec);
        snprintf(cmd + strlen(cmd), sizeof cmd - strlen(cmd), " --inp %s%s", q(tu_shared(path)), parse_special ? " --parse-special" : "");
        out = run(cmd, &st);
        snprintf(path, sizeof path, "tokenizers/%s.out", vec);
        want = tu_read(tu_shared(path), NULL);
        CHECK(st == 0 && out && want && !strcmp(out, want), "berlin-chat --inp on %s: status %d, output differs from the .out file", vec, st);
        free(out);
        free(want);
    }
    free(man);
    snprintf(cmd, sizeof cmd, CHAT " --tokenize -m %s -p 'Hello world'", q(tu_shared("tokenizers/gguf/ggml-vocab-llama-spm.gguf")));
    out = run(cmd, &st);
    CHECK(st == 0 && out && !strcmp(out, "[1, 15043, 3186]\n"), "--tokenize with BOS: '%s'", out ? out : "");
    free(out);
    snprintf(cmd, sizeof cmd, CHAT " --tokenize --no-bos -m %s -p 'Hello world'", q(tu_shared("tokenizers/gguf/ggml-vocab-llama-spm.gguf")));
    out = run(cmd, &st);
    CHECK(st == 0 && out && !strcmp(out, "[15043, 3186]\n"), "--tokenize --no-bos: '%s'", out ? out : "");
    free(out);
    snprintf(cmd, sizeof cmd, CHAT " --tokenize --parse-special -m %s -p '<|im_start|>user'", q(tu_shared("tokenizers/json/qwen3")));
    out = run(cmd, &st);
    CHECK(st == 0 && out && !strcmp(out, "[151644, 872]\n"), "--tokenize a folder with --parse-special: '%s'", out ? out : "");
    free(out);
    snprintf(cmd, sizeof cmd, CHAT " --detokenize '[9906, 1917, 0]' -m %s", q(tu_shared("tokenizers/json/llama3/tokenizer.json")));
    out = run(cmd, &st);
    CHECK(st == 0 && out && !strcmp(out, "Hello world!\n"), "--detokenize: '%s'", out ? out : "");
    free(out);
    check_fails(CHAT " --tokenize -m models/stories260K.gguf", "needs -p TEXT");
    check_fails(CHAT " --chat-template nonsense", "unknown chat template");
    snprintf(cmd, sizeof cmd, CHAT " --detokenize '[999999]' -m %s", q(tu_shared("tokenizers/json/llama3/tokenizer.json")));
    check_fails(cmd, "outside the vocabulary");
    out = run(CHAT " -m models/stories260K.gguf -p Hi --chat-template llama3 --system Brief --temp 0 -n 4 2>&1", &st);
    CHECK(st == 0 && out && strstr(out, "chat format llama3") && !strstr(out, "Hi"), "-p as a chat turn: status %d '%s'", st, out ? out : "");
    free(out);
    out = run("printf 'Hi\\nBye\\n' | " CHAT " -m models/stories260K.gguf --chat-template chatml --temp 0 -n 4 2>&1", &st);
    CHECK(st == 0 && out && strstr(out, "chat format chatml"), "interactive chat with --chat-template: status %d '%s'", st, out ? out : "");
    free(out);
}

int main(void) {
    FILE *f = fopen(CHAT, "rb"), *g = fopen(PPL, "rb");
    CHECK(f && g, "build " CHAT " and " PPL " first (make tools), and run from the repository root");
    if (f) fclose(f);
    if (g) fclose(g);
    if (!f || !g) return tu_finish();
    test_chat_text();
    test_chat_ids("llama3-gqa", "hf-f32", "hf-f32");
    test_chat_ids("qwen2-bias", "hf-f32", "hf-f32");
    test_chat_ids("mistral-consolidated", "consolidated-f32", "consolidated-f32");
    test_perplexity();
    test_errors();
    test_tokenize_cli();
    return tu_finish();
}
