/* berlin-bench - prompt-processing and generation speed, like llama-bench.

   usage: berlin-bench [-m MODEL]... [-p N,N] [-n N,N] [-pg PP,TG] [-d N,N] [-t N,N] [-r REPS] [-o md|json|jsonl|csv]

   For every model and thread count: a pp test per -p value (one
   bl_ctx_decode of N tokens from an empty cache, logits of the last token
   only), a tg test per -n value (N single-token decodes from an empty
   cache) and a pp+tg test per -pg (both, timed together). With -d, every
   test runs once per depth, after that many tokens were decoded untimed
   (llama-bench's "tg128 @ d1024"): decoding far into a context reads the
   KV cache as well as the weights. Each test runs REPS times after one warm-up decode; the table
   shows the median tokens/s with the min-max range and the standard
   deviation. JSON/CSV records use llama-bench's field names (avg_ns,
   avg_ts, samples_ts, ...), so scripts written for one read the other;
   berlin's own fields are appended (median_ts, weight_bytes_per_token,
   effective_gbps, mem_read_gbps, mem_read_share).

   Why the bandwidth figure: token generation on a CPU is bound by reading
   the weights once per token, so bytes/token * tokens/s, set against what
   this machine can read at all (a STREAM-style sum over a buffer far larger
   than the caches, same thread count, best of a few), says how close the
   kernels are to the limit. For models larger than the caches the read test
   runs between the reps too, and the share is the median of the reps'
   shares, each against the read tests just before and after it.

   --kernels times the one-token decoding kernels of every weight type
   instead (the level BL_SIMD names or the best, pieces of 16 rows per call
   as decoding takes them): rows of random blocks read by one thread from L2
   (256 KiB of them, over and over) and from memory (256 MiB on huge pages
   where the system gives them, as the loader's copies are), in GB/s of
   weight bytes; then by the first -t thread count (all cores by default),
   each thread one contiguous share as decoding splits a matrix, with the
   read loop of the bandwidth test over the same bytes just before each
   pass. From L2 it is the kernel's arithmetic; from memory, what one core
   reads through it; the share, how close all the threads come to what
   the machine reads at all in the same seconds (best of 5 each). */
#define _POSIX_C_SOURCE 200809L
#define BERLIN_IMPLEMENTATION
#include "berlin.h"
#include <time.h>

#define BN_MAX 32
#define BN_PAIRED_MIN ((uint64_t)64 << 20) /* weights far beyond the caches: read tests between the reps */

typedef struct bn_list { int v[BN_MAX]; int n; } bn_list;

typedef struct bn_result {
    const char *model;
    char model_type[96];
    uint64_t model_size, n_params, weight_bytes;
    int n_threads, n_prompt, n_gen, n_depth, n_batch, reps, use_mmap, kv_f16;
    double *ns, *ts;            /* (reps) */
    double *bw;                 /* (reps + 1) read bandwidth before, between and after the reps; NULL: once after them */
    double avg_ns, sd_ns, avg_ts, sd_ts, med_ts, min_ts, max_ts;
    double bytes_per_token, eff_gbps, mem_gbps, share;
    char test_time[32];
} bn_result;

static double bn_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int bn_parse_list(const char *s, bn_list *l) {
    l->n = 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 0 || v > 1000000 || l->n == BN_MAX) return 0;
        l->v[l->n++] = (int)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return 0;
    }
    return l->n > 0;
}

/* STREAM-style read bandwidth in GB/s: sum a buffer much larger than the
   caches, best of `passes` after one untimed. Measured at start and again
   with every test, since on a shared machine what the others are doing
   changes it from second to second. */
static double bn_mem_read_gbps(const uint64_t *buf, size_t n, int threads, int passes) {
    double best = 0;
    size_t i;
    int rep;
    volatile uint64_t sink = 0;
    if (!buf) return 0;
    for (rep = 0; rep <= passes; rep++) {
        uint64_t s0 = 0;
        double t0 = bn_now(), dt;
        (void)threads;
        /* an integer sum vectorizes (it is associative), so the loop is bound by the loads */
        BL__OMP(omp parallel for simd num_threads(threads) schedule(static) reduction(+:s0))
        for (i = 0; i < n; i++) s0 += buf[i];
        dt = bn_now() - t0;
        sink += s0;
        if (rep > 0 && (double)(n * sizeof(uint64_t)) / dt > best) best = (double)(n * sizeof(uint64_t)) / dt; /* bytes/ns = GB/s */
    }
    (void)sink;
    return best;
}

/* The median of v[0, n), n <= 1024 (reps are at most 1000). */
static double bn_median(const double *v, int n) {
    double tmp[1024];
    int i, k;
    if (n <= 0) return 0;
    if (n > 1024) n = 1024;
    for (i = 0; i < n; i++) { /* insertion sort */
        for (k = i; k > 0 && tmp[k - 1] > v[i]; k--) tmp[k] = tmp[k - 1];
        tmp[k] = v[i];
    }
    return n % 2 ? tmp[n / 2] : 0.5 * (tmp[n / 2 - 1] + tmp[n / 2]);
}

