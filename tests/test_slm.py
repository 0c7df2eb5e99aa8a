"""llama.cpp's own server (llama-server) with SmolLM2-135M-Instruct: completions and chat at
concurrency 1 and 4 all succeed, TTFT comes after TTFB and after the server's own prompt time,
netbench's token counts are what the server streamed and what its usage and `timings` say, and
the server's /metrics counters moved by exactly that. The streams are counted a second time,
independently: netbench talks to the server through a TCP relay that keeps every byte the server
sent, and the test decodes those bytes itself (tests/http_bytes.py), without netbench's parser.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from netbench.server_timing import from_llama_cpp
from tests.cli import netbench
from tests.http_bytes import responses, sse_events
from tests.llama_cpp_samples import carries_token
from tests.servers.ports import LOOPBACK
from tests.servers.slm import SlmServer

pytestmark = [pytest.mark.integration, pytest.mark.slm]

N = 8
MAX_TOKENS = 16
# Prompts the model rarely finishes within MAX_TOKENS; the runs also ask for exactly MAX_TOKENS
# (--output-tokens: ignore_eos), so every stream runs to the limit, one event per output token.
PROMPTS = {"completions": "1, 2, 3, 4, 5,", "chat": "Write a long story about a lighthouse keeper."}


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
        server_writer = None
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
            if server_writer is not None:
                server_writer.close()


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter, keep: bytearray | None) -> None:
    """Copy one direction; at its end, half-close the other side as the sender did (a FIN, never
    an RST: the relay must close a connection the way the server closed it). Bytes the other
    side can no longer take (its peer has closed) are read and dropped."""
    while data := await source.read(65536):
        if keep is not None:
            keep += data
        if not sink.is_closing():
            sink.write(data)
            with contextlib.suppress(ConnectionError):
                await sink.drain()
    if sink.can_write_eof() and not sink.is_closing():
        with contextlib.suppress(ConnectionError, OSError):
            sink.write_eof()


@pytest.fixture(scope="module")
def tap(slm_server: SlmServer) -> Iterator[Tap]:
    relay = Tap(slm_server.port)
    relay.start()
    try:
        yield relay
    finally:
        relay.stop()


def bodies(tap: Tap, content_type: str) -> Iterator[bytes]:
    """The body of every response of this content type the server sent through the tap, in the
    order the connections were accepted."""
    for received in tap.received:
        for headers, body in responses(bytes(received)):
            if headers.get("content-type", "").startswith(content_type):
                yield body


def streams(tap: Tap) -> list[list[dict]]:
    """The decoded SSE events ([DONE] left out) of every streamed response."""
    found = []
    for body in bodies(tap, "text/event-stream"):
        events = sse_events(body)
        assert events[-1] == b"[DONE]"
        found.append([json.loads(event) for event in events[:-1]])
    return found


def unstreamed_completions(tap: Tap) -> list[dict]:
    """Every JSON (not streamed) completion: the probes netbench sends before the load (which
    output-length fields the server takes)."""
    return [answer for body in bodies(tap, "application/json") if "usage" in (answer := json.loads(body))]


def scrape_counters(base_url: str) -> dict[str, float]:
    """llama.cpp's /metrics counters, read with a plain HTTP client and a plain line split."""
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=30) as response:
        text = response.read().decode()
    return {name: float(value) for name, value in
            (line.split() for line in text.splitlines() if line.startswith("llamacpp:"))}  # fmt: skip


