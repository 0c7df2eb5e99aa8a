"""Integration tests of `netbench serve`, the simulated vLLM-compatible server, run as a subprocess."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import statistics
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from netbench.sim.metrics import REQUEST_LATENCY_BUCKETS_S, TOKEN_GAP_BUCKETS_S, TTFT_BUCKETS_S
from tests.servers.sim import SERVE_COMMAND, spawn_sim_server, start_sim_server, stop_sim_server

pytestmark = pytest.mark.integration

MODEL = "test-slm"
# Tolerance of the timing-model checks: loose enough for a noisy 2-core machine.
MODEL_TOLERANCE = 0.20


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    """A fast server shared by the functional tests."""
    with start_sim_server(
        "--model-name", MODEL, "--prefill-ms", "2", "--decode-ms", "1", "--default-max-tokens", "7"
    ) as url:
        yield url


# --- helpers -----------------------------------------------------------------------------------


class Metrics:
    """One scrape of /metrics, parsed with prometheus_client's own parser."""

    def __init__(self, base_url: str) -> None:
        response = httpx.get(f"{base_url}/metrics")
        response.raise_for_status()
        self.families = {family.name: family for family in text_string_to_metric_families(response.text)}

    def value(self, sample_name: str, **labels: str) -> float:
        matches = [
            sample.value
            for family in self.families.values()
            for sample in family.samples
            if sample.name == sample_name and labels.items() <= sample.labels.items()
        ]
        assert len(matches) == 1, f"{sample_name} {labels}: {matches}"
        return matches[0]

    def bucket_bounds(self, family_name: str) -> list[float]:
        return [float(s.labels["le"]) for s in self.families[family_name].samples if s.name.endswith("_bucket")]

    def mean(self, histogram: str) -> float:
        return self.value(f"{histogram}_sum") / self.value(f"{histogram}_count")


def sse_events(raw: bytes) -> list[str]:
    """The payloads of a complete SSE body, asserting vLLM's exact `data: ...\\n\\n` framing."""
    assert raw.endswith(b"\n\n")
    events = raw[:-2].split(b"\n\n")
    assert all(event.startswith(b"data: ") and b"\n" not in event for event in events), raw
    return [event[len(b"data: ") :].decode() for event in events]


def token_text(chunk: dict[str, Any]) -> str:
    """The token a chunk carries ("" for role-only, final and usage chunks)."""
    if not chunk["choices"]:
        return ""
    choice = chunk["choices"][0]
    return choice.get("text") or choice.get("delta", {}).get("content") or ""


def completion_body(max_tokens: int, prompt: str = "hello there", **extra: Any) -> dict[str, Any]:
    return {"prompt": prompt, "max_tokens": max_tokens, **extra}


async def token_times_s(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> list[float]:
    """Stream one request; return when each token event arrived, in seconds after sending."""
    sent_s = time.monotonic()
    times_s: list[float] = []
    async with client.stream("POST", url, json={**body, "stream": True}) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: {") and token_text(json.loads(line[6:])):
                times_s.append(time.monotonic() - sent_s)
    return times_s


def gaps_s(times_s: list[float]) -> list[float]:
    return [later - earlier for earlier, later in zip(times_s, times_s[1:])]


def assert_close(measured: float, expected: float, what: str) -> None:
    assert abs(measured - expected) <= MODEL_TOLERANCE * expected, (
        f"{what}: measured {measured * 1000:.2f} ms, model {expected * 1000:.2f} ms"
    )


def wait_for_gauge(base_url: str, name: str, expected: float, deadline_s: float = 5.0) -> None:
    end = time.monotonic() + deadline_s
    while (value := Metrics(base_url).value(name)) != expected:
        assert time.monotonic() < end, f"{name} stayed {value}, expected {expected}"
        time.sleep(0.01)


# --- OpenAI API, through the official client -----------------------------------------------------


def test_health_and_models(base_url: str) -> None:
    health = httpx.get(f"{base_url}/health")
    assert health.status_code == 200 and health.content == b""
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused")
    assert [model.id for model in client.models.list()] == [MODEL]
    body = httpx.get(f"{base_url}/v1/models").json()
    assert body["object"] == "list" and body["data"][0]["object"] == "model"


def test_openai_client_chat_stream_matches_non_streaming(base_url: str) -> None:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say something."}]
    full = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12)
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=messages, max_tokens=12, stream=True, stream_options={"include_usage": True}
        )
    )
    first, *token_chunks, final, usage_chunk = chunks
    assert first.choices[0].delta.role == "assistant" and first.choices[0].delta.content == ""
    assert len(token_chunks) == 12 and all(c.choices[0].delta.content for c in token_chunks)
    assert "".join(c.choices[0].delta.content for c in token_chunks) == full.choices[0].message.content
    assert final.choices[0].finish_reason == full.choices[0].finish_reason == "length"
    assert usage_chunk.choices == [] and usage_chunk.usage == full.usage
    assert full.usage.completion_tokens == 12
    assert full.usage.total_tokens == full.usage.prompt_tokens + 12
    assert len({c.id for c in chunks}) == 1 and full.id.startswith("chatcmpl-")


