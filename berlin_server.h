/* berlin_server.h - an OpenAI-compatible HTTP server for berlin.h.     v0.1.0

   The companion of berlin.h, as cgltf_write.h is of cgltf.h. Include berlin.h
   first. Define BERLIN_SERVER_IMPLEMENTATION in the one file that also
   defines BERLIN_IMPLEMENTATION (the server reads requests with berlin.h's
   private JSON reader, so both implementations share a translation unit).
   POSIX only (sockets, poll, clock_gettime): compile that file with
   _POSIX_C_SOURCE >= 200809L defined before any #include.

   QUICK START (cc -O2 -fopenmp -std=c99 serve.c -lm)

       #define _POSIX_C_SOURCE 200809L
       #define BERLIN_IMPLEMENTATION
       #include "berlin.h"
       #define BERLIN_SERVER_IMPLEMENTATION
       #include "berlin_server.h"
       #include <stdio.h>

       int main(void) {
           bl_model *m = NULL;
           bl_server *s = NULL;
           bl_server_desc d = {0};
           if (bl_model_load(&m, "models/stories260K.gguf", NULL) != BL_OK) {
               fprintf(stderr, "%s\n", bl_model_last_error(m));
               return 1;
           }
           d.port = 8080;                    // 127.0.0.1:8080
           if (bl_server_create(&s, m, &d) == BL_OK) bl_server_run(s);
           else fprintf(stderr, "%s\n", bl_server_last_error(s));
           bl_server_destroy(s);             // bl_server_stop(s) ends run
           bl_model_destroy(m);
           return 0;
       }

   TABLE OF CONTENTS (grep for the tag; public API and implementation in this order)
       >>http    the HTTP/1.1 request parser (a pure function over bytes)
       >>srv     the server object: create, run, stop, destroy (API; code last)
       >>buf     byte buffers, JSON string escaping, UTF-8 checks
       >>state   the server's private state
       >>conn    connections: accept, read, write, keep-alive, limits
       >>api     simple endpoints, request fields, OpenAI error shapes
       >>chat    prompt formatting: the model's chat format, else ChatML
       >>slot    slots, the request queue, the batched decode step
       >>comp    the completion endpoints
       >>page    the chat page served at GET /

   ENDPOINTS
       POST /v1/chat/completions   messages, stream, max_tokens (or
                                   max_completion_tokens), temperature, top_p,
                                   seed, stop, stream_options.include_usage
       POST /v1/completions        prompt (string, [string] or token ids), same
       GET  /v1/models, /v1/models/{id}
       GET  /health                never needs the API key
       GET  /metrics               Prometheus text format
       POST /tokenize              {"content": "...", "add_special": bool}
       POST /detokenize            {"tokens": [...]}
       GET  /                      the chat page (static, no secrets, no key)
     Errors are OpenAI's {"error":{"message","type","param","code"}}.

   CONFIGURATION MACROS: berlin.h's BL_MALLOC/BL_REALLOC/BL_FREE and BL_API
   apply here too. Nothing here changes a struct layout across files.

   CONCEPTS
       slot     one bl_ctx (KV cache) serving one request at a time. A slot
                keeps its tokens after a request, so a follow-up request that
                shares the prefix (a chat growing turn by turn) skips it.
       queue    requests that wait for a slot; a full queue answers 503 with
                Retry-After instead of making the client hang.
       step     one pass of the scheduler: every busy slot advances by one
                token (or up to 64 prompt tokens). All of them go to one
                bl_batch_decode call, so the weights are read once per step
                rather than once per slot.
       chat     messages are formatted in the model's own chat format when
                berlin.h recognises its template (bl_chat_template_detect),
                else in ChatML as llama-server does; desc.chat_template (flag
                --chat-template) names one instead. The startup log says which.
       limits   header bytes (431), body bytes (413), connections (503),
                idle time (close), request arrival time (408), queue (503 +
                Retry-After), unsent output per client (drop): each has a
                default in bl_server_desc and a flag in berlin-server.

   LICENSE: MIT, as berlin.h (see the end of that file).
*/
#ifndef BERLIN_SERVER_H
#define BERLIN_SERVER_H

#ifndef BERLIN_H
#error "include berlin.h before berlin_server.h"
#endif

#define BERLIN_SERVER_VERSION_MAJOR 0
#define BERLIN_SERVER_VERSION_MINOR 1
#define BERLIN_SERVER_VERSION_PATCH 0

#ifdef __cplusplus
extern "C" {
#endif

/* >>http  HTTP REQUEST PARSER -----------------------------------------------
   bl_http_parse_request reads the head of one request from a byte buffer. It
   allocates nothing and keeps no state: call it again with more bytes until
   req->complete. Pointers in req point into buf. */
#define BL_HTTP_MAX_HEADERS 64

typedef struct bl_http_header {
    const char *name;  int name_len;
    const char *value; int value_len;   /* without surrounding blanks */
} bl_http_header;

typedef struct bl_http_request {
    int complete;              /* 1: the head is whole and valid; 0: need more bytes */
    int status;                /* on error: the status to answer (400, 431, 501, 505) */
    const char *error;         /* on error: why, static text */
    const char *method;  int method_len;
    const char *target;  int target_len;   /* origin-form: path and query */
    int minor;                 /* HTTP/1.minor */
    size_t head_len;           /* bytes of request line, headers and the blank line */
    long long content_length;  /* -1 when absent */
    int keep_alive;            /* 1.1 without "close", or 1.0 with "keep-alive" */
    int expect_continue;       /* "Expect: 100-continue" */
    int n_headers;
    bl_http_header headers[BL_HTTP_MAX_HEADERS];
} bl_http_request;

/* Parse buf[0..len). BL_OK with req->complete 0 (need more) or 1 (done); an
   error (BL_ERR_FORMAT: malformed, 400; BL_ERR_ARG: too large, 431;
   BL_ERR_UNSUPPORTED: 501/505) with req->status and req->error set.
   max_head <= 0 means 16384. Thread safety: any thread (pure function). */
BL_API bl_result bl_http_parse_request(const char *buf, size_t len, int max_head, bl_http_request *req);
/* The first header named `name` (case-insensitive), or NULL. Thread safety: any thread. */
BL_API const bl_http_header *bl_http_find_header(const bl_http_request *req, const char *name);
/* The reason phrase of a status code ("Not Found"). Thread safety: any thread. */
BL_API const char *bl_http_status_text(int status);

/* >>srv  SERVER -------------------------------------------------------------- */
typedef struct bl_server bl_server;

/* Receives one line (no newline) per event: startup, each request, shutdown. */
typedef void (*bl_server_log_fn)(void *user, const char *line);

#define BL_SERVER_PORT_ANY (-1) /* let the kernel pick; read it with bl_server_port */

typedef struct bl_server_desc {
    const char *host;          /* numeric address to bind, or "localhost" ["127.0.0.1"] */
    int port;                  /* TCP port, BL_SERVER_PORT_ANY for any free one [8080] */
    int n_slots;               /* requests decoded at once, one bl_ctx each [4] */
    int n_ctx;                 /* KV cache length per slot [min(trained, 2048)] */
    int n_threads;             /* threads for each decode [all cores] */
    int max_queue;             /* requests waiting for a slot before 503 [64] */
    int max_connections;       /* open connections before 503 [256] */
    int max_header_bytes;      /* request line plus headers, else 431 [16384] */
    int max_body_bytes;        /* request body, else 413 [1048576] */
    int idle_timeout_ms;       /* a connection silent this long is closed [30000] */
    int request_timeout_ms;    /* a request's head and body must arrive within this, else 408 [60000] */
    int max_output_bytes;      /* unsent bytes a slow reader may owe before it is dropped [8 MiB] */
    const char *api_key;       /* required as "Authorization: Bearer KEY" [NULL: none] */
    const char *model_id;      /* the model's name in /v1/models and responses ["berlin"] */
    bl_server_log_fn log;      /* NULL: one line per event on stderr [NULL] */
    void *log_user;            /* passed to log [NULL] */
    const char *chat_template; /* chat format by name (bl_chat_template_from_name) [NULL: the
                                  model's own if berlin.h knows it, else ChatML] */
    int kv_type;               /* BL_TYPE_F32 or BL_TYPE_F16 (half the memory per slot) [BL_TYPE_F32] */
} bl_server_desc;

/* Make a server on a loaded model: one context per slot, and a listening
   socket (so bl_server_port is known before bl_server_run). *out is always
   set, also on failure, so that bl_server_last_error can say why; release it
   with bl_server_destroy. desc may be NULL. The model must outlive the server.
   Thread safety: any thread; m may be shared with other readers. */
BL_API bl_result bl_server_create(bl_server **out, const bl_model *m, const bl_server_desc *desc);
/* Serve until bl_server_stop: then stop accepting, finish open streams with
   what they have, answer queued requests 503, flush (at most ~2 s) and return.
   Thread safety: one thread per server. */
BL_API bl_result bl_server_run(bl_server *s);
/* Ask bl_server_run to return. Thread safety: any thread, and async-signal-safe
   (it sets a flag and writes one byte to a pipe), so a SIGINT handler may call it. */
BL_API void bl_server_stop(bl_server *s);
/* The bound TCP port. Thread safety: any thread. */
BL_API int bl_server_port(const bl_server *s);
/* Why the last call on s failed ("" if it did not). Thread safety: as s. */
BL_API const char *bl_server_last_error(const bl_server *s);
/* Close every socket and free every slot. Thread safety: not while run is running. */
BL_API void bl_server_destroy(bl_server *s);

#ifdef __cplusplus
}
#endif
#endif /* BERLIN_SERVER_H */

/* ======================================================================== */
/*                              IMPLEMENTATION                              */
/* ======================================================================== */
#if defined(BERLIN_SERVER_IMPLEMENTATION) && !defined(BERLIN_SERVER__IMPLEMENTED)
#define BERLIN_SERVER__IMPLEMENTED

#ifndef BERLIN__IMPLEMENTED
#error "BERLIN_SERVER_IMPLEMENTATION needs BERLIN_IMPLEMENTATION in the same file"
#endif

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#ifdef MSG_NOSIGNAL
#define BL__SRV_NOSIG MSG_NOSIGNAL
#else
#define BL__SRV_NOSIG 0
#endif

/* >>http  HTTP REQUEST PARSER -----------------------------------------------
   Strict where strictness protects us (no obs-fold, no bare CR, one
   Content-Length, no Transfer-Encoding on requests: every client we serve
   sends a length) and lenient where clients differ (LF line ends). */

static int bl__srv_tchar(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int bl__srv_ieq(const char *a, int an, const char *b) {
    int i;
    if ((int)strlen(b) != an) return 0;
    for (i = 0; i < an; i++) {
        char x = a[i], y = b[i];
        if (x >= 'A' && x <= 'Z') x = (char)(x - 'A' + 'a');
        if (y >= 'A' && y <= 'Z') y = (char)(y - 'A' + 'a');
        if (x != y) return 0;
    }
    return 1;
}

/* Does the comma-separated list v contain `tok` (case-insensitive)? */
static int bl__srv_has_token(const char *v, int n, const char *tok) {
    int i = 0;
    while (i < n) {
        int s, e;
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) i++;
        s = i;
        while (i < n && v[i] != ',') i++;
        e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t')) e--;
        if (e > s && bl__srv_ieq(v + s, e - s, tok)) return 1;
    }
    return 0;
}

static bl_result bl__srv_http_fail(bl_http_request *r, bl_result code, int status, const char *why) {
    r->complete = 0;
    r->status = status;
    r->error = why;
    return code;
}