static void bn_stats(bn_result *r) {
    int i;
    double s = 0, st = 0;
    int n = r->reps;
    for (i = 0; i < n; i++) {
        r->ts[i] = (double)(r->n_prompt + r->n_gen) * 1e9 / r->ns[i];
        s += r->ns[i];
        st += r->ts[i];
    }
    r->avg_ns = s / n;
    r->avg_ts = st / n;
    r->sd_ns = r->sd_ts = 0;
    if (n > 1) {
        double a = 0, b = 0;
        for (i = 0; i < n; i++) { a += (r->ns[i] - r->avg_ns) * (r->ns[i] - r->avg_ns); b += (r->ts[i] - r->avg_ts) * (r->ts[i] - r->avg_ts); }
        r->sd_ns = sqrt(a / (n - 1));
        r->sd_ts = sqrt(b / (n - 1));
    }
    r->min_ts = r->max_ts = r->ts[0];
    for (i = 1; i < n; i++) {
        if (r->ts[i] < r->min_ts) r->min_ts = r->ts[i];
        if (r->ts[i] > r->max_ts) r->max_ts = r->ts[i];
    }
    r->med_ts = bn_median(r->ts, n);
}

static void bn_human(double v, char *out, size_t cap, const char *const units[4]) {
    if (v >= 1e9) snprintf(out, cap, "%.2f %s", v / 1e9, units[3]);
    else if (v >= 1e6) snprintf(out, cap, "%.2f %s", v / 1e6, units[2]);
    else if (v >= 1e3) snprintf(out, cap, "%.2f %s", v / 1e3, units[1]);
    else snprintf(out, cap, "%.0f %s", v, units[0]);
}

static void bn_size(uint64_t b, char *out, size_t cap) {
    if (b >= (1ull << 30)) snprintf(out, cap, "%.2f GiB", (double)b / (1ull << 30));
    else if (b >= (1ull << 20)) snprintf(out, cap, "%.2f MiB", (double)b / (1ull << 20));
    else snprintf(out, cap, "%.2f KiB", (double)b / 1024);
}

static void bn_json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s < 0x20) fprintf(f, "\\u%04x", *s);
        else fputc(*s, f);
    }
    fputc('"', f);
}

static void bn_cpu_info(char *out, size_t cap) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];
    snprintf(out, cap, "unknown CPU");
    if (!f) return;
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "model name", 10)) {
            char *p = strchr(line, ':');
            if (p) {
                p++;
                while (*p == ' ') p++;
                p[strcspn(p, "\n")] = 0;
                snprintf(out, cap, "%s", p);
            }
            break;
        }
    }
    fclose(f);
}

/* One record, llama-bench's fields first; one line when oneline (jsonl). */
static void bn_print_json(FILE *f, const bn_result *r, const char *cpu, int oneline) {
    const char *pre = oneline ? " " : "\n    ";
    int i;
    fprintf(f, "%s{", oneline ? "" : "  ");
#define BN_S(k, v) do { fprintf(f, "%s\"%s\": ", pre, k); bn_json_str(f, v); fputc(',', f); } while (0)
#define BN_N(k, fmt, v) fprintf(f, "%s\"%s\": " fmt ",", pre, k, v)
    BN_S("build_commit", "berlin.h");
    BN_N("build_number", "%d", BERLIN_VERSION_MAJOR * 10000 + BERLIN_VERSION_MINOR * 100 + BERLIN_VERSION_PATCH);
    BN_S("cpu_info", cpu);
    BN_S("gpu_info", "");
    BN_S("backends", "CPU");
    BN_S("model_filename", r->model);
    BN_S("model_type", r->model_type);
    BN_N("model_size", "%llu", (unsigned long long)r->model_size);
    BN_N("model_n_params", "%llu", (unsigned long long)r->n_params);
    BN_N("n_batch", "%d", r->n_batch);
    BN_N("n_ubatch", "%d", r->n_batch);
    BN_N("n_threads", "%d", r->n_threads);
    BN_S("cpu_mask", "0x0");
    BN_N("cpu_strict", "%s", "false");
    BN_N("poll", "%d", 50);
    BN_S("type_k", r->kv_f16 ? "f16" : "f32");
    BN_S("type_v", r->kv_f16 ? "f16" : "f32");
    BN_N("n_gpu_layers", "%d", 0);
    BN_S("split_mode", "layer");
    BN_N("main_gpu", "%d", 0);
    BN_N("no_kv_offload", "%s", "false");
    BN_N("flash_attn", "%s", "false");
    BN_S("tensor_split", "0.00");
    BN_N("use_mmap", "%s", r->use_mmap ? "true" : "false");
    BN_N("embeddings", "%s", "false");
    BN_N("n_prompt", "%d", r->n_prompt);
    BN_N("n_gen", "%d", r->n_gen);
    BN_N("n_depth", "%d", r->n_depth);
    BN_S("test_time", r->test_time);
    BN_N("avg_ns", "%.0f", r->avg_ns);
    BN_N("stddev_ns", "%.0f", r->sd_ns);
    BN_N("avg_ts", "%.6f", r->avg_ts);
    BN_N("stddev_ts", "%.6f", r->sd_ts);
    fprintf(f, "%s\"samples_ns\": [", pre);
    for (i = 0; i < r->reps; i++) fprintf(f, "%s%.0f", i ? ", " : " ", r->ns[i]);
    fprintf(f, " ],%s\"samples_ts\": [", pre);
    for (i = 0; i < r->reps; i++) fprintf(f, "%s%.6f", i ? ", " : " ", r->ts[i]);
    fprintf(f, " ],");
    BN_N("median_ts", "%.6f", r->med_ts);
    BN_N("min_ts", "%.6f", r->min_ts);
    BN_N("max_ts", "%.6f", r->max_ts);
    BN_N("weight_bytes_per_token", "%.0f", r->bytes_per_token);
    BN_N("effective_gbps", "%.4f", r->eff_gbps);
    BN_N("mem_read_gbps", "%.4f", r->mem_gbps);
    fprintf(f, "%s\"mem_read_share\": %.4f%s}", pre, r->share, oneline ? " " : "\n  ");
#undef BN_S
#undef BN_N
}