def test_openai_client_completions_stream_matches_non_streaming(base_url: str) -> None:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused")
    full = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=9)
    chunks = list(client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=9, stream=True))
    *token_chunks, final = chunks
    assert len(token_chunks) == 9 and all(c.choices[0].text for c in token_chunks)
    assert "".join(c.choices[0].text for c in token_chunks) == full.choices[0].text
    assert final.choices[0].text == "" and final.choices[0].finish_reason == "length"
    assert full.usage.completion_tokens == 9 and full.object == "text_completion"
    # "Once upon a time" is 4 one-token words, plus BOS.
    assert full.usage.prompt_tokens == 5


# --- vLLM's stream framing, byte for byte ----------------------------------------------------------


def test_chat_stream_framing(base_url: str) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "stream": True}
    response = httpx.post(f"{base_url}/v1/chat/completions", json={**body, "stream_options": {"include_usage": True}})
    assert response.headers["content-type"].startswith("text/event-stream")
    *chunks, done = sse_events(response.content)
    assert done == "[DONE]"
    role, *tokens, final, usage = [json.loads(chunk) for chunk in chunks]
    assert role["choices"] == [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
    ]
    assert [t["choices"] for t in tokens] == [
        [{"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": None}]
        for text in ("the", " quick", " brown")
    ]
    assert final["choices"][0]["delta"] == {"content": ""} and final["choices"][0]["finish_reason"] == "length"
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 3
    for chunk in (role, *tokens, final, usage):
        assert chunk["object"] == "chat.completion.chunk" and chunk["model"] == MODEL
        assert set(chunk) == {"id", "object", "created", "model", "choices"} | ({"usage"} if chunk is usage else set())

    # Without include_usage there is no usage chunk.
    plain = sse_events(httpx.post(f"{base_url}/v1/chat/completions", json=body).content)
    assert len(plain) == 1 + 3 + 1 + 1 and "usage" not in plain[-2]


def test_completion_stream_framing(base_url: str) -> None:
    response = httpx.post(f"{base_url}/v1/completions", json=completion_body(2, stream=True))
    *chunks, done = sse_events(response.content)
    assert done == "[DONE]"
    first, second, final = [json.loads(chunk) for chunk in chunks]
    assert set(first) == {"id", "object", "created", "model", "choices"} and first["object"] == "text_completion"
    assert first["choices"] == [{"index": 0, "text": "the", "logprobs": None, "finish_reason": None}]
    assert second["choices"][0]["text"] == " quick"
    assert final["choices"][0]["text"] == "" and final["choices"][0]["finish_reason"] == "length"


def test_max_tokens_options(base_url: str) -> None:
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    url = f"{base_url}/v1/chat/completions"
    assert httpx.post(url, json=chat).json()["usage"]["completion_tokens"] == 7  # --default-max-tokens
    preferred = {**chat, "max_completion_tokens": 4, "max_tokens": 9}
    assert httpx.post(url, json=preferred).json()["usage"]["completion_tokens"] == 4


def test_stop_string_ends_with_stop(base_url: str) -> None:
    body = completion_body(10, stop=["fox"])
    choice = httpx.post(f"{base_url}/v1/completions", json=body).json()["choices"][0]
    assert choice["text"] == "the quick brown"
    assert choice["finish_reason"] == "stop" and choice["stop_reason"] == "fox"
    stream = httpx.post(f"{base_url}/v1/completions", json={**body, "stream": True})
    streamed = [json.loads(event) for event in sse_events(stream.content)[:-1]]
    assert "".join(token_text(c) for c in streamed) == "the quick brown"
    assert streamed[-1]["choices"][0]["finish_reason"] == "stop"