const char *bl_http_status_text(int s) {
    switch (s) {
    case 100: return "Continue";
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

bl_result bl_http_parse_request(const char *buf, size_t len, int max_head, bl_http_request *r) {
    size_t p = 0, end = 0, i, line_end;
    size_t limit = max_head > 0 ? (size_t)max_head : 16384;
    const bl_http_header *h;
    memset(r, 0, sizeof *r);
    r->content_length = -1;
    /* Find the blank line that ends the head (CRLF CRLF, or bare LF LF). */
    for (i = 0; i < len && i < limit; i++) {
        if (buf[i] != '\n') continue;
        if (i + 1 < len && buf[i + 1] == '\n') { end = i + 2; break; }
        if (i + 2 < len && buf[i + 1] == '\r' && buf[i + 2] == '\n') { end = i + 3; break; }
    }
    if (!end) {
        if (len >= limit) return bl__srv_http_fail(r, BL_ERR_ARG, 431, "request head too large");
        /* Reject an obviously bad first byte now rather than waiting for more. */
        if (len > 0 && !bl__srv_tchar((unsigned char)buf[0])) return bl__srv_http_fail(r, BL_ERR_FORMAT, 400, "malformed request line");
        return BL_OK;
    }
    if (end > limit) return bl__srv_http_fail(r, BL_ERR_ARG, 431, "request head too large");
    r->head_len = end;
    /* Request line: METHOD SP target SP HTTP/1.x */
    r->method = buf;
    while (p < end && bl__srv_tchar((unsigned char)buf[p])) p++;
    r->method_len = (int)p;
    if (p == 0 || p > 16 || buf[p] != ' ') return bl__srv_http_fail(r, BL_ERR_FORMAT, 400, "malformed request line");
    p++;
    r->target = buf + p;
    while (p < end && (unsigned char)buf[p] > 0x20 && buf[p] != 0x7f) p++;
    r->target_len = (int)(buf + p - r->target);
    if (r->target_len == 0 || buf[p] != ' ') return bl__srv_http_fail(r, BL_ERR_FORMAT, 400, "malformed request line");
    if (r->target[0] != '/') return bl__srv_http_fail(r, BL_ERR_FORMAT, 400, "request target must be a path");
    p++;
    if (end - p < 8 || memcmp(buf + p, "HTTP/", 5) != 0 || buf[p + 5] < '0' || buf[p + 5] > '9' || buf[p + 6] != '.' ||
        buf[p + 7] < '0' || buf[p + 7] > '9')
        return bl__srv_http_fail(r, BL_ERR_FORMAT, 400, "malformed HTTP version");
    if (buf[p + 5] != '1') return bl__srv_http_fail(r, BL_ERR_UNSUPPORTED, 505, "only HTTP/1.x is served");
    r->minor = buf[p + 7] - '0';
    p += 8;
    if (buf[p] == '\r') p++;
    if (buf[p] != '\n') return bl__srv_http_fail(r, BL_ERR_FORMAT, 400, "malformed request line");
    p++;
    /* Header fields until the blank line. */
    for (;;) {
        size_t ns, ne, vs, ve;
        bl_http_header *hd;
        if (buf[p] == '\n') { p++; break; }
        if (buf[p] == '\r' && buf[p + 1] == '\n') { p += 2; break; }
        line_end = p;
        while (buf[line_end] != '\n') line_end++; /* the blank line guarantees one */
        ne = line_end > p && buf[line_end - 1] == '\r' ? line_end - 1 : line_end;
        ns = p;
        while (p < ne && bl__srv_tchar((unsigned char)buf[p])) p++;
        if (p == ns || p >= ne || buf[p] != ':') return bl__srv_http_fail(r, BL_ERR_FORMAT, 400, "malformed header field");
        if (r->n_headers == BL_HTTP_MAX_HEADERS) return bl__srv_http_fail(r, BL_ERR_ARG, 431, "too many header fields");
        hd = &r->headers[r->n_headers++];
        hd->name = buf + ns;
        hd->name_len = (int)(p - ns);
        vs = p + 1;
        while (vs < ne && (buf[vs] == ' ' || buf[vs] == '\t')) vs++;
        ve = ne;
        while (ve > vs && (buf[ve - 1] == ' ' || buf[ve - 1] == '\t')) ve--;
        for (i = vs; i < ve; i++) {
            unsigned char c = (unsigned char)buf[i];
            if ((c < 0x20 && c != '\t') || c == 0x7f) return bl__srv_http_fail(r, BL_ERR_FORMAT, 400, "control character in a header value");
        }
        hd->value = buf + vs;
        hd->value_len = (int)(ve - vs);
        p = line_end + 1;
    }
    /* The headers that change how the body is read. */
    for (i = 0; i < (size_t)r->n_headers; i++) {
        h = &r->headers[i];
        if (bl__srv_ieq(h->name, h->name_len, "content-length")) {
            long long v = 0;
            int k;
            if (h->value_len == 0 || h->value_len > 15) return bl__srv_http_fail(r, BL_ERR_FORMAT, 400, "bad Content-Length");
            for (k = 0; k < h->value_len; k++) {
                if (h->value[k] < '0' || h->value[k] > '9') return bl__srv_http_fail(r, BL_ERR_FORMAT, 400, "bad Content-Length");
                v = v * 10 + (h->value[k] - '0');
            }
            if (r->content_length >= 0 && r->content_length != v) return bl__srv_http_fail(r, BL_ERR_FORMAT, 400, "conflicting Content-Length");
            r->content_length = v;
        } else if (bl__srv_ieq(h->name, h->name_len, "transfer-encoding")) {
            return bl__srv_http_fail(r, BL_ERR_UNSUPPORTED, 501, "Transfer-Encoding on requests is not supported; send Content-Length");
        } else if (bl__srv_ieq(h->name, h->name_len, "expect")) {
            if (!bl__srv_ieq(h->value, h->value_len, "100-continue")) return bl__srv_http_fail(r, BL_ERR_FORMAT, 400, "unsupported Expect");
            r->expect_continue = 1;
        }
    }
    r->keep_alive = r->minor >= 1;
    h = bl_http_find_header(r, "connection");
    if (h) {
        if (bl__srv_has_token(h->value, h->value_len, "close")) r->keep_alive = 0;
        else if (bl__srv_has_token(h->value, h->value_len, "keep-alive")) r->keep_alive = 1;
    }
    r->complete = 1;
    return BL_OK;
}

const bl_http_header *bl_http_find_header(const bl_http_request *r, const char *name) {
    int i;
    for (i = 0; i < r->n_headers; i++)
        if (bl__srv_ieq(r->headers[i].name, r->headers[i].name_len, name)) return &r->headers[i];
    return NULL;
}

/* >>buf  BUFFERS AND JSON OUTPUT ----------------------------------------------
   Every response is built in a growable buffer. An allocation failure sets
   `oom` and later appends do nothing, so builders need no error paths; the
   sender checks oom once. Strings go out through one escaper that also turns
   invalid UTF-8 into U+FFFD, so a model that emits half a character (byte
   tokens) can never produce invalid JSON. */

typedef struct bl__srv_buf {
    char *p;
    size_t n, cap;
    int oom;
} bl__srv_buf;
#define BL__SRV_BUF_INIT {NULL, 0, 0, 0}

static void bl__srv_buf_reserve(bl__srv_buf *b, size_t extra) {
    size_t need, nc;
    char *np;
    if (b->oom) return;
    need = b->n + extra + 1;
    if (need <= b->cap) return;
    nc = b->cap ? b->cap : 256;
    while (nc < need) nc *= 2;
    np = (char *)BL_REALLOC(b->p, nc);
    if (!np) { b->oom = 1; return; }
    b->p = np;
    b->cap = nc;
}

static void bl__srv_buf_put(bl__srv_buf *b, const char *s, size_t n) {
    bl__srv_buf_reserve(b, n);
    if (b->oom) return;
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void bl__srv_buf_puts(bl__srv_buf *b, const char *s) { bl__srv_buf_put(b, s, strlen(s)); }

static void bl__srv_buf_printf(bl__srv_buf *b, const char *fmt, ...) BL__PRINTF(2, 3);
static void bl__srv_buf_printf(bl__srv_buf *b, const char *fmt, ...) {
    va_list ap;
    int n;
    char tmp[256];
    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof tmp) { bl__srv_buf_put(b, tmp, (size_t)n); return; }
    bl__srv_buf_reserve(b, (size_t)n);
    if (b->oom) return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)n;
}

static void bl__srv_buf_free(bl__srv_buf *b) { BL_FREE(b->p); memset(b, 0, sizeof *b); }

/* Length of the valid UTF-8 sequence at s[0..n): 1..4, 0 if invalid, -1 if
   it is a valid start cut short by the end of the buffer. */
static int bl__srv_utf8_seq(const unsigned char *s, size_t n) {
    int need, k;
    unsigned c = s[0];
    uint32_t cp;
    if (c < 0x80) return 1;
    if (c < 0xC2) return 0;
    if (c < 0xE0) { need = 2; cp = c & 0x1F; }
    else if (c < 0xF0) { need = 3; cp = c & 0x0F; }
    else if (c < 0xF5) { need = 4; cp = c & 0x07; }
    else return 0;
    for (k = 1; k < need; k++) {
        if ((size_t)k >= n) return -1;
        if ((s[k] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[k] & 0x3F);
        /* reject overlongs, surrogates and > U+10FFFF as soon as they show */
        if (k == 1 && need == 3 && c == 0xE0 && s[1] < 0xA0) return 0;
        if (k == 1 && need == 3 && c == 0xED && s[1] >= 0xA0) return 0;
        if (k == 1 && need == 4 && c == 0xF0 && s[1] < 0x90) return 0;
        if (k == 1 && need == 4 && c == 0xF4 && s[1] >= 0x90) return 0;
    }
    (void)cp;
    return need;
}

/* Append s[0..n) as a JSON string literal, quotes included. */
static void bl__srv_json_str(bl__srv_buf *b, const char *s, size_t n) {
    size_t i = 0;
    static const char hex[] = "0123456789abcdef";
    bl__srv_buf_reserve(b, n + 2);
    bl__srv_buf_put(b, "\"", 1);
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        size_t run = i;
        /* copy runs of plain ASCII at once */
        while (run < n && (unsigned char)s[run] >= 0x20 && (unsigned char)s[run] < 0x80 && s[run] != '"' && s[run] != '\\') run++;
        if (run > i) { bl__srv_buf_put(b, s + i, run - i); i = run; continue; }
        if (c == '"') bl__srv_buf_put(b, "\\\"", 2);
        else if (c == '\\') bl__srv_buf_put(b, "\\\\", 2);
        else if (c == '\n') bl__srv_buf_put(b, "\\n", 2);
        else if (c == '\r') bl__srv_buf_put(b, "\\r", 2);
        else if (c == '\t') bl__srv_buf_put(b, "\\t", 2);
        else if (c < 0x20) {
            char e[6] = {'\\', 'u', '0', '0', 0, 0};
            e[4] = hex[c >> 4];
            e[5] = hex[c & 15];
            bl__srv_buf_put(b, e, 6);
        } else {
            int k = bl__srv_utf8_seq((const unsigned char *)s + i, n - i);
            if (k > 0) { bl__srv_buf_put(b, s + i, (size_t)k); i += (size_t)k; continue; }
            bl__srv_buf_put(b, "\\ufffd", 6);
        }
        i++;
    }
    bl__srv_buf_put(b, "\"", 1);
}

static void bl__srv_json_cstr(bl__srv_buf *b, const char *s) { bl__srv_json_str(b, s, strlen(s)); }


/* >>state  SERVER STATE --------------------------------------------------------
   One thread runs everything: a poll loop over the listening socket, a wake
   pipe and every connection, and between polls one scheduler step that
   advances every busy slot. The decode itself uses berlin.h's threads, so a
   second thread would only add locks; the price is that I/O waits for a step,
   which is milliseconds per token. Objects that die mid-loop (a connection
   whose peer went away) are marked and reaped at one safe point. */

#define BL__SRV_MAX_STOP 4
#define BL__SRV_STOP_MAX_LEN 256

enum { BL__SRV_FREE, BL__SRV_READ, BL__SRV_BUSY, BL__SRV_CLOSING };
enum { BL__SRV_FIN_NONE, BL__SRV_FIN_STOP, BL__SRV_FIN_LENGTH };

typedef struct bl__srv_job bl__srv_job;

typedef struct bl__srv_conn {
    int fd;
    int state;
    int dead;              /* peer gone or fatal error: reap at the next safe point */
    bl__srv_buf in, out;
    size_t out_off;        /* bytes of out already sent */
    double last_io;
    int keep_alive, minor, chunked, continue_sent, head_sent;
    int fresh;             /* input or state changed since the last parse */
    int shut;              /* our side is shut down; draining the peer before close */
    int eof;               /* the peer has shut its side */
    bl__srv_job *job;
    char peer[64];
    char req_line[112];    /* "POST /v1/completions", for the log */
    double t0;
    size_t resp_bytes;
    int status;
} bl__srv_conn;

struct bl__srv_job {
    bl__srv_conn *conn;
    bl__srv_job *next;     /* queue link */
    int chat, stream, include_usage;
    int32_t *prompt;
    int n_prompt, n_fed, n_gen, max_tokens;
    bl_sampler_desc samp;
    int has_seed;
    uint64_t seed;
    char *stop[BL__SRV_MAX_STOP + 1]; /* + the chat format's own */
    int n_stop;
    char id[48];
    long long created;
    double t_queued, t_first;
    int slot;              /* -1 while queued */
    int32_t last;          /* token to feed next */
    bl_detok dt;           /* generated tokens -> whole UTF-8 characters */
    bl__srv_buf text;      /* everything generated so far (after stop trimming) */
    int cut;               /* text was cut at a stop string: nothing more joins it */
    size_t sent;           /* bytes of text already streamed */
    int finish, role_sent;
};

typedef struct bl__srv_slot {
    bl_ctx *ctx;
    bl__srv_job *job;
} bl__srv_slot;

struct bl_server {
    char err[BL__ERRLEN];
    const bl_model *m;
    const bl_tokenizer *tok;
    int chat_fmt;          /* BL_CHAT_*: how /v1/chat/completions formats messages */
    int32_t chat_end;      /* the format's end-of-turn token, -1 if the vocabulary lacks it */
    const char *chat_stop; /* else its end-of-turn text, as a stop string (NULL if not needed) */
    bl_server_desc d;      /* with defaults filled in */
    char host[64];
    char model_id[128];
    char api_key[256];
    char *page;
    int has_key;
    int listen_fd, port;
    int wake[2];
    volatile sig_atomic_t stop_flag;
    bl__srv_conn *conns;
    struct pollfd *pfds;
    int *pfd_conn;
    bl__srv_slot *slots;
    /* the batched decode: its scratch, and one entry per slot */
    bl_batch *batch;
    bl_batch_seq *b_seq;
    int *b_slot;
    bl_result *b_res;
    bl__srv_job *q_head, *q_tail;
    int q_len, n_open, rr, n_ctx;
    uint64_t rng, ids;
    double t_start;
    /* metrics */
    unsigned long long m_requests, m_failed, m_rejected, m_completions, m_prompt_tokens, m_gen_tokens, m_ttft_n;
    double m_decode_seconds, m_ttft_sum;
};

static double bl__srv_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void bl__srv_log(bl_server *s, const char *fmt, ...) BL__PRINTF(2, 3);
static void bl__srv_log(bl_server *s, const char *fmt, ...) {
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (s->d.log) { s->d.log(s->d.log_user, line); return; }
    {
        time_t t = time(NULL);
        struct tm tmv;
        char ts[32];
        gmtime_r(&t, &tmv);
        strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tmv);
        fprintf(stderr, "%s %s\n", ts, line);
    }
}

