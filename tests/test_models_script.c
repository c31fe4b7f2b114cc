/* test_models_script.c - models/download.sh without a network: its argument
   handling, --list, unknown names, and the file checks (--check) on the shared
   model files and on truncated or garbage copies written to a temporary folder.
   Run from the repository root (make test does), where models/download.sh is. */
#define _POSIX_C_SOURCE 200809L
#include "testutil.h"
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

#define SCRIPT "models/download.sh"

static char tmpdir[] = "/tmp/berlin_models_script_XXXXXX";

/* Run a shell command with its output discarded; its exit status, or -1. */
static int run(const char *fmt, const char *a, const char *b) {
    char cmd[4096];
    int st;
    snprintf(cmd, sizeof cmd, fmt, a ? a : "", b ? b : "");
    strncat(cmd, " >/dev/null 2>&1", sizeof cmd - strlen(cmd) - 1);
    st = system(cmd);
    if (st == -1 || !WIFEXITED(st)) return -1;
    return WEXITSTATUS(st);
}

static int check(const char *path) { return run("sh " SCRIPT " --check '%s'%s", path, NULL); }

static const char *tmp(const char *name) {
    static char bufs[4][1200];
    static int k;
    char *b = bufs[k++ & 3];
    snprintf(b, sizeof bufs[0], "%s/%s", tmpdir, name);
    return b;
}

static int write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    size_t w;
    if (!f) return 0;
    w = fwrite(data, 1, n, f);
    return fclose(f) == 0 && w == n;
}

/* The first n bytes of the shared file rel (all of it when n is 0) into tmp(name). */
static int copy_prefix(const char *rel, const char *name, size_t n) {
    size_t len = 0;
    char *d = tu_read(tu_shared(rel), &len);
    int ok;
    if (!d) return 0;
    ok = write_file(tmp(name), d, n && n < len ? n : len);
    free(d);
    return ok;
}

static int have_shared(const char *rel) {
    FILE *f = fopen(tu_shared(rel), "rb");
    if (f) fclose(f);
    return f != NULL;
}

/* --list prints every name the README promises, one per line. */
static void test_list(void) {
    static const char *names[] = { "stories15m", "stories42m", "stories110m", "smollm2-135m", "smollm2-135m-gguf",
                                   "smollm2-360m", "smollm2-360m-gguf", "qwen2.5-0.5b", "qwen2.5-0.5b-gguf",
                                   "tinyllama-1.1b-gguf", "llama-3.2-1b-gguf", "ministral-3b" };
    char out[16384];
    size_t n = 0, i;
    int st;
    FILE *p = popen("sh " SCRIPT " --list 2>&1", "r");
    CHECK(p != NULL, "popen --list");
    if (!p) return;
    while (n < sizeof out - 1) {
        size_t r = fread(out + n, 1, sizeof out - 1 - n, p);
        if (r == 0) break;
        n += r;
    }
    out[n] = 0;
    st = pclose(p);
    CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "--list exits 0 (status %d)", st);
    for (i = 0; i < sizeof names / sizeof names[0]; i++) {
        char pat[64];
        snprintf(pat, sizeof pat, "\n%s ", names[i]);
        CHECK(strstr(out, pat) != NULL, "--list names %s", names[i]);
    }
}

static void test_arguments(void) {
    CHECK(run("sh " SCRIPT "%s%s", NULL, NULL) == 2, "no arguments: usage, exit 2");
    CHECK(run("sh " SCRIPT " --help%s%s", NULL, NULL) == 0, "--help exits 0");
    CHECK(run("sh " SCRIPT " no-such-model%s%s", NULL, NULL) == 2, "unknown model name exits 2");
    CHECK(run("sh " SCRIPT " no-such-model '%s'%s", tmpdir, NULL) == 2, "unknown model name with DEST_DIR exits 2");
    CHECK(run("sh " SCRIPT " --frobnicate%s%s", NULL, NULL) == 2, "unknown option exits 2");
    CHECK(run("sh " SCRIPT " stories15m a b%s%s", NULL, NULL) == 2, "too many arguments exit 2");
    CHECK(run("sh " SCRIPT " --list extra%s%s", NULL, NULL) == 2, "--list takes no argument");
    CHECK(run("sh " SCRIPT " --check%s%s", NULL, NULL) == 2, "--check without a path exits 2");
    CHECK(check(tmp("does-not-exist.gguf")) == 1, "--check on a missing file exits 1");
}

static void test_good_files(void) {
    static const char *good[] = { "models/stories260K.gguf", "models/stories260K-hf/model.safetensors",
                                  "models/stories260K-hf/model.bf16.safetensors", "models/stories260K-hf/config.json",
                                  "models/stories260K.bin", "models/tok512.bin" };
    size_t i;
    for (i = 0; i < sizeof good / sizeof good[0]; i++) {
        if (!have_shared(good[i])) { printf("skip: %s not found\n", tu_shared(good[i])); continue; }
        CHECK(check(tu_shared(good[i])) == 0, "--check accepts %s", good[i]);
    }
    if (have_shared("models/stories260K-hf/config.json"))
        CHECK(check(tu_shared("models/stories260K-hf")) == 0, "--check accepts the stories260K-hf folder");
    CHECK(run("sh " SCRIPT " --check '%s' '%s'", tu_shared("models/stories260K.gguf"), tmp("missing.gguf")) == 1,
          "one bad path among good ones fails the whole --check");
}