static void bn_print_csv_head(FILE *f) {
    fprintf(f, "build_commit,build_number,cpu_info,backends,model_filename,model_type,model_size,model_n_params,n_batch,n_ubatch,n_threads,"
               "type_k,type_v,n_prompt,n_gen,n_depth,test_time,avg_ns,stddev_ns,avg_ts,stddev_ts,median_ts,min_ts,max_ts,"
               "weight_bytes_per_token,effective_gbps,mem_read_gbps,mem_read_share\n");
}

static void bn_print_csv(FILE *f, const bn_result *r, const char *cpu) {
    fprintf(f, "\"berlin.h\",%d,\"%s\",\"CPU\",\"%s\",\"%s\",%llu,%llu,%d,%d,%d,\"%s\",\"%s\",%d,%d,%d,\"%s\",%.0f,%.0f,%.6f,%.6f,%.6f,%.6f,%.6f,%.0f,%.4f,%.4f,%.4f\n",
            BERLIN_VERSION_MAJOR * 10000 + BERLIN_VERSION_MINOR * 100 + BERLIN_VERSION_PATCH, cpu, r->model, r->model_type,
            (unsigned long long)r->model_size, (unsigned long long)r->n_params, r->n_batch, r->n_batch, r->n_threads, r->kv_f16 ? "f16" : "f32",
            r->kv_f16 ? "f16" : "f32", r->n_prompt, r->n_gen, r->n_depth,
            r->test_time, r->avg_ns, r->sd_ns, r->avg_ts, r->sd_ts, r->med_ts, r->min_ts, r->max_ts, r->bytes_per_token, r->eff_gbps, r->mem_gbps,
            r->share);
}

/* As llama-bench names its tests: pp512, tg128, pp512+tg128, tg128 @ d1024. */
static void bn_test_name(const bn_result *r, char *s, size_t cap) {
    int n = 0;
    if (r->n_prompt && r->n_gen) n = snprintf(s, cap, "pp%d+tg%d", r->n_prompt, r->n_gen);
    else if (r->n_gen) n = snprintf(s, cap, "tg%d", r->n_gen);
    else n = snprintf(s, cap, "pp%d", r->n_prompt);
    if (r->n_depth && n > 0 && (size_t)n < cap) snprintf(s + n, cap - (size_t)n, " @ d%d", r->n_depth);
}

static void bn_print_md_head(FILE *f) {
    fprintf(f, "| model | size | params | backend | threads | test | t/s | min - max | GB/s | %% of read bw |\n");
    fprintf(f, "| ----- | ---: | -----: | ------- | ------: | ---: | --: | --------: | ---: | -----------: |\n");
}

static void bn_print_md(FILE *f, const bn_result *r) {
    static const char *const pu[4] = {"", "K", "M", "B"};
    char size[32], params[32], test[64];
    bn_size(r->model_size, size, sizeof size);
    bn_human((double)r->n_params, params, sizeof params, pu);
    bn_test_name(r, test, sizeof test);
    fprintf(f, "| %s | %s | %s | CPU | %d | %s | %.2f ± %.2f | %.2f - %.2f | %.2f | %.1f%% |\n", r->model_type, size, params, r->n_threads, test,
            r->med_ts, r->sd_ts, r->min_ts, r->max_ts, r->eff_gbps, 100.0 * r->share);
}

/* n bytes of private memory (n a multiple of 2 MiB), on huge pages where
   the system gives them (the loader's bl__huge_alloc); NULL if none. */
static void *bn_map(size_t n) {
#ifdef BL__MADVISE
    return bl__huge_alloc(n);
#else
    return malloc(n);
#endif
}

/* Rows [r0, r1) of one matrix by one token, in pieces of 16 rows as
   decoding takes them; the sum of the outputs. */
