/* test_server.c - berlin_server.h: the HTTP parser as a pure function (unit
   tests and a bounded mutation fuzz), JSON output, stop strings; then an
   in-process server thread (so ASan/UBSan see the server code) driven with raw
   sockets through every endpoint and every robustness case; then, in the
   plain build, build/berlin-server started on a free loopback port and
   checked with curl, the official `openai` npm client and headless Chromium
   (each skipped with a SKIP line when the tool is missing). */
#define _POSIX_C_SOURCE 200809L
#define BERLIN_IMPLEMENTATION
#include "berlin.h"
#define BERLIN_SERVER_IMPLEMENTATION
#include "berlin_server.h"
#include "testutil.h"

#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>

#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

#define MODEL "models/stories260K.gguf"

/* ---- small helpers ---------------------------------------------------- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_ms(int ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}

static int connect_to(int port) {
    struct sockaddr_in a;
    struct timeval tv;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    tv.tv_sec = 15;
    tv.tv_usec = 0;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) { close(fd); return -1; }
    return fd;
}

static int send_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k <= 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

typedef struct resp {
    int status;
    char head[4096];
    char *body;     /* de-chunked, NUL-terminated */
    size_t body_len;
} resp;

static void resp_free(resp *r) { free(r->body); memset(r, 0, sizeof *r); }

/* Read one response from fd (Content-Length, chunked, or until EOF).
   Returns 0, or -1 when the connection ended before a whole response. */
static int read_response(int fd, resp *r) {
    char *buf = NULL;
    size_t n = 0, cap = 0, head = 0;
    long long clen = -1;
    int chunked = 0, rc = -1;
    memset(r, 0, sizeof *r);
    for (;;) {
        ssize_t k;
        if (!head) {
            char *e = buf ? strstr(buf, "\r\n\r\n") : NULL;
            if (e) {
                const char *h;
                head = (size_t)(e - buf) + 4;
                snprintf(r->head, sizeof r->head, "%.*s", (int)head, buf);
                if (sscanf(buf, "HTTP/1.%*d %d", &r->status) != 1) break;
                h = strstr(r->head, "Content-Length: ");
                if (h) clen = atoll(h + 16);
                chunked = strstr(r->head, "Transfer-Encoding: chunked") != NULL;
                if (r->status == 100) { /* interim: drop it and read on */
                    memmove(buf, buf + head, n - head);
                    n -= head;
                    buf[n] = 0;
                    head = 0;
                    continue;
                }
            }
        }
        if (head && clen >= 0 && n - head >= (size_t)clen) { rc = 0; break; }
        if (head && chunked && n >= head + 5 && memcmp(buf + n - 5, "0\r\n\r\n", 5) == 0) { rc = 0; break; }
        if (cap - n < 4097) {
            cap = cap ? cap * 2 : 16384;
            buf = (char *)realloc(buf, cap);
        }
        k = recv(fd, buf + n, cap - n - 1, 0);
        if (k <= 0) { if (head && clen < 0 && !chunked) rc = 0; break; }
        n += (size_t)k;
        buf[n] = 0;
    }
    if (head) {
        const char *p = buf + head, *e = buf + n;
        r->body = (char *)malloc(n - head + 1);
        if (chunked) {
            while (p < e) {
                char *end;
                unsigned long len = strtoul(p, &end, 16);
                if (end == p || end + 2 > e) break;
                p = end + 2;
                if (len == 0 || p + len > e) break;
                memcpy(r->body + r->body_len, p, len);
                r->body_len += len;
                p += len + 2;
            }
        } else {
            size_t len = clen >= 0 && (size_t)clen < (size_t)(e - p) ? (size_t)clen : (size_t)(e - p);
            memcpy(r->body, p, len);
            r->body_len = len;
        }
        r->body[r->body_len] = 0;
    }
    free(buf);
    return rc;
}

/* One request on a fresh connection (Connection: close). Returns the status, 0 if none. */
static int request(int port, const char *method, const char *path, const char *body, const char *extra, resp *r) {
    char head[2048];
    int fd = connect_to(port), hn;
    memset(r, 0, sizeof *r);
    if (fd < 0) return 0;
    hn = snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: test\r\nConnection: close\r\n%s%s", method, path, extra ? extra : "",
                  body ? "Content-Type: application/json\r\n" : "");
    if (body) hn += snprintf(head + hn, sizeof head - (size_t)hn, "Content-Length: %zu\r\n", strlen(body));
    hn += snprintf(head + hn, sizeof head - (size_t)hn, "\r\n");
    if (send_all(fd, head, (size_t)hn) == 0 && (!body || send_all(fd, body, strlen(body)) == 0)) read_response(fd, r);
    close(fd);
    return r->status;
}

/* Raw bytes on a fresh connection; the status of whatever comes back (0: none). */
static int raw_request(int port, const char *bytes, size_t n, resp *r) {
    int fd = connect_to(port);
    memset(r, 0, sizeof *r);
    if (fd < 0) return 0;
    if (send_all(fd, bytes, n) == 0) read_response(fd, r);
    close(fd);
    return r->status;
}

/* Walk "a.b.0.c" through a parsed JSON document: node index or -1. */
static int jpath(const bl__json *j, const char *path) {
    int k = 0;
    char seg[64];
    while (k >= 0 && *path) {
        size_t n = strcspn(path, ".");
        snprintf(seg, sizeof seg, "%.*s", (int)n, path);
        if (j->nodes[k].type == BL__J_ARR) k = bl__json_at(j, k, atoi(seg));
        else k = bl__json_get(j, k, seg);
        path += n;
        if (*path == '.') path++;
    }
    return k;
}

/* String at path as a malloc'd copy ("" if absent). */
static char *jstr(const char *doc, size_t len, const char *path) {
    bl__json j;
    char *s = NULL;
    if (bl__json_parse(&j, doc, len) == 0) {
        int k = jpath(&j, path);
        if (k >= 0) s = bl__json_str(&j, k, NULL);
        bl__json_free(&j);
    }
    if (!s) { s = (char *)malloc(1); s[0] = 0; }
    return s;
}

static double jnum(const char *doc, size_t len, const char *path) {
    bl__json j;
    double v = -1;
    if (bl__json_parse(&j, doc, len) == 0) {
        if (!bl__json_num(&j, jpath(&j, path), &v)) v = -1;
        bl__json_free(&j);
    }
    return v;
}

static int json_ok(const char *doc, size_t len) {
    bl__json j;
    int ok = bl__json_parse(&j, doc, len) == 0;
    if (ok) bl__json_free(&j);
    return ok;
}

/* Is this a well-formed OpenAI error object with the given code (NULL: any)? */
static int is_error(const resp *r, int status, const char *code) {
    char *m, *t, *c;
    int ok;
    if (r->status != status || !r->body || !json_ok(r->body, r->body_len)) return 0;
    m = jstr(r->body, r->body_len, "error.message");
    t = jstr(r->body, r->body_len, "error.type");
    c = jstr(r->body, r->body_len, "error.code");
    ok = m[0] && t[0] && (!code || strcmp(c, code) == 0);
    free(m); free(t); free(c);
    return ok;
}

/* Concatenate the text of an SSE stream's chunks; count them; check each is JSON. */
static char *sse_text(const resp *r, int chat, int *n_chunks, int *all_json, int *done, char *finish, size_t fcap) {
    size_t cap = r->body_len + 1, n = 0;
    char *out = (char *)calloc(1, cap);
    const char *p = r->body ? r->body : "";
    *n_chunks = 0;
    *all_json = 1;
    *done = 0;
    if (finish) finish[0] = 0;
    while ((p = strstr(p, "data: ")) != NULL) {
        const char *e = strstr(p, "\n\n");
        size_t len;
        char *t, *fr;
        if (!e) { *all_json = 0; break; }
        p += 6;
        len = (size_t)(e - p);
        if (len == 6 && memcmp(p, "[DONE]", 6) == 0) { *done = 1; p = e; continue; }
        (*n_chunks)++;
        if (!json_ok(p, len)) *all_json = 0;
        t = jstr(p, len, chat ? "choices.0.delta.content" : "choices.0.text");
        fr = jstr(p, len, "choices.0.finish_reason");
        if (finish && fr[0]) snprintf(finish, fcap, "%s", fr);
        if (n + strlen(t) < cap) { memcpy(out + n, t, strlen(t)); n += strlen(t); }
        free(t);
        free(fr);
        p = e;
    }
    return out;
}

