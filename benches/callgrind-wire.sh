#!/usr/bin/env bash
# Instructions per A2A send, counted by callgrind (issue 12): what wire-bench's p50 stands on,
# in a measure the machine's load does not change.
#
# For each server (the bare axum floor, a release `critic` asked in A2A 0.3, and one asked in
# 1.0, as wire-bench runs them): start it under `valgrind --tool=callgrind`, send 200 warm-up
# requests, zero the counters, send N blocking sends on one keep-alive connection (wire-bench's
# own bodies and headers: `wire-bench --drive`), dump, stop. Prints per request: instructions of
# the whole process, calls to malloc, and the instructions spent in malloc/free/realloc
# (inclusive); with --top K, also the K most costly functions (inclusive) of each dump.
#
# Usage: cargo build --release -p ratchet-bench --bin wire-bench -p critic --bin critic &&
#        benches/callgrind-wire.sh [--requests N] [--top K] [--keep DIR]
# Needs valgrind (apt-get install valgrind). Takes about a minute per 2000 requests per server.
set -euo pipefail

requests=2000
top=0
keep=""
while [ $# -gt 0 ]; do
    case "$1" in
        --requests) requests="$2"; shift 2 ;;
        --top) top="$2"; shift 2 ;;
        --keep) keep="$2"; shift 2 ;;
        *) echo "unknown argument $1; use --requests N, --top K, --keep DIR" >&2; exit 2 ;;
    esac
done
warmup=200
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/target/release"
for b in critic wire-bench; do
    if [ ! -x "$bin/$b" ]; then
        echo "$bin/$b is missing; build it: cargo build --release -p ratchet-bench --bin wire-bench -p critic --bin critic" >&2
        exit 1
    fi
done
command -v valgrind >/dev/null || { echo "valgrind is missing; install it (apt-get install valgrind)" >&2; exit 1; }
work="$(mktemp -d)"
out="${keep:-$work/out}"
mkdir -p "$out"
vg_pid=""
cleanup() {
    if [ -n "$vg_pid" ]; then kill "$vg_pid" 2>/dev/null || true; wait "$vg_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
token=ratchet-wire-bench-token

# count LABEL VERSION PROGRAM [ARGS...]: one server under callgrind; prints its row.
count() {
    local label="$1" version="$2"
    shift 2
    local log="$work/$label.stdout" dump="$out/$label.callgrind"
    rm -f "$dump" "$dump".*
    : >"$log"
    env -u RATCHET_OPEN RATCHET_TOKEN="$token" RATCHET_HOME="$work/home" RATCHET_LISTEN=127.0.0.1:0 \
        RATCHET_STATE_DIR="$work/state-$label" RATCHET_AGENT_NAME=critic \
        valgrind --tool=callgrind --compress-strings=no --callgrind-out-file="$dump" "$@" </dev/null >"$log" 2>"$work/$label.stderr" &
    vg_pid=$!
    local url="" i
    for i in $(seq 600); do
        url="$(sed -n 's/.*LISTENING \(http:[^ ]*\).*/\1/p' "$log" | head -n1)"
        [ -n "$url" ] && break
        sleep 0.1
    done
    [ -n "$url" ] || { echo "$label: no LISTENING line; stderr:" >&2; cat "$work/$label.stderr" >&2; exit 1; }
    "$bin/wire-bench" --drive "$url" "$version" "$warmup" 2>/dev/null
    callgrind_control -z "$vg_pid" >/dev/null 2>&1
    "$bin/wire-bench" --drive "$url" "$version" "$requests" 2>/dev/null
    callgrind_control -d "$vg_pid" >/dev/null 2>&1
    kill "$vg_pid"
    wait "$vg_pid" 2>/dev/null || true
    vg_pid=""
    # The dump after the timed requests is the one with part number 1.
    local file
    file="$(ls "$dump".*.1 "$dump".1 2>/dev/null | head -n1 || true)"
    [ -n "$file" ] || { echo "$label: no callgrind dump in $out" >&2; ls "$out" >&2; exit 1; }
    awk -v label="$label" -v n="$requests" '
        # fn= and cfn= lines name functions, compressed to "(id)" after their first use.
        function name(s,   id) {
            if (match(s, /^\([0-9]+\)/)) {
                id = substr(s, RSTART, RLENGTH); s = substr(s, RLENGTH + 1); sub(/^ /, "", s)
                if (s != "") names[id] = s; else s = names[id]
            }
            return s
        }
        /^summary:/ { total = $2 }
        /^cfn=/ { callee = name(substr($0, 5)); next }
        /^calls=/ { split(substr($0, 7), c, " "); pending = c[1]; getline; split($0, f, " ")
            if (callee == "malloc") mallocs += pending
            if (callee == "malloc" || callee == "free" || callee == "realloc" || callee == "calloc") alloc_ir += f[2]
            next }
        END { printf "| %s | %.1fK | %.1f | %.1fK |\n", label, total / n / 1000, mallocs / n, alloc_ir / n / 1000 }
    ' "$file"
    if [ "$top" -gt 0 ]; then
        callgrind_annotate --inclusive=yes "$file" 2>/dev/null | sed -n '/^Ir/,$p' | head -n "$((top + 3))" >&2 || true
    fi
}

echo "| server | instructions per request | malloc calls per request | of the instructions, in malloc/free/realloc (inclusive, called from the program) |"
echo "| --- | --- | --- | --- |"
count "bare-axum" 0.3 "$bin/wire-bench" --bare-server
count "ratchet-0.3" 0.3 "$bin/critic"
count "ratchet-1.0" 1.0 "$bin/critic"