static float bn_krows(const bl__kern *k, int type, const uint8_t *w, size_t rb, size_t r0, size_t r1, const bl__q8a *a, const float *xf,
                      const uint16_t *xb, int64_t K) {
    float s = 0;
    size_t r;
    for (r = r0; r < r1; r += 16) {
        const int nr = r1 - r < 16 ? (int)(r1 - r) : 16;
        float y[16];
        int yi;
        if (type == BL_TYPE_BF16) k->gemm_bf16(type, w + r * rb, rb, nr, (const uint8_t *)xb, 0, 1, K, y, 1);
        else if (type == BL_TYPE_F32 || type == BL_TYPE_F16) k->gemm_f(type, w + r * rb, rb, nr, (const uint8_t *)xf, 0, 1, K, y, 1);
        else k->vrows[bl__qslot(type)](w + r * rb, rb, nr, a, K, y);
        for (yi = 0; yi < nr; yi++) s += y[yi];
    }
    return s;
}

/* --kernels: see the comment at the top. */
static int bn_kernels(size_t mib, int threads) {
    static const int types[] = {BL__TYPE_Q4_0R, BL_TYPE_Q4_0, BL_TYPE_Q8_0, BL__TYPE_Q4_KR, BL_TYPE_Q4_K, BL_TYPE_Q6_K, BL_TYPE_BF16, BL_TYPE_F16, BL_TYPE_F32};
    static const int64_t Ks[] = {768, 2048, 5632};
    const size_t mem = mib << 20;
    bl__kern k;
    uint8_t *w = (uint8_t *)bn_map(mem), *act = (uint8_t *)malloc(bl__q8a_stride(5632));
    float *x = (float *)malloc(5632 * sizeof(float));
    uint16_t *xb = (uint16_t *)malloc(5632 * sizeof(uint16_t));
    uint32_t seed = 1;
    int ti, ki, pass;
    size_t i;
    if (!w || !act || !x || !xb) {
        fprintf(stderr, "berlin-bench: out of memory\n");
        free(act);
        free(x);
        free(xb);
        return 1;
    }
    bl__kern_select(&k);
    for (i = 0; i < mem; i++) { seed = seed * 1664525u + 1013904223u; w[i] = (uint8_t)(seed >> 24); }
    for (i = 0; i < 5632; i++) { seed = seed * 1664525u + 1013904223u; x[i] = (float)(seed >> 8) / 16777216.0f - 0.5f; }
    k.bf16a(x, 5632, xb);
    printf("| kernel (%s) | K | from L2 (GB/s) | from memory (GB/s) | ns/row (memory) | %d threads (GB/s) | read loop, %d threads (GB/s) | share |\n"
           "|---|---:|---:|---:|---:|---:|---:|---:|\n", k.name, threads, threads);
    for (ti = 0; ti < (int)(sizeof types / sizeof *types); ti++)
        for (ki = 0; ki < (int)(sizeof Ks / sizeof *Ks); ki++) {
            const int type = types[ti], base = type == BL__TYPE_Q4_0R ? BL_TYPE_Q4_0 : type == BL__TYPE_Q4_KR ? BL_TYPE_Q4_K : type;
            const int64_t K = Ks[ki];
            const size_t rb = bl__row_bytes(base, K), rows = mem / rb, bs = (size_t)bl__types[base].bytes;
            const bl__q8a a = bl__q8a_at(act, K);
            double gbs[3] = {0, 0, 0}, rd = 0, ns_row = 0;
            volatile float sink = 0;
            for (i = 0; i < rows * rb; i += bs) { /* sane scales and floats (about 0.01 to 1): random bits would be NaNs and infinities */
                const uint16_t d = 0x211f;
                if (base == BL_TYPE_Q4_0 || base == BL_TYPE_Q8_0 || base == BL_TYPE_Q4_K) memcpy(w + i, &d, 2);
                if (base == BL_TYPE_Q4_K) memcpy(w + i + 2, &d, 2);
                if (base == BL_TYPE_Q6_K) memcpy(w + i + 208, &d, 2);
                if (base == BL_TYPE_F16 || base == BL_TYPE_BF16) w[i + 1] = (uint8_t)(0x20 + (w[i + 1] & 0x1f)); /* F16 2^-7..2^0, BF16 about 1e-19..1 */
                if (base == BL_TYPE_F32) w[i + 3] = (uint8_t)(0x3c + (w[i + 3] & 3));
            }
            if (type != base) { /* rearranged in place, a row at a time, as the loader does */
                bl__weight W;
                memset(&W, 0, sizeof W);
                W.type = base;
                W.rows = (int64_t)rows;
                W.cols = K;
                W.row_bytes = rb;
                bl__q4_0r_in_place(&W, w);
            }
            bl__quant_act(&k, x, K, act, 1);
            for (pass = 0; pass < 3; pass++) { /* 0: L2, 1: memory, 2: memory with the threads, beside the read loop */
                const size_t n = pass ? rows : ((size_t)256 << 10) / rb;
                double best = 0, t0, t;
                int rep;
                for (rep = 0; rep < 5; rep++) {
                    size_t reps = pass ? 1 : (size_t)(64e6 / (double)(n * rb)) + 1, rr;
                    float s = 0;
                    if (pass == 2) { /* the read loop just before, over the same bytes: the seconds the kernel runs in */
                        const double g = bn_mem_read_gbps((const uint64_t *)(const void *)w, rows * rb / sizeof(uint64_t), threads, 1);
                        if (g > rd) rd = g;
                    }
                    t0 = bn_now();
                    if (pass < 2)
                        for (rr = 0; rr < reps; rr++) s += bn_krows(&k, type, w, rb, 0, n, &a, x, xb, K);
                    else {
                        int th;
                        BL__OMP(omp parallel for num_threads(threads) schedule(static, 1) reduction(+:s))
                        for (th = 0; th < threads; th++) /* one contiguous share each, as decoding splits a matrix */
                            s += bn_krows(&k, type, w, rb, n * (size_t)th / (size_t)threads, n * (size_t)(th + 1) / (size_t)threads, &a, x, xb, K);
                    }
                    t = bn_now() - t0;
                    sink = s;
                    if (best == 0 || (double)(reps * n * rb) / t > best) { best = (double)(reps * n * rb) / t; if (pass == 1) ns_row = t / (double)n; }
                }
                gbs[pass] = best;
            }
            printf("| %s | %d | %.1f | %.1f | %.1f | %.1f | %.1f | %.0f%% |\n",
                   type == BL__TYPE_Q4_0R ? "Q4_0R (Q4_0 copied)" : type == BL__TYPE_Q4_KR ? "Q4_KR (Q4_K copied)" : bl__type_any_name(type), (int)K, gbs[0], gbs[1],
                   ns_row, gbs[2], rd, rd > 0 ? 100.0 * gbs[2] / rd : 0.0);
            fflush(stdout);
            (void)sink;
        }
    free(act); /* w stays mapped until the process ends */
    free(x);
    free(xb);
    return 0;
}