/* ---- 1. the parser, a pure function --------------------------------- */

static bl_result parse(const char *s, bl_http_request *r) { return bl_http_parse_request(s, strlen(s), 0, r); }

static void test_parser(void) {
    bl_http_request r;
    const bl_http_header *h;
    const char *ok = "POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\nX-Pad:   v  \r\n\r\n{\"a\":1}";
    CHECK(parse(ok, &r) == BL_OK && r.complete, "a good request parses");
    CHECK(r.method_len == 4 && memcmp(r.method, "POST", 4) == 0, "method");
    CHECK(r.target_len == 24 && memcmp(r.target, "/v1/chat/completions?x=1", 24) == 0, "target");
    CHECK(r.content_length == 12 && r.keep_alive == 1 && r.minor == 1, "length and keep-alive");
    CHECK(r.head_len == strlen(ok) - 7, "head length %zu", r.head_len);
    h = bl_http_find_header(&r, "x-pad");
    CHECK(h && h->value_len == 1 && h->value[0] == 'v', "header value trimmed, name case-insensitive");
    CHECK(parse("GET / HTTP/1.1\r\nHost: a\r\n", &r) == BL_OK && !r.complete, "partial head: need more");
    CHECK(parse("GET / HTTP/1.1\nHost: a\n\n", &r) == BL_OK && r.complete && r.n_headers == 1, "bare LF line ends");
    CHECK(parse("GET / HTTP/1.0\r\n\r\n", &r) == BL_OK && r.keep_alive == 0, "1.0 closes by default");
    CHECK(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &r) == BL_OK && r.keep_alive == 1, "1.0 keep-alive");
    CHECK(parse("GET / HTTP/1.1\r\nConnection: foo, close\r\n\r\n", &r) == BL_OK && r.keep_alive == 0, "Connection: close in a list");
    CHECK(parse("POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", &r) == BL_OK && r.expect_continue, "Expect");
    CHECK(parse("GET / HTTP/2.0\r\n\r\n", &r) == BL_ERR_UNSUPPORTED && r.status == 505, "HTTP/2 -> 505");
    CHECK(parse("GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", &r) == BL_ERR_UNSUPPORTED && r.status == 501, "TE -> 501");
    CHECK(parse("GARBAGE\r\n\r\n", &r) == BL_ERR_FORMAT && r.status == 400, "no target -> 400");
    CHECK(parse("GET /\r\n\r\n", &r) == BL_ERR_FORMAT, "no version -> 400");
    CHECK(parse("GET  / HTTP/1.1\r\n\r\n", &r) == BL_ERR_FORMAT, "double space -> 400");
    CHECK(parse("GET http://x/ HTTP/1.1\r\n\r\n", &r) == BL_ERR_FORMAT, "absolute-form -> 400");
    CHECK(parse("GET / HTTP/1.1\r\nNo colon here\r\n\r\n", &r) == BL_ERR_FORMAT, "header without colon -> 400");
    CHECK(parse("GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", &r) == BL_ERR_FORMAT, "obs-fold -> 400");
    CHECK(parse("GET / HTTP/1.1\r\nA : b\r\n\r\n", &r) == BL_ERR_FORMAT, "space before colon -> 400");
    CHECK(parse("GET / HTTP/1.1\r\nA: b\rc\r\n\r\n", &r) == BL_ERR_FORMAT, "bare CR in a value -> 400");
    CHECK(parse("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", &r) == BL_ERR_FORMAT, "negative length -> 400");
    CHECK(parse("POST / HTTP/1.1\r\nContent-Length: 1e3\r\n\r\n", &r) == BL_ERR_FORMAT, "non-digit length -> 400");
    CHECK(parse("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", &r) == BL_ERR_FORMAT, "huge length -> 400");
    CHECK(parse("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", &r) == BL_ERR_FORMAT, "conflicting lengths -> 400");
    CHECK(parse("POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n", &r) == BL_OK && r.content_length == 2, "repeated equal lengths");
    CHECK(parse("\x16\x03\x01\x02\x00", &r) == BL_ERR_FORMAT, "a TLS hello is refused at once");
    {
        char big[20000];
        memset(big, 'a', sizeof big);
        memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
        big[sizeof big - 1] = 0;
        CHECK(bl_http_parse_request(big, strlen(big), 16384, &r) == BL_ERR_ARG && r.status == 431, "endless header -> 431");
        CHECK(bl_http_parse_request(big, 1000, 16384, &r) == BL_OK && !r.complete, "...but not before the limit");
    }
    {
        char many[4096];
        int n = snprintf(many, sizeof many, "GET / HTTP/1.1\r\n"), i;
        for (i = 0; i < 70; i++) n += snprintf(many + n, sizeof many - (size_t)n, "H%d: v\r\n", i);
        snprintf(many + n, sizeof many - (size_t)n, "\r\n");
        CHECK(parse(many, &r) == BL_ERR_ARG && r.status == 431, "too many headers -> 431");
    }
}

/* Mutate good requests at random: the parser must never read past the
   buffer (ASan watches) and must keep its invariants. Bounded: 30000 cases. */
static void test_parser_fuzz(void) {
    static const char *seeds[] = {
        "POST /v1/completions HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello",
        "GET /health HTTP/1.0\nExpect: 100-continue\n\n",
        "GET / HTTP/1.1\r\nA:\r\nB: \t x \t\r\n\r\n",
    };
    uint64_t rng = 0x1234567;
    int it, bad = 0, i;
    for (it = 0; it < 30000; it++) {
        const char *seed = seeds[it % 3];
        size_t n = strlen(seed), k;
        char *buf;
        bl_http_request r;
        bl_result res;
        int muts;
        rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
        k = (size_t)(rng % (n + 1)); /* truncate to a random length, exactly sized so ASan sees overreads */
        buf = (char *)malloc(k ? k : 1);
        memcpy(buf, seed, k);
        muts = (int)((rng >> 20) % 4);
        for (i = 0; i < muts && k; i++) {
            rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
            buf[(rng >> 8) % k] = (char)(rng >> 40);
        }
        res = bl_http_parse_request(buf, k, (int)(rng % 64) + 8, &r);
        if (res == BL_OK && r.complete && (r.head_len > k || r.method_len <= 0 || r.target_len <= 0)) bad++;
        if (res != BL_OK && (r.status < 400 || !r.error)) bad++;
        free(buf);
    }
    CHECK(bad == 0, "parser fuzz: %d broken invariants in 30000 mutated inputs", bad);
}

/* ---- 2. JSON output and stop strings --------------------------------- */

static void test_json_and_stops(void) {
    bl__srv_buf b = BL__SRV_BUF_INIT;
    const char in[] = "q\"b\\n\n\t\x01\x1f \xc3\xa9 \xff \xe2\x82 \xed\xa0\x80 end";
    char *back;
    size_t bl;
    bl__json j;
    bl__srv_json_str(&b, in, sizeof in - 1);
    CHECK(!b.oom && bl__json_parse(&j, b.p, b.n) == 0, "escaped string is valid JSON: %s", b.p);
    back = bl__json_str(&j, 0, &bl);
    CHECK(back && strncmp(back, "q\"b\\n\n\t\x01\x1f \xc3\xa9 ", 12) == 0, "escape round trip");
    CHECK(back && strstr(back, "\xef\xbf\xbd") != NULL, "invalid UTF-8 became U+FFFD");
    free(back);
    bl__json_free(&j);
    bl__srv_buf_free(&b);
    {
        bl__srv_job jb;
        memset(&jb, 0, sizeof jb);
        jb.stop[0] = (char *)"END";
        jb.stop[1] = (char *)"xyz";
        jb.n_stop = 2;
        bl__srv_buf_puts(&jb.text, "hello E");
        CHECK(bl__srv_stop_hold(&jb) == 1, "a possible stop prefix is held");
        bl__srv_buf_puts(&jb.text, "N");
        bl__srv_stop_check(&jb, 1);
        CHECK(!jb.finish && bl__srv_stop_hold(&jb) == 2, "still a prefix");
        bl__srv_buf_puts(&jb.text, "D and more");
        bl__srv_stop_check(&jb, 10);
        CHECK(jb.finish == BL__SRV_FIN_STOP && strcmp(jb.text.p, "hello ") == 0, "stop across pieces cuts the text: '%s'", jb.text.p);
        bl__srv_buf_free(&jb.text);
    }
}