static void test_bad_files(void) {
    static const unsigned char gguf_v9[32] = { 'G', 'G', 'U', 'F', 9 };
    static const char lfs[] = "version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n";
    static const char garbage[] = "this is not a model file at all, only words";
    unsigned char st_hdr[8 + 64];
    unsigned char l2c_hdr[28 + 16];
    int32_t h[7] = { 64, 172, 5, 8, 4, 512, 512 };

    CHECK(write_file(tmp("garbage.gguf"), garbage, sizeof garbage - 1), "write garbage.gguf");
    CHECK(check(tmp("garbage.gguf")) == 1, "--check rejects a .gguf without the magic");
    CHECK(write_file(tmp("v9.gguf"), gguf_v9, sizeof gguf_v9), "write v9.gguf");
    CHECK(check(tmp("v9.gguf")) == 1, "--check rejects GGUF version 9");
    CHECK(write_file(tmp("lfs.safetensors"), lfs, sizeof lfs - 1), "write lfs.safetensors");
    CHECK(check(tmp("lfs.safetensors")) == 1, "--check rejects a Git LFS pointer");
    CHECK(write_file(tmp("garbage.safetensors"), garbage, sizeof garbage - 1), "write garbage.safetensors");
    CHECK(check(tmp("garbage.safetensors")) == 1, "--check rejects a .safetensors of words");
    CHECK(write_file(tmp("empty.json"), "", 0), "write empty.json");
    CHECK(check(tmp("empty.json")) == 1, "--check rejects an empty .json");
    CHECK(write_file(tmp("short.bin"), "abcd", 4), "write short.bin");
    CHECK(check(tmp("short.bin")) == 1, "--check rejects a 4-byte llama2.c .bin");

    /* A safetensors header that claims more bytes than the file has. */
    memset(st_hdr, ' ', sizeof st_hdr);
    memset(st_hdr, 0, 8);
    st_hdr[0] = 0xff; st_hdr[1] = 0xff; st_hdr[2] = 0x0f; /* 1048575 bytes of header */
    st_hdr[8] = '{';
    CHECK(write_file(tmp("long-header.safetensors"), st_hdr, sizeof st_hdr), "write long-header.safetensors");
    CHECK(check(tmp("long-header.safetensors")) == 1, "--check rejects a header longer than the file");

    /* A valid llama2.c header (stories260K's, written in host order: on a
       big-endian host it is garbage, which the check rejects as well) over a
       file far shorter than the header implies. */
    memcpy(l2c_hdr, h, sizeof h);
    memset(l2c_hdr + 28, 0, 16);
    CHECK(write_file(tmp("header-only.bin"), l2c_hdr, sizeof l2c_hdr), "write header-only.bin");
    CHECK(check(tmp("header-only.bin")) == 1, "--check rejects a llama2.c file shorter than its header says");

    /* Truncated copies of the real files. */
    if (have_shared("models/stories260K-hf/model.safetensors")) {
        CHECK(copy_prefix("models/stories260K-hf/model.safetensors", "trunc.safetensors", 500000), "write trunc.safetensors");
        CHECK(check(tmp("trunc.safetensors")) == 1, "--check rejects a truncated safetensors");
        CHECK(copy_prefix("models/stories260K-hf/model.safetensors", "hdr.safetensors", 1000), "write hdr.safetensors");
        CHECK(check(tmp("hdr.safetensors")) == 1, "--check rejects a safetensors cut inside its header");
    }
    if (have_shared("models/stories260K.bin")) {
        CHECK(copy_prefix("models/stories260K.bin", "stories260K.bin", 1000000), "write truncated stories260K.bin");
        CHECK(check(tmp("stories260K.bin")) == 1, "--check rejects a truncated llama2.c checkpoint");
    }
    if (have_shared("models/tok512.bin")) {
        CHECK(copy_prefix("models/tok512.bin", "tok512.bin", 3000), "write truncated tok512.bin");
        CHECK(check(tmp("tok512.bin")) == 1, "--check rejects a truncated llama2.c tokenizer");
    }
    if (have_shared("models/stories260K.gguf")) {
        CHECK(copy_prefix("models/stories260K.gguf", "gguf-as.safetensors", 0), "write gguf-as.safetensors");
        CHECK(check(tmp("gguf-as.safetensors")) == 1, "--check rejects a GGUF named .safetensors");
    }

    /* A folder with one bad file fails; the good files in it are still listed. */
    CHECK(run("mkdir -p '%s'%s", tmp("folder"), NULL) == 0, "mkdir folder");
    CHECK(write_file(tmp("folder/config.json"), "{}", 2), "write folder/config.json");
    CHECK(check(tmp("folder")) == 0, "--check accepts a folder of good files");
    CHECK(write_file(tmp("folder/model.safetensors"), garbage, sizeof garbage - 1), "write folder/model.safetensors");
    CHECK(check(tmp("folder")) == 1, "--check rejects a folder holding a bad file");
}

int main(void) {
    if (access(SCRIPT, R_OK) != 0) {
        printf("FAIL: %s not found (run from the repository root)\n", SCRIPT);
        return 1;
    }
    if (!mkdtemp(tmpdir)) {
        printf("FAIL: mkdtemp\n");
        return 1;
    }
    test_list();
    test_arguments();
    test_good_files();
    test_bad_files();
    run("rm -rf '%s'%s", tmpdir, NULL);
    return tu_finish();
}