/* xorshift64 for ids and unseeded requests: no globals, state in the server */
static uint64_t bl__srv_rand(bl_server *s) {
    uint64_t x = s->rng;
    x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
    s->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* >>conn  CONNECTIONS ---------------------------------------------------------
   Each connection owns an input buffer (bounded by the header and body
   limits) and an output buffer (bounded by max_output_bytes, so a reader that
   never reads cannot make us hold a whole generation). Keep-alive and
   pipelining fall out of consuming exactly one request from the input. */

static void bl__srv_flush(bl__srv_conn *c) {
    while (c->fd >= 0 && !c->dead && c->out_off < c->out.n) {
        ssize_t k = send(c->fd, c->out.p + c->out_off, c->out.n - c->out_off, BL__SRV_NOSIG);
        if (k > 0) { c->out_off += (size_t)k; continue; }
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        c->dead = 1;
    }
    if (c->out_off == c->out.n) { c->out.n = 0; c->out_off = 0; }
}

static void bl__srv_write(bl_server *s, bl__srv_conn *c, const char *p, size_t n) {
    if (c->dead) return;
    bl__srv_buf_put(&c->out, p, n);
    c->resp_bytes += n;
    if (c->out.oom || c->out.n - c->out_off > (size_t)s->d.max_output_bytes) c->dead = 1;
}

static void bl__srv_head(bl_server *s, bl__srv_conn *c, int status, const char *ctype, long long len, const char *extra) {
    bl__srv_buf h = BL__SRV_BUF_INIT;
    c->status = status;
    c->head_sent = 1;
    bl__srv_buf_printf(&h, "HTTP/1.%d %d %s\r\nServer: berlin-server\r\n", c->minor >= 1 ? 1 : 0, status, bl_http_status_text(status));
    if (ctype) bl__srv_buf_printf(&h, "Content-Type: %s\r\n", ctype);
    if (len >= 0) bl__srv_buf_printf(&h, "Content-Length: %lld\r\n", len);
    else if (c->chunked) bl__srv_buf_puts(&h, "Transfer-Encoding: chunked\r\n");
    if (extra) bl__srv_buf_puts(&h, extra);
    bl__srv_buf_puts(&h, c->keep_alive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n");
    if (h.oom) c->dead = 1;
    else bl__srv_write(s, c, h.p, h.n);
    bl__srv_buf_free(&h);
}

/* The response is complete: log it and get ready for the next request. */
static void bl__srv_done(bl_server *s, bl__srv_conn *c, const char *note) {
    s->m_requests++;
    if (c->status >= 400) s->m_failed++;
    bl__srv_log(s, "%s \"%s\" %d %zuB %.1fms%s%s", c->peer, c->req_line, c->status, c->resp_bytes,
                (bl__srv_now() - c->t0) * 1e3, note ? " " : "", note ? note : "");
    c->state = c->keep_alive && !s->stop_flag ? BL__SRV_READ : BL__SRV_CLOSING;
    c->head_sent = 0;
    c->resp_bytes = 0;
    c->fresh = 1;
    c->last_io = c->t0 = bl__srv_now(); /* a pipelined request's deadline starts now */
}

static void bl__srv_respond(bl_server *s, bl__srv_conn *c, int status, const char *ctype, const char *body, size_t n, const char *extra) {
    c->chunked = 0;
    bl__srv_head(s, c, status, ctype, (long long)n, extra);
    bl__srv_write(s, c, body, n);
    bl__srv_done(s, c, NULL);
}

/* An OpenAI error object: {"error":{"message","type","param","code"}}. */
static void bl__srv_error(bl_server *s, bl__srv_conn *c, int status, const char *type, const char *code, const char *param, const char *msg) {
    bl__srv_buf b = BL__SRV_BUF_INIT;
    const char *extra = status == 503 ? "Retry-After: 1\r\n" : status == 401 ? "WWW-Authenticate: Bearer\r\n" : NULL;
    bl__srv_buf_puts(&b, "{\"error\":{\"message\":");
    bl__srv_json_cstr(&b, msg);
    bl__srv_buf_puts(&b, ",\"type\":");
    bl__srv_json_cstr(&b, type);
    bl__srv_buf_puts(&b, ",\"param\":");
    if (param) bl__srv_json_cstr(&b, param); else bl__srv_buf_puts(&b, "null");
    bl__srv_buf_puts(&b, ",\"code\":");
    if (code) bl__srv_json_cstr(&b, code); else bl__srv_buf_puts(&b, "null");
    bl__srv_buf_puts(&b, "}}\n");
    if (b.oom) c->dead = 1;
    else bl__srv_respond(s, c, status, "application/json", b.p, b.n, extra);
    bl__srv_buf_free(&b);
}

/* A protocol-level failure: answer and close, the framing can't be trusted. */
static void bl__srv_fail_close(bl_server *s, bl__srv_conn *c, int status, const char *msg) {
    c->keep_alive = 0;
    if (!c->req_line[0]) snprintf(c->req_line, sizeof c->req_line, "-");
    bl__srv_error(s, c, status, status >= 500 ? "server_error" : "invalid_request_error", NULL, NULL, msg);
}

static void bl__srv_stream_put(bl_server *s, bl__srv_conn *c, const char *p, size_t n) {
    char hx[24];
    if (!n) return;
    if (c->chunked) {
        int k = snprintf(hx, sizeof hx, "%zx\r\n", n);
        bl__srv_write(s, c, hx, (size_t)k);
    }
    bl__srv_write(s, c, p, n);
    if (c->chunked) bl__srv_write(s, c, "\r\n", 2);
}

static void bl__srv_cancel_job(bl_server *s, bl__srv_job *j);

static void bl__srv_conn_close(bl_server *s, bl__srv_conn *c) {
    if (c->job) { bl__srv_cancel_job(s, c->job); c->job = NULL; }
    if (c->fd >= 0) close(c->fd);
    bl__srv_buf_free(&c->in);
    bl__srv_buf_free(&c->out);
    memset(c, 0, sizeof *c);
    c->fd = -1;
    c->state = BL__SRV_FREE;
    s->n_open--;
}

static void bl__srv_accept(bl_server *s) {
    int k;
    for (k = 0; k < 64; k++) {
        struct sockaddr_storage sa;
        socklen_t sl = sizeof sa;
        int fd = accept(s->listen_fd, (struct sockaddr *)&sa, &sl), i, one = 1;
        bl__srv_conn *c = NULL;
        if (fd < 0) return; /* EAGAIN, or a transient error: try next round */
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        fcntl(fd, F_SETFD, FD_CLOEXEC);
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        for (i = 0; i < s->d.max_connections; i++)
            if (s->conns[i].state == BL__SRV_FREE) { c = &s->conns[i]; break; }
        if (!c) {
            static const char body[] = "{\"error\":{\"message\":\"too many connections\",\"type\":\"server_error\",\"param\":null,\"code\":\"overloaded\"}}\n";
            char msg[320];
            int mn = snprintf(msg, sizeof msg, "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: application/json\r\n"
                                               "Content-Length: %d\r\nConnection: close\r\n\r\n%s", (int)sizeof body - 1, body);
            ssize_t w = send(fd, msg, (size_t)mn, BL__SRV_NOSIG);
            (void)w;
            close(fd);
            s->m_rejected++;
            bl__srv_log(s, "connection refused with 503: all %d connections are open", s->d.max_connections);
            continue;
        }
        memset(c, 0, sizeof *c);
        c->fd = fd;
        c->state = BL__SRV_READ;
        c->last_io = bl__srv_now();
        s->n_open++;
        if (sa.ss_family == AF_INET) {
            char a[INET_ADDRSTRLEN];
            const struct sockaddr_in *in4 = (const struct sockaddr_in *)(const void *)&sa;
            inet_ntop(AF_INET, &in4->sin_addr, a, sizeof a);
            snprintf(c->peer, sizeof c->peer, "%s:%d", a, ntohs(in4->sin_port));
        } else if (sa.ss_family == AF_INET6) {
            char a[INET6_ADDRSTRLEN];
            const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)&sa;
            inet_ntop(AF_INET6, &in6->sin6_addr, a, sizeof a);
            snprintf(c->peer, sizeof c->peer, "[%s]:%d", a, ntohs(in6->sin6_port));
        } else {
            snprintf(c->peer, sizeof c->peer, "?");
        }
    }
}

static void bl__srv_dispatch(bl_server *s, bl__srv_conn *c, const bl_http_request *req, const char *body, size_t blen);

/* Read what the socket has. EOF while a request is half-sent answers 400;
   EOF while generating cancels the job at the next reap. */
static void bl__srv_read(bl_server *s, bl__srv_conn *c) {
    size_t cap = (size_t)s->d.max_header_bytes + (size_t)s->d.max_body_bytes + 1024;
    for (;;) {
        ssize_t k;
        size_t room;
        if (c->state == BL__SRV_CLOSING) {
            char sink[4096];
            k = recv(c->fd, sink, sizeof sink, 0);
            if (k == 0) { c->eof = 1; c->dead = c->out_off >= c->out.n; return; }
            if (k < 0) { if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) c->dead = 1; return; }
            continue;
        }
        if (c->in.n >= cap) return;
        room = cap - c->in.n < 16384 ? cap - c->in.n : 16384;
        bl__srv_buf_reserve(&c->in, room);
        if (c->in.oom) { c->dead = 1; return; }
        k = recv(c->fd, c->in.p + c->in.n, room, 0);
        if (k > 0) {
            if (c->in.n == 0 && c->state == BL__SRV_READ) c->t0 = bl__srv_now(); /* a request starts */
            c->in.n += (size_t)k;
            c->last_io = bl__srv_now();
            c->fresh = 1;
            continue;
        }
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (k == 0 && c->state == BL__SRV_READ && c->in.n > 0) {
            /* half-closed mid-request: say so, then close */
            c->in.n = 0;
            c->eof = 1;
            bl__srv_fail_close(s, c, 400, "the connection ended before the request was complete");
            return;
        }
        c->dead = 1;
        return;
    }
}

/* Serve every complete request in the input, in order, until one starts a
   job (the rest waits for it) or the input runs out. */
static void bl__srv_process(bl_server *s, bl__srv_conn *c) {
    if (!c->fresh) return;
    c->fresh = 0;
    while (c->state == BL__SRV_READ && !c->dead && c->in.n > 0) {
        bl_http_request req;
        size_t need, used;
        bl_result r = bl_http_parse_request(c->in.p, c->in.n, s->d.max_header_bytes, &req);
        if (r != BL_OK) {
            c->minor = 1;
            bl__srv_fail_close(s, c, req.status, req.error);
            c->in.n = 0;
            return;
        }
        if (!req.complete) return;
        c->minor = req.minor;
        c->keep_alive = req.keep_alive;
        {
            /* the log line: method and path, printable characters only */
            int i, n = 0, lim = (int)sizeof c->req_line - 1;
            for (i = 0; i < req.method_len && n < lim; i++) c->req_line[n++] = req.method[i];
            if (n < lim) c->req_line[n++] = ' ';
            for (i = 0; i < req.target_len && n < lim; i++) c->req_line[n++] = req.target[i] == '"' ? '\'' : req.target[i];
            c->req_line[n] = 0;
        }
        if (req.content_length > (long long)s->d.max_body_bytes) {
            char msg[96];
            snprintf(msg, sizeof msg, "request body of %lld bytes exceeds the limit of %d bytes", req.content_length, s->d.max_body_bytes);
            bl__srv_fail_close(s, c, 413, msg);
            c->in.n = 0;
            return;
        }
        if (req.content_length < 0 && req.method_len == 4 && memcmp(req.method, "POST", 4) == 0) {
            bl__srv_fail_close(s, c, 411, "a POST request needs a Content-Length");
            c->in.n = 0;
            return;
        }
        need = req.head_len + (size_t)(req.content_length > 0 ? req.content_length : 0);
        if (c->in.n < need) {
            if (req.expect_continue && !c->continue_sent) {
                static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
                bl__srv_buf_put(&c->out, cont, sizeof cont - 1);
                c->continue_sent = 1;
            }
            return;
        }
        c->continue_sent = 0;
        bl__srv_dispatch(s, c, &req, c->in.p + req.head_len, need - req.head_len);
        used = need;
        memmove(c->in.p, c->in.p + used, c->in.n - used);
        c->in.n -= used;
    }
}

/* >>api  ENDPOINTS -------------------------------------------------------------
   Handlers read fields with berlin.h's JSON reader and either answer at once
   or hand a job to the queue. A bad field fills one bl__srv_fail that names
   the parameter, so every 400 carries OpenAI's `param`. */

typedef struct bl__srv_fail {
    int status;
    const char *type, *code;
    char param[64];
    char msg[256];
} bl__srv_fail;

static int bl__srv_failf(bl__srv_fail *f, int status, const char *code, const char *param, const char *fmt, ...) BL__PRINTF(5, 6);
static int bl__srv_failf(bl__srv_fail *f, int status, const char *code, const char *param, const char *fmt, ...) {
    va_list ap;
    f->status = status;
    f->type = status >= 500 ? "server_error" : "invalid_request_error";
    f->code = code;
    snprintf(f->param, sizeof f->param, "%s", param ? param : "");
    va_start(ap, fmt);
    vsnprintf(f->msg, sizeof f->msg, fmt, ap);
    va_end(ap);
    return -1;
}

/* Field readers: 0 absent or null, 1 read, -1 wrong (f filled). */
static int bl__srv_num(const bl__json *j, int obj, const char *key, double lo, double hi, int integer, double *out, bl__srv_fail *f) {
    int k = bl__json_get(j, obj, key);
    double v;
    if (k < 0 || j->nodes[k].type == BL__J_NULL) return 0;
    if (!bl__json_num(j, k, &v) || v != v) return bl__srv_failf(f, 400, "invalid_type", key, "'%s' must be a number", key);
    if (integer && v != floor(v)) return bl__srv_failf(f, 400, "invalid_type", key, "'%s' must be an integer", key);
    if (v < lo || v > hi) return bl__srv_failf(f, 400, "invalid_value", key, "'%s' must be between %g and %g", key, lo, hi);
    *out = v;
    return 1;
}

static int bl__srv_bool(const bl__json *j, int obj, const char *key, int *out, bl__srv_fail *f) {
    int k = bl__json_get(j, obj, key);
    if (k < 0 || j->nodes[k].type == BL__J_NULL) return 0;
    if (j->nodes[k].type != BL__J_TRUE && j->nodes[k].type != BL__J_FALSE)
        return bl__srv_failf(f, 400, "invalid_type", key, "'%s' must be a boolean", key);
    *out = j->nodes[k].type == BL__J_TRUE;
    return 1;
}