/* Streaming assembly: byte tokens of one character (stories260K has <0xE2>,
   <0x82>, <0xAC> for the euro sign) produce text only when it is whole, a
   stop string held back on top still works, and a half character at the end
   becomes U+FFFD. */
static void test_stream_text(void) {
    bl_model *m = NULL;
    const bl_tokenizer *tok;
    bl__srv_job jb;
    int32_t e2, x82, xac;
    if (bl_model_load(&m, MODEL, NULL) != BL_OK) {
        CHECK(0, "load %s: %s", MODEL, bl_model_last_error(m));
        bl_model_destroy(m);
        return;
    }
    tok = bl_model_tokenizer(m);
    e2 = bl_tokenizer_find(tok, "<0xE2>", -1);
    x82 = bl_tokenizer_find(tok, "<0x82>", -1);
    xac = bl_tokenizer_find(tok, "<0xAC>", -1);
    CHECK(e2 >= 0 && x82 >= 0 && xac >= 0, "stories260K has byte tokens");
    if (e2 >= 0 && x82 >= 0 && xac >= 0) {
        memset(&jb, 0, sizeof jb);
        bl_detok_init(&jb.dt, tok);
        jb.stop[0] = (char *)"\xe2\x82\xac!";
        jb.n_stop = 1;
        CHECK(bl__srv_job_text(&jb, e2) == 0 && jb.text.n == 0, "first byte of a character: nothing yet");
        CHECK(bl__srv_job_text(&jb, x82) == 0 && jb.text.n == 0, "second byte: still nothing");
        CHECK(bl__srv_job_text(&jb, xac) == 0 && jb.text.n == 3 && memcmp(jb.text.p, "\xe2\x82\xac", 3) == 0, "third byte: the whole character");
        CHECK(bl__srv_stop_hold(&jb) == 3, "and it is held back as the start of a stop string");
        CHECK(bl__srv_job_text(&jb, x82) == 0 && jb.text.n == 6 && memcmp(jb.text.p + 3, "\xef\xbf\xbd", 3) == 0 && bl__srv_stop_hold(&jb) == 0,
              "a stray continuation byte is U+FFFD, and the stop string can no longer start: all of it may go");
        CHECK(bl__srv_job_text(&jb, e2) == 0 && jb.text.n == 6, "a new character starts: held in the decoder");
        CHECK(bl__srv_job_text(&jb, -1) == 0 && jb.text.n == 9 && memcmp(jb.text.p + 6, "\xef\xbf\xbd", 3) == 0,
              "a half character at the end becomes U+FFFD");
        CHECK(!jb.finish, "no stop string seen");
        bl__srv_buf_free(&jb.text);

        memset(&jb, 0, sizeof jb);
        bl_detok_init(&jb.dt, tok);
        jb.stop[0] = (char *)"\xe2\x82\xac";
        jb.n_stop = 1;
        bl__srv_job_text(&jb, e2);
        bl__srv_job_text(&jb, x82);
        bl__srv_job_text(&jb, xac);
        CHECK(jb.finish == BL__SRV_FIN_STOP && jb.cut && jb.text.n == 0, "a stop string made of byte tokens cuts the text");
        CHECK(bl__srv_job_text(&jb, e2) == 0 && bl__srv_job_text(&jb, -1) == 0 && jb.text.n == 0, "nothing joins text cut at a stop");
        bl__srv_buf_free(&jb.text);
    }
    bl_model_destroy(m);
}

/* The prompt of a chat request in a model's own format: the Llama 3
   tokenizer's template is recognised, and a system + user conversation
   becomes exactly Llama 3's text and ids. */
static void test_chat_prompt(void) {
    bl_tokenizer *t = NULL;
    bl_chat_msg msgs[2];
    bl__srv_buf text = BL__SRV_BUF_INIT;
    bl__srv_fail f;
    int32_t *ids = NULL;
    int n, fmt;
    static const char want[] =
        "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n";
    /* 128006/128007 the header brackets, 9125 system, 882 user, 78191 assistant,
       271 "\n\n", 128009 <|eot_id|>; 3513 10015 13 "Be brief.", 13347 "Hi" */
    static const int32_t want_ids[18] = {128006, 9125, 128007, 271, 3513, 10015, 13, 128009,
                                         128006, 882, 128007, 271, 13347, 128009, 128006, 78191, 128007, 271};
    if (bl_tokenizer_load(&t, tu_shared("tokenizers/json/llama3/tokenizer.json"), 0) != BL_OK) {
        CHECK(0, "load the Llama 3 tokenizer: %s", bl_tokenizer_last_error(t));
        bl_tokenizer_destroy(t);
        return;
    }
    fmt = bl_chat_template_detect(bl_tokenizer_chat_template(t));
    CHECK(fmt == BL_CHAT_LLAMA3, "the Llama 3 template is recognised (%d)", fmt);
    msgs[0].role = "system";
    msgs[0].content = "Be brief.";
    msgs[1].role = "user";
    msgs[1].content = " Hi\n";
    memset(&f, 0, sizeof f);
    n = bl__srv_chat_prompt(t, fmt, msgs, 2, &text, &ids, &f);
    CHECK(n > 10 && text.p && strcmp(text.p, want) == 0, "Llama 3 prompt text: %s", text.p ? text.p : "(none)");
    if (n > 10) {
        /* BOS (<|begin_of_text|>) when the vocabulary asks for one: tokenizer.json alone does not say so */
        int b = bl_tokenizer_add_bos(t);
        CHECK(n == 18 + b && (!b || ids[0] == 128000) && memcmp(ids + b, want_ids, sizeof want_ids) == 0, "Llama 3 prompt ids (%d of them)", n);
        CHECK(bl_tokenizer_is_eog(t, 128009), "<|eot_id|> ends the turn");
    }
    BL_FREE(ids);
    ids = NULL;
    bl__srv_buf_free(&text);
    msgs[0].role = "tool";
    memset(&f, 0, sizeof f);
    CHECK(bl__srv_chat_prompt(t, BL_CHAT_LLAMA2, msgs, 2, &text, &ids, &f) == -1 && f.status == 400, "a role the format has no place for is a 400");
    BL_FREE(ids);
    bl__srv_buf_free(&text);
    bl_tokenizer_destroy(t);
}

/* ---- 3. an in-process server ------------------------------------------ */

static void quiet_log(void *user, const char *line);

typedef struct logcap {
    pthread_mutex_t mu;
    int lines, cancelled, chatml_fallback;
} logcap;

static void log_to_cap(void *user, const char *line) {
    logcap *lc = (logcap *)user;
    pthread_mutex_lock(&lc->mu);
    lc->lines++;
    if (strstr(line, "cancelled")) lc->cancelled++;
    if (strstr(line, "chat template chatml (the model has no chat template: falling back to ChatML, as llama-server does); "
                     "a turn ends at <|im_end|> as text"))
        lc->chatml_fallback++;
    if (getenv("BERLIN_TEST_VERBOSE")) fprintf(stderr, "server: %s\n", line);
    pthread_mutex_unlock(&lc->mu);
}

static void *server_thread(void *p) {
    bl_server_run((bl_server *)p);
    return NULL;
}

#define KEY "k-test"
#define AUTH "Authorization: Bearer " KEY "\r\n"

static int health_busy(int port) {
    resp r;
    int busy = -1;
    if (request(port, "GET", "/health", NULL, NULL, &r) == 200) busy = (int)jnum(r.body, r.body_len, "slots_busy");
    resp_free(&r);
    return busy;
}

