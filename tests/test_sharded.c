/* test_sharded.c - a sharded safetensors checkpoint (model.safetensors.index.json
   naming several shard files, as the Hugging Face hub ships larger models)
   loads and gives the same logits as the single file it was cut from.
   The shards are written here from golden/llama3-gqa/hf-f32 (untied output,
   GQA, llama3 RoPE scaling): each tensor goes to shard (i % 3) + 1. */
#define _POSIX_C_SOURCE 200809L
#define BERLIN_IMPLEMENTATION
#include "berlin.h"
#include "testutil.h"
#include <stdlib.h>
#include <unistd.h>

#define N_SHARDS 3

static int write_file(const char *path, const void *a, size_t na, const void *b, size_t nb, const void *c, size_t nc) {
    FILE *f = fopen(path, "wb");
    int ok;
    if (!f) return 0;
    ok = fwrite(a, 1, na, f) == na && (!nb || fwrite(b, 1, nb, f) == nb) && (!nc || fwrite(c, 1, nc, f) == nc);
    return fclose(f) == 0 && ok;
}

/* Cut src (a single safetensors file) into N_SHARDS files plus an index in dir. */
static int make_shards(const char *src_dir, const char *dir) {
    char path[1024], *buf, *hdr[N_SHARDS], *index;
    size_t len, hl[N_SHARDS], il = 0, dl[N_SHARDS];
    uint8_t *data[N_SHARDS];
    uint64_t hlen;
    bl__json j;
    int i, k, s;
    snprintf(path, sizeof path, "%s/model.safetensors", src_dir);
    buf = tu_read(path, &len);
    if (!buf || len < 8) return 0;
    memcpy(&hlen, buf, 8);
    if (bl__json_parse(&j, buf + 8, (size_t)hlen) != 0) return 0;
    index = (char *)malloc(1 << 20);
    for (s = 0; s < N_SHARDS; s++) {
        hdr[s] = (char *)malloc(1 << 20);
        data[s] = (uint8_t *)malloc(len);
        hl[s] = (size_t)sprintf(hdr[s], "{");
        dl[s] = 0;
    }
    il = (size_t)sprintf(index, "{\"metadata\":{\"total_size\":%llu},\"weight_map\":{", (unsigned long long)(len - 8 - hlen));
    for (i = 0, k = 1; i < j.nodes[0].n; i++) {
        int v = j.nodes[k].next, off = bl__json_get(&j, v, "data_offsets"), sh = bl__json_get(&j, v, "shape");
        const char *key = j.src + j.nodes[k].start;
        int klen = (int)(j.nodes[k].end - j.nodes[k].start);
        double o0, o1;
        k = j.nodes[v].next;
        if (klen == 12 && !memcmp(key, "__metadata__", 12)) continue;
        s = i % N_SHARDS;
        bl__json_num(&j, bl__json_at(&j, off, 0), &o0);
        bl__json_num(&j, bl__json_at(&j, off, 1), &o1);
        memcpy(data[s] + dl[s], buf + 8 + hlen + (size_t)o0, (size_t)(o1 - o0));
        hl[s] += (size_t)sprintf(hdr[s] + hl[s], "%s\"%.*s\":{\"dtype\":\"F32\",\"shape\":%.*s,\"data_offsets\":[%zu,%zu]}",
                                 hl[s] > 1 ? "," : "", klen, key, (int)(j.nodes[sh].end - j.nodes[sh].start), j.src + j.nodes[sh].start,
                                 dl[s], dl[s] + (size_t)(o1 - o0));
        dl[s] += (size_t)(o1 - o0);
        il += (size_t)sprintf(index + il, "%s\"%.*s\":\"model-%05d-of-%05d.safetensors\"", il > 60 && index[il - 1] != '{' ? "," : "", klen,
                              key, s + 1, N_SHARDS);
    }
    il += (size_t)sprintf(index + il, "}}");
    for (s = 0; s < N_SHARDS; s++) {
        uint64_t n;
        hl[s] += (size_t)sprintf(hdr[s] + hl[s], "}");
        n = hl[s];
        snprintf(path, sizeof path, "%s/model-%05d-of-%05d.safetensors", dir, s + 1, N_SHARDS);
        if (!write_file(path, &n, 8, hdr[s], hl[s], data[s], dl[s])) return 0;
        free(hdr[s]);
        free(data[s]);
    }
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (!write_file(path, index, il, NULL, 0, NULL, 0)) return 0;
    free(index);
    {
        size_t cl;
        char *cfg;
        snprintf(path, sizeof path, "%s/config.json", src_dir);
        cfg = tu_read(path, &cl);
        snprintf(path, sizeof path, "%s/config.json", dir);
        if (!cfg || !write_file(path, cfg, cl, NULL, 0, NULL, 0)) return 0;
        free(cfg);
    }
    bl__json_free(&j);
    free(buf);
    return 1;
}

static float *logits_of(const char *path, const int32_t *ids, int n, int *nv) {
    bl_model *m = NULL;
    bl_ctx *c = NULL;
    float *out = NULL;
    bl_result r = bl_model_load(&m, path, NULL);
    CHECK(r == BL_OK, "load %s: %s", path, bl_model_last_error(m));
    if (r == BL_OK && bl_ctx_create(&c, m, NULL) == BL_OK && bl_ctx_decode(c, ids, n, BL_LOGITS_ALL) == BL_OK) {
        *nv = bl_model_get_info(m)->n_vocab;
        out = (float *)malloc((size_t)n * (size_t)*nv * sizeof(float));
        memcpy(out, bl_ctx_logits(c, 0), (size_t)n * (size_t)*nv * sizeof(float));
    }
    bl_ctx_destroy(c);
    bl_model_destroy(m);
    return out;
}

int main(void) {
    static const int32_t ids[12] = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 400, 428};
    char dir[] = "/tmp/berlin-sharded-XXXXXX";
    const char *src = tu_shared("golden/llama3-gqa/hf-f32");
    float *a, *b;
    int nv = 0, nv2 = 0, s;
    char path[1024];
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    CHECK(make_shards(src, dir), "writing shards of %s into %s", src, dir);
    a = logits_of(src, ids, 12, &nv);
    b = logits_of(dir, ids, 12, &nv2);
    CHECK(a && b && nv == nv2 && nv > 0, "both load and decode");
    if (a && b && nv == nv2) CHECK(memcmp(a, b, (size_t)12 * (size_t)nv * sizeof(float)) == 0, "sharded logits equal the single file's");
    {   /* a shard missing: a clear error naming it */
        bl_model *m = NULL;
        snprintf(path, sizeof path, "%s/model-00002-of-%05d.safetensors", dir, N_SHARDS);
        unlink(path);
        CHECK(bl_model_load(&m, dir, NULL) != BL_OK && strstr(bl_model_last_error(m), "model-00002-of"), "missing shard: %s",
              bl_model_last_error(m));
        bl_model_destroy(m);
    }
    for (s = 1; s <= N_SHARDS; s++) {
        snprintf(path, sizeof path, "%s/model-%05d-of-%05d.safetensors", dir, s, N_SHARDS);
        unlink(path);
    }
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/config.json", dir);
    unlink(path);
    rmdir(dir);
    free(a);
    free(b);
    return tu_finish();
}
