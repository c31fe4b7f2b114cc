#!/usr/bin/env python3
"""check_normalization.py - run berlin.h's NFC/NFD/NFKC/NFKD over the UCD's NormalizationTest.txt.

    python3 tools/check_normalization.py [/usr/share/unicode]     (needs a C compiler)

Every line of NormalizationTest.txt (Debian's unicode-data ships it as .bz2) gives five
columns c1..c5; the standard requires NFC(c1..c3) = c2, NFC(c4, c5) = c4, NFD(c1..c3) = c3,
NFD(c4, c5) = c5, NFKC(any) = c4 and NFKD(any) = c5. Prints the failures per form.
"""
import bz2, os, subprocess, sys, tempfile

HARNESS = r'''
#define BERLIN_IMPLEMENTATION
#include "berlin.h"
#include <stdio.h>
static size_t parse(const char *f, char *out) {
    size_t n = 0;
    const char *p = f;
    while (*p && *p != ';') {
        unsigned long cp = strtoul(p, (char **)&p, 16);
        n += bl__utf8_enc(out + n, (uint32_t)cp);
        while (*p == ' ') p++;
    }
    return n;
}
int main(int argc, char **argv) {
    static const int want[4][5] = {{1, 1, 1, 3, 3}, {2, 2, 2, 4, 4}, {3, 3, 3, 3, 3}, {4, 4, 4, 4, 4}};
    static const char *const names[4] = {"NFC", "NFD", "NFKC", "NFKD"};
    FILE *f = fopen(argv[1], "r");
    char line[4096];
    int bad[4] = {0, 0, 0, 0}, tot = 0, form;
    (void)argc;
    while (f && fgets(line, sizeof line, f)) {
        char c[5][512];
        size_t cl[5];
        const char *p = line;
        int k;
        if (line[0] == '#' || line[0] == '@' || line[0] == '\n') continue;
        for (k = 0; k < 5; k++) { cl[k] = parse(p, c[k]); p = strchr(p, ';') + 1; }
        tot++;
        for (form = 0; form < 4; form++)
            for (k = 0; k < 5; k++) {
                char *o;
                size_t on;
                int w = want[form][k]; /* 0-based column: c2 is 1 */
                if (bl__unorm(c[k], cl[k], form, &o, &on) != 0 || on != cl[w] || memcmp(o, c[w], on)) {
                    if (bad[form]++ < 3) printf("%s wrong on: %s", names[form], line);
                }
                BL_FREE(o);
            }
    }
    for (form = 0; form < 4; form++) printf("%-4s %d of %d lines x 5 columns wrong\n", names[form], bad[form], tot);
    return bad[0] + bad[1] + bad[2] + bad[3] ? 1 : 0;
}
'''


def main():
    ucd = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/unicode"
    src = os.path.join(ucd, "NormalizationTest.txt")
    data = open(src, "rb").read() if os.path.exists(src) else bz2.open(src + ".bz2").read()
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    tmp = tempfile.mkdtemp()
    open(os.path.join(tmp, "t.txt"), "wb").write(data)
    open(os.path.join(tmp, "h.c"), "w").write(HARNESS)
    exe = os.path.join(tmp, "unorm")
    subprocess.run([os.environ.get("CC", "cc"), "-O2", "-std=c99", "-I", root, os.path.join(tmp, "h.c"), "-o", exe, "-lm"], check=True)
    return subprocess.run([exe, os.path.join(tmp, "t.txt")]).returncode


if __name__ == "__main__":
    sys.exit(main())
