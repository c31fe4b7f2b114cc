/* testutil.h - the few helpers every test main shares.
   A test includes berlin.h with BERLIN_IMPLEMENTATION (so it may use the
   private bl__ helpers such as the JSON reader), counts checks with CHECK,
   and ends with `return tu_finish();`, which prints "N passed, N failed". */
#ifndef BERLIN_TESTUTIL_H
#define BERLIN_TESTUTIL_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int tu_passed, tu_failed;

#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        if (cond) tu_passed++;                                             \
        else {                                                             \
            tu_failed++;                                                   \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                    \
            printf(__VA_ARGS__);                                           \
            printf("\n");                                                  \
        }                                                                  \
    } while (0)

static int tu_finish(void) {
    printf("%d passed, %d failed\n", tu_passed, tu_failed);
    return tu_failed ? 1 : 0;
}

/* $BERLIN_SHARED (default ../shared) joined with rel, in a static buffer ring. */
static const char *tu_shared(const char *rel) {
    static char bufs[8][1024];
    static int k;
    const char *base = getenv("BERLIN_SHARED");
    char *b = bufs[k++ & 7];
    snprintf(b, 1024, "%s/%s", base && *base ? base : "../shared", rel);
    return b;
}

/* Whole file into a malloc'd, NUL-terminated buffer (NULL if unreadable). */
static char *tu_read(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    char *b;
    long n;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    b = (char *)malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) { free(b); b = NULL; }
    fclose(f);
    if (b) { b[n] = 0; if (len) *len = (size_t)n; }
    return b;
}

#ifdef _POSIX_C_SOURCE
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>
/* Remove a temporary folder and everything below it. */
#if defined(__GNUC__) || defined(__clang__)
__attribute__((unused))
#endif
static void rm_tree(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[1024];
    struct stat st;
    if (!d) return;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (stat(p, &st) == 0 && S_ISDIR(st.st_mode)) rm_tree(p);
        else remove(p);
    }
    closedir(d);
    rmdir(dir);
}
#endif
#endif
