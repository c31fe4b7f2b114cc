/* berlin-server: serve a model over HTTP with OpenAI's API (see berlin_server.h).

       berlin-server -m models/stories260K.gguf --port 8080 --slots 4

   Ctrl-C (SIGINT) or SIGTERM stops it: open streams end with what they have,
   queued requests get 503, and the process exits 0. */
#define _POSIX_C_SOURCE 200809L
#define BERLIN_IMPLEMENTATION
#include "berlin.h"
#define BERLIN_SERVER_IMPLEMENTATION
#include "berlin_server.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The signal handler's only way to reach the server. */
static bl_server *server_for_signals;

static void on_signal(int sig) {
    (void)sig;
    if (server_for_signals) bl_server_stop(server_for_signals);
}

static void usage(const char *argv0) {
    fprintf(stderr,
            "usage: %s [options]\n"
            "  -m, --model PATH          model file or folder [models/stories260K.gguf]\n"
            "      --alias NAME          model id in /v1/models [file name without extension]\n"
            "      --chat-template NAME  chatml, llama3, llama2, mistral, gemma or phi3 [the model's own, else chatml]\n"
            "      --host ADDR           numeric address to bind [127.0.0.1]\n"
            "      --port N              TCP port, 0 for any free one [8080]\n"
            "      --slots N             requests decoded at once [4]\n"
            "  -c, --ctx N               KV cache tokens per slot [min(trained, 2048)]\n"
            "  -ctk, --cache-type T      KV cache type, f32 or f16 (half the memory per slot) [f32]\n"
            "  -t, --threads N           threads per decode [all cores]\n"
            "      --api-key KEY         require 'Authorization: Bearer KEY' (all but /health and /)\n"
            "      --api-key-file PATH   the same, key read from the file's first line\n"
            "      --max-queue N         requests waiting for a slot before 503 [64]\n"
            "      --max-connections N   open connections before 503 [256]\n"
            "      --max-header-bytes N  request line + headers, else 431 [16384]\n"
            "      --max-body-bytes N    request body, else 413 [1048576]\n"
            "      --idle-timeout-ms N   close connections silent this long [30000]\n"
            "      --request-timeout-ms N  a request must arrive within this, else 408 [60000]\n"
            "      --max-output-bytes N  unsent bytes a slow reader may owe before it is dropped [8388608]\n",
            argv0);
}

static int read_key_file(const char *path, char *key, size_t cap) {
    FILE *f = fopen(path, "rb");
    size_t n;
    if (!f) return -1;
    n = fread(key, 1, cap - 1, f);
    fclose(f);
    key[n] = 0;
    key[strcspn(key, "\r\n")] = 0;
    return key[0] ? 0 : -1;
}

int main(int argc, char **argv) {
    const char *model_path = "models/stories260K.gguf";
    char alias[128] = "", key[256] = "";
    bl_server_desc d;
    bl_model *m = NULL;
    bl_server *s = NULL;
    struct sigaction sa;
    bl_result r;
    int i;
    memset(&d, 0, sizeof d);
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG_IS(x) (strcmp(a, x) == 0)
#define NEED_VALUE() do { if (!v) { fprintf(stderr, "%s needs a value\n", a); return 2; } i++; } while (0)
        if (ARG_IS("-h") || ARG_IS("--help")) { usage(argv[0]); return 0; }
        else if (ARG_IS("-m") || ARG_IS("--model")) { NEED_VALUE(); model_path = v; }
        else if (ARG_IS("--alias")) { NEED_VALUE(); snprintf(alias, sizeof alias, "%s", v); }
        else if (ARG_IS("--chat-template")) {
            NEED_VALUE();
            if (bl_chat_template_from_name(v) == BL_CHAT_UNKNOWN) {
                fprintf(stderr, "unknown chat template %s (known: chatml, llama3, llama2, mistral, gemma, phi3)\n", v);
                return 2;
            }
            d.chat_template = v;
        }
        else if (ARG_IS("--host")) { NEED_VALUE(); d.host = v; }
        else if (ARG_IS("--port")) { NEED_VALUE(); d.port = atoi(v); if (d.port == 0) d.port = BL_SERVER_PORT_ANY; }
        else if (ARG_IS("--slots") || ARG_IS("-np")) { NEED_VALUE(); d.n_slots = atoi(v); }
        else if (ARG_IS("-c") || ARG_IS("--ctx")) { NEED_VALUE(); d.n_ctx = atoi(v); }
        else if (ARG_IS("-ctk") || ARG_IS("--cache-type")) {
            NEED_VALUE();
            if (strcmp(v, "f16") && strcmp(v, "f32")) { fprintf(stderr, "%s takes f16 or f32\n", a); return 2; }
            d.kv_type = v[1] == '1' ? BL_TYPE_F16 : BL_TYPE_F32;
        }
        else if (ARG_IS("-t") || ARG_IS("--threads")) { NEED_VALUE(); d.n_threads = atoi(v); }
        else if (ARG_IS("--api-key")) { NEED_VALUE(); snprintf(key, sizeof key, "%s", v); }
        else if (ARG_IS("--api-key-file")) {
            NEED_VALUE();
            if (read_key_file(v, key, sizeof key) != 0) { fprintf(stderr, "cannot read an API key from %s\n", v); return 2; }
        }
        else if (ARG_IS("--max-queue")) { NEED_VALUE(); d.max_queue = atoi(v); }
        else if (ARG_IS("--max-connections")) { NEED_VALUE(); d.max_connections = atoi(v); }
        else if (ARG_IS("--max-header-bytes")) { NEED_VALUE(); d.max_header_bytes = atoi(v); }
        else if (ARG_IS("--max-body-bytes")) { NEED_VALUE(); d.max_body_bytes = atoi(v); }
        else if (ARG_IS("--idle-timeout-ms")) { NEED_VALUE(); d.idle_timeout_ms = atoi(v); }
        else if (ARG_IS("--request-timeout-ms")) { NEED_VALUE(); d.request_timeout_ms = atoi(v); }
        else if (ARG_IS("--max-output-bytes")) { NEED_VALUE(); d.max_output_bytes = atoi(v); }
        else { fprintf(stderr, "unknown option %s\n", a); usage(argv[0]); return 2; }
#undef ARG_IS
#undef NEED_VALUE
    }
    if (!alias[0]) {
        const char *base = strrchr(model_path, '/');
        size_t n;
        base = base && base[1] ? base + 1 : model_path;
        snprintf(alias, sizeof alias, "%s", base);
        n = strlen(alias);
        while (n > 0 && alias[n - 1] == '/') alias[--n] = 0;
        if (strrchr(alias, '.') && strrchr(alias, '.') != alias) *strrchr(alias, '.') = 0;
    }
    d.model_id = alias;
    d.api_key = key[0] ? key : NULL;
    r = bl_model_load(&m, model_path, NULL);
    if (r != BL_OK) {
        fprintf(stderr, "berlin-server: %s\n", bl_model_last_error(m));
        bl_model_destroy(m);
        return 1;
    }
    r = bl_server_create(&s, m, &d);
    memset(key, 0, sizeof key);
    if (r != BL_OK) {
        fprintf(stderr, "berlin-server: %s\n", bl_server_last_error(s));
        bl_server_destroy(s);
        bl_model_destroy(m);
        return 1;
    }
    server_for_signals = s;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    r = bl_server_run(s);
    if (r != BL_OK) fprintf(stderr, "berlin-server: %s\n", bl_server_last_error(s));
    server_for_signals = NULL;
    bl_server_destroy(s);
    bl_model_destroy(m);
    return r == BL_OK ? 0 : 1;
}
