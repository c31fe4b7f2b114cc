/* test_compile.c - berlin.h compiles as C99 and as C++11 with -Werror, with
   and without BERLIN_IMPLEMENTATION and under every configuration macro, and
   the opt-out builds still produce the golden first greedy token (432 after
   BOS "Once upon a time") on stories260K.gguf.

   The compilers are $CC and $CXX (cc and c++ by default); the sources are in
   tests/compile/, found next to this file. Binaries go to a temp dir. */
#define _POSIX_C_SOURCE 200809L
#define BERLIN_IMPLEMENTATION
#include "berlin.h"
#include "testutil.h"
#include <dirent.h>
#include <unistd.h>

static char tmp[256], root[512], model[1024];
static const char *cc, *cxx;

/* Under ASan the plain build has already compiled every variant: only the
   one that matters most (every opt-out, run on the model) is repeated. */
#if defined(__SANITIZE_ADDRESS__)
#define QUICK 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define QUICK 1
#endif
#endif
#ifndef QUICK
#define QUICK 0
#endif

static const char *C_FLAGS = "-std=c99 -O1 -Wall -Wextra -pedantic -Werror";
static const char *CXX_FLAGS = "-std=c++11 -O1 -Wall -Wextra -pedantic -Werror";

/* Run a shell command quietly; its output goes to tmp/log and is shown on failure. */
static int run(const char *cmd) {
    char full[4096];
    int st;
    snprintf(full, sizeof full, "%s > %s/log 2>&1", cmd, tmp);
    st = system(full);
    return st == -1 ? -1 : (st & 0xff00) >> 8 | (st & 0x7f);
}

static void show_log(void) {
    char p[512];
    size_t n;
    char *b;
    snprintf(p, sizeof p, "%s/log", tmp);
    b = tu_read(p, &n);
    if (b) printf("---- output ----\n%.*s----------------\n", (int)(n > 3000 ? 3000 : n), b);
    free(b);
}

/* Compile (and link unless -c is in extra) one command; CHECK it exits 0. */
static int build(const char *what, const char *compiler, const char *flags, const char *extra, const char *srcs, const char *out) {
    char cmd[4096];
    int st;
    snprintf(cmd, sizeof cmd, "%s %s %s -I%s %s -o %s/%s%s", compiler, flags, extra, root, srcs, tmp, out, strstr(extra, "-c") ? "" : " -lm");
    st = run(cmd);
    CHECK(st == 0, "%s: exit status %d from: %s", what, st, cmd);
    if (st) show_log();
    return st == 0;
}

/* Run a built binary on the model; CHECK it exits 0 (it checks the golden token itself). */
static void run_bin(const char *what, const char *bin) {
    char cmd[2048];
    int st;
    snprintf(cmd, sizeof cmd, "%s/%s %s", tmp, bin, model);
    st = run(cmd);
    CHECK(st == 0, "%s: %s exited with %d", what, bin, st);
    if (st) show_log();
}