# --- errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "content", "status", "err_type"),
    [
        ("/v1/completions", b"{not json", 400, "BadRequestError"),
        ("/v1/chat/completions", b"[1, 2]", 400, "BadRequestError"),
        ("/v1/completions", json.dumps({"model": MODEL, "max_tokens": 3}).encode(), 400, "BadRequestError"),
        ("/v1/chat/completions", json.dumps({"model": MODEL}).encode(), 400, "BadRequestError"),
        ("/v1/completions", json.dumps(completion_body(0)).encode(), 400, "BadRequestError"),
        # stream_options without stream=True
        ("/v1/completions", json.dumps(completion_body(3, stream_options={})).encode(), 400, "BadRequestError"),
        # vLLM answers an unknown model with 404 NotFoundError in the same error shape.
        ("/v1/completions", json.dumps(completion_body(3, model="gpt-4")).encode(), 404, "NotFoundError"),
    ],
)
def test_bad_requests_get_vllm_errors(base_url: str, path: str, content: bytes, status: int, err_type: str) -> None:
    response = httpx.post(f"{base_url}{path}", content=content, headers={"content-type": "application/json"})
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"object", "message", "type", "param", "code"}
    assert body["object"] == "error" and body["type"] == err_type
    assert body["param"] is None and body["code"] == status and body["message"]


def test_unknown_paths_and_methods(base_url: str) -> None:
    missing = httpx.get(f"{base_url}/v1/nothing")
    assert missing.status_code == 404 and missing.json() == {"detail": "Not Found"}
    assert httpx.get(f"{base_url}/v1/completions").status_code == 405


def test_openai_client_sees_errors(base_url: str) -> None:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no-such-model", prompt="x", max_tokens=1)
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=MODEL, prompt="x", max_tokens=0)


# --- metrics -------------------------------------------------------------------------------------------


def test_metrics_count_what_was_sent() -> None:
    with start_sim_server("--prefill-ms", "1", "--decode-ms", "1") as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
        before = Metrics(url)
        assert before.value("vllm:time_to_first_token_seconds_count") == 0
        tokens_sent = 0
        prompt_tokens = 0
        for max_tokens in (3, 5, 8):
            stream = client.completions.create(
                model="netbench-sim-slm", prompt="count me", max_tokens=max_tokens, stream=True,
                stream_options={"include_usage": True},
            )
            chunks = list(stream)
            tokens_sent += sum(1 for c in chunks if c.choices and c.choices[0].text)
            prompt_tokens += chunks[-1].usage.prompt_tokens
        for max_tokens in (2, 4):
            stream = client.chat.completions.create(
                model="netbench-sim-slm", messages=[{"role": "user", "content": "count me"}],
                max_tokens=max_tokens, stream=True, stream_options={"include_usage": True},
            )
            chunks = list(stream)
            tokens_sent += sum(1 for c in chunks if c.choices and c.choices[0].delta.content)
            prompt_tokens += chunks[-1].usage.prompt_tokens

        metrics = Metrics(url)
        labels = {"model_name": "netbench-sim-slm"}
        assert metrics.value("vllm:time_to_first_token_seconds_count", **labels) == 5
        assert metrics.value("vllm:e2e_request_latency_seconds_count", **labels) == 5
        assert metrics.value("vllm:request_queue_time_seconds_count", **labels) == 5
        assert metrics.value("vllm:generation_tokens_total", **labels) == tokens_sent == 22
        assert metrics.value("vllm:prompt_tokens_total", **labels) == prompt_tokens
        assert metrics.value("vllm:inter_token_latency_seconds_count") == tokens_sent - 5
        assert metrics.value("vllm:time_per_output_token_seconds_count") == tokens_sent - 5
        assert metrics.value("vllm:request_success_total", finished_reason="length") == 5
        assert metrics.value("vllm:request_success_total", finished_reason="stop") == 0
        assert metrics.value("vllm:num_requests_running", **labels) == 0
        assert metrics.value("vllm:num_requests_waiting", **labels) == 0
        # vLLM's bucket layouts, so dashboards and netbench's scraper read both alike.
        inf = [float("inf")]
        assert metrics.bucket_bounds("vllm:time_to_first_token_seconds") == [*TTFT_BUCKETS_S, *inf]
        assert TTFT_BUCKETS_S[:5] == (0.001, 0.005, 0.01, 0.02, 0.04) and TTFT_BUCKETS_S[-1] == 2560.0
        for name in ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"):
            assert metrics.bucket_bounds(name) == [*TOKEN_GAP_BUCKETS_S, *inf]
        for name in ("vllm:e2e_request_latency_seconds", "vllm:request_queue_time_seconds"):
            assert metrics.bucket_bounds(name) == [*REQUEST_LATENCY_BUCKETS_S, *inf]
        assert TOKEN_GAP_BUCKETS_S[0] == 0.01 and REQUEST_LATENCY_BUCKETS_S[0] == 0.3


