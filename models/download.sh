#!/bin/sh
# models/download.sh - fetch a model berlin.h runs, then check what arrived.
#
#   sh models/download.sh NAME [DEST_DIR]   download NAME into DEST_DIR (default: models/)
#   sh models/download.sh --list            the names this script knows
#   sh models/download.sh --check PATH...   only check files (or every file in a folder)
#
# Downloads resume (curl -C -): run the same command again after an interruption.
# A failed check never deletes the file, so a truncated download can still be resumed.
# HF_TOKEN, when set, is sent as a Bearer token (needed for gated repositories
# such as meta-llama/*; accept the license on the repository page first).
# Exit status: 0 ok, 1 download or check failed, 2 usage error or unknown name.
# POSIX sh plus curl, od and awk; see models/README.md for where each model comes from.

HF_BASE=${HF_BASE:-https://huggingface.co}
L2C_TOKENIZER_URL=${L2C_TOKENIZER_URL:-https://raw.githubusercontent.com/karpathy/llama2.c/master/tokenizer.bin}

# The catalogue, one model a line: name|layout|repository|files|note
#   layout "dir":  the files go to DEST_DIR/NAME/ (a folder berlin.h opens as one model)
#   layout "flat": the files go to DEST_DIR/ itself
#   a file is a path inside the repository's main branch, or a full https:// URL
catalog() {
    cat <<'EOF'
stories260k|flat|karpathy/tinyllamas|stories260K/stories260K.bin stories260K/tok512.bin|llama2.c 260K (the embedded default, as .bin)
stories15m|flat|karpathy/tinyllamas|stories15M.bin L2C_TOKENIZER|llama2.c TinyStories 15M, 61 MB
stories42m|flat|karpathy/tinyllamas|stories42M.bin L2C_TOKENIZER|llama2.c TinyStories 42M, 167 MB
stories110m|flat|karpathy/tinyllamas|stories110M.bin L2C_TOKENIZER|llama2.c TinyStories 110M, 438 MB
smollm2-135m|dir|HuggingFaceTB/SmolLM2-135M-Instruct|config.json model.safetensors tokenizer.json tokenizer_config.json|safetensors BF16, 270 MB
smollm2-135m-gguf|flat|HuggingFaceTB/SmolLM2-135M-Instruct-GGUF|smollm2-135m-instruct-q8_0.gguf|GGUF Q8_0, 145 MB
smollm2-360m|dir|HuggingFaceTB/SmolLM2-360M-Instruct|config.json model.safetensors tokenizer.json tokenizer_config.json|safetensors BF16, 724 MB
smollm2-360m-gguf|flat|HuggingFaceTB/SmolLM2-360M-Instruct-GGUF|smollm2-360m-instruct-q8_0.gguf|GGUF Q8_0, 386 MB
qwen2.5-0.5b|dir|Qwen/Qwen2.5-0.5B-Instruct|config.json model.safetensors tokenizer.json tokenizer_config.json|safetensors BF16, 988 MB
qwen2.5-0.5b-gguf|flat|Qwen/Qwen2.5-0.5B-Instruct-GGUF|qwen2.5-0.5b-instruct-q8_0.gguf|GGUF Q8_0, 676 MB
tinyllama-1.1b|dir|TinyLlama/TinyLlama-1.1B-Chat-v1.0|config.json model.safetensors tokenizer.json tokenizer_config.json|safetensors, 2.2 GB
tinyllama-1.1b-gguf|flat|TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF|tinyllama-1.1b-chat-v1.0.Q8_0.gguf|GGUF Q8_0, 1.2 GB
llama-3.2-1b|dir|meta-llama/Llama-3.2-1B-Instruct|config.json model.safetensors tokenizer.json tokenizer_config.json|safetensors BF16, 2.5 GB, gated: needs HF_TOKEN
llama-3.2-1b-gguf|flat|bartowski/Llama-3.2-1B-Instruct-GGUF|Llama-3.2-1B-Instruct-Q8_0.gguf|GGUF Q8_0, 1.3 GB
llama-3.2-1b-gguf-unsloth|flat|unsloth/Llama-3.2-1B-Instruct-GGUF|Llama-3.2-1B-Instruct-Q8_0.gguf|GGUF Q8_0, 1.3 GB
ministral-3b|dir|mistralai/Ministral-3-3B-Instruct-2512-BF16|params.json consolidated.safetensors tekken.json|Mistral format BF16, about 8 GB (file names unverified)
ministral-3b-gguf|flat|mistralai/Ministral-3-3B-Instruct-2512-GGUF|Ministral-3-3B-Instruct-2512-Q8_0.gguf|GGUF Q8_0, 3.7 GB
EOF
}

usage() {
    cat <<'EOF'
usage: sh models/download.sh NAME [DEST_DIR]    download a model (DEST_DIR defaults to models/)
       sh models/download.sh --list             list the model names
       sh models/download.sh --check PATH...    check downloaded files or folders
Set HF_TOKEN for gated repositories (meta-llama/*).
EOF
}

say() { printf '%s\n' "$*"; }
err() { printf 'download.sh: %s\n' "$*" >&2; }

# ---- checks ------------------------------------------------------------------
# Each check_* takes a path and its size in bytes, prints nothing on success and
# one reason on failure (return 1). check_file adds the verdict line.

# The first n bytes as decimal numbers separated by spaces.
head_bytes() { od -An -v -tu1 -N"$2" "$1" 2>/dev/null | tr -s ' \n' '  ' | sed 's/^ //; s/ $//'; }

# A Git LFS pointer is what a download of the wrong URL (blob/ or a raw clone) gives.
is_lfs_pointer() { [ "$(head_bytes "$1" 8)" = "118 101 114 115 105 111 110 32" ] && [ "$2" -lt 1024 ]; }

# Only the magic and the version: the rest of a GGUF needs a real parser
# (berlin.h's loader names the tensor that runs past the end of a truncated file).
check_gguf() {
    if [ "$2" -lt 24 ]; then say "too small for a GGUF file ($2 bytes)"; return 1; fi
    # shellcheck disable=SC2046 # split the byte list into $1..$8 on purpose
    set -- $(head_bytes "$1" 8)
    if [ "$1 $2 $3 $4" != "71 71 85 70" ]; then say "does not start with the GGUF magic"; return 1; fi
    if [ "$5$6$7" = 000 ] && [ "$8" -ne 0 ]; then say "a big-endian GGUF; berlin.h reads little-endian ones"; return 1; fi
    if [ "$6$7$8" != 000 ] || [ "$5" -lt 2 ] || [ "$5" -gt 3 ]; then
        say "GGUF version field (bytes $5 $6 $7 $8) is not 2 or 3"; return 1
    fi
}

# 8-byte little-endian header length N, then N bytes of JSON starting with '{'
# whose tensors' data_offsets must all end inside the file (else it is truncated).
check_safetensors() {
    if [ "$2" -lt 10 ]; then say "too small for a safetensors file ($2 bytes)"; return 1; fi
    n=$(head_bytes "$1" 9 | awk -v size="$2" '{
        n = 0; m = 1
        for (i = 1; i <= 8; i++) { n += $i * m; m *= 256 }
        if (n < 2)             { print "header length " n " is too small"; exit 1 }
        if (8 + n > size)      { printf "header length %.0f runs past the end of the file (%d bytes): truncated?\n", n, size; exit 1 }
        if (n > 100000000)     { print "header length " n " is over the 100 MB the format allows"; exit 1 }
        if ($9 != 123)         { print "header does not start with {"; exit 1 }
        printf "%.0f\n", n
    }') || { say "$n"; return 1; }
    dd if="$1" bs=1 skip=8 count="$n" 2>/dev/null | tr -d ' \t\r\n' | tr ']' '\n' |
    awk -v size="$2" -v n="$n" '
        /"data_offsets":\[[0-9]+,[0-9]+$/ {
            sub(/.*"data_offsets":\[/, ""); split($0, a, ",")
            if (a[2] + 0 > end) end = a[2] + 0
            if (a[2] + 0 < a[1] + 0) bad = 1
            k++
        }
        END {
            if (k == 0)  { print "header names no tensors"; exit 1 }
            if (bad)     { print "a tensor ends before it begins"; exit 1 }
            if (8 + n + end > size) {
                printf "tensor data ends at byte %.0f but the file has %d: truncated?\n", 8 + n + end, size; exit 1
            }
        }'
}

check_json() {
    if [ "$2" -eq 0 ]; then say "empty"; return 1; fi
}

# llama2.c legacy (v0) checkpoint: 7 int32 (dim, hidden_dim, n_layers, n_heads,
# n_kv_heads, vocab_size, seq_len), then F32 weights; the size must be exactly what
# the header implies (the rule berlin.h's loader applies, >>l2c).
check_l2c() {
    if [ "$2" -le 28 ]; then say "too small for a llama2.c checkpoint ($2 bytes)"; return 1; fi
    h=$(head_bytes "$1" 28)
    case "$h" in
        "50 52 107 97 "*) say "a llama2.c version-1/2 export (magic ak42); berlin.h reads the legacy v0 export"; return 1 ;;
    esac
    say "$h" | awk -v size="$2" '{
        for (k = 0; k < 7; k++) {
            v = $(4*k+1) + 256 * ($(4*k+2) + 256 * ($(4*k+3) + 256 * $(4*k+4)))
            if (v >= 2147483648) v -= 4294967296
            h[k] = v
        }
        dim = h[0]; hid = h[1]; nl = h[2]; nh = h[3]; nkv = h[4]; voc = h[5]; seq = h[6]
        if (dim <= 0 || hid <= 0 || nl <= 0 || nh <= 0 || nkv <= 0 || voc == 0 || seq <= 0 ||
            dim > 65536 || hid > 262144 || nl > 1024 || nh > 1024 || nkv > nh ||
            dim % nh != 0 || nh % nkv != 0 || voc > 4194304 || voc < -4194304 || seq > 4194304) {
            print "header is not a llama2.c checkpoint header (" dim " " hid " " nl " " nh " " nkv " " voc " " seq ")"; exit 1
        }
        shared = voc > 0; if (voc < 0) voc = -voc
        hs = dim / nh; kvd = hs * nkv
        n = voc * dim + nl * (2 * dim + 2 * dim * dim + 2 * dim * kvd + 3 * dim * hid) + dim + seq * hs
        if (!shared) n += voc * dim
        want = 28 + 4 * n
        if (want != size) {
            printf "header (dim %d, %d layers, vocab %d) implies %.0f bytes but the file has %d: %s\n",
                   dim, nl, voc, want, size, size < want ? "truncated?" : "not a v0 checkpoint?"
            exit 1
        }
    }'
}

# llama2.c tokenizer.bin: int32 max_token_length, then per token a float score,
# an int32 length and that many bytes, up to the end of the file.
check_l2c_tokenizer() {
    if [ "$2" -le 4 ]; then say "too small for a llama2.c tokenizer ($2 bytes)"; return 1; fi
    od -An -v -tu1 "$1" | awk -v size="$2" '
        { for (i = 1; i <= NF; i++) b[n++] = $i }
        function i32(p) { return b[p] + 256 * (b[p+1] + 256 * (b[p+2] + 256 * b[p+3])) }
        END {
            maxlen = i32(0)
            if (maxlen < 1 || maxlen > 65536) { print "max_token_length " maxlen " is not plausible"; exit 1 }
            p = 4; t = 0
            while (p < n) {
                if (p + 8 > n) { print "truncated inside token " t; exit 1 }
                len = i32(p + 4)
                if (len < 0 || len > maxlen) { print "token " t " has length " len " (max_token_length " maxlen ")"; exit 1 }
                if (p + 8 + len > n) { print "truncated inside token " t; exit 1 }
                p += 8 + len; t++
            }
            if (t == 0) { print "holds no tokens"; exit 1 }
        }'
}

human() { awk -v s="$1" 'BEGIN { u = "B KB MB GB TB"; split(u, a, " "); i = 1
    while (s >= 1000 && i < 5) { s /= 1000; i++ }
    if (i == 1) printf "%d %s", s, a[i]; else printf "%.1f %s", s, a[i] }'; }

# Check one file by its name; prints "ok ..." or "BAD ...: reason". Returns 1 if bad.
check_file() {
    f=$1
    if [ ! -f "$f" ]; then err "$f: no such file"; return 1; fi
    if [ ! -r "$f" ]; then err "$f: not readable"; return 1; fi
    size=$(wc -c < "$f" | tr -d ' ')
    base=$(basename "$f")
    if [ "$size" -gt 0 ] && is_lfs_pointer "$f" "$size"; then
        err "$f: BAD: a Git LFS pointer, not the file itself (download from .../resolve/main/...)"; return 1
    fi
    case "$base" in
        *.gguf)          kind=GGUF;        why=$(check_gguf "$f" "$size") ;;
        *.safetensors)   kind=safetensors; why=$(check_safetensors "$f" "$size") ;;
        *.json)          kind=JSON;        why=$(check_json "$f" "$size") ;;
        tok*.bin)        kind="llama2.c tokenizer"; why=$(check_l2c_tokenizer "$f" "$size") ;;
        *.bin)           kind="llama2.c checkpoint"; why=$(check_l2c "$f" "$size") ;;
        *)               kind="file";      why=; [ "$size" -gt 0 ] || why=empty ;;
    esac
    st=$?
    if [ $st -ne 0 ] || [ -n "$why" ]; then
        err "$f: BAD $kind: ${why:-check failed}"
        return 1
    fi
    say "ok  $f  ($kind, $size bytes, $(human "$size"))"
}

# A path may be a file or a folder (every regular file directly inside it).
check_path() {
    if [ -d "$1" ]; then
        bad=0; any=0
        for g in "$1"/*; do
            [ -f "$g" ] || continue
            any=1
            check_file "$g" || bad=1
        done
        if [ $any -eq 0 ]; then err "$1: folder holds no files"; return 1; fi
        return $bad
    fi
    check_file "$1"
}

# ---- download ----------------------------------------------------------------

lookup() { catalog | awk -F'|' -v n="$1" '$1 == n { print; found = 1 } END { exit !found }'; }

fetch() {
    url=$1; out=$2
    say "-> $out"
    say "   $url"
    if [ -n "${HF_TOKEN:-}" ]; then
        curl -L --fail -C - --progress-bar --retry 3 -H "Authorization: Bearer $HF_TOKEN" -o "$out" "$url"
    else
        curl -L --fail -C - --progress-bar --retry 3 -o "$out" "$url"
    fi
}

download() {
    name=$1; dest=$2
    if ! line=$(lookup "$name"); then
        err "unknown model '$name' (sh models/download.sh --list shows the names)"
        return 2
    fi
    if ! command -v curl >/dev/null 2>&1; then err "curl not found; install it first"; return 1; fi
    layout=$(say "$line" | cut -d'|' -f2)
    repo=$(say "$line" | cut -d'|' -f3)
    files=$(say "$line" | cut -d'|' -f4)
    dir=$dest
    [ "$layout" = dir ] && dir=$dest/$name
    mkdir -p "$dir" || { err "cannot create $dir"; return 1; }
    bad=0; count=0; first=; second=
    for f in $files; do
        case "$f" in
            L2C_TOKENIZER) url=$L2C_TOKENIZER_URL; out=$dir/tokenizer.bin ;;
            https://*)     url=$f; out=$dir/$(basename "$f") ;;
            *)             url=$HF_BASE/$repo/resolve/main/$f; out=$dir/$(basename "$f") ;;
        esac
        if ! fetch "$url" "$out"; then
            err "download of $url failed; the partial file (if any) is kept: run the same command again to resume"
            case "$repo" in meta-llama/*|mistralai/*)
                [ -n "${HF_TOKEN:-}" ] || err "$repo may be gated: accept its license on huggingface.co and set HF_TOKEN" ;;
            esac
            return 1
        fi
        check_file "$out" || bad=1
        count=$((count + 1))
        [ $count -eq 1 ] && first=$out
        [ $count -eq 2 ] && second=$out
    done
    if [ $bad -ne 0 ]; then
        err "a file failed its check and was kept; run the same command again to resume, or delete it to start over"
        return 1
    fi
    if [ "$layout" = dir ]; then
        say "done: run  ./build/berlin-chat -m $dir"
    elif [ $count -eq 2 ]; then
        say "done: run  ./build/berlin-chat -m $first --tokenizer $second"
    else
        say "done: run  ./build/berlin-chat -m $first"
    fi
}

list() {
    say "name                       repository                                   what"
    catalog | awk -F'|' '{ printf "%-26s %-44s %s\n", $1, $3, $5 }'
}

# ---- main --------------------------------------------------------------------

case "${1:-}" in
    ""|-h|--help)
        usage
        [ -n "${1:-}" ] && exit 0
        exit 2 ;;
    --list)
        [ $# -eq 1 ] || { usage >&2; exit 2; }
        list; exit 0 ;;
    --check)
        shift
        [ $# -ge 1 ] || { err "--check needs at least one path"; exit 2; }
        rc=0
        for p in "$@"; do check_path "$p" || rc=1; done
        exit $rc ;;
    -*)
        err "unknown option '$1'"; usage >&2; exit 2 ;;
esac

[ $# -le 2 ] || { usage >&2; exit 2; }
dest=${2:-$(dirname "$0")}
download "$1" "$dest"
exit $?