int main(void) {
    char src[1024], src2[1024], buf[2048];
    const char *slash = strrchr(__FILE__, '/');
    const char *e;
    size_t n;
    char *probe;
    setvbuf(stdout, NULL, _IONBF, 0);
    cc = (e = getenv("CC")) && *e ? e : "cc";
    cxx = (e = getenv("CXX")) && *e ? e : "c++";
    /* __FILE__ is tests/test_compile.c as the Makefile passes it: the repository is one up */
    if (slash) snprintf(root, sizeof root, "%.*s/..", (int)(slash - __FILE__), __FILE__);
    else snprintf(root, sizeof root, "..");
    if ((e = getenv("BERLIN_ROOT")) && *e) snprintf(root, sizeof root, "%s", e);
    snprintf(model, sizeof model, "%s", tu_shared("models/stories260K.gguf"));
    snprintf(src, sizeof src, "%s/berlin.h", root);
    probe = tu_read(src, &n);
    CHECK(probe != NULL, "cannot find berlin.h at %s (set BERLIN_ROOT)", src);
    if (!probe) return tu_finish();
    free(probe);
    snprintf(tmp, sizeof tmp, "/tmp/berlin-compile-XXXXXX");
    if (!mkdtemp(tmp)) { printf("mkdtemp failed\n"); return 2; }

    snprintf(src, sizeof src, "%s/tests/compile/optout.c", root);
    if (QUICK) {
        if (build("C99 every opt-out at once", cc, C_FLAGS, "-DBL_NO_MMAP -DBL_NO_THREADS -DBL_NO_SIMD -DOPTOUT_HOOKS", src, "opt_all"))
            run_bin("BL_NO_MMAP + BL_NO_THREADS + BL_NO_SIMD + hooks", "opt_all");
        rm_tree(tmp);
        return tu_finish();
    }

    /* the header alone, as C99 and as C++ */
    snprintf(src, sizeof src, "%s/tests/compile/noimpl.c", root);
    build("C99, no implementation", cc, C_FLAGS, "-c", src, "noimpl_c.o");
    build("C++11, no implementation", cxx, CXX_FLAGS, "-c -x c++", src, "noimpl_cpp.o");

    /* the implementation as C++, linked with the header-only C file */
    snprintf(src2, sizeof src2, "%s/tests/compile/impl.cpp", root);
    if (build("C++11 implementation", cxx, CXX_FLAGS, "-c", src2, "impl.o")) {
        snprintf(buf, sizeof buf, "%s/impl.o %s/noimpl_c.o", tmp, tmp);
        if (build("link C++ implementation with C caller", cxx, "", "", buf, "impl_cpp")) run_bin("C++ implementation + C caller", "impl_cpp");
    }

    /* the implementation as C99 under each configuration */
    snprintf(src, sizeof src, "%s/tests/compile/optout.c", root);
    if (build("C99 implementation, defaults, OpenMP", cc, C_FLAGS, "-fopenmp", src, "opt_default")) run_bin("defaults", "opt_default");
    if (build("C99 -DBL_NO_MMAP", cc, C_FLAGS, "-DBL_NO_MMAP", src, "opt_nommap")) run_bin("BL_NO_MMAP", "opt_nommap");
    if (build("C99 -DBL_NO_THREADS with -fopenmp", cc, C_FLAGS, "-DBL_NO_THREADS -fopenmp", src, "opt_nothreads"))
        run_bin("BL_NO_THREADS", "opt_nothreads");
    if (build("C99 -DBL_NO_SIMD", cc, C_FLAGS, "-DBL_NO_SIMD", src, "opt_nosimd")) run_bin("BL_NO_SIMD", "opt_nosimd");
    if (build("C99 counting allocation hooks", cc, C_FLAGS, "-DOPTOUT_HOOKS", src, "opt_hooks")) run_bin("allocation hooks", "opt_hooks");
    if (build("C99 every opt-out at once", cc, C_FLAGS, "-DBL_NO_MMAP -DBL_NO_THREADS -DBL_NO_SIMD -DOPTOUT_HOOKS", src, "opt_all"))
        run_bin("BL_NO_MMAP + BL_NO_THREADS + BL_NO_SIMD + hooks", "opt_all");
    if (build("C++11 every opt-out at once", cxx, CXX_FLAGS, "-x c++ -DBL_NO_MMAP -DBL_NO_THREADS -DBL_NO_SIMD -DOPTOUT_HOOKS", src,
              "opt_all_cpp"))
        run_bin("C++ with every opt-out", "opt_all_cpp");

    /* only some of the allocation hooks is a configuration error, caught at compile time */
    snprintf(buf, sizeof buf, "%s %s -DBL_MALLOC=malloc -I%s -c %s -o %s/partial.o", cc, C_FLAGS, root, src, tmp);
    CHECK(run(buf) != 0, "BL_MALLOC without BL_REALLOC/BL_FREE compiled: %s", buf);
    snprintf(buf, sizeof buf, "%s/log", tmp);
    probe = tu_read(buf, &n);
    CHECK(probe && strstr(probe, "BL_MALLOC"), "partial hooks: the #error does not name BL_MALLOC");
    free(probe);

    rm_tree(tmp);
    return tu_finish();
}