/* Tokenize text into a new array (*out, count returned), or -1 with f filled. */
static int bl__srv_tokenize(const bl_tokenizer *tok, const char *text, size_t len, int flags, int32_t **out, bl__srv_fail *f) {
    int cap = (int)(len < 64 ? 64 : len + 8), n;
    int32_t *t;
    if (len > (size_t)INT_MAX / 2) return bl__srv_failf(f, 400, NULL, NULL, "text is too long");
    t = (int32_t *)bl__alloc((size_t)cap * sizeof *t);
    if (!t) return bl__srv_failf(f, 500, NULL, NULL, "out of memory");
    n = bl_tokenize(tok, text, (int)len, t, cap, flags);
    if (n > cap) {
        int32_t *nt = (int32_t *)BL_REALLOC(t, (size_t)n * sizeof *t);
        if (!nt) { BL_FREE(t); return bl__srv_failf(f, 500, NULL, NULL, "out of memory"); }
        t = nt;
        n = bl_tokenize(tok, text, (int)len, t, n, flags);
    }
    if (n < 0) { BL_FREE(t); return bl__srv_failf(f, 500, NULL, NULL, "tokenizer failed: %s", bl_result_string((bl_result)n)); }
    *out = t;
    return n;
}

static int bl__srv_check_key(bl_server *s, const bl_http_request *req) {
    const bl_http_header *h = bl_http_find_header(req, "authorization");
    const char *v;
    size_t n, klen = strlen(s->api_key), i;
    unsigned diff = 0;
    if (!s->has_key) return 1;
    if (!h || h->value_len < 7 || !bl__srv_ieq(h->value, 6, "bearer") || h->value[6] != ' ') return 0;
    v = h->value + 7;
    n = (size_t)h->value_len - 7;
    while (n && *v == ' ') { v++; n--; }
    /* constant time in the key's length, whatever the guess */
    diff = n != klen;
    for (i = 0; i < klen; i++) diff |= (unsigned)(unsigned char)s->api_key[i] ^ (unsigned)(unsigned char)(i < n ? v[i] : 0);
    return diff == 0;
}

static void bl__srv_send_json(bl_server *s, bl__srv_conn *c, bl__srv_buf *b) {
    if (b->oom) bl__srv_error(s, c, 500, "server_error", NULL, NULL, "out of memory");
    else bl__srv_respond(s, c, 200, "application/json", b->p, b->n, NULL);
    bl__srv_buf_free(b);
}

static void bl__srv_model_obj(bl_server *s, bl__srv_buf *b) {
    const bl_model_info *in = bl_model_get_info(s->m);
    bl__srv_buf_puts(b, "{\"id\":");
    bl__srv_json_cstr(b, s->model_id);
    bl__srv_buf_printf(b, ",\"object\":\"model\",\"created\":%lld,\"owned_by\":\"berlin\",\"meta\":{\"n_vocab\":%d,\"n_ctx\":%d,\"n_params\":%lld,\"arch\":",
                       (long long)time(NULL), in->n_vocab, s->n_ctx, (long long)in->n_params);
    bl__srv_json_cstr(b, in->arch ? in->arch : "");
    bl__srv_buf_puts(b, "}}");
}

static void bl__srv_metrics(bl_server *s, bl__srv_conn *c) {
    bl__srv_buf b = BL__SRV_BUF_INIT;
    int i, busy = 0;
    for (i = 0; i < s->d.n_slots; i++) busy += s->slots[i].job != NULL;
#define BL__SRV_METRIC(name, type, help, fmt, val) \
    bl__srv_buf_printf(&b, "# HELP " name " " help "\n# TYPE " name " " type "\n" name " " fmt "\n", val)
    BL__SRV_METRIC("berlin_requests_total", "counter", "HTTP requests answered.", "%llu", s->m_requests);
    BL__SRV_METRIC("berlin_requests_failed_total", "counter", "Requests answered with status 400 or above.", "%llu", s->m_failed);
    BL__SRV_METRIC("berlin_requests_rejected_total", "counter", "Requests or connections turned away with 503 (queue or connections full).", "%llu", s->m_rejected);
    BL__SRV_METRIC("berlin_completions_total", "counter", "Generations finished.", "%llu", s->m_completions);
    BL__SRV_METRIC("berlin_prompt_tokens_total", "counter", "Prompt tokens received.", "%llu", s->m_prompt_tokens);
    BL__SRV_METRIC("berlin_generated_tokens_total", "counter", "Tokens generated.", "%llu", s->m_gen_tokens);
    BL__SRV_METRIC("berlin_decode_seconds_total", "counter", "Seconds spent in decode steps.", "%.6f", s->m_decode_seconds);
    BL__SRV_METRIC("berlin_tokens_per_second", "gauge", "Generated tokens per second of decoding.", "%.3f",
                   s->m_decode_seconds > 0 ? (double)s->m_gen_tokens / s->m_decode_seconds : 0.0);
    bl__srv_buf_printf(&b, "# HELP berlin_time_to_first_token_seconds Time from arrival to the first generated token.\n"
                           "# TYPE berlin_time_to_first_token_seconds summary\n"
                           "berlin_time_to_first_token_seconds_sum %.6f\nberlin_time_to_first_token_seconds_count %llu\n",
                       s->m_ttft_sum, s->m_ttft_n);
    BL__SRV_METRIC("berlin_queue_depth", "gauge", "Requests waiting for a slot.", "%d", s->q_len);
    BL__SRV_METRIC("berlin_slots_busy", "gauge", "Slots generating.", "%d", busy);
    BL__SRV_METRIC("berlin_slots_total", "gauge", "Slots.", "%d", s->d.n_slots);
    BL__SRV_METRIC("berlin_connections_open", "gauge", "Open client connections.", "%d", s->n_open);
    BL__SRV_METRIC("berlin_uptime_seconds", "gauge", "Seconds since start.", "%.1f", bl__srv_now() - s->t_start);
#undef BL__SRV_METRIC
    if (b.oom) bl__srv_error(s, c, 500, "server_error", NULL, NULL, "out of memory");
    else bl__srv_respond(s, c, 200, "text/plain; version=0.0.4; charset=utf-8", b.p, b.n, NULL);
    bl__srv_buf_free(&b);
}

static int bl__srv_body_json(const char *body, size_t n, bl__json *j, bl__srv_fail *f) {
    if (n == 0) return bl__srv_failf(f, 400, NULL, NULL, "the request body is empty; expected a JSON object");
    if (bl__json_parse(j, body, n) != 0) {
        bl__srv_failf(f, 400, NULL, NULL, "the request body is not valid JSON: %s", j->err);
        bl__json_free(j);
        return -1;
    }
    if (j->nodes[0].type != BL__J_OBJ) {
        bl__json_free(j);
        return bl__srv_failf(f, 400, NULL, NULL, "the request body must be a JSON object");
    }
    return 0;
}

static int bl__srv_tokenize_ep(bl_server *s, bl__srv_conn *c, const char *body, size_t n, bl__srv_fail *f) {
    bl__json j;
    int k, add = 0, special = 1, nt, i;
    char *text;
    size_t tl;
    int32_t *t = NULL;
    bl__srv_buf b = BL__SRV_BUF_INIT;
    if (bl__srv_body_json(body, n, &j, f)) return -1;
    k = bl__json_get(&j, 0, "content");
    if (k < 0 || j.nodes[k].type != BL__J_STR) { bl__json_free(&j); return bl__srv_failf(f, 400, "invalid_type", "content", "'content' must be a string"); }
    if (bl__srv_bool(&j, 0, "add_special", &add, f) < 0 || bl__srv_bool(&j, 0, "parse_special", &special, f) < 0) { bl__json_free(&j); return -1; }
    text = bl__json_str(&j, k, &tl);
    bl__json_free(&j);
    if (!text) return bl__srv_failf(f, 500, NULL, NULL, "out of memory");
    nt = bl__srv_tokenize(s->tok, text, tl, (add ? BL_TOK_ADD_BOS : 0) | (special ? BL_TOK_PARSE_SPECIAL : 0), &t, f);
    BL_FREE(text);
    if (nt < 0) return -1;
    bl__srv_buf_puts(&b, "{\"tokens\":[");
    for (i = 0; i < nt; i++) bl__srv_buf_printf(&b, i ? ",%d" : "%d", (int)t[i]);
    bl__srv_buf_puts(&b, "]}");
    BL_FREE(t);
    bl__srv_send_json(s, c, &b);
    return 0;
}

static int bl__srv_detokenize_ep(bl_server *s, bl__srv_conn *c, const char *body, size_t n, bl__srv_fail *f) {
    bl__json j;
    int k, i, nv = bl_tokenizer_n_vocab(s->tok);
    int32_t prev = -1;
    bl__srv_buf text = BL__SRV_BUF_INIT, b = BL__SRV_BUF_INIT;
    if (bl__srv_body_json(body, n, &j, f)) return -1;
    k = bl__json_get(&j, 0, "tokens");
    if (k < 0 || j.nodes[k].type != BL__J_ARR) { bl__json_free(&j); return bl__srv_failf(f, 400, "invalid_type", "tokens", "'tokens' must be an array of token ids"); }
    for (i = 0; i < j.nodes[k].n; i++) {
        double v;
        char piece[256];
        int pl;
        /* every id is checked against the vocabulary before it indexes anything */
        if (!bl__json_num(&j, bl__json_at(&j, k, i), &v) || v != floor(v) || v < 0 || v >= nv) {
            bl__json_free(&j);
            bl__srv_buf_free(&text);
            return bl__srv_failf(f, 400, "invalid_value", "tokens", "tokens[%d] is not a token id in [0, %d)", i, nv);
        }
        pl = bl_token_to_text(s->tok, prev, (int32_t)v, piece, sizeof piece);
        if (pl > 0) bl__srv_buf_put(&text, piece, (size_t)pl);
        prev = (int32_t)v;
    }
    bl__json_free(&j);
    bl__srv_buf_puts(&b, "{\"content\":");
    bl__srv_json_str(&b, text.p ? text.p : "", text.n);
    bl__srv_buf_puts(&b, "}");
    if (text.oom) b.oom = 1;
    bl__srv_buf_free(&text);
    bl__srv_send_json(s, c, &b);
    return 0;
}

/* >>chat  PROMPT FORMATTING -----------------------------------------------------
   Messages are formatted by bl_chat_format in the model's own format when
   bl_chat_template_detect recognises its template, else (or when the model
   has none) in ChatML, as llama-server does; desc.chat_template overrides.
   A turn ends at the format's end-of-turn token; a vocabulary without that
   token (stories260K under ChatML) gets its text as a stop string instead.
   The formatted prompt is tokenized with BL_TOK_PARSE_SPECIAL as a whole, so
   control-token text inside a message (a user typing "<|im_end|>") becomes
   the control token, as in llama-server: bl_tokenize cannot parse specials in
   the markup only, and tokenizing markup and content apart would change the
   ids at their seams (SentencePiece's word marker, BPE pre-tokenizer splits). */

/* The text that closes a turn in format fmt. */
static const char *bl__srv_chat_end_text(int fmt) {
    switch (fmt) {
    case BL_CHAT_LLAMA3: return "<|eot_id|>";
    case BL_CHAT_LLAMA2: case BL_CHAT_MISTRAL: return "</s>";
    case BL_CHAT_GEMMA: return "<end_of_turn>";
    case BL_CHAT_PHI3: return "<|end|>";
    default: return "<|im_end|>";
    }
}

/* A conversation in format fmt -> its text (in text) and prompt ids (*ids,
   count returned), or -1 with f filled. */
static int bl__srv_chat_prompt(const bl_tokenizer *tok, int fmt, const bl_chat_msg *msgs, int n,
                               bl__srv_buf *text, int32_t **ids, bl__srv_fail *f) {
    int len = bl_chat_format(fmt, msgs, n, 1, NULL, 0);
    if (len == BL_ERR_ARG)
        return bl__srv_failf(f, 400, "invalid_value", "messages", "the %s chat format has no place for these roles in this order", bl_chat_template_name(fmt));
    if (len < 0) return bl__srv_failf(f, 500, NULL, NULL, "chat format: %s", bl_result_string((bl_result)len));
    if (len >= INT_MAX - 1) return bl__srv_failf(f, 400, NULL, NULL, "the conversation is too long");
    bl__srv_buf_reserve(text, (size_t)len);
    if (text->oom) return bl__srv_failf(f, 500, NULL, NULL, "out of memory");
    bl_chat_format(fmt, msgs, n, 1, text->p + text->n, len + 1);
    text->n += (size_t)len;
    return bl__srv_tokenize(tok, text->p, text->n, BL_TOK_ADD_BOS | BL_TOK_PARSE_SPECIAL, ids, f);
}

/* messages[] -> prompt ids in *ids (count returned), or -1 with f filled. */
static int bl__srv_messages(bl_server *s, const bl__json *j, int arr, int32_t **ids, bl__srv_fail *f) {
    int i, n, r = 0;
    bl_chat_msg *m;
    if (arr < 0 || j->nodes[arr].type != BL__J_ARR) return bl__srv_failf(f, 400, "invalid_type", "messages", "'messages' must be an array of message objects");
    n = j->nodes[arr].n;
    if (n == 0) return bl__srv_failf(f, 400, "invalid_value", "messages", "'messages' must not be empty");
    m = (bl_chat_msg *)bl__calloc((size_t)n * sizeof *m);
    if (!m) return bl__srv_failf(f, 500, NULL, NULL, "out of memory");
    for (i = 0; i < n && r == 0; i++) {
        int o = bl__json_at(j, arr, i), rk, ck;
        size_t len = 0;
        char param[64];
        snprintf(param, sizeof param, "messages[%d]", i);
        if (o < 0 || j->nodes[o].type != BL__J_OBJ) { r = bl__srv_failf(f, 400, "invalid_type", param, "%s must be an object", param); break; }
        rk = bl__json_get(j, o, "role");
        if (bl__json_is(j, rk, "system") || bl__json_is(j, rk, "developer")) m[i].role = "system";
        else if (bl__json_is(j, rk, "user")) m[i].role = "user";
        else if (bl__json_is(j, rk, "assistant")) m[i].role = "assistant";
        else if (bl__json_is(j, rk, "tool")) m[i].role = "tool";
        else { r = bl__srv_failf(f, 400, "invalid_value", param, "%s.role must be one of system, developer, user, assistant, tool", param); break; }
        ck = bl__json_get(j, o, "content");
        if (ck < 0 || j->nodes[ck].type == BL__J_NULL) {
            m[i].content = bl__strndup("", 0);
        } else if (j->nodes[ck].type == BL__J_STR) {
            m[i].content = bl__json_str(j, ck, &len);
        } else if (j->nodes[ck].type == BL__J_ARR) {
            /* content parts: the text ones joined; anything else is refused */
            bl__srv_buf t = BL__SRV_BUF_INIT;
            int p;
            for (p = 0; p < j->nodes[ck].n; p++) {
                int part = bl__json_at(j, ck, p), tk = bl__json_get(j, part, "text");
                char *s;
                size_t sl;
                if (!bl__json_is(j, bl__json_get(j, part, "type"), "text") || tk < 0 || j->nodes[tk].type != BL__J_STR) {
                    r = bl__srv_failf(f, 400, "invalid_value", param, "%s.content[%d]: only text parts are supported", param, p);
                    break;
                }
                s = bl__json_str(j, tk, &sl);
                if (!s) { t.oom = 1; break; }
                bl__srv_buf_put(&t, s, sl);
                BL_FREE(s);
            }
            if (r == 0 && t.oom) r = bl__srv_failf(f, 500, NULL, NULL, "out of memory");
            if (r == 0) { m[i].content = t.p ? t.p : bl__strndup("", 0); len = t.n; t.p = NULL; }
            bl__srv_buf_free(&t);
        } else {
            r = bl__srv_failf(f, 400, "invalid_type", param, "%s.content must be a string or an array of text parts", param);
        }
        if (r == 0 && !m[i].content) r = bl__srv_failf(f, 500, NULL, NULL, "out of memory");
        if (r == 0 && strlen(m[i].content) != len) /* the formats take C strings */
            r = bl__srv_failf(f, 400, "invalid_value", param, "%s.content must not contain NUL characters", param);
    }
    if (r == 0) {
        bl__srv_buf text = BL__SRV_BUF_INIT;
        r = bl__srv_chat_prompt(s->tok, s->chat_fmt, m, n, &text, ids, f);
        bl__srv_buf_free(&text);
    }
    for (i = 0; i < n; i++) BL_FREE((void *)m[i].content);
    BL_FREE(m);
    return r;
}

