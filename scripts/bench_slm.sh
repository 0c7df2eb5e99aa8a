#!/usr/bin/env bash
# The same sweep against the real llama.cpp server running SmolLM2-135M-Instruct: installs it
# (scripts/ensure_slm.sh), starts it on a free loopback port, runs scripts/bench.sh, stops it.
# --interrupt_requests False: by default the server cuts off the stream in progress when
# another request arrives, and concurrency 4 and 8 would measure cut-off streams.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
model="$(bash "$HERE/ensure_slm.sh")"
port="$("$REPO/.venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
log="$(mktemp)"
"$REPO/.venv-slm/bin/python" -m llama_cpp.server --model "$model" --model_alias SmolLM2-135M-Instruct --interrupt_requests False --host 127.0.0.1 --port "$port" >"$log" 2>&1 &
server_pid=$!
trap 'kill -TERM $server_pid 2>/dev/null; wait $server_pid 2>/dev/null || true; rm -f "$log"' EXIT
url="http://127.0.0.1:$port"
for _ in $(seq 1 600); do
    curl -sf "$url/v1/models" >/dev/null && break
    kill -0 "$server_pid" 2>/dev/null || { echo "bench-slm: llama.cpp server exited:" >&2; tail -20 "$log" >&2; exit 1; }
    sleep 0.2
done
curl -sf "$url/v1/models" >/dev/null || { echo "bench-slm: llama.cpp server did not answer" >&2; exit 1; }
echo "bench-slm: llama.cpp server with SmolLM2-135M-Instruct at $url"
REPORT_NAME=network_latency_bench_slm bash "$HERE/bench.sh" "$url"