/* After each robustness case: /health answers and a normal request succeeds. */
static void check_alive(int port, const char *after) {
    resp r;
    int st = request(port, "GET", "/health", NULL, NULL, &r);
    CHECK(st == 200 && strstr(r.body ? r.body : "", "\"ok\""), "after %s: /health answers (%d)", after, st);
    resp_free(&r);
    st = request(port, "POST", "/v1/completions", "{\"prompt\":\"Once\",\"max_tokens\":4}", AUTH, &r);
    CHECK(st == 200 && jnum(r.body, r.body_len, "usage.completion_tokens") == 4, "after %s: a completion succeeds (%d)", after, st);
    resp_free(&r);
}

typedef struct par_arg { int port, status, retry_after; } par_arg;

static void *parallel_client(void *p) {
    par_arg *a = (par_arg *)p;
    resp r;
    a->status = request(a->port, "POST", "/v1/completions", "{\"prompt\":\"Once upon\",\"max_tokens\":8}", AUTH, &r);
    a->retry_after = strstr(r.head, "Retry-After: 1") != NULL;
    if (a->status == 200 && jnum(r.body, r.body_len, "usage.completion_tokens") != 8) a->status = -1;
    if (a->status == 503 && !is_error(&r, 503, "overloaded")) a->status = -2;
    resp_free(&r);
    return NULL;
}

static void test_endpoints(int port) {
    resp r;
    char *s;
    int st, n, all_json, done;
    char finish[32];
    /* auth */
    st = request(port, "GET", "/v1/models", NULL, NULL, &r);
    CHECK(is_error(&r, 401, "invalid_api_key"), "no key -> 401 error object (%d)", st);
    resp_free(&r);
    request(port, "GET", "/v1/models", NULL, "Authorization: Bearer k-tesT\r\n", &r);
    CHECK(is_error(&r, 401, "invalid_api_key"), "wrong key -> 401");
    resp_free(&r);
    request(port, "GET", "/metrics", NULL, "Authorization: Bearer k-test-longer\r\n", &r);
    CHECK(is_error(&r, 401, "invalid_api_key"), "longer key -> 401 on /metrics");
    resp_free(&r);
    /* models */
    st = request(port, "GET", "/v1/models", NULL, AUTH, &r);
    s = jstr(r.body, r.body_len, "data.0.id");
    CHECK(st == 200 && strcmp(s, "tiny \"model\"") == 0, "models list, id escaped: %s", r.body ? r.body : "");
    free(s);
    resp_free(&r);
    st = request(port, "GET", "/v1/models/nope", NULL, AUTH, &r);
    CHECK(is_error(&r, 404, "model_not_found"), "unknown model id -> 404 (%d)", st);
    resp_free(&r);
    /* chat, non-streaming */
    st = request(port, "POST", "/v1/chat/completions",
                 "{\"model\":\"x\",\"messages\":[{\"role\":\"system\",\"content\":\"Be kind.\"},{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hi\"}]},"
                 "{\"role\":\"assistant\",\"content\":\"Hello\"},{\"role\":\"user\",\"content\":\"More\"}],\"max_tokens\":12,\"temperature\":0.8,\"top_p\":0.9,\"seed\":5}",
                 AUTH, &r);
    s = jstr(r.body, r.body_len, "choices.0.message.role");
    CHECK(st == 200 && strcmp(s, "assistant") == 0 && jnum(r.body, r.body_len, "usage.completion_tokens") == 12 &&
          jnum(r.body, r.body_len, "usage.total_tokens") == jnum(r.body, r.body_len, "usage.prompt_tokens") + 12,
          "chat completion with usage (%d) %s", st, r.body ? r.body : "");
    free(s);
    s = jstr(r.body, r.body_len, "choices.0.finish_reason");
    CHECK(strcmp(s, "length") == 0, "finish_reason length");
    free(s);
    resp_free(&r);
    /* chat, streaming with usage */
    st = request(port, "POST", "/v1/chat/completions",
                 "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"max_completion_tokens\":10,\"stream\":true,\"stream_options\":{\"include_usage\":true}}",
                 AUTH, &r);
    s = sse_text(&r, 1, &n, &all_json, &done, finish, sizeof finish);
    CHECK(st == 200 && strstr(r.head, "text/event-stream") && n >= 3 && all_json && done && strcmp(finish, "length") == 0,
          "chat stream: %d chunks, json %d, done %d, finish %s", n, all_json, done, finish);
    CHECK(strstr(r.body, "\"delta\":{\"role\":\"assistant\"") != NULL, "first chunk carries the role");
    CHECK(strstr(r.body, "\"choices\":[],\"usage\":{\"prompt_tokens\":") != NULL, "include_usage chunk");
    free(s);
    resp_free(&r);
    /* completions: greedy, then a stop string that straddles tokens */
    {
        char *full, body[512], *stopped, *streamed, stopstr[16];
        st = request(port, "POST", "/v1/completions", "{\"prompt\":\"Once upon a time\",\"max_tokens\":40,\"temperature\":0}", AUTH, &r);
        full = jstr(r.body, r.body_len, "choices.0.text");
        CHECK(st == 200 && strlen(full) > 30, "greedy completion: %s", full);
        resp_free(&r);
        if (strlen(full) > 30) {
            /* 7 bytes from offset 9: several tokens of a 512-token vocabulary */
            size_t i, k = 0;
            for (i = 9; i < 16; i++) {
                if (full[i] == '"' || full[i] == '\\') stopstr[k++] = '\\';
                stopstr[k++] = full[i];
            }
            stopstr[k] = 0;
            snprintf(body, sizeof body, "{\"prompt\":\"Once upon a time\",\"max_tokens\":40,\"temperature\":0,\"stop\":[\"zzzz\",\"%s\"]}", stopstr);
            st = request(port, "POST", "/v1/completions", body, AUTH, &r);
            stopped = jstr(r.body, r.body_len, "choices.0.text");
            s = jstr(r.body, r.body_len, "choices.0.finish_reason");
            CHECK(st == 200 && strlen(stopped) == 9 && strncmp(stopped, full, 9) == 0 && strcmp(s, "stop") == 0,
                  "stop string across tokens: '%s' (%s) from '%s'", stopped, s, full);
            free(s);
            resp_free(&r);
            snprintf(body, sizeof body, "{\"prompt\":\"Once upon a time\",\"max_tokens\":40,\"temperature\":0,\"stream\":true,\"stop\":\"%s\"}", stopstr);
            st = request(port, "POST", "/v1/completions", body, AUTH, &r);
            streamed = sse_text(&r, 0, &n, &all_json, &done, finish, sizeof finish);
            CHECK(st == 200 && strcmp(streamed, stopped) == 0 && all_json && done && strcmp(finish, "stop") == 0,
                  "streamed stop holds back the partial match: '%s'", streamed);
            free(streamed);
            free(stopped);
            resp_free(&r);
        }
        free(full);
    }
    /* the same seed gives the same text */
    {
        char *a, *b;
        const char *req = "{\"prompt\":\"The cat\",\"max_tokens\":20,\"temperature\":1,\"seed\":42}";
        request(port, "POST", "/v1/completions", req, AUTH, &r);
        a = jstr(r.body, r.body_len, "choices.0.text");
        resp_free(&r);
        request(port, "POST", "/v1/completions", req, AUTH, &r);
        b = jstr(r.body, r.body_len, "choices.0.text");
        resp_free(&r);
        CHECK(a[0] && strcmp(a, b) == 0, "seeded sampling repeats: '%s' vs '%s'", a, b);
        free(a);
        free(b);
    }
    /* token-id prompt, tokenize / detokenize round trip with characters that need escaping */
    {
        double t0;
        st = request(port, "POST", "/tokenize", "{\"content\":\"Tom said \\\"hi\\\"\\n\\tand left\"}", AUTH, &r);
        t0 = jnum(r.body, r.body_len, "tokens.0");
        CHECK(st == 200 && t0 >= 0, "tokenize: %s", r.body ? r.body : "");
        if (st == 200) {
            char body[2048];
            const char *a = strchr(r.body, '['), *e = strchr(r.body, ']');
            resp r2;
            snprintf(body, sizeof body, "{\"tokens\":%.*s}", (int)(e - a + 1), a);
            st = request(port, "POST", "/detokenize", body, AUTH, &r2);
            s = jstr(r2.body, r2.body_len, "content");
            CHECK(st == 200 && strcmp(s, "Tom said \"hi\"\n\tand left") == 0, "detokenize round trip: %s", r2.body ? r2.body : "");
            free(s);
            resp_free(&r2);
            snprintf(body, sizeof body, "{\"prompt\":%.*s,\"max_tokens\":3}", (int)(e - a + 1), a);
            st = request(port, "POST", "/v1/completions", body, AUTH, &r2);
            CHECK(st == 200 && jnum(r2.body, r2.body_len, "usage.prompt_tokens") > 3, "prompt as token ids (%d)", st);
            resp_free(&r2);
        }
        resp_free(&r);
    }
    /* field errors: each an OpenAI error object naming the parameter */
    {
        static const struct { const char *path, *body, *param; int status; } bad[] = {
            {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"model\":42}", "model", 400},
            {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}", NULL, 400},
            {"/v1/chat/completions", "[1,2]", NULL, 400},
            {"/v1/chat/completions", "", NULL, 400},
            {"/v1/chat/completions", "{\"messages\":[]}", "messages", 400},
            {"/v1/chat/completions", "{\"messages\":\"hi\"}", "messages", 400},
            {"/v1/chat/completions", "{\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}", "messages[0]", 400},
            {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":7}]}", "messages[0]", 400},
            {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"temperature\":3}", "temperature", 400},
            {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"temperature\":\"hot\"}", "temperature", 400},
            {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":0}", "max_tokens", 400},
            {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":1.5}", "max_tokens", 400},
            {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"n\":2}", "n", 400},
            {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stream\":\"yes\"}", "stream", 400},
            {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", "stop", 400},
            {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stop\":5}", "stop", 400},
            {"/v1/completions", "{\"prompt\":[1,2,99999]}", "prompt", 400},
            {"/v1/completions", "{\"prompt\":[-1]}", "prompt", 400},
            {"/v1/completions", "{\"prompt\":{}}", "prompt", 400},
            {"/v1/completions", "{\"prompt\":\"x\",\"echo\":true}", "echo", 400},
            {"/detokenize", "{\"tokens\":[1,512]}", "tokens", 400},
            {"/detokenize", "{\"tokens\":[1e300]}", "tokens", 400},
            {"/tokenize", "{\"content\":5}", "content", 400},
        };
        size_t i;
        for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            request(port, "POST", bad[i].path, bad[i].body, AUTH, &r);
            s = jstr(r.body ? r.body : "", r.body_len, "error.param");
            CHECK(is_error(&r, bad[i].status, NULL) && (!bad[i].param || strcmp(s, bad[i].param) == 0),
                  "bad request %d -> %d, param '%s': %s", (int)i, r.status, s, r.body ? r.body : "");
            free(s);
            resp_free(&r);
        }
    }
    /* a prompt longer than the context */
    {
        char *big = (char *)malloc(8000), *p;
        int i;
        p = big + sprintf(big, "{\"prompt\":\"");
        for (i = 0; i < 700; i++) p += sprintf(p, "word ");
        sprintf(p, "\"}");
        request(port, "POST", "/v1/completions", big, AUTH, &r);
        CHECK(is_error(&r, 400, "context_length_exceeded"), "long prompt -> context_length_exceeded (%d)", r.status);
        resp_free(&r);
        free(big);
    }
    /* other endpoints */
    request(port, "GET", "/nope", NULL, AUTH, &r);
    CHECK(is_error(&r, 404, "unknown_url"), "unknown URL -> 404");
    resp_free(&r);
    request(port, "GET", "/v1/completions", NULL, AUTH, &r);
    CHECK(is_error(&r, 405, NULL) && strstr(r.head, "Allow: POST"), "wrong method -> 405 with Allow");
    resp_free(&r);
    st = request(port, "GET", "/metrics", NULL, AUTH, &r);
    CHECK(st == 200 && strstr(r.body, "# TYPE berlin_requests_total counter") && strstr(r.body, "berlin_generated_tokens_total ") &&
          strstr(r.body, "berlin_tokens_per_second ") && strstr(r.body, "berlin_queue_depth 0") && strstr(r.body, "berlin_slots_total 2"),
          "metrics in Prometheus text");
    resp_free(&r);
    st = request(port, "GET", "/", NULL, NULL, &r);
    CHECK(st == 200 && strstr(r.head, "text/html") && strstr(r.body, "/v1/chat/completions") && !strstr(r.body, "http://") &&
          !strstr(r.body, "https://"), "chat page, no external assets");
    resp_free(&r);
}