/* >>slot  SLOTS, QUEUE AND THE DECODE STEP -------------------------------------
   A job waits in a FIFO queue until a slot is idle; the slot whose cached
   tokens share the longest prefix with the prompt takes it and skips that
   prefix. Every step feeds each busy slot one token (or up to 64 prompt
   tokens) through one bl_batch_decode call, samples, and streams the text that
   is safe to send: text that could still become a stop string, or half a
   UTF-8 character, is held back until the next token decides it. */

static void bl__srv_job_free(bl__srv_job *j) {
    int i;
    if (!j) return;
    BL_FREE(j->prompt);
    for (i = 0; i < j->n_stop; i++) BL_FREE(j->stop[i]);
    bl__srv_buf_free(&j->text);
    BL_FREE(j);
}

static void bl__srv_cancel_job(bl_server *s, bl__srv_job *j) {
    if (j->slot >= 0) {
        s->slots[j->slot].job = NULL;
    } else {
        bl__srv_job **pp = &s->q_head, *prev = NULL;
        while (*pp && *pp != j) { prev = *pp; pp = &(*pp)->next; }
        if (*pp) {
            *pp = j->next;
            if (s->q_tail == j) s->q_tail = prev;
            s->q_len--;
        }
    }
    if (j->conn) j->conn->job = NULL;
    bl__srv_log(s, "%s \"%s\" cancelled: client went away after %d tokens", j->conn ? j->conn->peer : "?",
                j->conn ? j->conn->req_line : "?", j->n_gen);
    bl__srv_job_free(j);
}

static void bl__srv_usage(bl__srv_buf *b, const bl__srv_job *j) {
    bl__srv_buf_printf(b, "\"usage\":{\"prompt_tokens\":%d,\"completion_tokens\":%d,\"total_tokens\":%d}", j->n_prompt, j->n_gen,
                       j->n_prompt + j->n_gen);
}

/* One SSE event: text (may be empty), the role on the first chat chunk, a
   finish reason on the last; usage_only: the include_usage chunk. */
/* The fields every completion object starts with, up to the opening of "choices". */
static void bl__srv_envelope(bl_server *s, const bl__srv_job *j, bl__srv_buf *b, const char *prefix, const char *chat_object) {
    bl__srv_buf_puts(b, prefix);
    bl__srv_buf_puts(b, "{\"id\":");
    bl__srv_json_cstr(b, j->id);
    bl__srv_buf_printf(b, ",\"object\":\"%s\",\"created\":%lld,\"model\":", j->chat ? chat_object : "text_completion", j->created);
    bl__srv_json_cstr(b, s->model_id);
    bl__srv_buf_puts(b, ",\"system_fingerprint\":null,\"choices\":[");
}

static void bl__srv_chunk(bl_server *s, bl__srv_job *j, const char *text, size_t n, const char *finish, int usage_only) {
    bl__srv_buf b = BL__SRV_BUF_INIT;
    bl__srv_envelope(s, j, &b, "data: ", "chat.completion.chunk");
    if (!usage_only) {
        if (j->chat) {
            bl__srv_buf_puts(&b, "{\"index\":0,\"delta\":{");
            if (!j->role_sent) bl__srv_buf_puts(&b, "\"role\":\"assistant\",");
            if (!finish || n) { bl__srv_buf_puts(&b, "\"content\":"); bl__srv_json_str(&b, text, n); }
            else if (!j->role_sent && !b.oom) b.p[--b.n] = 0; /* drop the comma */
            bl__srv_buf_puts(&b, "}");
            j->role_sent = 1;
        } else {
            bl__srv_buf_puts(&b, "{\"text\":");
            bl__srv_json_str(&b, text, n);
            bl__srv_buf_puts(&b, ",\"index\":0");
        }
        bl__srv_buf_puts(&b, ",\"logprobs\":null,\"finish_reason\":");
        if (finish) bl__srv_json_cstr(&b, finish); else bl__srv_buf_puts(&b, "null");
        bl__srv_buf_puts(&b, "}");
    }
    bl__srv_buf_puts(&b, "]");
    if (usage_only) { bl__srv_buf_puts(&b, ","); bl__srv_usage(&b, j); }
    else if (j->include_usage) bl__srv_buf_puts(&b, ",\"usage\":null");
    bl__srv_buf_puts(&b, "}\n\n");
    if (b.oom) j->conn->dead = 1;
    else bl__srv_stream_put(s, j->conn, b.p, b.n);
    bl__srv_buf_free(&b);
}

/* Bytes at the end of text that might be the start of a stop string. */
static size_t bl__srv_stop_hold(const bl__srv_job *j) {
    size_t hold = 0;
    int i;
    for (i = 0; i < j->n_stop; i++) {
        size_t L = strlen(j->stop[i]), k;
        for (k = L - 1; k > hold; k--)
            if (k <= j->text.n && memcmp(j->text.p + j->text.n - k, j->stop[i], k) == 0) { hold = k; break; }
    }
    return hold;
}

/* After `added` new bytes: cut the text at the earliest stop string. */
static void bl__srv_stop_check(bl__srv_job *j, size_t added) {
    size_t best = (size_t)-1;
    int i;
    for (i = 0; i < j->n_stop; i++) {
        size_t L = strlen(j->stop[i]), from, p;
        from = j->text.n - added >= L - 1 ? j->text.n - added - (L - 1) : 0;
        for (p = from; p + L <= j->text.n; p++)
            if (memcmp(j->text.p + p, j->stop[i], L) == 0) { if (p < best) best = p; break; }
    }
    if (best != (size_t)-1) {
        j->text.n = best;
        j->text.p[best] = 0;
        j->finish = BL__SRV_FIN_STOP;
        j->cut = 1;
    }
}

/* The text of one more generated token (tok -1: the end of the stream)
   joins j->text, whole characters only, and is checked for stop strings.
   -1 when out of memory. */
static int bl__srv_job_text(bl__srv_job *j, int32_t tok) {
    char piece[1100]; /* what bl_detok_push may need */
    int n;
    if (j->cut) return 0;
    n = tok < 0 ? bl_detok_flush(&j->dt, piece, sizeof piece) : bl_detok_push(&j->dt, tok, piece, sizeof piece);
    if (n <= 0) return 0;
    bl__srv_buf_put(&j->text, piece, (size_t)n);
    if (j->text.oom) return -1;
    bl__srv_stop_check(j, (size_t)n);
    return 0;
}

static void bl__srv_detach(bl_server *s, bl__srv_job *j) {
    if (j->slot >= 0) s->slots[j->slot].job = NULL;
    j->conn->job = NULL;
    bl__srv_job_free(j);
}

static void bl__srv_job_finish(bl_server *s, bl__srv_job *j) {
    bl__srv_conn *c = j->conn;
    const char *fr;
    char note[96];
    bl__srv_job_text(j, -1); /* a half character left over becomes U+FFFD (dropped if out of memory) */
    fr = j->finish == BL__SRV_FIN_LENGTH ? "length" : "stop";
    s->m_completions++;
    snprintf(note, sizeof note, "prompt=%d gen=%d finish=%s", j->n_prompt, j->n_gen, fr);
    if (j->sent > j->text.n) j->sent = j->text.n; /* cannot happen: held text covers any stop start */
    if (j->stream) {
        if (j->text.n > j->sent) bl__srv_chunk(s, j, j->text.p + j->sent, j->text.n - j->sent, NULL, 0);
        bl__srv_chunk(s, j, "", 0, fr, 0);
        if (j->include_usage) bl__srv_chunk(s, j, NULL, 0, NULL, 1);
        bl__srv_stream_put(s, c, "data: [DONE]\n\n", 14);
        if (c->chunked) bl__srv_write(s, c, "0\r\n\r\n", 5);
        bl__srv_done(s, c, note);
    } else {
        bl__srv_buf b = BL__SRV_BUF_INIT;
        bl__srv_envelope(s, j, &b, "", "chat.completion");
        bl__srv_buf_puts(&b, "{\"index\":0,");
        if (j->chat) {
            bl__srv_buf_puts(&b, "\"message\":{\"role\":\"assistant\",\"content\":");
            bl__srv_json_str(&b, j->text.p ? j->text.p : "", j->text.n);
            bl__srv_buf_puts(&b, ",\"refusal\":null}");
        } else {
            bl__srv_buf_puts(&b, "\"text\":");
            bl__srv_json_str(&b, j->text.p ? j->text.p : "", j->text.n);
        }
        bl__srv_buf_puts(&b, ",\"logprobs\":null,\"finish_reason\":");
        bl__srv_json_cstr(&b, fr);
        bl__srv_buf_puts(&b, "}],");
        bl__srv_usage(&b, j);
        bl__srv_buf_puts(&b, "}\n");
        if (b.oom) c->dead = 1;
        else {
            c->chunked = 0;
            bl__srv_head(s, c, 200, "application/json", (long long)b.n, NULL);
            bl__srv_write(s, c, b.p, b.n);
            bl__srv_done(s, c, note);
        }
        bl__srv_buf_free(&b);
    }
    bl__srv_detach(s, j);
}

static void bl__srv_job_error(bl_server *s, bl__srv_job *j, const char *msg) {
    bl__srv_conn *c = j->conn;
    if (j->stream && c->head_sent) {
        bl__srv_buf b = BL__SRV_BUF_INIT;
        bl__srv_buf_puts(&b, "data: {\"error\":{\"message\":");
        bl__srv_json_cstr(&b, msg);
        bl__srv_buf_puts(&b, ",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\ndata: [DONE]\n\n");
        if (!b.oom) bl__srv_stream_put(s, c, b.p, b.n);
        if (c->chunked) bl__srv_write(s, c, "0\r\n\r\n", 5);
        c->status = 500;
        bl__srv_done(s, c, "error mid-stream");
        bl__srv_buf_free(&b);
    } else {
        bl__srv_error(s, c, 500, "server_error", NULL, NULL, msg);
    }
    bl__srv_detach(s, j);
}

static void bl__srv_emit(bl_server *s, bl__srv_job *j) {
    size_t upto;
    if (!j->stream) return;
    upto = j->text.n - bl__srv_stop_hold(j); /* a character boundary: text and stop strings are UTF-8 */
    if (upto > j->sent || (j->chat && !j->role_sent)) {
        bl__srv_chunk(s, j, j->text.p + j->sent, upto > j->sent ? upto - j->sent : 0, NULL, 0);
        if (upto > j->sent) j->sent = upto;
    }
}

/* The slot has fresh logits: pick a token, extend the text, maybe finish. */
static void bl__srv_job_token(bl_server *s, bl__srv_slot *sl, bl__srv_job *j) {
    int32_t t = bl_ctx_sample(sl->ctx, &j->samp);
    if (j->n_gen == 0) {
        double d = bl__srv_now() - j->t_queued;
        j->t_first = d;
        s->m_ttft_sum += d;
        s->m_ttft_n++;
    }
    if (t < 0 || bl_tokenizer_is_eog(s->tok, t) || (j->chat && t == s->chat_end)) {
        j->finish = BL__SRV_FIN_STOP;
    } else {
        j->n_gen++;
        s->m_gen_tokens++;
        j->last = t;
        if (bl__srv_job_text(j, t) != 0) { bl__srv_job_error(s, j, "out of memory"); return; }
        if (!j->finish && (j->n_gen >= j->max_tokens || bl_ctx_pos(sl->ctx) >= bl_ctx_n_ctx(sl->ctx))) j->finish = BL__SRV_FIN_LENGTH;
    }
    if (j->finish) bl__srv_job_finish(s, j);
    else bl__srv_emit(s, j);
}

/* Move queued jobs onto idle slots, preferring the slot whose KV cache
   already holds the longest prefix of the prompt. */