@pytest.mark.parametrize("concurrency", [1, 4])
@pytest.mark.parametrize("mode", ["completions", "chat"])
def test_llama_server_streams_measured_and_counted(
    slm_server: SlmServer, tap: Tap, tmp_path: Path, mode: str, concurrency: int
) -> None:
    tap.received.clear()
    before = scrape_counters(slm_server.base_url)
    raw = tmp_path / "raw.csv"
    result = netbench(
        "run", "--url", f"{tap.url}/v1", "--mode", mode, "--concurrency", str(concurrency), "--n", str(N),
        "--output-tokens", str(MAX_TOKENS), "--prompt", PROMPTS[mode], "--json", "--no-progress", "--raw", str(raw),
    )  # fmt: skip
    after = scrape_counters(slm_server.base_url)
    assert result.code == 0, result.stdout + result.stderr
    summary = result.json()
    assert (summary["requests"], summary["ok"], summary["failed"]) == (N, N, 0)
    # The server closes the connection after every stream (see the test below): each request runs
    # on a new connection, and the ones libcurl first tried on a closed connection are no resets.
    assert summary["connections"] == {"new": N, "reused": 0}
    with open(raw, newline="") as handle:
        records = sorted(csv.DictReader(handle), key=lambda r: int(r["start_us"]))
    assert len(records) == N and {r["outcome"] for r in records} == {"ok"}
    for r in records:  # the server sends its headers first, then prefills: TTFT after TTFB, always
        assert 0 < int(r["starttransfer_mark_us"]) < int(r["first_token_mark_us"]) <= int(r["total_mark_us"])
    assert summary["phases"]["ttft"]["p50_us"] > summary["phases"]["ttfb"]["p50_us"]

    server_streams = streams(tap)
    assert len(server_streams) == N
    if mode == "chat":
        # llama.cpp opens each chat stream with a role-only chunk: no token, so not counted.
        for events in server_streams:
            assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
    finals = [from_llama_cpp(events[-1]) for events in server_streams]
    assert all(t is not None for t in finals), "the last event of every stream carries `timings`"
    for events, timings in zip(server_streams, finals):
        # the prompts make the model run to max_tokens: every output token is one event (the
        # finish reason rides on the last choice; a usage chunk without choices may follow)
        assert [c["finish_reason"] for e in events for c in e["choices"] if c.get("finish_reason")] == ["length"]
        assert sum(carries_token(e) for e in events) == timings.generated_tokens == MAX_TOKENS
        usage = events[-1].get("usage")
        if usage is not None:  # completions always; chat only with stream_options.include_usage
            assert usage["completion_tokens"] == timings.generated_tokens
            assert usage["prompt_tokens"] == timings.prompt_tokens
    # Each stream's tokens as the server sent them, and as netbench counted them.
    assert sorted(int(r["tokens"]) for r in records) == sorted(t.generated_tokens for t in finals)
    assert summary["tokens_per_request"] == pytest.approx(MAX_TOKENS)
    # One inter-token gap per token after the first, per stream.
    assert summary["phases"]["itl"]["count"] == (MAX_TOKENS - 1) * N
    # The server's counters moved by exactly what its responses say it did (the streams and the
    # probes before them), and nothing is left over.
    probes = [from_llama_cpp(answer) for answer in unstreamed_completions(tap)]
    assert probes and all(t is not None and t.generated_tokens == 1 for t in probes)
    sent = finals + probes
    delta = {name: after[name] - before.get(name, 0.0) for name in after}
    assert delta["llamacpp:tokens_predicted_total"] == sum(t.generated_tokens for t in sent) == N * MAX_TOKENS + len(probes)
    assert delta["llamacpp:prompt_tokens_total"] == sum(t.prompt_tokens - t.cached_tokens for t in sent)
    assert delta["llamacpp:prompt_tokens_cached_total"] == sum(t.cached_tokens for t in sent)
    assert after["llamacpp:requests_processing"] == after["llamacpp:requests_deferred"] == 0
    # The per-request join: every request carried llama.cpp's timings, the record holds them as
    # the server sent them, and the client's TTFT exceeds the server's prompt time by a small
    # positive amount (network + HTTP + queue + tokenization).
    assert sorted(int(r["server_prompt_us"]) for r in records) == sorted(t.server_prompt_us for t in finals)
    assert sorted(int(r["server_total_us"]) for r in records) == sorted(t.server_total_us for t in finals)
    join = summary["split"]["server_timings"]
    assert join["joined"] == N and join["join_rate"] == 1.0
    beyond, ttft = summary["phases"]["ttft_beyond_server"], summary["phases"]["ttft"]
    # one at a time it is small; with 4 in flight it holds the wait for a slot (the queue)
    assert beyond["count"] == N and 0 < beyond["p50_us"] < (50_000 if concurrency == 1 else ttft["p50_us"])
    if concurrency == 1:
        # One request at a time: the n-th connection is the n-th request. The client waits for
        # the first token longer than the server spent on the prompt (queue, HTTP, network).
        for r, timings in zip(records, finals):
            assert int(r["first_token_mark_us"]) > timings.server_prompt_us > 0


def test_llama_server_closes_the_connection_after_a_stream(slm_server: SlmServer) -> None:
    """llama-server advertises `Keep-Alive` on a stream and then closes the connection right
    after its last chunk (its chunked content provider returns false after sink.done(), which
    cpp-httplib takes as a cancel). A client that reuses the connection races that FIN; libcurl
    then re-sends the request on a new connection, and netbench must not count that as a reset
    (the test above). Short responses (/health) do keep the connection open."""
    import http.client

    conn = http.client.HTTPConnection(LOOPBACK, slm_server.port, timeout=60)
    conn.request("GET", "/health")
    conn.getresponse().read()
    first_socket = conn.sock
    conn.request("GET", "/health")
    assert conn.getresponse().read() and conn.sock is first_socket  # a short response keeps it open
    body = json.dumps({"prompt": PROMPTS["completions"], "max_tokens": 2, "stream": True})
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    assert "timeout=" in (response.getheader("Keep-Alive") or "")  # it says it keeps the connection
    response.read()
    assert conn.sock is not None
    conn.sock.settimeout(10)
    assert conn.sock.recv(1) == b""  # and yet the server has closed it
    conn.close()


def test_the_tap_decodes_what_the_server_sends(tap: Tap) -> None:
    """The independent decoder agrees with http.client on a Content-Length response (the models
    listing) and a chunked one (a stream), both relayed through the tap."""
    import http.client

    tap.received.clear()
    conn = http.client.HTTPConnection(LOOPBACK, tap.port, timeout=60)
    conn.request("GET", "/v1/models")
    listing = conn.getresponse().read()
    body = json.dumps({"prompt": PROMPTS["completions"], "max_tokens": 4, "stream": True})
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    streamed = conn.getresponse().read()  # http.client de-chunks it
    conn.close()
    [(listing_headers, listing_body), (stream_headers, stream_body)] = list(responses(bytes(tap.received[0])))
    assert listing_body == listing and json.loads(listing_body)["data"]
    assert stream_headers["transfer-encoding"] == "chunked" and stream_body == streamed
    assert sse_events(stream_body)[-1] == b"[DONE]"