static void test_robustness(int port, logcap *lc) {
    resp r;
    int st, fd;
    /* malformed request lines and headers: each answered and closed */
    {
        static const char *bad[] = {
            "GARBAGE\r\n\r\n", "GET\r\n\r\n", "GET / HTTP/9.9\r\n\r\n", "get / FTP/1.0\r\n\r\n", "\x16\x03\x01\x00\xff\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Header\r\n\r\n", "GET / HTTP/1.1\r\nA: b\r\n  folded\r\n\r\n", "GET /\x01 HTTP/1.1\r\n\r\n",
            "POST /v1/completions HTTP/1.1\r\nContent-Length: abc\r\n\r\n", "POST /v1/completions HTTP/1.1\r\n\r\n",
            "POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        };
        static const int want[] = {400, 400, 505, 400, 400, 400, 400, 400, 400, 411, 501};
        size_t i;
        for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            st = raw_request(port, bad[i], strlen(bad[i]), &r);
            CHECK(st == want[i] && is_error(&r, want[i], NULL) && strstr(r.head, "Connection: close"),
                  "malformed request %d -> %d (want %d)", (int)i, st, want[i]);
            resp_free(&r);
        }
        static const char nul[] = "GET /health HTTP/1.1\r\n\0\0\0\r\n\r\n";
        st = raw_request(port, nul, sizeof nul - 1, &r);
        CHECK(st == 400, "NUL bytes in the head -> 400 (%d)", st);
        resp_free(&r);
    }
    {
        char *big = (char *)malloc(40000);
        memset(big, 'x', 40000);
        memcpy(big, "GET / HTTP/1.1\r\nX-Big: ", 23);
        st = raw_request(port, big, 40000, &r);
        CHECK(st == 431, "a 40 KB header -> 431 (%d)", st);
        resp_free(&r);
        free(big);
    }
    check_alive(port, "malformed requests");
    /* oversized body: refused from the headers alone */
    {
        const char *big = "POST /v1/completions HTTP/1.1\r\n" AUTH "Content-Length: 10000000\r\n\r\n{";
        st = raw_request(port, big, strlen(big), &r);
    }
    CHECK(is_error(&r, 413, NULL), "oversized body -> 413 (%d)", st);
    resp_free(&r);
    /* body shorter than its Content-Length, client half-closes: 400 */
    fd = connect_to(port);
    {
        const char *p = "POST /v1/completions HTTP/1.1\r\n" AUTH "Content-Length: 100\r\n\r\n{\"prompt\":";
        send_all(fd, p, strlen(p));
        shutdown(fd, SHUT_WR);
        read_response(fd, &r);
        CHECK(is_error(&r, 400, NULL), "short body then EOF -> 400 (%d)", r.status);
        resp_free(&r);
        close(fd);
    }
    /* body shorter than its Content-Length, client just waits: 408 at the idle limit */
    fd = connect_to(port);
    {
        const char *p = "POST /v1/completions HTTP/1.1\r\n" AUTH "Content-Length: 100\r\n\r\n{\"prompt\":";
        double t0 = now_s();
        send_all(fd, p, strlen(p));
        read_response(fd, &r);
        CHECK(is_error(&r, 408, NULL) && now_s() - t0 < 5, "short body then silence -> 408 after %.1fs (%d)", now_s() - t0, r.status);
        resp_free(&r);
        close(fd);
    }
    check_alive(port, "short bodies");
    /* keep-alive and pipelining: two requests in one write, two answers in order */
    fd = connect_to(port);
    {
        const char *two = "GET /health HTTP/1.1\r\nHost: a\r\n\r\nPOST /v1/completions HTTP/1.1\r\n" AUTH
                          "Connection: close\r\nContent-Length: 32\r\n\r\n{\"prompt\":\"Once\",\"max_tokens\":2}";
        char all[8192];
        size_t n = 0;
        ssize_t k;
        const char *second;
        send_all(fd, two, strlen(two));
        while (n < sizeof all - 1 && (k = recv(fd, all + n, sizeof all - 1 - n, 0)) > 0) n += (size_t)k;
        all[n] = 0;
        second = strstr(all + 1, "HTTP/1.1 ");
        CHECK(strncmp(all, "HTTP/1.1 200 OK", 15) == 0 && strstr(all, "Connection: keep-alive") && strstr(all, "\"slots_idle\"") &&
              second && strncmp(second, "HTTP/1.1 200 OK", 15) == 0 && strstr(second, "text_completion") && strstr(second, "Connection: close"),
              "pipelined requests on one connection, answered in order");
        close(fd);
    }
    /* Expect: 100-continue gets the interim answer */
    fd = connect_to(port);
    {
        const char *h = "POST /tokenize HTTP/1.1\r\n" AUTH "Expect: 100-continue\r\nContent-Length: 15\r\n\r\n";
        char got[64] = {0};
        ssize_t k;
        send_all(fd, h, strlen(h));
        k = recv(fd, got, sizeof got - 1, 0);
        CHECK(k > 0 && strncmp(got, "HTTP/1.1 100 Continue\r\n\r\n", 25) == 0, "100 Continue");
        send_all(fd, "{\"content\":\"a\"}", 15);
        read_response(fd, &r);
        CHECK(r.status == 200, "body after 100 Continue (%d)", r.status);
        resp_free(&r);
        close(fd);
    }
    /* a client that disconnects mid-stream frees its slot at once */
    fd = connect_to(port);
    {
        const char *b = "{\"prompt\":\"Once upon a time\",\"max_tokens\":250,\"stream\":true}";
        char h[512], got[512];
        int busy = -1, i, cancelled0;
        ssize_t k;
        pthread_mutex_lock(&lc->mu);
        cancelled0 = lc->cancelled;
        pthread_mutex_unlock(&lc->mu);
        snprintf(h, sizeof h, "POST /v1/completions HTTP/1.1\r\n" AUTH "Content-Length: %zu\r\n\r\n%s", strlen(b), b);
        send_all(fd, h, strlen(h));
        k = recv(fd, got, sizeof got - 1, 0);
        CHECK(k > 0, "stream started");
        close(fd);
        for (i = 0; i < 40 && (busy = health_busy(port)) != 0; i++) sleep_ms(25);
        CHECK(busy == 0, "slot freed after the client left (busy %d after %d ms)", busy, i * 25);
        pthread_mutex_lock(&lc->mu);
        CHECK(lc->cancelled > cancelled0, "the log says the stream was cancelled");
        pthread_mutex_unlock(&lc->mu);
    }
    check_alive(port, "a disconnect mid-stream");
    /* a slow client: one byte per 100 ms */
    fd = connect_to(port);
    {
        const char *p = "GET /health HTTP/1.1\r\n\r\n";
        size_t i;
        for (i = 0; p[i]; i++) { send_all(fd, p + i, 1); sleep_ms(100); }
        read_response(fd, &r);
        CHECK(r.status == 200, "slow client served (%d)", r.status);
        resp_free(&r);
        close(fd);
    }
    check_alive(port, "a slow client");
    /* ...but a trickle that never ends a request gets 408 at the request deadline */
    fd = connect_to(port);
    {
        const char *p = "GET /health HTTP/1.1\r\nX-Slow: ";
        double t0 = now_s();
        int i;
        send_all(fd, p, strlen(p));
        for (i = 0; i < 60; i++) {
            struct pollfd pf;
            pf.fd = fd;
            pf.events = POLLIN;
            if (poll(&pf, 1, 150) > 0) break;
            send_all(fd, "a", 1);
        }
        read_response(fd, &r);
        CHECK(is_error(&r, 408, NULL) && now_s() - t0 < 5.5, "slowloris -> 408 after %.1fs (%d)", now_s() - t0, r.status);
        resp_free(&r);
        close(fd);
    }
    check_alive(port, "a slowloris client");
    /* 64 concurrent connections: each gets 200 or a 503 with Retry-After */
    {
        pthread_t th[64];
        par_arg a[64];
        int i, ok = 0, busy = 0, other = 0, retry = 1;
        double t0 = now_s();
        for (i = 0; i < 64; i++) { a[i].port = port; a[i].status = 0; pthread_create(&th[i], NULL, parallel_client, &a[i]); }
        for (i = 0; i < 64; i++) pthread_join(th[i], NULL);
        for (i = 0; i < 64; i++) {
            if (a[i].status == 200) ok++;
            else if (a[i].status == 503) { busy++; retry &= a[i].retry_after; }
            else other++;
        }
        CHECK(other == 0 && ok >= 10 && ok + busy == 64 && retry, "64 concurrent: %d ok, %d 503, %d other in %.1fs", ok, busy, other,
              now_s() - t0);
    }
    check_alive(port, "64 concurrent connections");
    /* past max_connections: 503 with Retry-After, and the server recovers */
    {
        int fds[80], i;
        for (i = 0; i < 80; i++) fds[i] = connect_to(port);
        /* the server may not have accepted all 80 yet: until it has, requests still pass */
        for (i = 0; i < 40; i++) {
            st = request(port, "GET", "/health", NULL, NULL, &r);
            if (st == 503) break;
            resp_free(&r);
            sleep_ms(50);
        }
        CHECK(st == 503 && strstr(r.head, "Retry-After: 1") && is_error(&r, 503, "overloaded"), "connection limit -> 503 (%d)", st);
        resp_free(&r);
        for (i = 0; i < 80; i++) if (fds[i] >= 0) close(fds[i]);
        for (i = 0; i < 40; i++) {
            st = request(port, "GET", "/health", NULL, NULL, &r);
            resp_free(&r);
            if (st == 200) break;
            sleep_ms(50);
        }
    }
    check_alive(port, "the connection limit");
}

