#!/bin/sh
# Run test binaries (the ones after "--" under the sanitizers), add up their
# "N passed, N failed" lines and exit non-zero if anything failed.
total_p=0; total_f=0; bad=0; mode=plain
for t in "$@"; do
    if [ "$t" = "--" ]; then mode=sanitizer; continue; fi
    echo "== $t ($mode)"
    out=$("$t" 2>&1); rc=$?
    echo "$out" | tail -n 40
    line=$(echo "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed' | tail -n 1)
    p=$(echo "$line" | sed -E 's/^([0-9]+) passed.*/\1/'); f=$(echo "$line" | sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/')
    [ -n "$p" ] || { p=0; f=1; echo "!! $t printed no result line"; }
    [ $rc -eq 0 ] || { [ "$f" -gt 0 ] || f=1; echo "!! $t exited with $rc"; }
    total_p=$((total_p + p)); total_f=$((total_f + f))
done
echo
echo "$total_p passed, $total_f failed"
[ $total_f -eq 0 ]