static void bn_usage(FILE *f) {
    fprintf(f, "usage: berlin-bench [options]\n"
               "  -m, --model FILE       model (repeatable, or a comma list) [models/stories260K.gguf]\n"
               "  -p, --n-prompt N,...   prompt tokens of the pp tests, 0: none [512]\n"
               "  -n, --n-gen N,...      generated tokens of the tg tests, 0: none [128]\n"
               "  -pg PP,TG              a test of PP prompt tokens then TG generated ones, timed\n"
               "                         together, t/s = (PP + TG) / time (repeatable) [none]\n"
               "  -d, --n-depth N,...    tokens already in the cache before each test (a prompt\n"
               "                         decoded untimed first), for speed in a long context [0]\n"
               "  -t, --threads N,...    thread counts [all cores]\n"
               "  -r, --repetitions N    runs per test [5]\n"
               "  -b, --batch-size N     tokens per forward step in pp [512]\n"
               "  -o, --output FMT       md, json, jsonl or csv [md]\n"
               "  -mmp, --mmap 0|1       1: weights stay mapped (BL_WEIGHTS_MAPPED); 0: copied into\n"
               "                         huge pages, Q4_0/Q4_K rearranged (BL_WEIGHTS_COPIED) [the library's choice]\n"
               "  -ctk, -ctv f16|f32     type of the KV cache (K and V have one type) [f16, as llama-bench]\n"
               "  --bw-mib N             buffer of the read-bandwidth test in MiB, 0: skip [1024]\n"
               "  --no-warmup            skip the warm-up decode\n"
               "  --kernels              time the one-token decoding kernels instead: one thread, then the\n"
               "                         first -t count beside a read loop (see the source)\n"
               "  --kernel-mib N         memory the --kernels rows are read from, in MiB [256]\n");
}