static void test_in_process(void) {
    bl_model *m = NULL;
    bl_server *s = NULL;
    bl_server_desc d;
    pthread_t th;
    logcap lc;
    int port;
    if (bl_model_load(&m, MODEL, NULL) != BL_OK) {
        CHECK(0, "load %s: %s", MODEL, bl_model_last_error(m));
        bl_model_destroy(m);
        return;
    }
    memset(&d, 0, sizeof d);
    d.port = BL_SERVER_PORT_ANY;
    d.n_slots = 2;
    d.n_ctx = 256;
    d.n_threads = 1;
    d.max_queue = 8;
    d.max_body_bytes = 65536;
    d.max_connections = 80;
    d.idle_timeout_ms = 1500;
    d.request_timeout_ms = 3500;
    d.api_key = KEY;
    d.model_id = "tiny \"model\"";
    d.log = log_to_cap;
    d.log_user = &lc;
    memset(&lc, 0, sizeof lc);
    pthread_mutex_init(&lc.mu, NULL);
    CHECK(bl_server_create(&s, m, &d) == BL_OK, "server create: %s", bl_server_last_error(s));
    CHECK(lc.chatml_fallback == 1, "the log says stories260K falls back to ChatML and why");
    port = bl_server_port(s);
    CHECK(port > 0, "bound a port");
    if (port > 0 && pthread_create(&th, NULL, server_thread, s) == 0) {
        double t0 = now_s();
        test_endpoints(port);
        printf("in-process endpoints: %.1fs\n", now_s() - t0);
        t0 = now_s();
        test_robustness(port, &lc);
        printf("in-process robustness: %.1fs\n", now_s() - t0);
        bl_server_stop(s);
        pthread_join(th, NULL);
    }
    bl_server_destroy(s);
    {
        bl_server *o = NULL;
        memset(&d, 0, sizeof d);
        d.port = BL_SERVER_PORT_ANY;
        d.n_slots = 1;
        d.n_ctx = 64;
        d.log = quiet_log;
        d.chat_template = "nonesuch";
        CHECK(bl_server_create(&o, m, &d) == BL_ERR_ARG && strstr(bl_server_last_error(o), "unknown chat template 'nonesuch'"),
              "an unknown chat template name is refused: %s", bl_server_last_error(o));
        bl_server_destroy(o);
        d.chat_template = "llama-3";
        CHECK(bl_server_create(&o, m, &d) == BL_OK && o->chat_fmt == BL_CHAT_LLAMA3 && o->chat_end < 0 && o->chat_stop &&
              strcmp(o->chat_stop, "<|eot_id|>") == 0, "a chat template by name; its end-of-turn text stops a vocabulary without it");
        bl_server_destroy(o);
    }
    bl_model_destroy(m);
    pthread_mutex_destroy(&lc.mu);
    {
        bl_server *bad = NULL;
        memset(&d, 0, sizeof d);
        d.host = "not-an-address";
        d.port = BL_SERVER_PORT_ANY;
        CHECK(bl_server_create(&bad, NULL, &d) == BL_ERR_ARG && strstr(bl_server_last_error(bad), "model"), "create without a model fails");
        bl_server_destroy(bad);
    }
}

