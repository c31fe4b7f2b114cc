/* tool.h - the few helpers the command-line tools share: a monotonic clock
   and number arguments checked with a message that names the tool. Include
   after berlin.h, with _POSIX_C_SOURCE set (clock_gettime); set TOOL_NAME
   before including, e.g. #define TOOL_NAME "berlin-chat". */
#ifndef BERLIN_TOOL_H
#define BERLIN_TOOL_H
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_sec(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* An integer in [lo, hi], or a message and 0. */
static int parse_int(const char *s, const char *opt, int lo, int hi, int *out) {
    char *end;
    long v;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, TOOL_NAME ": %s wants an integer in [%d, %d], not '%s'\n", opt, lo, hi, s);
        return 0;
    }
    *out = (int)v;
    return 1;
}
#endif