int main(int argc, char **argv) {
    const char *models[BN_MAX];
    char *model_buf[BN_MAX];
    int n_models = 0, n_bufs = 0;
    bn_list pl, nl, tl, dl, pgp, pgn;
    int reps = 5, n_batch = 512, warmup = 1, kernels = 0, use_mmap = -1, i, mi, ti, k, rc = 0, first = 1, kv[2] = {1, 1};
    bl_model_desc desc;
    size_t bw_mib = 1024, kernel_mib = 256;
    const char *fmt = "md";
    char cpu[256];
    double mem_gbps[BN_MAX];
    uint64_t *bw_buf = NULL;
    size_t bw_n = 0;
    FILE *out = stdout;
    pl.n = nl.n = tl.n = pgp.n = pgn.n = 0;
    pl.v[pl.n++] = 512;
    nl.v[nl.n++] = 128;
    dl.n = 1;
    dl.v[0] = 0;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define BN_IS(s, l) (!strcmp(a, s) || !strcmp(a, l))
        if (BN_IS("-h", "--help")) { bn_usage(stdout); return 0; }
        else if (!strcmp(a, "--no-warmup")) warmup = 0;
        else if (!strcmp(a, "--kernels")) kernels = 1;
        else if (!v) { fprintf(stderr, "berlin-bench: '%s' needs a value\n", a); bn_usage(stderr); return 1; }
        else if (BN_IS("-m", "--model")) {
            char *s = (char *)malloc(strlen(v) + 1), *tok;
            if (!s || n_bufs == BN_MAX) { free(s); fprintf(stderr, "berlin-bench: too many models\n"); return 1; }
            strcpy(s, v);
            model_buf[n_bufs++] = s;
            for (tok = strtok(s, ","); tok; tok = strtok(NULL, ","))
                if (n_models < BN_MAX) models[n_models++] = tok;
            i++;
        } else if (BN_IS("-p", "--n-prompt")) { if (!bn_parse_list(v, &pl)) goto badval; i++; }
        else if (BN_IS("-n", "--n-gen")) { if (!bn_parse_list(v, &nl)) goto badval; i++; }
        else if (BN_IS("-t", "--threads")) { if (!bn_parse_list(v, &tl)) goto badval; i++; }
        else if (BN_IS("-d", "--n-depth")) { if (!bn_parse_list(v, &dl)) goto badval; i++; }
        else if (!strcmp(a, "-pg")) {
            bn_list two;
            if (!bn_parse_list(v, &two) || two.n != 2 || !two.v[0] || !two.v[1] || pgp.n == BN_MAX) goto badval;
            pgp.v[pgp.n++] = two.v[0];
            pgn.v[pgn.n++] = two.v[1];
            i++;
        }
        else if (BN_IS("-r", "--repetitions")) { reps = atoi(v); if (reps < 1 || reps > 1000) goto badval; i++; }
        else if (BN_IS("-b", "--batch-size")) { n_batch = atoi(v); if (n_batch < 1 || n_batch > 8192) goto badval; i++; }
        else if (BN_IS("-o", "--output")) {
            fmt = v;
            if (strcmp(fmt, "md") && strcmp(fmt, "json") && strcmp(fmt, "jsonl") && strcmp(fmt, "csv")) goto badval;
            i++;
        } else if (BN_IS("-ctk", "--cache-type-k") || BN_IS("-ctv", "--cache-type-v")) {
            if (strcmp(v, "f16") && strcmp(v, "f32")) goto badval;
            kv[a[strlen(a) - 1] == 'v'] = v[1] == '1';
            i++;
        } else if (BN_IS("-mmp", "--mmap")) {
            if (strcmp(v, "0") && strcmp(v, "1")) goto badval;
            use_mmap = v[0] == '1';
            i++;
        } else if (!strcmp(a, "--bw-mib")) { bw_mib = (size_t)atol(v); i++; }
        else if (!strcmp(a, "--kernel-mib")) {
            kernel_mib = (size_t)atol(v);
            if (kernel_mib < 1 || kernel_mib > 65536 || kernel_mib > SIZE_MAX >> 20) goto badval;
            i++;
        }
        else { fprintf(stderr, "berlin-bench: unknown option '%s'\n", a); bn_usage(stderr); return 1; }
        continue;
    badval:
        fprintf(stderr, "berlin-bench: bad value '%s' for %s\n", v, a);
        return 1;
#undef BN_IS
    }
    if (!tl.n) {
        int nt = 1;
#if defined(_OPENMP) && !defined(BL_NO_THREADS) /* berlin.h includes omp.h only then */
        nt = omp_get_max_threads();
#endif
        tl.v[tl.n++] = nt;
    }
    if (kernels) {
        for (i = 0; i < n_bufs; i++) free(model_buf[i]);
        if (tl.v[0] < 1) { fprintf(stderr, "berlin-bench: threads must be >= 1\n"); return 1; }
        return bn_kernels(kernel_mib, tl.v[0]);
    }
    if (kv[0] != kv[1]) { fprintf(stderr, "berlin-bench: the K and V caches have one type here (-ctk and -ctv differ)\n"); return 1; }
    if (!n_models) models[n_models++] = "models/stories260K.gguf";
    bn_cpu_info(cpu, sizeof cpu);
    if (bw_mib) {
        size_t w;
        int maxt = 1;
        bw_n = bw_mib * ((size_t)1 << 20) / sizeof(uint64_t);
        bw_buf = (uint64_t *)malloc(bw_n * sizeof(uint64_t));
        if (!bw_buf) fprintf(stderr, "berlin-bench: no memory for the %zu MiB bandwidth buffer: skipped\n", bw_mib);
        for (ti = 0; ti < tl.n; ti++) if (tl.v[ti] > maxt) maxt = tl.v[ti];
        (void)maxt;
        BL__OMP(omp parallel for num_threads(maxt) schedule(static))
        for (w = 0; w < (bw_buf ? bw_n : 0); w++) bw_buf[w] = w; /* first touch by the threads that read it */
    }
    for (ti = 0; ti < tl.n; ti++) {
        if (tl.v[ti] < 1) { fprintf(stderr, "berlin-bench: threads must be >= 1\n"); return 1; }
        mem_gbps[ti] = bn_mem_read_gbps(bw_buf, bw_n, tl.v[ti], 5);
        if (bw_buf) fprintf(stderr, "berlin-bench: read bandwidth, %zu MiB, %d threads: %.2f GB/s\n", bw_mib, tl.v[ti], mem_gbps[ti]);
    }
    if (!strcmp(fmt, "md")) bn_print_md_head(out);
    else if (!strcmp(fmt, "csv")) bn_print_csv_head(out);
    else if (!strcmp(fmt, "json")) fprintf(out, "[\n");
    for (mi = 0; mi < n_models; mi++) {
        bl_model *m = NULL;
        const bl_model_info *in;
        uint64_t total = 0;
        int max_p = 0, max_n = 0, max_d = 0;
        memset(&desc, 0, sizeof desc);
        desc.weights = use_mmap < 0 ? BL_WEIGHTS_AUTO : use_mmap ? BL_WEIGHTS_MAPPED : BL_WEIGHTS_COPIED;
        if (bl_model_load(&m, models[mi], &desc) != BL_OK) {
            fprintf(stderr, "berlin-bench: %s\n", bl_model_last_error(m));
            bl_model_destroy(m);
            rc = 1;
            continue;
        }
        in = bl_model_get_info(m);
        if (in->weights == BL_WEIGHTS_MOVED) { /* time the steady state, not the move */
            const double t0 = bn_now();
            const int moved = bl_model_wait(m);
            fprintf(stderr, "berlin-bench: %s: %s %.2f s after loading\n", models[mi], moved ? "weights moved into private memory" : "weights not moved (stay mapped)",
                    (bn_now() - t0) * 1e-9); /* bn_now: ns */
        }
        for (k = 0; k < m->n_tensors; k++) total += m->tensors[k].nbytes;
        for (k = 0; k < pl.n; k++) if (pl.v[k] > max_p) max_p = pl.v[k];
        for (k = 0; k < nl.n; k++) if (nl.v[k] > max_n) max_n = nl.v[k];
        for (k = 0; k < pgp.n; k++) if (pgp.v[k] + pgn.v[k] > max_n) max_n = pgp.v[k] + pgn.v[k];
        for (k = 0; k < dl.n; k++) if (dl.v[k] > max_d) max_d = dl.v[k];
        for (ti = 0; ti < tl.n; ti++) {
            bl_ctx *c = NULL;
            bl_ctx_desc cd;
            int32_t *toks;
            int test;
            uint64_t rng = 0x9E3779B97F4A7C15ull;
            memset(&cd, 0, sizeof cd);
            cd.n_ctx = max_d + (max_p > max_n ? max_p : max_n) + 2;
            cd.n_batch = n_batch;
            cd.n_threads = tl.v[ti];
            cd.kv_type = kv[0] ? BL_TYPE_F16 : BL_TYPE_F32;
            toks = (int32_t *)malloc((size_t)cd.n_ctx * sizeof *toks);
            if (!toks || bl_ctx_create(&c, m, &cd) != BL_OK) {
                fprintf(stderr, "berlin-bench: %s\n", c ? bl_ctx_last_error(c) : "out of memory");
                bl_ctx_destroy(c);
                free(toks);
                rc = 1;
                continue;
            }
            for (k = 0; k < cd.n_ctx; k++) { /* random tokens, as llama-bench uses */
                rng ^= rng >> 12; rng ^= rng << 25; rng ^= rng >> 27;
                toks[k] = (int32_t)((rng * 0x2545F4914F6CDD1Dull >> 33) % (uint64_t)in->n_vocab);
            }
            if (warmup) {
                bl_ctx_decode(c, toks, 1, BL_LOGITS_LAST);
                bl_ctx_reset(c);
            }
            for (test = 0; test < (pl.n + nl.n + pgp.n) * dl.n; test++) {
                /* for each depth: the pp tests, the tg tests, the pp+tg tests */
                bn_result r;
                const int per = pl.n + nl.n + pgp.n, tt = test % per, depth = dl.v[test / per];
                const int n_pp = tt < pl.n ? pl.v[tt] : tt >= pl.n + nl.n ? pgp.v[tt - pl.n - nl.n] : 0;
                const int n_tg = tt < pl.n ? 0 : tt < pl.n + nl.n ? nl.v[tt - pl.n] : pgn.v[tt - pl.n - nl.n];
                char name[64];
                int rep;
                time_t now = time(NULL);
                struct tm tmv;
                if (n_pp + n_tg <= 0) continue;
                memset(&r, 0, sizeof r);
                r.model = models[mi];
                {
                    static const char *const pu[4] = {"", "K", "M", "B"};
                    char pbuf[32], *sp;
                    bn_human((double)in->n_params, pbuf, sizeof pbuf, pu);
                    sp = strchr(pbuf, ' ');
                    if (sp) memmove(sp, sp + 1, strlen(sp)); /* "1.10B" */
                    snprintf(r.model_type, sizeof r.model_type, "%s %s %s", in->arch, pbuf,
                             bl_type_name(in->weight_type) ? bl_type_name(in->weight_type) : "?");
                }
                r.model_size = total;
                r.n_params = (uint64_t)in->n_params;
                r.weight_bytes = in->weight_bytes;
                r.n_threads = tl.v[ti];
                r.use_mmap = in->weights == BL_WEIGHTS_MAPPED;
                r.kv_f16 = kv[0];
                r.n_batch = n_batch;
                r.n_prompt = n_pp;
                r.n_gen = n_tg;
                r.n_depth = depth;
                r.reps = reps;
                r.ns = (double *)calloc((size_t)reps, sizeof(double));
                r.ts = (double *)calloc((size_t)reps, sizeof(double));
                /* A model that cannot stay in the caches is read from memory
                   at every step, so for it the read test runs before, between
                   and after the reps, and each rep is set against the
                   bandwidth of its own seconds: on a shared machine it moves
                   by half from one second to the next. Between the reps of a
                   smaller model the test would evict it, so it runs once,
                   after them. */
                r.bw = bw_buf && in->weight_bytes >= BN_PAIRED_MIN ? (double *)calloc((size_t)reps + 1, sizeof(double)) : NULL;
                gmtime_r(&now, &tmv);
                strftime(r.test_time, sizeof r.test_time, "%Y-%m-%dT%H:%M:%SZ", &tmv);
                if (!r.ns || !r.ts) { free(r.ns); free(r.ts); free(r.bw); rc = 1; continue; }
                bn_test_name(&r, name, sizeof name);
                fprintf(stderr, "berlin-bench: %s, %d threads, %s ", models[mi], tl.v[ti], name);
                if (r.bw) r.bw[0] = bn_mem_read_gbps(bw_buf, bw_n, tl.v[ti], 3);
                for (rep = 0; rep < reps; rep++) {
                    double t0;
                    bl_result br = BL_OK;
                    bl_ctx_reset(c);
                    if (depth) br = bl_ctx_decode(c, toks, depth, BL_LOGITS_LAST); /* the context the test runs in, untimed */
                    t0 = bn_now();
                    if (n_pp && br == BL_OK) br = bl_ctx_decode(c, toks + depth, n_pp, BL_LOGITS_LAST);
                    for (k = 0; k < n_tg && br == BL_OK; k++) br = bl_ctx_decode(c, toks + depth + n_pp + k, 1, BL_LOGITS_LAST);
                    r.ns[rep] = bn_now() - t0;
                    if (br != BL_OK) { fprintf(stderr, "\nberlin-bench: decode failed: %s\n", bl_ctx_last_error(c)); rc = 1; break; }
                    if (r.bw) r.bw[rep + 1] = bn_mem_read_gbps(bw_buf, bw_n, tl.v[ti], 3);
                    fputc('.', stderr);
                }
                fputc('\n', stderr);
                if (rep == reps) {
                    const int batches = (n_pp + n_batch - 1) / n_batch + n_tg;
                    bn_stats(&r);
                    /* weights are read once per forward step: per batch in pp, per token in tg */
                    r.bytes_per_token = (double)in->weight_bytes * (double)batches / (double)(n_pp + n_tg);
                    r.eff_gbps = r.bytes_per_token * r.med_ts / 1e9;
                    if (r.bw) { /* the median of the reps' shares, each against the mean of the read tests before and after it */
                        double sh[1000]; /* reps <= 1000 */
                        for (k = 0; k < reps; k++) sh[k] = r.bytes_per_token * r.ts[k] / 1e9 / (0.5 * (r.bw[k] + r.bw[k + 1]));
                        r.share = bn_median(sh, reps);
                        r.mem_gbps = bn_median(r.bw, reps + 1);
                    } else {
                        r.mem_gbps = bn_mem_read_gbps(bw_buf, bw_n, tl.v[ti], 5); /* under the same load as the test */
                        r.share = r.mem_gbps > 0 ? r.eff_gbps / r.mem_gbps : 0;
                    }
                    if (!strcmp(fmt, "md")) bn_print_md(out, &r);
                    else if (!strcmp(fmt, "csv")) bn_print_csv(out, &r, cpu);
                    else if (!strcmp(fmt, "jsonl")) { bn_print_json(out, &r, cpu, 1); fputc('\n', out); }
                    else { if (!first) fprintf(out, ",\n"); bn_print_json(out, &r, cpu, 0); }
                    first = 0;
                    fflush(out);
                }
                free(r.ns);
                free(r.ts);
                free(r.bw);
            }
            bl_ctx_destroy(c);
            free(toks);
        }
        bl_model_destroy(m);
    }
    if (!strcmp(fmt, "json")) fprintf(out, "\n]\n");
    if (!strcmp(fmt, "md") && bw_mib) {
        fprintf(out, "\nread bandwidth at start (STREAM-style sum over %zu MiB, best of 5; %% of read bw: against read tests between the reps for models over 64 MiB, after them for smaller ones):", bw_mib);
        for (ti = 0; ti < tl.n; ti++) fprintf(out, " %d threads %.2f GB/s;", tl.v[ti], mem_gbps[ti]);
        fprintf(out, " GB/s = weight bytes read per token x t/s (median)\n");
    }
    for (i = 0; i < n_bufs; i++) free(model_buf[i]);
    free(bw_buf);
    return rc;
}
