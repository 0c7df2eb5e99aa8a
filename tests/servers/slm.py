"""llama.cpp's own C++ server (`llama-server`) running SmolLM2-135M-Instruct on loopback.

`scripts/ensure_slm.sh` builds the server from source and fetches the model into
~/.cache/netbench/ (minutes once per machine, ms after) and prints both paths. The server runs
with `--parallel 4` slots (continuous batching) and `--metrics` (Prometheus /metrics).
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
MODEL_ALIAS = "SmolLM2-135M-Instruct"
PARALLEL = 4
# 1024 tokens of context per slot: far more than any test prompt plus its output.
CONTEXT_TOKENS = 4096

# The first call builds llama.cpp: minutes, not seconds.
ENSURE_DEADLINE_S = 1800.0
START_DEADLINE_S = 120.0
WARM_UP_DEADLINE_S = 120.0
STOP_DEADLINE_S = 10.0
START_ATTEMPTS = 3


@dataclass(frozen=True)
class SlmServer:
    """A running llama-server. base_url has no /v1; openai_url is the OpenAI base URL."""

    base_url: str
    openai_url: str
    port: int
    model_id: str
    server_path: Path
    model_path: Path
    pid: int
    log_path: Path


def ensure_slm() -> tuple[Path, Path]:
    """Build the server and fetch the model if needed (scripts/ensure_slm.sh); return the
    server binary's path and the GGUF's path."""
    try:
        out = subprocess.run(["bash", str(ENSURE_SCRIPT)], capture_output=True, text=True,
                             timeout=ENSURE_DEADLINE_S, check=True)
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"{ENSURE_SCRIPT} failed:\n{exc.stderr[-3000:]}") from exc
    server, model = out.stdout.strip().splitlines()[-2:]
    return Path(server), Path(model)


def _log_tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def _wait_ready(proc: subprocess.Popen[bytes], base_url: str, log_path: Path) -> None:
    """Poll GET /health until it answers 200 (503 while the model loads)."""
    end = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"llama-server exited with code {proc.returncode}:\n{_log_tail(log_path)}")
        try:
            with urllib.request.urlopen(f"{base_url}/health", timeout=2.0) as response:
                if json.load(response).get("status") == "ok":
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"llama-server not ready after {START_DEADLINE_S} s:\n{_log_tail(log_path)}")


def _warm_up(base_url: str) -> None:
    """One tiny chat completion: the first one after start is far slower than the rest."""
    body = json.dumps({"model": MODEL_ALIAS, "max_tokens": 1,
                       "messages": [{"role": "user", "content": "Hi"}]}).encode()
    request = urllib.request.Request(f"{base_url}/v1/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=WARM_UP_DEADLINE_S) as response:
        response.read()


@contextlib.contextmanager
def run_slm_server(warm_up: bool = True) -> Iterator[SlmServer]:
    """Start llama-server with SmolLM2 on a free loopback port; stop it on exit.

    With warm_up, one tiny completion runs before the server is handed out, so the first
    request a test makes is not the outlier (its tokens count in /metrics: scrape before use).
    """
    server_path, model_path = ensure_slm()
    with tempfile.TemporaryDirectory(prefix="netbench-slm-") as tmp:
        log_path = Path(tmp) / "server.log"
        last_error = ""
        for _ in range(START_ATTEMPTS):
            port = free_port()
            base_url = f"http://{LOOPBACK}:{port}"
            with open(log_path, "wb") as log_file:
                proc = subprocess.Popen(
                    [str(server_path), "-m", str(model_path), "--alias", MODEL_ALIAS,
                     "--host", LOOPBACK, "--port", str(port), "--parallel", str(PARALLEL),
                     "--metrics", "-c", str(CONTEXT_TOKENS)],
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            try:
                _wait_ready(proc, base_url, log_path)
            except (RuntimeError, TimeoutError) as exc:
                stop_process_group(proc, signal.SIGKILL, STOP_DEADLINE_S)
                last_error = str(exc)
                # Another process may have taken the port between free_port() and bind.
                if "couldn't bind" in last_error:
                    continue
                raise
            try:
                if warm_up:
                    _warm_up(base_url)
                yield SlmServer(
                    base_url=base_url,
                    openai_url=f"{base_url}/v1",
                    port=port,
                    model_id=MODEL_ALIAS,
                    server_path=server_path,
                    model_path=model_path,
                    pid=proc.pid,
                    log_path=log_path,
                )
            finally:
                # llama-server finishes cleanly on SIGTERM; a stuck one gets SIGKILL.
                stop_process_group(proc, signal.SIGTERM, STOP_DEADLINE_S)
            return
        raise RuntimeError(f"llama-server failed to start after {START_ATTEMPTS} attempts: {last_error}")


@pytest.fixture(scope="session")
def slm_server() -> Iterator[SlmServer]:
    """A session-wide llama-server with SmolLM2-135M-Instruct (built on first use)."""
    with run_slm_server() as server:
        yield server
