/* optout.c - the implementation under the configuration macros, compiled by
   test_compile.c as C99 (and as C++) with any of -DBL_NO_MMAP,
   -DBL_NO_THREADS, -DBL_NO_SIMD and -DOPTOUT_HOOKS (counting BL_MALLOC /
   BL_REALLOC / BL_FREE hooks). Run with the path of stories260K.gguf: exits
   0 when the first greedy token is the golden 432 and, with the hooks, every
   allocation went through them and was freed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef OPTOUT_HOOKS
static long optout_live, optout_total;
static void *optout_malloc(size_t n) {
    void *p = malloc(n);
    if (p) { optout_live++; optout_total++; }
    return p;
}
static void *optout_realloc(void *p, size_t n) {
    void *q = realloc(p, n);
    if (q && !p) { optout_live++; optout_total++; }
    return q;
}
static void optout_free(void *p) {
    if (p) optout_live--;
    free(p);
}
#define BL_MALLOC(n) optout_malloc(n)
#define BL_REALLOC(p, n) optout_realloc(p, n)
#define BL_FREE(p) optout_free(p)
#endif

#define BERLIN_IMPLEMENTATION
#include "berlin.h"

int main(int argc, char **argv) {
    static const int32_t prompt[5] = {1, 403, 407, 261, 378};
    bl_model *m = NULL;
    bl_ctx *c = NULL;
    bl_ctx_desc cd;
    int tok = -1, ok;
    bl_result r;
    if (argc < 2) return 2;
    r = bl_model_load(&m, argv[1], NULL);
    if (r != BL_OK) printf("load: %s\n", bl_model_last_error(m));
    memset(&cd, 0, sizeof cd);
    cd.n_ctx = 32;
    if (r == BL_OK) r = bl_ctx_create(&c, m, &cd);
    if (r == BL_OK) r = bl_ctx_decode(c, prompt, 5, BL_LOGITS_LAST);
    if (r == BL_OK) tok = bl_ctx_sample(c, NULL);
    bl_ctx_destroy(c);
    bl_model_destroy(m);
    ok = tok == 432;
    printf("token %d", tok);
#ifdef OPTOUT_HOOKS
    printf(", %ld allocations through the hooks, %ld live", optout_total, optout_live);
    ok = ok && optout_total > 0 && optout_live == 0;
#endif
    printf("\n");
    return ok ? 0 : 1;
}
