// impl.cpp - the implementation compiled as C++ (c++ -std=c++11 -Wall -Wextra
// -pedantic -Werror), linked with noimpl.c compiled as C. Run with the path of
// stories260K.gguf: exits 0 when both halves produce the golden token 432.
#define BERLIN_IMPLEMENTATION
#include "berlin.h"
#include <cstdio>
#include <cstring>

extern "C" int berlin_noimpl_probe(const char *path);

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    bl_model *m = nullptr;
    if (bl_model_load(&m, argv[1], nullptr) != BL_OK) {
        std::printf("load: %s\n", bl_model_last_error(m));
        bl_model_destroy(m);
        return 1;
    }
    const bl_model_info *in = bl_model_get_info(m);
    int32_t ids[16];
    int n = bl_tokenize(bl_model_tokenizer(m), "Once upon a time", -1, ids, 16, BL_TOK_ADD_BOS);
    bl_ctx_desc cd = bl_ctx_desc();
    cd.n_ctx = 32;
    bl_ctx *c = nullptr;
    int tok = -1;
    if (bl_ctx_create(&c, m, &cd) == BL_OK && bl_ctx_decode(c, ids, n, BL_LOGITS_LAST) == BL_OK) tok = bl_ctx_sample(c, nullptr);
    bl_ctx_destroy(c);
    int probe = berlin_noimpl_probe(argv[1]);
    std::printf("c++: dim %d, %d prompt ids, token %d; c probe: token %d\n", in->dim, n, tok, probe);
    bl_model_destroy(m);
    return tok == 432 && probe == 432 && n == 5 ? 0 : 1;
}
