"""The clients netbench is compared with, each written the way its users' tools write it.

- `aiohttp_get`: a plain aiohttp loop, the client of vLLM's benchmark: one shared
  `ClientSession` (keep-alive), C tasks each sending its share of requests in turn, every
  request timed with `perf_counter_ns` around the request and the body read.
- `httpx_get`: the same loop on `httpx.AsyncClient`, the client of guidellm.
- `aiohttp_stream`: a streaming completions reader written as vLLM's
  `async_request_openai_completions` reads a stream (`async for chunk_bytes in
  response.content`, strip, `removeprefix("data: ")`, `json.loads`, then the timestamp);
  it records `time.monotonic_ns()` minus the server's `netbench_sent_ns` stamp per token.
- `pycurl_get` and `pycurl_stream`: a bare CurlMulti loop that does nothing but what it must
  (the GET loop reads libcurl's TOTAL; the stream reader only stores each chunk with its
  arrival time and finds the stamps after the request): the floor of any libcurl client
  driven from Python, so what netbench adds on top of libcurl can be read off.
- `run_wrk` and `parse_wrk`: wrk (C), the physical reference, with `--latency`.

Each peer runs in its own process (`python -m benchmarks.peers CLIENT ...`, one JSON object
on stdout), so every client starts fresh and its CPU and memory are its own (aiohttp and
httpx are imported by the loop that uses them, for that reason).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass

import numpy as np
import pycurl

from benchmarks.stats import Percentiles, percentiles


@dataclass(frozen=True)
class LoopResult:
    """What a peer measured: latency (or lag) percentiles in µs and its request rate."""

    client: str
    concurrency: int
    requests: int
    failed: int
    elapsed_s: float
    requests_per_s: float
    latency: Percentiles | None  # per-request wall time (GET loops)
    token_lag: Percentiles | None  # client saw the event - server stamped it (stream reader)


async def _closed_loop(
    concurrency: int, n: int, one_request: Callable[[list[int]], Awaitable[bool]]
) -> tuple[float, int, list[int]]:
    """C tasks sharing n requests; returns (elapsed s, failures, samples in µs)."""
    samples: list[int] = []
    failures = 0
    remaining = n

    async def slot() -> None:
        nonlocal remaining, failures
        while remaining > 0:
            remaining -= 1
            if not await one_request(samples):
                failures += 1

    started = time.perf_counter()
    await asyncio.gather(*(slot() for _ in range(concurrency)))
    return time.perf_counter() - started, failures, samples


async def aiohttp_get(url: str, concurrency: int, n: int) -> tuple[float, int, list[int]]:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(samples: list[int]) -> bool:
            start_ns = time.perf_counter_ns()
            async with session.get(url) as response:
                await response.read()
                ok = response.status == 200
            samples.append((time.perf_counter_ns() - start_ns) // 1000)
            return ok

        return await _closed_loop(concurrency, n, one)


async def httpx_get(url: str, concurrency: int, n: int) -> tuple[float, int, list[int]]:
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits) as client:

        async def one(samples: list[int]) -> bool:
            start_ns = time.perf_counter_ns()
            response = await client.get(url)
            samples.append((time.perf_counter_ns() - start_ns) // 1000)
            return response.status_code == 200

        return await _closed_loop(concurrency, n, one)


async def aiohttp_stream(url: str, concurrency: int, n: int, model: str, max_tokens: int) -> tuple[float, int, list[int]]:
    """vLLM's completions stream reader, plus the lag of every stamped token."""
    import aiohttp

    payload = {"model": model, "prompt": "Say hello.", "max_tokens": max_tokens, "stream": True}
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=6 * 60 * 60)  # vLLM's AIOHTTP_TIMEOUT
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(samples: list[int]) -> bool:
            generated_text: list[str] = []
            async with session.post(url=f"{url}/v1/completions", json=payload) as response:
                if response.status != 200:
                    return False
                async for chunk_bytes in response.content:
                    chunk_bytes = chunk_bytes.strip()
                    if not chunk_bytes:
                        continue
                    chunk = chunk_bytes.decode("utf-8").removeprefix("data: ")
                    if chunk != "[DONE]":
                        data = json.loads(chunk)
                        if choices := data.get("choices"):
                            generated_text.append(choices[0].get("text") or "")
                            timestamp_ns = time.monotonic_ns()  # where vLLM takes perf_counter()
                            if "netbench_sent_ns" in data:
                                samples.append((timestamp_ns - data["netbench_sent_ns"]) // 1000)
            return bool(generated_text)

        return await _closed_loop(concurrency, n, one)


def _curl_loop(handles: list[pycurl.Curl], n: int, on_done: Callable[[pycurl.Curl], bool]) -> tuple[float, int]:
    """A bare CurlMulti closed loop: every handle in flight, n requests in all; returns
    (elapsed s, failures). `on_done` reads a finished request and says whether it succeeded."""
    multi = pycurl.CurlMulti()
    remaining, active, failed = n, 0, 0
    started = time.perf_counter()
    for handle in handles[:n]:
        multi.add_handle(handle)
        remaining, active = remaining - 1, active + 1
    while active:
        while multi.perform()[0] == pycurl.E_CALL_MULTI_PERFORM:
            pass
        _, ok, bad = multi.info_read()
        finished = [(handle, True) for handle in ok] + [(handle, False) for handle, _, _ in bad]
        for handle, success in finished:
            failed += not (on_done(handle) and success)
            multi.remove_handle(handle)
            if remaining:
                multi.add_handle(handle)
                remaining -= 1
            else:
                active -= 1
        if not finished:
            multi.select(1.0)
    multi.close()
    return time.perf_counter() - started, failed


def _curl_handle(url: str) -> pycurl.Curl:
    handle = pycurl.Curl()
    handle.setopt(pycurl.URL, url)
    handle.setopt(pycurl.NOSIGNAL, 1)
    handle.setopt(pycurl.TCP_NODELAY, 1)
    return handle


def pycurl_get(url: str, concurrency: int, n: int) -> tuple[float, int, list[int]]:
    samples: list[int] = []
    handles = [_curl_handle(url) for _ in range(concurrency)]
    for handle in handles:
        handle.setopt(pycurl.WRITEFUNCTION, len)  # a C builtin: accepts the body, costs nothing

    def done(handle: pycurl.Curl) -> bool:
        samples.append(handle.getinfo(pycurl.TOTAL_TIME_T))
        return handle.getinfo(pycurl.RESPONSE_CODE) == 200

    elapsed_s, failed = _curl_loop(handles, n, done)
    return elapsed_s, failed, samples


_STAMP = re.compile(rb'"netbench_sent_ns":(\d+)')


def pycurl_stream(url: str, concurrency: int, n: int, model: str, max_tokens: int) -> tuple[float, int, list[int]]:
    samples: list[int] = []
    body = json.dumps({"model": model, "prompt": "Say hello.", "max_tokens": max_tokens, "stream": True})
    chunks: dict[pycurl.Curl, list[tuple[int, bytes]]] = {}
    handles = [_curl_handle(f"{url}/v1/completions") for _ in range(concurrency)]
    for handle in handles:
        store = chunks[handle] = []
        handle.setopt(pycurl.HTTPHEADER, ["Content-Type: application/json", "Expect:"])
        handle.setopt(pycurl.POSTFIELDS, body)
        handle.setopt(pycurl.WRITEFUNCTION, lambda chunk, store=store: store.append((time.monotonic_ns(), chunk)))

    def done(handle: pycurl.Curl) -> bool:
        # An event arrived with the chunk that completed it (the server frames events with LF LF).
        pending, tokens = b"", 0
        for arrived_ns, chunk in chunks[handle]:
            *events, pending = (pending + chunk).split(b"\n\n")
            for event in events:
                if stamp := _STAMP.search(event):
                    samples.append((arrived_ns - int(stamp.group(1))) // 1000)
                    tokens += 1
        chunks[handle].clear()
        return handle.getinfo(pycurl.RESPONSE_CODE) == 200 and tokens > 0

    elapsed_s, failed = _curl_loop(handles, n, done)
    return elapsed_s, failed, samples


#: client name -> (loop, whether it reads streams); every loop returns (elapsed s, failures, µs samples)
CLIENTS: dict[str, tuple[Callable[[argparse.Namespace], tuple[float, int, list[int]]], bool]] = {
    "aiohttp-get": (lambda a: asyncio.run(aiohttp_get(a.url, a.concurrency, a.n)), False),
    "httpx-get": (lambda a: asyncio.run(httpx_get(a.url, a.concurrency, a.n)), False),
    "pycurl-get": (lambda a: pycurl_get(a.url, a.concurrency, a.n), False),
    "aiohttp-stream": (lambda a: asyncio.run(aiohttp_stream(a.url, a.concurrency, a.n, a.model, a.max_tokens)), True),
    "pycurl-stream": (lambda a: pycurl_stream(a.url, a.concurrency, a.n, a.model, a.max_tokens), True),
}


def run_peer(args: argparse.Namespace) -> LoopResult:
    loop, streaming = CLIENTS[args.client]
    elapsed_s, failed, samples = loop(args)
    values = percentiles(np.array(samples, dtype=np.int64))
    client, concurrency, n = args.client, args.concurrency, args.n
    return LoopResult(
        client=client,
        concurrency=concurrency,
        requests=n,
        failed=failed,
        elapsed_s=elapsed_s,
        requests_per_s=n / elapsed_s if elapsed_s > 0 else 0.0,
        latency=None if streaming else values,
        token_lag=values if streaming else None,
    )


# --- wrk ---

_WRK_LATENCY_LINE = re.compile(r"^\s*(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_WRK_MAX_LINE = re.compile(r"^\s*Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", re.MULTILINE)
_WRK_RATE_LINE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_WRK_REQUESTS_LINE = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m)", re.MULTILINE)
_UNIT_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6}


@dataclass(frozen=True)
class WrkResult:
    concurrency: int
    requests: int
    requests_per_s: float
    latency: Percentiles  # from wrk's 50 % and 99 % lines and its Max column


def parse_wrk(text: str, concurrency: int) -> WrkResult:
    """Read `wrk --latency` output: the latency distribution and the request rate."""
    latency = {int(q): float(v) * _UNIT_US[u] for q, v, u in _WRK_LATENCY_LINE.findall(text)}
    rate = _WRK_RATE_LINE.search(text)
    requests = _WRK_REQUESTS_LINE.search(text)
    peak = _WRK_MAX_LINE.search(text)
    if 50 not in latency or 99 not in latency or rate is None or requests is None or peak is None:
        raise ValueError(f"unreadable wrk output:\n{text}")
    return WrkResult(
        concurrency=concurrency,
        requests=int(requests.group(1)),
        requests_per_s=float(rate.group(1)),
        latency=Percentiles(
            count=int(requests.group(1)),
            p50_us=latency[50],
            p99_us=latency[99],
            max_us=float(peak.group(1)) * _UNIT_US[peak.group(2)],
        ),
    )


def run_wrk(url: str, concurrency: int, duration_s: float) -> WrkResult:
    """One wrk thread holding `concurrency` keep-alive connections for duration_s."""
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(duration_s, 1.0):g}s", "--latency", url]
    out = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + 60, check=True)
    return parse_wrk(out.stdout, concurrency)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run one peer client; print one JSON object.")
    parser.add_argument("client", choices=sorted(CLIENTS))
    parser.add_argument("--url", required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--model", default="")
    parser.add_argument("--max-tokens", type=int, default=0)
    args = parser.parse_args(argv)
    result = run_peer(args)
    json.dump(asdict(result), sys.stdout)


if __name__ == "__main__":
    main()
