"""The real llama.cpp server with SmolLM2-135M-Instruct: completions and chat at concurrency 1
and 4 all succeed, TTFT comes after TTFB, and netbench's token counts are what the server
streamed. The streams are counted a second time, independently: netbench talks to the server
through a TCP relay that keeps every byte the server sent, and the test decodes those bytes
itself (HTTP/1.1 framing, SSE, JSON), without netbench's parser.
"""

from __future__ import annotations

import asyncio
import csv
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli import netbench
from tests.servers.ports import LOOPBACK
from tests.servers.slm import SlmServer

pytestmark = [pytest.mark.integration, pytest.mark.slm]

N = 8
MAX_TOKENS = 16
# A count to continue: the model rarely ends it early, so streams are long enough to have gaps.
PROMPT = "1, 2, 3, 4, 5,"


class Tap:
    """A TCP relay on a free loopback port in front of `upstream_port`; keeps, per connection,
    every byte the server sent back."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.received: list[bytearray] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tap", daemon=True)
        self._server: asyncio.Server | None = None
        self._relays: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> None:
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(timeout=5)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._relay, LOOPBACK, 0)
        return self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._relays):
            task.cancel()
        await asyncio.gather(*self._relays, return_exceptions=True)

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._relays.add(task)
        received = bytearray()
        self.received.append(received)
        try:
            server_reader, server_writer = await asyncio.open_connection(LOOPBACK, self.upstream_port)
            await asyncio.gather(
                _pump(client_reader, server_writer, None), _pump(server_reader, client_writer, received)
            )
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._relays.discard(task)
            client_writer.close()


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter, keep: bytearray | None) -> None:
    try:
        while data := await source.read(65536):
            if keep is not None:
                keep += data
            sink.write(data)
            await sink.drain()
    finally:
        sink.close()


@pytest.fixture(scope="module")
def tap(slm_server: SlmServer) -> Iterator[Tap]:
    relay = Tap(slm_server.port)
    relay.start()
    try:
        yield relay
    finally:
        relay.stop()


def responses(data: bytes) -> Iterator[tuple[dict[str, str], bytes]]:
    """The (headers, body) of each HTTP/1.1 response in a connection's bytes."""
    pos = 0
    while pos < len(data):
        end = data.index(b"\r\n\r\n", pos)
        lines = data[pos:end].decode("latin-1").split("\r\n")[1:]
        headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
        pos = end + 4
        body = bytearray()
        if headers.get("transfer-encoding") == "chunked":
            while True:
                line_end = data.index(b"\r\n", pos)
                size = int(data[pos:line_end].split(b";")[0], 16)
                pos = line_end + 2
                if size == 0:
                    pos = data.index(b"\r\n", pos) + 2  # the empty trailer
                    break
                body += data[pos : pos + size]
                pos += size + 2
        else:
            size = int(headers.get("content-length", "0"))
            body += data[pos : pos + size]
            pos += size
        yield headers, bytes(body)


def sse_events(body: bytes) -> list[bytes]:
    events = []
    for block in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = [line[len(b"data:") :].strip() for line in block.split(b"\n") if line.startswith(b"data:")]
        if data:
            events.append(b"\n".join(data))
    return events


def carries_token(event: bytes) -> bool:
    if event == b"[DONE]":
        return False
    choices = json.loads(event)["choices"]
    return any(c.get("text") or (c.get("delta") or {}).get("content") for c in choices)


def streams(tap: Tap) -> list[list[bytes]]:
    """The SSE events of every streamed response the server sent through the tap."""
    found = []
    for received in tap.received:
        for headers, body in responses(bytes(received)):
            if headers.get("content-type", "").startswith("text/event-stream"):
                found.append(sse_events(body))
    return found


@pytest.mark.parametrize("concurrency", [1, 4])
@pytest.mark.parametrize("mode", ["completions", "chat"])
def test_llama_cpp_streams_measured_and_counted(tap: Tap, tmp_path: Path, mode: str, concurrency: int) -> None:
    tap.received.clear()
    raw = tmp_path / "raw.csv"
    result = netbench(
        "run", "--url", f"{tap.url}/v1", "--mode", mode, "--concurrency", str(concurrency), "--n", str(N),
        "--max-tokens", str(MAX_TOKENS), "--prompt", PROMPT, "--json", "--no-progress", "--raw", str(raw),
    )  # fmt: skip
    assert result.code == 0, result.stdout + result.stderr
    summary = result.json()
    assert (summary["requests"], summary["ok"], summary["failed"]) == (N, N, 0)
    with open(raw, newline="") as handle:
        records = list(csv.DictReader(handle))
    assert len(records) == N and {r["outcome"] for r in records} == {"ok"}
    for r in records:  # the server sends its headers first, then prefills: TTFT after TTFB, always
        assert 0 < int(r["starttransfer_mark_us"]) < int(r["first_token_mark_us"]) <= int(r["total_mark_us"])
    assert summary["phases"]["ttft"]["p50_us"] > summary["phases"]["ttfb"]["p50_us"]

    server_streams = streams(tap)
    assert len(server_streams) == N
    assert all(events[-1] == b"[DONE]" for events in server_streams)
    if mode == "chat":
        # llama.cpp opens each chat stream with a role-only chunk: no token, so not counted.
        for events in server_streams:
            first = json.loads(events[0])["choices"][0]["delta"]
            assert first.get("role") == "assistant" and not first.get("content")
    # Each stream's tokens as the server sent them, and as netbench counted them.
    sent = sorted(sum(carries_token(event) for event in events) for events in server_streams)
    counted = sorted(int(r["tokens"]) for r in records)
    assert sent == counted
    assert all(1 <= tokens <= MAX_TOKENS for tokens in counted)
    assert summary["tokens_per_request"] == pytest.approx(sum(counted) / N)
    # One inter-token gap per token after the first, per stream.
    assert summary["phases"]["itl"]["count"] == sum(counted) - N


def test_the_tap_decodes_what_the_server_sends(tap: Tap) -> None:
    """The independent decoder agrees with http.client on a Content-Length response (the models
    listing) and a chunked one (a stream), both relayed through the tap."""
    import http.client

    tap.received.clear()
    conn = http.client.HTTPConnection(LOOPBACK, tap.port, timeout=60)
    conn.request("GET", "/v1/models")
    listing = conn.getresponse().read()
    body = json.dumps({"prompt": PROMPT, "max_tokens": 4, "stream": True})
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    streamed = conn.getresponse().read()  # http.client de-chunks it
    conn.close()
    [(listing_headers, listing_body), (stream_headers, stream_body)] = list(responses(bytes(tap.received[0])))
    assert listing_body == listing and json.loads(listing_body)["data"]
    assert stream_headers["transfer-encoding"] == "chunked" and stream_body == streamed
    assert sse_events(stream_body)[-1] == b"[DONE]"
