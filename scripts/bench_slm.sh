#!/usr/bin/env bash
# The seed's sweep against llama.cpp's own server (llama-server) running SmolLM2-135M-Instruct:
# builds it once per machine (scripts/ensure_slm.sh), starts it on a free loopback port with 4
# slots (--parallel 4: continuous batching; concurrency 8 queues) and Prometheus /metrics, runs
# scripts/bench.sh (health and streaming completions at concurrency 1, 4 and 8), and stops it,
# also when the sweep fails.
# llama-server closes the connection after each streamed response although it advertises
# Keep-Alive: every stream pays a new connection, and the report says so (netbench tells these
# closes from resets); the health baseline keeps its connection, as any client's would.
#   NETBENCH=path/to/netbench OUT=benchmarks_out bash scripts/bench_slm.sh
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
PY="$REPO/.venv/bin/python"
[ -x "$PY" ] || PY=python3

paths="$(bash "$HERE/ensure_slm.sh")"
server="$(sed -n 1p <<<"$paths")"
model="$(sed -n 2p <<<"$paths")"
log="$(mktemp)"
server_pid=""
stop_server() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid"
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -f "$log"
}
trap stop_server EXIT

url=""
for _ in 1 2 3; do
    port="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    "$server" -m "$model" --alias SmolLM2-135M-Instruct --host 127.0.0.1 --port "$port" \
        --parallel 4 --metrics -c 4096 >"$log" 2>&1 &
    server_pid=$!
    for _ in $(seq 1 1200); do
        # /health answers 503 while the model loads, 200 once it serves
        if curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1; then
            url="http://127.0.0.1:$port"
            break 2
        fi
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
    # Another process may have taken the port between the probe and the bind: try another.
    grep -q "couldn't bind" "$log" || break
done
if [ -z "$url" ]; then
    echo "bench-slm: llama-server did not start; its log:" >&2
    tail -20 "$log" >&2
    exit 1
fi
echo "bench-slm: llama-server ($server) with SmolLM2-135M-Instruct at $url"
# 1024 tokens of context per slot (-c 4096 over 4 slots): the prompt-length sweep stays below it.
# llama-server closes each stream's connection after advertising Keep-Alive: a request libcurl
# has already sent on it can meet a reset before any response, which netbench counts as a failed
# request (the server may have received it). The tables and the report show those; up to 10 %
# of them does not fail the bench.
REPORT_NAME=network_latency_bench_slm INPUT_TOKENS="${INPUT_TOKENS:-16,256,768}" \
    SWEEP_ARGS="${SWEEP_ARGS:---max-error-rate 0.1}" bash "$HERE/bench.sh" "$url"