# --- the timing model ----------------------------------------------------------------------------------


def test_ttft_and_itl_follow_the_timing_model() -> None:
    prefill_ms, per_token_ms, decode_ms = 40.0, 0.1, 20.0
    prompt = " ".join(["word"] * 199)  # 199 one-token words + BOS = 200 prompt tokens
    expected_ttft_s = (prefill_ms + per_token_ms * 200) / 1000
    args = ("--prefill-ms", str(prefill_ms), "--prefill-per-token-ms", str(per_token_ms), "--decode-ms", str(decode_ms))
    with start_sim_server(*args) as url:
        ttft_sum = "vllm:time_to_first_token_seconds_sum"

        async def run() -> tuple[list[list[float]], list[float]]:
            runs: list[list[float]] = []
            server_ttfts_s: list[float] = []
            async with httpx.AsyncClient() as client:
                await client.get(f"{url}/health")  # connect outside the measurement
                for _ in range(10):
                    before_s = Metrics(url).value(ttft_sum)
                    runs.append(await token_times_s(client, f"{url}/v1/completions", completion_body(6, prompt)))
                    server_ttfts_s.append(Metrics(url).value(ttft_sum) - before_s)
            return runs, server_ttfts_s

        runs, server_ttfts_s = asyncio.run(run())
        assert_close(statistics.median(server_ttfts_s), expected_ttft_s, "server TTFT median")
        # The client adds its own overhead on top, but never sees a token sooner than the model.
        assert statistics.median(times[0] for times in runs) >= expected_ttft_s * (1 - MODEL_TOLERANCE)
        client_itl_s = statistics.median(gap for times in runs for gap in gaps_s(times))
        assert_close(client_itl_s, decode_ms / 1000, "client ITL median")
        assert_close(Metrics(url).mean("vllm:inter_token_latency_seconds"), decode_ms / 1000, "server ITL mean")
        usage = httpx.post(f"{url}/v1/completions", json=completion_body(1, prompt)).json()["usage"]
        assert usage["prompt_tokens"] == 200


def test_concurrent_streams_decode_slower() -> None:
    decode_ms, slowdown, streams = 10.0, 0.5, 8
    args = ("--decode-ms", str(decode_ms), "--batch-slowdown", str(slowdown), "--prefill-ms", "5")
    with start_sim_server(*args) as url:

        async def median_itl_s(concurrency: int) -> float:
            async with httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency)) as client:
                runs = await asyncio.gather(
                    *(token_times_s(client, f"{url}/v1/completions", completion_body(30)) for _ in range(concurrency))
                )
            return statistics.median(g for times in runs for g in gaps_s(times))

        alone_s = asyncio.run(median_itl_s(1))
        batched_s = asyncio.run(median_itl_s(streams))
        assert batched_s > alone_s
        assert_close(alone_s, decode_ms / 1000, "ITL at 1 stream")
        assert_close(batched_s, decode_ms * (1 + slowdown * (streams - 1)) / 1000, f"ITL at {streams} streams")


def test_requests_beyond_max_batch_wait_in_queue() -> None:
    prefill_ms, decode_ms, max_tokens = 5.0, 10.0, 20
    with start_sim_server("--max-batch", "2", "--prefill-ms", str(prefill_ms), "--decode-ms", str(decode_ms)) as url:
        seen_waiting: set[float] = set()

        async def run() -> None:
            async with httpx.AsyncClient(timeout=30) as client:
                requests = [
                    asyncio.create_task(client.post(f"{url}/v1/completions", json=completion_body(max_tokens)))
                    for _ in range(4)
                ]
                while not all(r.done() for r in requests):
                    metrics = await client.get(f"{url}/metrics")
                    for family in text_string_to_metric_families(metrics.text):
                        if family.name == "vllm:num_requests_waiting":
                            seen_waiting.add(family.samples[0].value)
                    await asyncio.sleep(0.01)
                assert all(r.result().status_code == 200 for r in requests)

        asyncio.run(run())
        assert max(seen_waiting) == 2
        metrics = Metrics(url)
        assert metrics.value("vllm:request_queue_time_seconds_count") == 4
        # The two queued requests cannot start before a running one has finished, which
        # takes at least its prefill plus max_tokens - 1 decode steps.
        min_run_s = (prefill_ms + (max_tokens - 1) * decode_ms) / 1000
        assert metrics.value("vllm:request_queue_time_seconds_sum") >= 2 * min_run_s * (1 - MODEL_TOLERANCE)