/* Every handler, fed mutated requests through the connection code without a
   socket (a server that is created but never run): nothing may crash, leak
   or answer with a malformed status. Bounded: 4000 cases. */
static void quiet_log(void *user, const char *line) { (void)user; (void)line; }

/* Feed one request's bytes to a (not running) server's first connection slot,
   run any job it starts to its end, and return the status it answered (0: none). */
static int feed_request(bl_server *s, const char *req, size_t n) {
    bl__srv_conn *c = &s->conns[0];
    int st = 0;
    memset(c, 0, sizeof *c);
    c->fd = -1;
    c->state = BL__SRV_READ;
    c->fresh = 1;
    bl__srv_buf_put(&c->in, req, n);
    bl__srv_process(s, c);
    if (c->job) {
        int steps;
        for (steps = 0; steps < 80 && c->job; steps++) { bl__srv_assign(s); bl__srv_step(s); }
        if (c->job) bl__srv_cancel_job(s, c->job);
    }
    if (c->out.n >= 12 && memcmp(c->out.p, "HTTP/1.", 7) == 0) st = atoi(c->out.p + 9);
    bl__srv_buf_free(&c->in);
    bl__srv_buf_free(&c->out);
    memset(c, 0, sizeof *c);
    c->fd = -1;
    return st;
}

static bl_server *fuzz_server(bl_model **m) {
    bl_server *s = NULL;
    bl_server_desc d;
    if (bl_model_load(m, MODEL, NULL) != BL_OK) return NULL;
    memset(&d, 0, sizeof d);
    d.port = BL_SERVER_PORT_ANY;
    d.n_slots = 1;
    d.n_ctx = 64;
    d.n_threads = 1;
    d.max_body_bytes = 4096;
    d.model_id = "tiny";
    d.log = quiet_log;
    if (bl_server_create(&s, *m, &d) != BL_OK) { bl_server_destroy(s); return NULL; }
    return s;
}

static void test_handler_fuzz(void) {
    static const char *seeds[] = {
        "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: %d\r\n\r\n"
        "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"Be \\\"nice\\\"\"},{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hi \\u00e9\"}]}],"
        "\"stream\":true,\"stream_options\":{\"include_usage\":true},\"max_tokens\":3,\"temperature\":0.5,\"top_p\":0.9,\"seed\":1,\"stop\":[\"a\",\"bc\"]}",
        "POST /v1/completions HTTP/1.1\r\nContent-Length: %d\r\n\r\n{\"prompt\":[1,2,3],\"max_tokens\":2,\"stop\":\"x\",\"n\":1,\"top_k\":5,\"min_p\":0.1}",
        "POST /v1/completions HTTP/1.1\r\nContent-Length: %d\r\n\r\n{\"prompt\":[\"Once\"],\"stream\":false,\"repeat_penalty\":1.1}",
        "POST /tokenize HTTP/1.1\r\nContent-Length: %d\r\n\r\n{\"content\":\"a\\nb\",\"add_special\":true,\"parse_special\":false}",
        "POST /detokenize HTTP/1.1\r\nContent-Length: %d\r\n\r\n{\"tokens\":[1,2,300,511]}",
        "GET /v1/models/tiny HTTP/1.1\r\nConnection: keep-alive\r\nContent-Length: %d\r\n\r\n",
        "GET /metrics?x=1 HTTP/1.0\r\nContent-Length: %d\r\n\r\n",
    };
    bl_model *m = NULL;
    bl_server *s = fuzz_server(&m);
    uint64_t rng = 0xfeedf00d;
    int it, bad = 0;
    CHECK(s != NULL, "a server for the handler fuzz");
    if (!s) { bl_model_destroy(m); return; }
    for (it = 0; it < 4000; it++) {
        char req[1200];
        int n, i, muts, body_at, st;
        const char *sd = seeds[it % 7];
        const char *b = strstr(sd, "\r\n\r\n") + 4;
        n = snprintf(req, sizeof req, sd, (int)strlen(b));
        body_at = (int)(strstr(req, "\r\n\r\n") - req) + 4;
        rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
        muts = (int)(rng % 4);
        for (i = 0; i < muts && n > body_at; i++) {
            static const char junk[] = "{}[]\",:0-9e.\\u\x00\xff\xc3 tfn";
            int at;
            rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
            at = body_at + (int)((rng >> 8) % (uint64_t)(n - body_at)); /* mutate the body; the length stays right */
            req[at] = junk[(rng >> 32) % (sizeof junk - 1)];
        }
        st = feed_request(s, req, (size_t)n);
        if (st != 200 && st != 400 && st != 404 && st != 405) bad++;
    }
    CHECK(bad == 0, "handler fuzz: %d odd answers in 4000 mutated requests", bad);
    bl_server_destroy(s);
    bl_model_destroy(m);
}

/* ---- 4. the real binary with curl, node and chromium ------------------ */

static int free_port(void) {
    struct sockaddr_in a;
    socklen_t l = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = 0;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &l) == 0) port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static int have(const char *prog) {
    char cmd[256];
    snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", prog);
    return system(cmd) == 0;
}

/* Run a shell command, return its stdout (malloc'd) and exit status. */
static char *sh(const char *cmd, int *status) {
    FILE *p = popen(cmd, "r");
    char *out = (char *)calloc(1, 1);
    size_t n = 0;
    char buf[4096];
    size_t k;
    if (!p) { *status = -1; return out; }
    while ((k = fread(buf, 1, sizeof buf, p)) > 0) {
        out = (char *)realloc(out, n + k + 1);
        memcpy(out + n, buf, k);
        n += k;
        out[n] = 0;
    }
    *status = pclose(p);
    return out;
}

