#!/usr/bin/env python3
"""check_regex.py - cross-check berlin.h's split-pattern regex engine against Python's `regex`.

    python3 tools/check_regex.py [N]        (needs `pip install regex` and a C compiler)

Builds a small C program that splits texts with bl__re_find (Isolated behaviour, as the
Split pre-tokenizer does), then compares the pieces with `regex.finditer` on N random texts
(default 5000) drawn from letters, digits, whitespace of every kind, punctuation, marks,
CJK, emoji and contractions, for each family's pattern. Known, intended difference: `$` is a
line anchor in berlin.h, as in Oniguruma (which the Hugging Face library uses), while in
Python it only matches at the end; the pattern that uses it (`\\s+$`, DeepSeek) only ever sees
pieces without newlines, so it is checked on such texts only.
"""
import os, random, subprocess, sys, tempfile

HARNESS = r'''
#define BERLIN_IMPLEMENTATION
#include "berlin.h"
#include <stdio.h>
int main(int argc, char **argv) {
    static char pat[65536], buf[1 << 22];
    char err[200];
    FILE *f = fopen(argv[1], "rb");
    size_t pn = fread(pat, 1, sizeof pat, f), n = fread(buf, 1, sizeof buf, stdin), s = 0, i;
    bl__re *re = bl__re_compile(pat, pn, err, sizeof err);
    bl__rescratch sc;
    (void)argc;
    memset(&sc, 0, sizeof sc);
    if (!re) { printf("ERR %s\n", err); return 1; }
    for (i = 0; i <= n; i++) if (i == n || buf[i] == 1) {
        size_t from = 0, ms, me, len = i - s;
        const uint8_t *t = (const uint8_t *)buf + s;
        int first = 1;
        while (from < len && bl__re_find(re, &sc, t, len, from, &ms, &me)) {
            if (ms > from) { printf("%s%.*s", first ? "" : "\x02", (int)(ms - from), t + from); first = 0; }
            if (me > ms) { printf("%s%.*s", first ? "" : "\x02", (int)(me - ms), t + ms); first = 0; }
            from = me > ms ? me : ms + 1;
        }
        if (from < len) printf("%s%.*s", first ? "" : "\x02", (int)(len - from), t + from);
        printf("\x03");
        s = i + 1;
    }
    return 0;
}
'''

PATTERNS = {
    "gpt2": r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
    "llama3": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    "qwen2": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    "deepseek-punct": "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+",
    "deepseek-ws-end": r"\s+$",
    "deepseek-cjk": "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+",
    "deepseek-coder-punct": r"\s?\p{P}+",
    # declared by other families' tokenizer.json files (no vectors in ../shared, same engine)
    "deepseek-v3": r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    "tekken": r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    "gpt-4o": r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
}

POOL = list("abcXYZ019 ") + [" ", "  ", "\n", "\r\n", "\t", "'", "'s", "'S", "'ll", "'LL", "'Re", "!", "?", ".", ",",
        "(", ")", "{", "}", "\u00e9", "\u00fc", "\u00df", "\u03a9", "\u044f", "\u4e2d", "\u6587", "\u65e5\u672c",
        "\ud55c\uad6d", "\U0001F600", "\U0001F999", "\U0001F468\u200d\U0001F469\u200d\U0001F467", "\u0301", "\u0300",
        "\u00bd", "\u00b2", "\u0663", "\u00a0", "\u3000", "\u2028", "\u200b", "\u0915\u094d", "\u2014", "\u2026",
        "\x0b", "\x0c", "\u0085", "$", "\u20ac", "_", "\\", "\"", "\u216b", "\u24d0", "\uff01", "\uff03", "\u1680",
        "\u180e", "\ufeff", "\u017f", "\u212a"]


def main():
    try:
        import regex
    except ImportError:
        print("check_regex.py needs Python's `regex` module (pip install regex)")
        return 2
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    tmp = tempfile.mkdtemp()
    exe = os.path.join(tmp, "resplit")
    open(os.path.join(tmp, "h.c"), "w").write(HARNESS)
    subprocess.run([os.environ.get("CC", "cc"), "-O2", "-std=c99", "-I", root, os.path.join(tmp, "h.c"), "-o", exe, "-lm"], check=True)
    random.seed(7)
    texts = ["".join(random.choice(POOL) for _ in range(random.randint(0, 30))) for _ in range(n)]
    failed = 0
    for name, pat in PATTERNS.items():
        use = [t for t in texts if "\n" not in t and "\r" not in t] if pat.endswith("$") else texts
        open(os.path.join(tmp, "pat"), "w", encoding="utf-8").write(pat)
        raw = subprocess.run([exe, os.path.join(tmp, "pat")], input="\x01".join(use).encode(), capture_output=True).stdout
        outs = [x.decode("utf-8", "replace") for x in raw.split(b"\x03")[:-1]]
        rx = regex.compile(pat)
        bad = 0
        for t, o in zip(use, outs):
            want, pos = [], 0
            for m in rx.finditer(t):
                if m.start() > pos: want.append(t[pos:m.start()])
                if m.end() > m.start(): want.append(m.group())
                pos = m.end()
            if pos < len(t): want.append(t[pos:])
            got = o.split("\x02") if o else []
            if want != got:
                bad += 1
                if bad <= 3: print("  %s: %r\n    regex:    %r\n    berlin.h: %r" % (name, t, want, got))
        print("%-22s %d/%d texts split the same" % (name, len(use) - bad, len(use)))
        failed += bad
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
