/* noimpl.c - berlin.h included plainly (no BERLIN_IMPLEMENTATION), compiled
   as C99 and as C++ by test_compile.c. Linked against impl.cpp it also
   proves that C code calls the C++-compiled implementation through the
   header's extern "C" block. */
#include "berlin.h"
#include <string.h>

#ifdef __cplusplus
extern "C"
#endif
int berlin_noimpl_probe(const char *path);

/* Load the model at path and return its first greedy token after
   BOS "Once upon a time", or a negative bl_result. */
int berlin_noimpl_probe(const char *path) {
    static const int32_t prompt[5] = {1, 403, 407, 261, 378};
    bl_model *m = NULL;
    bl_ctx *c = NULL;
    bl_ctx_desc cd;
    bl_result r = bl_model_load(&m, path, NULL);
    int tok = -100;
    memset(&cd, 0, sizeof cd);
    cd.n_ctx = 32;
    if (r == BL_OK) r = bl_ctx_create(&c, m, &cd);
    if (r == BL_OK) r = bl_ctx_decode(c, prompt, 5, BL_LOGITS_LAST);
    if (r == BL_OK) tok = bl_ctx_sample(c, NULL);
    bl_ctx_destroy(c);
    bl_model_destroy(m);
    return r == BL_OK ? tok : (int)r;
}