def test_http_delay_is_overhead_outside_server_metrics() -> None:
    delay_ms, prefill_ms = 60.0, 30.0
    args = ("--http-delay-ms", str(delay_ms), "--prefill-ms", str(prefill_ms), "--prefill-per-token-ms", "0")
    with start_sim_server(*args) as url:

        async def run() -> list[float]:
            async with httpx.AsyncClient() as client:
                return [(await token_times_s(client, f"{url}/v1/completions", completion_body(1)))[0] for _ in range(5)]

        client_ttfts_s = asyncio.run(run())
        started = time.monotonic()
        httpx.get(f"{url}/health")
        assert time.monotonic() - started >= delay_ms / 1000
        assert min(client_ttfts_s) >= (delay_ms + prefill_ms) / 1000
        assert_close(Metrics(url).mean("vllm:time_to_first_token_seconds"), prefill_ms / 1000, "server TTFT mean")


# --- disconnects -----------------------------------------------------------------------------------------


def test_disconnect_mid_stream_frees_the_slot_at_once() -> None:
    with start_sim_server("--decode-ms", "10", "--max-batch", "1") as url:
        body = completion_body(5000, stream=True)  # about 50 s if nobody hung up
        with httpx.Client(timeout=30) as running, httpx.Client(timeout=30) as queued:
            with running.stream("POST", f"{url}/v1/completions", json=body) as response:
                lines = response.iter_lines()
                assert next(lines).startswith("data: ")
                # A second request waits behind the first; it leaves while still queued.
                with queued.stream("POST", f"{url}/v1/completions", json=body) as waiting_response:
                    assert waiting_response.status_code == 200
                    wait_for_gauge(url, "vllm:num_requests_waiting", 1)
                wait_for_gauge(url, "vllm:num_requests_waiting", 0)
                assert Metrics(url).value("vllm:num_requests_running") == 1
            wait_for_gauge(url, "vllm:num_requests_running", 0)
        metrics = Metrics(url)
        assert metrics.value("vllm:request_success_total", finished_reason="abort") == 2
        assert metrics.value("vllm:e2e_request_latency_seconds_count") == 0


def test_disconnect_during_non_streaming_request_frees_the_slot() -> None:
    with start_sim_server("--decode-ms", "10") as url:
        host, port = url.removeprefix("http://").split(":")
        body = json.dumps(completion_body(5000)).encode()
        head = f"POST /v1/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
            wait_for_gauge(url, "vllm:num_requests_running", 1)
        wait_for_gauge(url, "vllm:num_requests_running", 0)
        assert Metrics(url).value("vllm:request_success_total", finished_reason="abort") == 1


# --- process lifecycle and options ---------------------------------------------------------------------------


def test_sigint_and_sigterm_stop_cleanly_even_mid_stream() -> None:
    proc, url = spawn_sim_server()
    assert httpx.get(f"{url}/health").status_code == 200
    assert stop_sim_server(proc, signal.SIGINT) == 0

    proc, url = spawn_sim_server("--decode-ms", "10")
    with httpx.stream("POST", f"{url}/v1/completions", json=completion_body(40, stream=True)) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        proc.send_signal(signal.SIGTERM)
        # Graceful: the stream in flight still runs to its end.
        assert [line for line in lines if line][-1] == "data: [DONE]"
    assert stop_sim_server(proc) == 0


def test_busy_port_is_one_clear_error() -> None:
    with start_sim_server() as url:
        port = url.rsplit(":", 1)[1]
        result = subprocess.run(
            [*SERVE_COMMAND, "--port", port], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
        )
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_stamp_events_adds_monotonic_send_time() -> None:
    with start_sim_server("--stamp-events", "--decode-ms", "5") as url:
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "stream": True}
        chunks: list[tuple[dict[str, Any], int]] = []
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    chunks.append((json.loads(line[6:]), time.monotonic_ns()))
        token_chunks = [(chunk, seen_ns) for chunk, seen_ns in chunks if token_text(chunk)]
        assert len(token_chunks) == 5
        sent_ns = [chunk["netbench_sent_ns"] for chunk, _ in token_chunks]
        assert sent_ns == sorted(sent_ns)
        # One monotonic clock on both sides: a token is never seen before it was sent.
        assert all(chunk["netbench_sent_ns"] <= seen_ns for chunk, seen_ns in token_chunks)
        assert all("netbench_sent_ns" not in chunk for chunk, _ in chunks if not token_text(chunk))


def test_events_are_not_stamped_by_default(base_url: str) -> None:
    events = sse_events(httpx.post(f"{base_url}/v1/completions", json=completion_body(3, stream=True)).content)
    assert not any("netbench_sent_ns" in event for event in events)