static void bl__srv_assign(bl_server *s) {
    while (s->q_head) {
        int i, best = -1, best_common = -1, common;
        bl__srv_job *j = s->q_head;
        bl_ctx *ctx;
        for (i = 0; i < s->d.n_slots; i++) {
            const int32_t *ct;
            int pos;
            if (s->slots[i].job) continue;
            ct = bl_ctx_tokens(s->slots[i].ctx);
            pos = bl_ctx_pos(s->slots[i].ctx);
            for (common = 0; common < pos && common < j->n_prompt && ct[common] == j->prompt[common]; common++) {}
            if (common > best_common) { best = i; best_common = common; }
        }
        if (best < 0) return;
        s->q_head = j->next;
        if (!s->q_head) s->q_tail = NULL;
        s->q_len--;
        j->next = NULL;
        ctx = s->slots[best].ctx;
        /* keep the shared prefix, but always decode at least one prompt token to get logits */
        common = best_common < j->n_prompt ? best_common : j->n_prompt - 1;
        bl_kv_truncate(ctx, common);
        bl_ctx_set_seed(ctx, j->has_seed ? j->seed : bl__srv_rand(s));
        j->n_fed = common;
        bl_detok_init(&j->dt, s->tok);
        j->dt.prev = j->prompt[j->n_prompt - 1]; /* the first token follows the prompt: its leading space stays */
        j->slot = best;
        s->slots[best].job = j;
        if (j->stream) {
            bl__srv_conn *c = j->conn;
            c->chunked = c->minor >= 1;
            if (!c->chunked) c->keep_alive = 0;
            bl__srv_head(s, c, 200, "text/event-stream; charset=utf-8", -1, "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n");
        }
    }
}

static void bl__srv_step(bl_server *s) {
    int k, count = 0;
    double t0;
    for (k = 0; k < s->d.n_slots; k++) {
        int i = (s->rr + k) % s->d.n_slots;
        bl__srv_job *j = s->slots[i].job;
        bl_batch_seq *q;
        if (!j || j->conn->dead) continue;
        q = &s->b_seq[count];
        q->ctx = s->slots[i].ctx;
        s->b_slot[count] = i;
        if (j->n_fed < j->n_prompt) {
            int left = j->n_prompt - j->n_fed;
            q->n_tokens = left < 64 ? left : 64;
            q->tokens = j->prompt + j->n_fed;
            q->logits_mode = q->n_tokens == left ? BL_LOGITS_LAST : BL_LOGITS_NONE;
        } else {
            q->n_tokens = 1;
            q->tokens = &j->last;
            q->logits_mode = BL_LOGITS_LAST;
        }
        count++;
    }
    s->rr = (s->rr + 1) % s->d.n_slots;
    if (!count) return;
    t0 = bl__srv_now();
    bl_batch_decode(s->batch, s->b_seq, count, s->b_res);
    s->m_decode_seconds += bl__srv_now() - t0;
    for (k = 0; k < count; k++) {
        bl__srv_slot *sl = &s->slots[s->b_slot[k]];
        bl__srv_job *j = sl->job;
        if (s->b_res[k] != BL_OK) {
            char msg[BL__ERRLEN + 32];
            snprintf(msg, sizeof msg, "decode failed: %s", bl_ctx_last_error(sl->ctx));
            bl_ctx_reset(sl->ctx);
            bl__srv_job_error(s, j, msg);
            continue;
        }
        if (j->n_fed < j->n_prompt) {
            j->n_fed += s->b_seq[k].n_tokens;
            if (j->n_fed < j->n_prompt) continue;
        }
        bl__srv_job_token(s, sl, j);
    }
}

/* >>comp  COMPLETION ENDPOINTS --------------------------------------------------
   /v1/chat/completions and /v1/completions share everything but the prompt:
   fields become a job, the job joins the queue (or 503 when it is full). */

/* Fields both completion endpoints share. */
static int bl__srv_sampling(const bl__json *j, bl__srv_job *job, bl__srv_fail *f) {
    double v;
    int k, r, b;
    k = bl__json_get(j, 0, "model");
    if (k >= 0 && j->nodes[k].type != BL__J_STR && j->nodes[k].type != BL__J_NULL)
        return bl__srv_failf(f, 400, "invalid_type", "model", "'model' must be a string");
    if (bl__srv_bool(j, 0, "stream", &job->stream, f) < 0) return -1;
    k = bl__json_get(j, 0, "stream_options");
    if (k >= 0 && j->nodes[k].type != BL__J_NULL) {
        if (j->nodes[k].type != BL__J_OBJ) return bl__srv_failf(f, 400, "invalid_type", "stream_options", "'stream_options' must be an object");
        if (bl__srv_bool(j, k, "include_usage", &job->include_usage, f) < 0) return -1;
    }
    if ((r = bl__srv_num(j, 0, "n", 1, 128, 1, &v, f)) < 0) return -1;
    if (r && v != 1) return bl__srv_failf(f, 400, "invalid_value", "n", "only n=1 is supported");
    job->samp.temperature = 1.0f;
    if ((r = bl__srv_num(j, 0, "temperature", 0, 2, 0, &v, f)) < 0) return -1;
    if (r) job->samp.temperature = (float)v;
    if ((r = bl__srv_num(j, 0, "top_p", 0, 1, 0, &v, f)) < 0) return -1;
    if (r) job->samp.top_p = v >= 1 ? 0.0f : (float)v;
    /* llama.cpp's extensions, same meaning as there */
    if ((r = bl__srv_num(j, 0, "top_k", 0, 1e6, 1, &v, f)) < 0) return -1;
    if (r) job->samp.top_k = (int)v;
    if ((r = bl__srv_num(j, 0, "min_p", 0, 1, 0, &v, f)) < 0) return -1;
    if (r) job->samp.min_p = (float)v;
    if ((r = bl__srv_num(j, 0, "repeat_penalty", 0, 10, 0, &v, f)) < 0) return -1;
    if (r) job->samp.repeat_penalty = (float)v;
    if ((r = bl__srv_num(j, 0, "seed", -9.2e18, 1.8e19, 1, &v, f)) < 0) return -1;
    if (r) { job->has_seed = 1; job->seed = v < 0 ? (uint64_t)(int64_t)v : (uint64_t)v; }
    job->max_tokens = -1;
    if ((r = bl__srv_num(j, 0, "max_completion_tokens", 1, 1e9, 1, &v, f)) < 0) return -1;
    if (!r && (r = bl__srv_num(j, 0, "max_tokens", 1, 1e9, 1, &v, f)) < 0) return -1;
    if (r) job->max_tokens = (int)v;
    k = bl__json_get(j, 0, "stop");
    if (k >= 0 && j->nodes[k].type != BL__J_NULL) {
        int n = j->nodes[k].type == BL__J_ARR ? j->nodes[k].n : 1, i;
        if (j->nodes[k].type != BL__J_STR && j->nodes[k].type != BL__J_ARR)
            return bl__srv_failf(f, 400, "invalid_type", "stop", "'stop' must be a string or an array of strings");
        if (n > BL__SRV_MAX_STOP) return bl__srv_failf(f, 400, "invalid_value", "stop", "'stop' holds at most %d strings", BL__SRV_MAX_STOP);
        for (i = 0; i < n; i++) {
            int e = j->nodes[k].type == BL__J_ARR ? bl__json_at(j, k, i) : k;
            size_t sl;
            char *sv;
            if (e < 0 || j->nodes[e].type != BL__J_STR) return bl__srv_failf(f, 400, "invalid_type", "stop", "'stop' must be a string or an array of strings");
            sv = bl__json_str(j, e, &sl);
            if (!sv) return bl__srv_failf(f, 500, NULL, NULL, "out of memory");
            if (sl == 0 || sl > BL__SRV_STOP_MAX_LEN || strlen(sv) != sl) {
                BL_FREE(sv);
                if (sl == 0) continue;
                return bl__srv_failf(f, 400, "invalid_value", "stop", "stop strings must be 1 to %d bytes without NUL", BL__SRV_STOP_MAX_LEN);
            }
            job->stop[job->n_stop++] = sv;
        }
    }
    b = 0;
    if (bl__srv_bool(j, 0, "echo", &b, f) < 0) return -1;
    if (b) return bl__srv_failf(f, 400, "invalid_value", "echo", "'echo' is not supported");
    return 0;
}

/* The prompt of /v1/completions: a string, one string in an array, or token ids. */
static int bl__srv_prompt(bl_server *s, const bl__json *j, bl__srv_job *job, bl__srv_fail *f) {
    int k = bl__json_get(j, 0, "prompt"), i, nv = bl_tokenizer_n_vocab(s->tok);
    if (k >= 0 && j->nodes[k].type == BL__J_ARR && j->nodes[k].n == 1 && j->nodes[k + 1].type == BL__J_STR) k = k + 1;
    if (k >= 0 && j->nodes[k].type == BL__J_STR) {
        size_t tl;
        char *text = bl__json_str(j, k, &tl);
        if (!text) return bl__srv_failf(f, 500, NULL, NULL, "out of memory");
        job->n_prompt = bl__srv_tokenize(s->tok, text, tl, BL_TOK_ADD_BOS | BL_TOK_PARSE_SPECIAL, &job->prompt, f);
        BL_FREE(text);
        return job->n_prompt < 0 ? -1 : 0;
    }
    if (k >= 0 && j->nodes[k].type == BL__J_ARR && j->nodes[k].n > 0 && j->nodes[k + 1].type == BL__J_NUM) {
        int n = j->nodes[k].n;
        job->prompt = (int32_t *)bl__alloc((size_t)n * sizeof(int32_t));
        if (!job->prompt) return bl__srv_failf(f, 500, NULL, NULL, "out of memory");
        for (i = 0; i < n; i++) {
            double v;
            if (!bl__json_num(j, bl__json_at(j, k, i), &v) || v != floor(v) || v < 0 || v >= nv)
                return bl__srv_failf(f, 400, "invalid_value", "prompt", "prompt[%d] is not a token id in [0, %d)", i, nv);
            job->prompt[i] = (int32_t)v;
        }
        job->n_prompt = n;
        return 0;
    }
    return bl__srv_failf(f, 400, "invalid_type", "prompt", "'prompt' must be a string, an array of one string, or an array of token ids");
}

static int bl__srv_completion_ep(bl_server *s, bl__srv_conn *c, const char *body, size_t n, int chat, bl__srv_fail *f) {
    bl__json j;
    bl__srv_job *job;
    int r, busy = 0, i, room;
    if (bl__srv_body_json(body, n, &j, f)) return -1;
    job = (bl__srv_job *)bl__calloc(sizeof *job);
    if (!job) { bl__json_free(&j); return bl__srv_failf(f, 500, NULL, NULL, "out of memory"); }
    job->slot = -1;
    job->chat = chat;
    r = bl__srv_sampling(&j, job, f);
    if (r == 0 && chat) {
        job->n_prompt = bl__srv_messages(s, &j, bl__json_get(&j, 0, "messages"), &job->prompt, f);
        if (job->n_prompt < 0) r = -1;
        if (r == 0 && s->chat_stop) {
            /* the turn ends where the format says it does, even for a vocabulary without that token */
            char *st = bl__strndup(s->chat_stop, strlen(s->chat_stop));
            if (!st) r = bl__srv_failf(f, 500, NULL, NULL, "out of memory");
            else job->stop[job->n_stop++] = st;
        }
    } else if (r == 0) {
        r = bl__srv_prompt(s, &j, job, f);
    }
    bl__json_free(&j);
    if (r == 0 && job->n_prompt == 0) r = bl__srv_failf(f, 400, "invalid_value", chat ? "messages" : "prompt", "the prompt is empty");
    if (r == 0 && job->n_prompt >= s->n_ctx)
        r = bl__srv_failf(f, 400, "context_length_exceeded", chat ? "messages" : "prompt",
                          "this model's context is %d tokens per slot; the prompt has %d, leaving no room to generate", s->n_ctx, job->n_prompt);
    if (r == 0) {
        for (i = 0; i < s->d.n_slots; i++) busy += s->slots[i].job != NULL;
        if (busy == s->d.n_slots && s->q_len >= s->d.max_queue) {
            s->m_rejected++;
            r = bl__srv_failf(f, 503, "overloaded", NULL, "all %d slots are busy and %d requests are waiting; retry later", s->d.n_slots, s->q_len);
        }
    }
    if (r != 0) { bl__srv_job_free(job); return -1; }
    room = s->n_ctx - job->n_prompt;
    if (job->max_tokens < 0) job->max_tokens = chat ? room : 16;
    if (job->max_tokens > room) job->max_tokens = room;
    bl__srv_buf_put(&job->text, "", 0);
    if (job->text.oom) { bl__srv_job_free(job); return bl__srv_failf(f, 500, NULL, NULL, "out of memory"); }
    snprintf(job->id, sizeof job->id, "%s-%016llx%08llx", chat ? "chatcmpl" : "cmpl", (unsigned long long)bl__srv_rand(s),
             (unsigned long long)(++s->ids & 0xffffffffu));
    job->created = (long long)time(NULL);
    job->t_queued = bl__srv_now();
    job->conn = c;
    c->job = job;
    c->state = BL__SRV_BUSY;
    s->m_prompt_tokens += (unsigned long long)job->n_prompt;
    if (s->q_tail) s->q_tail->next = job; else s->q_head = job;
    s->q_tail = job;
    s->q_len++;
    bl__srv_assign(s);
    return 0;
}

static int bl__srv_path_is(const char *p, size_t n, const char *want) { return n == strlen(want) && memcmp(p, want, n) == 0; }

