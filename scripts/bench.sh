#!/usr/bin/env bash
# The seed's sweep: health (the HTTP baseline) and streaming completions at concurrency 1, 4
# and 8, n = 32 each after 8 warm-up requests (one per connection at concurrency 8); then the
# same question per prompt length: completions at concurrency 1 with prompts of 16, 256 and
# 2048 tokens in the server's tokenizer (INPUT_TOKENS), 16 output tokens each. Appends to the
# CSV, writes run files, the Markdown report (with its "By prompt length" rows) and plots. Without a URL argument it
# starts `netbench serve` on a free loopback port and stops it afterwards, also when the
# sweep fails.
#   NETBENCH=path/to/netbench OUT=benchmarks_out REPORT_NAME=network_latency_bench bash scripts/bench.sh [URL]
set -euo pipefail
NETBENCH="${NETBENCH:-netbench}"
OUT="${OUT:-benchmarks_out}"
REPORT_NAME="${REPORT_NAME:-network_latency_bench}"
SWEEP_ARGS="${SWEEP_ARGS:-}"
INPUT_TOKENS="${INPUT_TOKENS:-16,256,2048}"
URL="${1:-}"
mkdir -p "$OUT"

server_pid=""
stop_server() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid"
        wait "$server_pid" || true
    fi
}
trap stop_server EXIT

if [ -z "$URL" ]; then
    ready="$(mktemp)"
    "$NETBENCH" serve --host 127.0.0.1 --port 0 >"$ready" &
    server_pid=$!
    for _ in $(seq 1 300); do
        URL="$(sed -n 's/^netbench serve: listening on //p' "$ready")"
        [ -n "$URL" ] && break
        kill -0 "$server_pid" 2>/dev/null || { echo "bench: netbench serve exited early" >&2; exit 1; }
        sleep 0.1
    done
    rm -f "$ready"
    [ -n "$URL" ] || { echo "bench: netbench serve did not start" >&2; exit 1; }
    echo "bench: built-in server at $URL"
fi

runs="$OUT/runs/$REPORT_NAME"
rm -rf "$runs"
mkdir -p "$runs"  # netbench writes into folders that exist; it creates none
# shellcheck disable=SC2086  # SWEEP_ARGS is a list of extra flags
"$NETBENCH" sweep --url "$URL" --mode health,completions --concurrency 1,4,8 --n 32 --warmup 8 \
    --csv "$OUT/network_latency_bench.csv" -o "$runs/" --no-progress $SWEEP_ARGS
# shellcheck disable=SC2086
"$NETBENCH" sweep --url "$URL" --mode completions --concurrency 1 --input-tokens "$INPUT_TOKENS" \
    --output-tokens 16 --n 32 --warmup 4 --csv "$OUT/network_latency_bench.csv" -o "$runs/" --no-progress $SWEEP_ARGS
"$NETBENCH" report "$runs"/*.json -o "$OUT/$REPORT_NAME.md" --plots "$OUT"
echo "bench: wrote $OUT/network_latency_bench.csv and $OUT/$REPORT_NAME.md"
cat "$OUT/$REPORT_NAME.md"
