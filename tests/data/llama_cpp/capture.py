"""Record what the real llama-server sends, as the fixtures beside this file (raw HTTP bytes).

    PYTHONPATH=. python tests/data/llama_cpp/capture.py

Starts the same server as the `slm_server` fixture, scrapes /metrics, sends the requests of
SAMPLES one at a time (so each response's `timings` and the /metrics difference cover exactly
the same work), scrapes /metrics again, and writes `<name>.http` (the response exactly as sent
on the wire) and `metrics_before.txt` / `metrics_after.txt`. The server is sampled (temperature
0.8), so a new capture changes the texts and timings; the tests read whatever was recorded.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

from tests.servers.ports import LOOPBACK
from tests.servers.slm import MODEL_ALIAS, run_slm_server

HERE = Path(__file__).resolve().parent
PROMPT = "1, 2, 3, 4, 5,"
CHAT = [{"role": "user", "content": "Count from 1 to 5."}]
#: name -> (path, body); the same completions prompt twice: the second one hits the KV cache
SAMPLES: dict[str, tuple[str, dict[str, object]]] = {
    "completions_stream": ("/v1/completions", {"prompt": PROMPT, "max_tokens": 8, "stream": True}),
    "completions": ("/v1/completions", {"prompt": PROMPT, "max_tokens": 8}),
    "chat_stream": ("/v1/chat/completions", {"messages": CHAT, "max_tokens": 8, "stream": True}),
    "chat": ("/v1/chat/completions", {"messages": CHAT, "max_tokens": 8}),
    "chat_stream_timings_per_token": (
        "/v1/chat/completions", {"messages": CHAT, "max_tokens": 4, "stream": True, "timings_per_token": True}),
    "completions_stream_timings_per_token": (
        "/v1/completions", {"prompt": PROMPT, "max_tokens": 4, "stream": True, "timings_per_token": True}),
}  # fmt: skip


def exchange(port: int, method: str, path: str, body: dict[str, object] | None = None) -> bytes:
    """One request on its own connection (Connection: close); every byte of the response."""
    payload = b"" if body is None else json.dumps({"model": MODEL_ALIAS, **body}).encode()
    head = (f"{method} {path} HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n")  # fmt: skip
    with socket.create_connection((LOOPBACK, port), timeout=60) as sock:
        sock.sendall(head.encode() + payload)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def metrics_text(port: int) -> bytes:
    raw = exchange(port, "GET", "/metrics")
    return raw.split(b"\r\n\r\n", 1)[1]


def main() -> int:
    with run_slm_server() as server:
        (HERE / "metrics_before.txt").write_bytes(metrics_text(server.port))
        for name, (path, body) in SAMPLES.items():
            (HERE / f"{name}.http").write_bytes(exchange(server.port, "POST", path, body))
        (HERE / "metrics_after.txt").write_bytes(metrics_text(server.port))
    print(f"wrote {len(SAMPLES)} responses and two /metrics scrapes to {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