static void bl__srv_dispatch(bl_server *s, bl__srv_conn *c, const bl_http_request *req, const char *body, size_t blen) {
    const char *path = req->target;
    size_t plen = 0;
    int get = req->method_len == 3 && memcmp(req->method, "GET", 3) == 0;
    int post = req->method_len == 4 && memcmp(req->method, "POST", 4) == 0;
    const char *allow = NULL;
    bl__srv_fail f;
    memset(&f, 0, sizeof f);
    while (plen < (size_t)req->target_len && path[plen] != '?') plen++;
    if (bl__srv_path_is(path, plen, "/health")) {
        if (!get) { allow = "GET"; goto wrong_method; }
        {
            char b[160];
            int i, busy = 0;
            for (i = 0; i < s->d.n_slots; i++) busy += s->slots[i].job != NULL;
            snprintf(b, sizeof b, "{\"status\":\"ok\",\"slots_idle\":%d,\"slots_busy\":%d,\"queue\":%d}\n", s->d.n_slots - busy, busy, s->q_len);
            bl__srv_respond(s, c, 200, "application/json", b, strlen(b), NULL);
        }
        return;
    }
    if (bl__srv_path_is(path, plen, "/") || bl__srv_path_is(path, plen, "/index.html")) {
        const char *page = s->page;
        if (!get) { allow = "GET"; goto wrong_method; }
        bl__srv_respond(s, c, 200, "text/html; charset=utf-8", page, strlen(page),
                        "Cache-Control: no-cache\r\nContent-Security-Policy: default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'\r\n");
        return;
    }
    if (bl__srv_path_is(path, plen, "/favicon.ico")) { /* browsers ask; answer without the key check */
        bl__srv_error(s, c, 404, "invalid_request_error", "unknown_url", NULL, "no favicon");
        return;
    }
    if (!bl__srv_check_key(s, req)) {
        bl__srv_error(s, c, 401, "invalid_request_error", "invalid_api_key", NULL,
                      "Incorrect or missing API key: send it as 'Authorization: Bearer KEY'");
        return;
    }
    if (bl__srv_path_is(path, plen, "/v1/models")) {
        bl__srv_buf b = BL__SRV_BUF_INIT;
        if (!get) { allow = "GET"; goto wrong_method; }
        bl__srv_buf_puts(&b, "{\"object\":\"list\",\"data\":[");
        bl__srv_model_obj(s, &b);
        bl__srv_buf_puts(&b, "]}\n");
        bl__srv_send_json(s, c, &b);
        return;
    }
    if (plen > 11 && memcmp(path, "/v1/models/", 11) == 0) {
        bl__srv_buf b = BL__SRV_BUF_INIT;
        if (!get) { allow = "GET"; goto wrong_method; }
        if (!bl__srv_path_is(path + 11, plen - 11, s->model_id)) {
            bl__srv_error(s, c, 404, "invalid_request_error", "model_not_found", "model", "The model does not exist: this server serves one model, see /v1/models");
            return;
        }
        bl__srv_model_obj(s, &b);
        bl__srv_send_json(s, c, &b);
        return;
    }
    if (bl__srv_path_is(path, plen, "/metrics")) {
        if (!get) { allow = "GET"; goto wrong_method; }
        bl__srv_metrics(s, c);
        return;
    }
    if (bl__srv_path_is(path, plen, "/tokenize")) {
        if (!post) { allow = "POST"; goto wrong_method; }
        if (bl__srv_tokenize_ep(s, c, body, blen, &f) < 0) goto failed;
        return;
    }
    if (bl__srv_path_is(path, plen, "/detokenize")) {
        if (!post) { allow = "POST"; goto wrong_method; }
        if (bl__srv_detokenize_ep(s, c, body, blen, &f) < 0) goto failed;
        return;
    }
    if (bl__srv_path_is(path, plen, "/v1/chat/completions") || bl__srv_path_is(path, plen, "/v1/completions")) {
        if (!post) { allow = "POST"; goto wrong_method; }
        if (bl__srv_completion_ep(s, c, body, blen, plen == 20, &f) < 0) goto failed;
        return;
    }
    bl__srv_error(s, c, 404, "invalid_request_error", "unknown_url", NULL, "Unknown request URL: see /v1/models, /v1/chat/completions, /v1/completions");
    return;
wrong_method:
    {
        char extra[64];
        snprintf(extra, sizeof extra, "Allow: %s\r\n", allow);
        memset(&f, 0, sizeof f);
        bl__srv_failf(&f, 405, "method_not_allowed", NULL, "use %s for this URL", allow);
        c->status = 405;
        {
            bl__srv_buf b = BL__SRV_BUF_INIT;
            bl__srv_buf_puts(&b, "{\"error\":{\"message\":");
            bl__srv_json_cstr(&b, f.msg);
            bl__srv_buf_puts(&b, ",\"type\":\"invalid_request_error\",\"param\":null,\"code\":\"method_not_allowed\"}}\n");
            if (b.oom) c->dead = 1;
            else bl__srv_respond(s, c, 405, "application/json", b.p, b.n, extra);
            bl__srv_buf_free(&b);
        }
    }
    return;
failed:
    bl__srv_error(s, c, f.status, f.type, f.code, f.param[0] ? f.param : NULL, f.msg);
}

/* >>page  THE CHAT PAGE ---------------------------------------------------------
   One self-contained page (no external assets) that streams from
   /v1/chat/completions with fetch and a stream reader. Model text is only
   ever set with textContent, so nothing it says becomes markup. Stored as
   lines because C99 compilers need only accept 4095-byte literals; the
   server joins them once at creation. */
static const char *const bl__srv_page_lines[] = {
    "<!doctype html>\n",
    "<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\n",
    "<title>berlin chat</title>\n",
    "<style>\n",
    "body{font:15px/1.45 system-ui,sans-serif;margin:0;background:#f3f3f0;color:#222;display:flex;flex-direction:column;height:100vh}\n",
    "header{padding:10px 16px;background:#1d2a3a;color:#fff;display:flex;gap:14px;align-items:center}\n",
    "header b{font-size:17px}\n",
    "header input{margin-left:auto;width:200px;padding:4px}\n",
    "#status{font-size:12px;color:#aab}\n",
    "#log{flex:1;overflow-y:auto;padding:16px}\n",
    ".msg{max-width:760px;margin:0 auto 10px;padding:10px 14px;border-radius:10px;white-space:pre-wrap;background:#fff;box-shadow:0 1px 2px #0002}\n",
    ".msg.user{background:#dce8ff}\n",
    ".who{display:block;font-size:12px;color:#667}\n",
    "form{display:flex;gap:8px;padding:12px 16px;background:#fff;border-top:1px solid #ddd}\n",
    "#input{flex:1;font:inherit;padding:8px;resize:none}\n",
    "button{font:inherit;padding:8px 18px}\n",
    "</style></head><body>\n",
    "<header><b>berlin.h chat</b><span id=\"status\">ready</span><input id=\"key\" type=\"password\" placeholder=\"API key (if any)\"></header>\n",
    "<div id=\"log\"></div>\n",
    "<form id=\"form\"><textarea id=\"input\" rows=\"2\" placeholder=\"Say something, Enter sends\"></textarea><button id=\"send\" type=\"submit\">Send</button></form>\n",
    "<script>\n",
    "const $ = id => document.getElementById(id);\n",
    "const log = $('log'), input = $('input'), key = $('key'), status = $('status');\n",
    "const history = [];\n",
    "key.value = localStorage.getItem('berlin_key') || '';\n",
    "function add(role, text) {\n",
    "  const d = document.createElement('div'), who = document.createElement('span'), t = document.createElement('span');\n",
    "  d.className = 'msg ' + role; who.className = 'who'; who.textContent = role; t.className = 'text'; t.textContent = text;\n",
    "  d.append(who, t); log.append(d); log.scrollTop = log.scrollHeight;\n",
    "  return t;\n",
    "}\n",
    "async function send(text) {\n",
    "  history.push({role: 'user', content: text});\n",
    "  add('user', text);\n",
    "  const out = add('assistant', ''), box = out.parentNode;\n",
    "  box.dataset.done = '0';\n",
    "  localStorage.setItem('berlin_key', key.value);\n",
    "  const headers = {'Content-Type': 'application/json'};\n",
    "  if (key.value) headers.Authorization = 'Bearer ' + key.value;\n",
    "  status.textContent = 'generating...';\n",
    "  let reply = '';\n",
    "  try {\n",
    "    const r = await fetch('/v1/chat/completions', {method: 'POST', headers,\n",
    "      body: JSON.stringify({messages: history, stream: true, max_tokens: 200})});\n",
    "    if (!r.ok) { const e = await r.json().catch(() => ({})); throw new Error((e.error && e.error.message) || r.statusText); }\n",
    "    const rd = r.body.getReader(), dec = new TextDecoder();\n",
    "    let buf = '';\n",
    "    for (;;) {\n",
    "      const {value, done} = await rd.read();\n",
    "      if (done) break;\n",
    "      buf += dec.decode(value, {stream: true});\n",
    "      let i;\n",
    "      while ((i = buf.indexOf('\\n\\n')) >= 0) {\n",
    "        const ev = buf.slice(0, i);\n",
    "        buf = buf.slice(i + 2);\n",
    "        for (const line of ev.split('\\n')) {\n",
    "          if (!line.startsWith('data: ') || line === 'data: [DONE]') continue;\n",
    "          const j = JSON.parse(line.slice(6));\n",
    "          if (j.error) throw new Error(j.error.message);\n",
    "          const c = j.choices && j.choices[0];\n",
    "          if (c && c.delta && c.delta.content) { reply += c.delta.content; out.textContent = reply; box.dataset.chunks = String(+(box.dataset.chunks || 0) + 1); log.scrollTop = log.scrollHeight; }\n",
    "        }\n",
    "      }\n",
    "    }\n",
    "    history.push({role: 'assistant', content: reply});\n",
    "    status.textContent = 'ready';\n",
    "  } catch (e) {\n",
    "    out.textContent = reply + ' [error: ' + e.message + ']';\n",
    "    status.textContent = 'error';\n",
    "    history.pop();\n",
    "  }\n",
    "  box.dataset.done = '1';\n",
    "}\n",
    "$('form').addEventListener('submit', e => { e.preventDefault(); const t = input.value.trim(); if (!t) return; input.value = ''; send(t); });\n",
    "input.addEventListener('keydown', e => { if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); $('form').requestSubmit(); } });\n",
    "</script>\n",
    "</body></html>\n",
    NULL
};

/* >>srv  SERVER: CREATE, RUN, STOP ----------------------------------------------
   The poll loop: I/O for every connection, then one scheduler step, then
   flush; dead connections are reaped between the phases. */

static bl_result bl__srv_err(bl_server *s, bl_result r, const char *fmt, ...) BL__PRINTF(3, 4);
static bl_result bl__srv_err(bl_server *s, bl_result r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err, sizeof s->err, fmt, ap);
    va_end(ap);
    return r;
}

static int bl__srv_nonblock(int fd) {
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return -1;
    return fcntl(fd, F_SETFD, FD_CLOEXEC);
}

static bl_result bl__srv_listen(bl_server *s) {
    struct sockaddr_in a4;
    struct sockaddr_in6 a6;
    struct sockaddr *sa;
    socklen_t sl;
    int one = 1, fam;
    const char *host = strcmp(s->host, "localhost") == 0 ? "127.0.0.1" : s->host;
    memset(&a4, 0, sizeof a4);
    memset(&a6, 0, sizeof a6);
    if (inet_pton(AF_INET, host, &a4.sin_addr) == 1) {
        fam = AF_INET;
        a4.sin_family = AF_INET;
        a4.sin_port = htons((uint16_t)s->port);
        sa = (struct sockaddr *)(void *)&a4;
        sl = sizeof a4;
    } else if (inet_pton(AF_INET6, host, &a6.sin6_addr) == 1) {
        fam = AF_INET6;
        a6.sin6_family = AF_INET6;
        a6.sin6_port = htons((uint16_t)s->port);
        sa = (struct sockaddr *)(void *)&a6;
        sl = sizeof a6;
    } else {
        return bl__srv_err(s, BL_ERR_ARG, "host '%s' is not a numeric IPv4/IPv6 address or localhost", s->host);
    }
    s->listen_fd = socket(fam, SOCK_STREAM, 0);
    if (s->listen_fd < 0) return bl__srv_err(s, BL_ERR_IO, "socket: %s", strerror(errno));
    setsockopt(s->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(s->listen_fd, sa, sl) != 0) return bl__srv_err(s, BL_ERR_IO, "cannot bind %s port %d: %s", s->host, s->port, strerror(errno));
    if (listen(s->listen_fd, 128) != 0) return bl__srv_err(s, BL_ERR_IO, "listen: %s", strerror(errno));
    if (bl__srv_nonblock(s->listen_fd) != 0) return bl__srv_err(s, BL_ERR_IO, "fcntl: %s", strerror(errno));
    {
        struct sockaddr_storage got;
        socklen_t gl = sizeof got;
        if (getsockname(s->listen_fd, (struct sockaddr *)&got, &gl) == 0)
            s->port = ntohs(got.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)(void *)&got)->sin6_port
                                                      : ((struct sockaddr_in *)(void *)&got)->sin_port);
    }
    return BL_OK;
}