static void curl_checks(int port) {
    static const struct { const char *what, *args, *want_code, *want_text; } c[] = {
        {"GET /health", "/health", "200", "\"status\":\"ok\""},
        {"GET / (chat page)", "/", "200", "<title>berlin chat</title>"},
        {"GET /v1/models", "-H 'Authorization: Bearer sk-e2e' /v1/models", "200", "\"object\":\"list\""},
        {"no key -> 401", "/v1/models", "401", "\"code\":\"invalid_api_key\""},
        {"POST /v1/chat/completions", "-H 'Authorization: Bearer sk-e2e' -d '{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"max_tokens\":8}' /v1/chat/completions", "200", "\"object\":\"chat.completion\""},
        {"POST /v1/chat/completions stream", "-N -H 'Authorization: Bearer sk-e2e' -d '{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"max_tokens\":8,\"stream\":true}' /v1/chat/completions", "200", "data: [DONE]"},
        {"POST /v1/completions", "-H 'Authorization: Bearer sk-e2e' -H 'Content-Type: application/json' -d '{\"prompt\":\"Once upon a time\",\"max_tokens\":8}' /v1/completions", "200", "\"object\":\"text_completion\""},
        {"POST /v1/completions stream", "-N -H 'Authorization: Bearer sk-e2e' -d '{\"prompt\":\"Once\",\"max_tokens\":8,\"stream\":true}' /v1/completions", "200", "\"finish_reason\":\"length\""},
        {"GET /metrics", "-H 'Authorization: Bearer sk-e2e' /metrics", "200", "berlin_requests_total"},
        {"POST /tokenize", "-H 'Authorization: Bearer sk-e2e' -d '{\"content\":\"Once upon a time\"}' /tokenize", "200", "{\"tokens\":["},
        {"POST /detokenize", "-H 'Authorization: Bearer sk-e2e' -d '{\"tokens\":[1,403,407]}' /detokenize", "200", "{\"content\":"},
        {"bad JSON body -> 400", "-H 'Authorization: Bearer sk-e2e' -d '{\"messages\": [' /v1/chat/completions", "400", "\"type\":\"invalid_request_error\""},
        {"model of the wrong type -> 400", "-H 'Authorization: Bearer sk-e2e' -d '{\"model\":[1],\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}' /v1/chat/completions", "400", "\"param\":\"model\""},
        {"oversized body -> 413", "-H 'Authorization: Bearer sk-e2e' --data-binary @build/test-big-body.json /v1/completions", "413", "\"error\":{\"message\":"},
    };
    size_t i;
    FILE *f = fopen("build/test-big-body.json", "wb");
    if (f) {
        static char chunk[65536];
        int k;
        memset(chunk, ' ', sizeof chunk);
        fputs("{\"prompt\":\"", f);
        for (k = 0; k < 32; k++) fwrite(chunk, 1, sizeof chunk, f);
        fputs("\"}", f);
        fclose(f);
    }
    for (i = 0; i < sizeof c / sizeof c[0]; i++) {
        char cmd[1024], *out, *code;
        int st;
        /* the path is the last word of args; curl gets the full URL */
        const char *path = strrchr(c[i].args, ' ');
        int plen = path ? (int)(path - c[i].args) : 0;
        snprintf(cmd, sizeof cmd, "curl -s -m 20 -w '\\n%%{http_code}' %.*s http://127.0.0.1:%d%s", plen, c[i].args, port, path ? path + 1 : c[i].args);
        out = sh(cmd, &st);
        code = strrchr(out, '\n');
        CHECK(st == 0 && code && strcmp(code + 1, c[i].want_code) == 0 && strstr(out, c[i].want_text), "curl %s: %s", c[i].what,
              code ? code + 1 : out);
        free(out);
    }
    remove("build/test-big-body.json");
}

static void run_script(const char *what, const char *cmd) {
    int st;
    char *out = sh(cmd, &st);
    char *line = out;
    while (line && *line) {
        char *e = strchr(line, '\n');
        if (e) *e = 0;
        if (!strstr(line, "ExperimentalWarning") && !strstr(line, "--trace-warnings")) printf("  %s\n", line);
        line = e ? e + 1 : NULL;
    }
    CHECK(st == 0, "%s (exit %d)", what, st);
    free(out);
}

static void test_binary(void) {
    int port = free_port(), i, st = -1;
    pid_t pid;
    char portarg[16];
    resp r;
    double t0 = now_s();
    if (access("build/berlin-server", X_OK) != 0) { printf("SKIP binary checks: build/berlin-server is missing\n"); return; }
    snprintf(portarg, sizeof portarg, "%d", port);
    pid = fork();
    if (pid == 0) {
        FILE *lf = freopen("build/test-server.log", "w", stderr);
        (void)lf;
        execl("build/berlin-server", "berlin-server", "-m", MODEL, "--host", "127.0.0.1", "--port", portarg, "--slots", "4", "--ctx", "512",
              "--api-key", "sk-e2e", "-t", "1", (char *)NULL);
        _exit(127);
    }
    for (i = 0; i < 100; i++) {
        if (request(port, "GET", "/health", NULL, NULL, &r) == 200) { resp_free(&r); break; }
        resp_free(&r);
        sleep_ms(50);
    }
    CHECK(i < 100, "berlin-server answers /health on port %d", port);
    if (have("curl")) curl_checks(port);
    else printf("SKIP curl checks: curl is not installed (apt-get install -y curl)\n");
    if (!have("node")) {
        printf("SKIP openai npm client: node is not installed (apt-get install -y nodejs npm)\n");
        printf("SKIP chat page in chromium: node is not installed\n");
    } else {
        char cmd[512];
        if (access("build/npm/node_modules/openai/index.mjs", R_OK) != 0 && have("npm")) {
            int s2;
            free(sh("npm install --prefix build/npm openai --no-audit --no-fund --silent >/dev/null 2>&1", &s2));
        }
        if (access("build/npm/node_modules/openai/index.mjs", R_OK) == 0) {
            snprintf(cmd, sizeof cmd, "node tests/server/openai_client.mjs http://127.0.0.1:%d sk-e2e build/npm/node_modules 2>&1", port);
            run_script("the official openai npm client works against berlin-server", cmd);
        } else {
            printf("SKIP openai npm client: npm install --prefix build/npm openai failed or npm is missing\n");
        }
        if (have("chromium")) {
            snprintf(cmd, sizeof cmd, "node --experimental-websocket tests/server/chat_page.mjs http://127.0.0.1:%d sk-e2e build/chat-page.png 2>&1", port);
            run_script("the chat page streams an answer in headless chromium", cmd);
        } else {
            printf("SKIP chat page in chromium: chromium is not installed (apt-get install -y chromium)\n");
        }
    }
    /* SIGTERM during a stream: the stream ends properly and the process exits 0 */
    {
        int fd = connect_to(port);
        const char *b = "{\"prompt\":\"Once upon a time\",\"max_tokens\":400,\"stream\":true}";
        char h[512];
        snprintf(h, sizeof h, "POST /v1/completions HTTP/1.1\r\nAuthorization: Bearer sk-e2e\r\nContent-Length: %zu\r\n\r\n%s", strlen(b), b);
        send_all(fd, h, strlen(h));
        {
            char peek[64];
            ssize_t k = recv(fd, peek, sizeof peek, MSG_PEEK);
            (void)k;
        }
        kill(pid, SIGTERM);
        read_response(fd, &r);
        close(fd);
        CHECK(r.status == 200 && r.body && strstr(r.body, "data: [DONE]"), "SIGTERM mid-stream: the stream still ends with [DONE]");
        resp_free(&r);
        for (i = 0; i < 100; i++) {
            if (waitpid(pid, &st, WNOHANG) == pid) break;
            sleep_ms(50);
        }
        if (i == 100) { kill(pid, SIGKILL); waitpid(pid, &st, 0); }
        CHECK(i < 100 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "berlin-server exits 0 on SIGTERM");
    }
    printf("binary checks: %.1fs (server log: build/test-server.log)\n", now_s() - t0);
}

#ifdef BL_LIBFUZZER
/* clang -fsanitize=fuzzer,address -DBL_LIBFUZZER -I. -Itests tests/test_server.c -lm:
   the input is one request, parsed alone and then served by a real handler. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static bl_model *m;
    static bl_server *s;
    bl_http_request r;
    bl_http_parse_request((const char *)data, size, 0, &r);
    if (!s) s = fuzz_server(&m);
    if (s && size < 65536) feed_request(s, (const char *)data, size);
    return 0;
}
#else
int main(void) {
    double t0 = now_s();
    (void)tu_read;
    (void)tu_shared;
    signal(SIGPIPE, SIG_IGN);
    test_parser();
    test_parser_fuzz();
    test_json_and_stops();
    test_stream_text();
    test_chat_prompt();
    test_in_process();
    test_handler_fuzz();
    if (SANITIZED) printf("SKIP binary, curl, node and chromium checks in the sanitizer build (the plain run covers them)\n");
    else test_binary();
    printf("test_server: %.1fs\n", now_s() - t0);
    return tu_finish();
}
#endif