bl_result bl_server_create(bl_server **out, const bl_model *m, const bl_server_desc *desc) {
    bl_server *s = (bl_server *)bl__calloc(sizeof *s);
    bl_server_desc *d;
    bl_ctx_desc cd;
    const bl_model_info *in;
    const char *why;
    size_t plen = 0;
    int i;
    bl_result r;
    *out = s;
    if (!s) return BL_ERR_NOMEM;
    s->listen_fd = -1;
    s->wake[0] = s->wake[1] = -1;
    if (desc) s->d = *desc;
    d = &s->d;
    if (!m) return bl__srv_err(s, BL_ERR_ARG, "no model");
    s->m = m;
    s->tok = bl_model_tokenizer(m);
    if (!s->tok) return bl__srv_err(s, BL_ERR_TOKENIZER, "the model has no tokenizer, which a server needs");
    if (d->chat_template) {
        s->chat_fmt = bl_chat_template_from_name(d->chat_template);
        if (s->chat_fmt == BL_CHAT_UNKNOWN)
            return bl__srv_err(s, BL_ERR_ARG, "unknown chat template '%s' (known: chatml, llama3, llama2, mistral, gemma, phi3)", d->chat_template);
        why = "as asked";
    } else if ((s->chat_fmt = bl_chat_template_detect(bl_tokenizer_chat_template(s->tok))) != BL_CHAT_UNKNOWN) {
        why = "the model's own template";
    } else {
        s->chat_fmt = BL_CHAT_CHATML;
        why = bl_tokenizer_chat_template(s->tok) ? "the model's template is not one berlin.h knows: falling back to ChatML, as llama-server does"
                                                 : "the model has no chat template: falling back to ChatML, as llama-server does";
    }
    s->chat_end = bl_tokenizer_find(s->tok, bl__srv_chat_end_text(s->chat_fmt), -1);
    s->chat_stop = s->chat_end < 0 ? bl__srv_chat_end_text(s->chat_fmt) : NULL;
    in = bl_model_get_info(m);
    if (!d->port) d->port = 8080;
    if (d->n_slots <= 0) d->n_slots = 4;
    if (d->max_queue <= 0) d->max_queue = 64;
    if (d->max_connections <= 0) d->max_connections = 256;
    if (d->max_header_bytes <= 0) d->max_header_bytes = 16384;
    if (d->max_body_bytes <= 0) d->max_body_bytes = 1 << 20;
    if (d->idle_timeout_ms <= 0) d->idle_timeout_ms = 30000;
    if (d->request_timeout_ms <= 0) d->request_timeout_ms = 60000;
    if (d->max_output_bytes <= 0) d->max_output_bytes = 8 << 20;
    if (d->port > 65535 || d->port < BL_SERVER_PORT_ANY) return bl__srv_err(s, BL_ERR_ARG, "port %d is out of range", d->port);
    if (d->n_slots > 256 || d->max_connections > 65536 || d->max_header_bytes > (1 << 24) || d->max_body_bytes > (1 << 30))
        return bl__srv_err(s, BL_ERR_ARG, "a server limit is out of range (slots <= 256, connections <= 65536, header <= 16 MiB, body <= 1 GiB)");
    s->port = d->port == BL_SERVER_PORT_ANY ? 0 : d->port;
    snprintf(s->host, sizeof s->host, "%s", d->host ? d->host : "127.0.0.1");
    snprintf(s->model_id, sizeof s->model_id, "%s", d->model_id && *d->model_id ? d->model_id : "berlin");
    if (d->api_key && *d->api_key) {
        if (strlen(d->api_key) >= sizeof s->api_key) return bl__srv_err(s, BL_ERR_ARG, "the API key is longer than %d bytes", (int)sizeof s->api_key - 1);
        snprintf(s->api_key, sizeof s->api_key, "%s", d->api_key);
        s->has_key = 1;
    }
    d->host = s->host;
    d->model_id = s->model_id;
    d->api_key = NULL; /* our copy is in s->api_key; the caller's may go away */
    s->conns = (bl__srv_conn *)bl__calloc((size_t)d->max_connections * sizeof *s->conns);
    s->pfds = (struct pollfd *)bl__calloc(((size_t)d->max_connections + 2) * sizeof *s->pfds);
    s->pfd_conn = (int *)bl__calloc(((size_t)d->max_connections + 2) * sizeof *s->pfd_conn);
    s->slots = (bl__srv_slot *)bl__calloc((size_t)d->n_slots * sizeof *s->slots);
    s->b_seq = (bl_batch_seq *)bl__calloc((size_t)d->n_slots * sizeof *s->b_seq);
    s->b_slot = (int *)bl__calloc((size_t)d->n_slots * sizeof(int));
    s->b_res = (bl_result *)bl__calloc((size_t)d->n_slots * sizeof(bl_result));
    for (i = 0; bl__srv_page_lines[i]; i++) plen += strlen(bl__srv_page_lines[i]);
    s->page = (char *)bl__alloc(plen + 1);
    if (!s->conns || !s->pfds || !s->pfd_conn || !s->slots || !s->b_seq || !s->b_slot || !s->b_res || !s->page)
        return bl__srv_err(s, BL_ERR_NOMEM, "out of memory for %d connections", d->max_connections);
    for (i = 0, plen = 0; bl__srv_page_lines[i]; i++) {
        size_t n = strlen(bl__srv_page_lines[i]);
        memcpy(s->page + plen, bl__srv_page_lines[i], n);
        plen += n;
    }
    s->page[plen] = 0;
    for (i = 0; i < d->max_connections; i++) s->conns[i].fd = -1;
    memset(&cd, 0, sizeof cd);
    cd.n_ctx = d->n_ctx > 0 ? d->n_ctx : (in->n_ctx_train > 0 && in->n_ctx_train < 2048 ? in->n_ctx_train : 2048);
    cd.n_threads = d->n_threads;
    cd.kv_type = d->kv_type;
    cd.n_batch = 1; /* the slots decode through s->batch, not their own scratch */
    for (i = 0; i < d->n_slots; i++) {
        r = bl_ctx_create(&s->slots[i].ctx, m, &cd);
        if (r != BL_OK) return bl__srv_err(s, r, "slot %d: %s", i, bl_ctx_last_error(s->slots[i].ctx));
    }
    {
        /* every slot's prompt chunk fits one step up to 8 slots; beyond, a
           step takes more than one pass (bl_batch_decode splits it) */
        bl_batch_desc bd;
        memset(&bd, 0, sizeof bd);
        bd.max_tokens = d->n_slots * 64 < 512 ? d->n_slots * 64 : 512;
        bd.max_seqs = d->n_slots;
        bd.n_threads = d->n_threads;
        r = bl_batch_create(&s->batch, m, &bd);
        if (r != BL_OK) return bl__srv_err(s, r, "batch: %s", bl_batch_last_error(s->batch));
    }
    s->n_ctx = bl_ctx_n_ctx(s->slots[0].ctx);
    if (pipe(s->wake) != 0 || bl__srv_nonblock(s->wake[0]) != 0 || bl__srv_nonblock(s->wake[1]) != 0)
        return bl__srv_err(s, BL_ERR_IO, "pipe: %s", strerror(errno));
    r = bl__srv_listen(s);
    if (r != BL_OK) return r;
    s->rng = (uint64_t)time(NULL) * 0x9E3779B97F4A7C15ULL ^ (uint64_t)getpid() ^ ((uint64_t)(size_t)s << 16);
    if (!s->rng) s->rng = 1;
    s->t_start = bl__srv_now();
    bl__srv_log(s, "model %s: %s, %d layers, vocab %d; %d slots of %d tokens", s->model_id, in->arch ? in->arch : "?", in->n_layer,
                in->n_vocab, d->n_slots, s->n_ctx);
    bl__srv_log(s, "chat template %s (%s); a turn ends at %s%s", bl_chat_template_name(s->chat_fmt), why,
                bl__srv_chat_end_text(s->chat_fmt), s->chat_stop ? " as text: the vocabulary has no such token" : "");
    bl__srv_log(s, "listening on http://%s%s%s:%d%s", strchr(s->host, ':') ? "[" : "", s->host, strchr(s->host, ':') ? "]" : "", s->port,
                s->has_key ? " (API key required)" : "");
    return BL_OK;
}

int bl_server_port(const bl_server *s) { return s ? s->port : -1; }
const char *bl_server_last_error(const bl_server *s) { return s ? s->err : "out of memory"; }

void bl_server_stop(bl_server *s) {
    ssize_t w;
    s->stop_flag = 1;
    w = write(s->wake[1], "x", 1);
    (void)w;
}

/* Stop: no new connections, end every generation with what it has, turn the
   queue away, and let connections close once their output is flushed. */
static void bl__srv_shutdown(bl_server *s) {
    int i, busy = 0;
    for (i = 0; i < s->d.n_slots; i++) busy += s->slots[i].job != NULL;
    bl__srv_log(s, "stopping: finishing %d generations, refusing %d queued requests", busy, s->q_len);
    if (s->listen_fd >= 0) close(s->listen_fd);
    s->listen_fd = -1;
    for (i = 0; i < s->d.n_slots; i++) {
        bl__srv_job *j = s->slots[i].job;
        if (!j) continue;
        if (j->conn->dead) { bl__srv_cancel_job(s, j); continue; }
        if (!j->finish) j->finish = BL__SRV_FIN_STOP;
        bl__srv_job_finish(s, j);
    }
    while (s->q_head) {
        bl__srv_job *j = s->q_head;
        bl__srv_conn *c = j->conn;
        s->q_head = j->next;
        s->q_len--;
        c->job = NULL;
        bl__srv_job_free(j);
        c->keep_alive = 0;
        bl__srv_error(s, c, 503, "server_error", "shutting_down", NULL, "the server is shutting down");
    }
    s->q_tail = NULL;
    for (i = 0; i < s->d.max_connections; i++) {
        bl__srv_conn *c = &s->conns[i];
        if (c->state == BL__SRV_FREE) continue;
        c->keep_alive = 0;
        if (c->state == BL__SRV_READ) c->state = BL__SRV_CLOSING;
    }
}

bl_result bl_server_run(bl_server *s) {
    int stopping = 0, i;
    double deadline = 0;
    size_t cap = (size_t)s->d.max_header_bytes + (size_t)s->d.max_body_bytes + 1024;
    for (;;) {
        int np = 0, busy = 0, timeout;
        double now;
        if (s->stop_flag && !stopping) {
            stopping = 1;
            bl__srv_shutdown(s);
            deadline = bl__srv_now() + 2.0;
        }
        if (stopping && (s->n_open == 0 || bl__srv_now() > deadline)) break;
        s->pfds[np].fd = s->wake[0];
        s->pfds[np].events = POLLIN;
        s->pfd_conn[np++] = -1;
        if (s->listen_fd >= 0) {
            s->pfds[np].fd = s->listen_fd;
            s->pfds[np].events = POLLIN;
            s->pfd_conn[np++] = -2;
        }
        for (i = 0; i < s->d.max_connections; i++) {
            bl__srv_conn *c = &s->conns[i];
            short ev = 0;
            if (c->state == BL__SRV_FREE || c->dead) continue;
            if (!c->eof && (c->in.n < cap || c->state == BL__SRV_CLOSING)) ev |= POLLIN;
            if (c->out_off < c->out.n) ev |= POLLOUT;
            s->pfds[np].fd = c->fd;
            s->pfds[np].events = ev;
            s->pfds[np].revents = 0;
            s->pfd_conn[np++] = i;
        }
        for (i = 0; i < s->d.n_slots; i++) busy |= s->slots[i].job != NULL;
        timeout = busy || s->q_head ? 0 : stopping ? 20 : 100;
        if (poll(s->pfds, (nfds_t)np, timeout) < 0 && errno != EINTR) return bl__srv_err(s, BL_ERR_IO, "poll: %s", strerror(errno));
        for (i = 0; i < np; i++) {
            short re = s->pfds[i].revents;
            if (!re) continue;
            if (s->pfd_conn[i] == -1) {
                char sink[64];
                while (read(s->wake[0], sink, sizeof sink) > 0) {}
            } else if (s->pfd_conn[i] == -2) {
                bl__srv_accept(s);
            } else {
                bl__srv_conn *c = &s->conns[s->pfd_conn[i]];
                if (re & (POLLIN | POLLHUP | POLLERR)) bl__srv_read(s, c);
                if (re & POLLNVAL) c->dead = 1;
                if (re & POLLOUT) bl__srv_flush(c);
            }
        }
        now = bl__srv_now();
        for (i = 0; i < s->d.max_connections; i++) {
            bl__srv_conn *c = &s->conns[i];
            if (c->state == BL__SRV_FREE) continue;
            if (c->state == BL__SRV_READ && !c->dead && !stopping) bl__srv_process(s, c);
            if (c->shut && now - c->last_io > 2.0) c->dead = 1;
            if (c->state == BL__SRV_READ && !c->dead && c->in.n > 0 && now - c->t0 > s->d.request_timeout_ms * 1e-3) {
                /* a trickle of bytes keeps a connection from idling, not forever */
                c->in.n = 0;
                bl__srv_fail_close(s, c, 408, "the request took too long to arrive");
                c->last_io = now;
            }
            if (c->state != BL__SRV_BUSY && !c->dead && now - c->last_io > s->d.idle_timeout_ms * 1e-3) {
                if (c->state == BL__SRV_READ && c->in.n > 0) {
                    c->in.n = 0;
                    bl__srv_fail_close(s, c, 408, "the request was not completed in time");
                    c->last_io = now;
                } else {
                    c->dead = 1;
                }
            }
            if (c->dead) bl__srv_conn_close(s, c);
        }
        if (!stopping) {
            bl__srv_assign(s);
            bl__srv_step(s);
        }
        for (i = 0; i < s->d.max_connections; i++) {
            bl__srv_conn *c = &s->conns[i];
            if (c->state == BL__SRV_FREE) continue;
            bl__srv_flush(c);
            if (c->state == BL__SRV_CLOSING && c->out_off >= c->out.n && c->eof) c->dead = 1;
            if (c->state == BL__SRV_CLOSING && c->out_off >= c->out.n && !c->shut && !c->dead) {
                /* Say we are done sending, then drain what the peer still sends until
                   its EOF (or a short linger): closing with unread input would reset
                   the connection and could destroy the answer before it is read. */
                shutdown(c->fd, SHUT_WR);
                c->shut = 1;
                c->last_io = bl__srv_now();
            }
            if (c->dead) bl__srv_conn_close(s, c);
        }
    }
    for (i = 0; i < s->d.max_connections; i++)
        if (s->conns[i].state != BL__SRV_FREE) bl__srv_conn_close(s, &s->conns[i]);
    bl__srv_log(s, "stopped after %llu requests, %llu tokens generated", s->m_requests, s->m_gen_tokens);
    return BL_OK;
}

void bl_server_destroy(bl_server *s) {
    int i;
    if (!s) return;
    if (s->conns)
        for (i = 0; i < s->d.max_connections; i++)
            if (s->conns[i].state != BL__SRV_FREE) bl__srv_conn_close(s, &s->conns[i]);
    while (s->q_head) { bl__srv_job *j = s->q_head; s->q_head = j->next; bl__srv_job_free(j); }
    if (s->slots)
        for (i = 0; i < s->d.n_slots; i++) bl_ctx_destroy(s->slots[i].ctx);
    if (s->listen_fd >= 0) close(s->listen_fd);
    if (s->wake[0] >= 0) close(s->wake[0]);
    if (s->wake[1] >= 0) close(s->wake[1]);
    BL_FREE(s->conns);
    BL_FREE(s->pfds);
    BL_FREE(s->pfd_conn);
    BL_FREE(s->slots);
    bl_batch_destroy(s->batch);
    BL_FREE(s->b_seq);
    BL_FREE(s->b_slot);
    BL_FREE(s->b_res);
    BL_FREE(s->page);
    BL_FREE(s);
}

#endif /* BERLIN_SERVER_IMPLEMENTATION */

/*
   HISTORY
       0.1.0  OpenAI-compatible endpoints, SSE streaming, slots with a
              request queue and a round-robin decode step, API keys,
              limits on every input, the chat page.
   LICENSE: MIT, the same terms as berlin.h (see its last lines).
*/
