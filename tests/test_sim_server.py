"""Integration tests of `netbench serve`, the simulated vLLM-compatible server, run as a subprocess.

Timing checks compare with the model (`netbench.sim.capacity`) with tolerances wide enough for a
loaded 2-core machine, and prefer orderings and the server's own exact counts.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import statistics
import subprocess
import time
from collections.abc import Iterator
from dataclasses import fields
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from netbench.sim.capacity import capacity, idle_latency
from netbench.sim.config import SimConfig
from netbench.sim.metrics import REQUEST_LATENCY_BUCKETS_S, TOKEN_GAP_BUCKETS_S, TTFT_BUCKETS_S
from tests.servers.sim import SERVE_COMMAND, spawn_sim_server, start_sim_server, stop_sim_server

pytestmark = pytest.mark.integration

MODEL = "test-slm"
# Tolerance of the timing-model checks: loose enough for a noisy 2-core machine.
MODEL_TOLERANCE = 0.25


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    """A fast server shared by the functional tests; answers are exactly max_tokens long."""
    with start_sim_server("--model-name", MODEL, "--step-ms", "1", "--default-max-tokens", "7", "--ignore-eos") as url:
        yield url


@pytest.fixture(scope="module")
def eos_url() -> Iterator[str]:
    """A fast server whose model ends answers early: 6 tokens on average."""
    with start_sim_server("--model-name", MODEL, "--step-ms", "1", "--eos-mean-tokens", "6") as url:
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


def stream_chunks(url: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """Every JSON chunk of a streamed request (the final [DONE] checked, then dropped)."""
    *chunks, done = sse_events(httpx.post(url, json={**body, "stream": True}, timeout=30).content)
    assert done == "[DONE]"
    return [json.loads(chunk) for chunk in chunks]


def token_text(chunk: dict[str, Any]) -> str:
    """The text a chunk carries ("" for role-only and usage chunks and empty finals)."""
    if not chunk["choices"]:
        return ""
    choice = chunk["choices"][0]
    return choice.get("text") or choice.get("delta", {}).get("content") or ""


def words(tokens: int, first: int = 0) -> str:
    """Text of exactly `tokens` tokens: words of at most 4 characters are one token each."""
    return " ".join(f"w{(first + i) % 1000:03d}" for i in range(tokens))


def completion_body(max_tokens: int, prompt: str = "hello there", **extra: Any) -> dict[str, Any]:
    return {"prompt": prompt, "max_tokens": max_tokens, **extra}


def chat_body(max_tokens: int, content: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], "max_tokens": max_tokens, **extra}


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


def assert_close(measured: float, expected: float, what: str, tolerance: float = MODEL_TOLERANCE) -> None:
    assert abs(measured - expected) <= tolerance * expected, (
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
    assert body["data"][0]["max_model_len"] == SimConfig().max_model_len


def test_openai_client_chat_stream_matches_non_streaming(base_url: str) -> None:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say something."}]
    full = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12)
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=messages, max_tokens=12, stream=True, stream_options={"include_usage": True}
        )
    )
    first, *token_chunks, usage_chunk = chunks
    assert first.choices[0].delta.role == "assistant" and first.choices[0].delta.content == ""
    # vLLM sends the last token together with the finish reason.
    assert len(token_chunks) == 12 and all(c.choices[0].delta.content for c in token_chunks)
    assert [c.choices[0].finish_reason for c in token_chunks] == [None] * 11 + ["length"]
    assert "".join(c.choices[0].delta.content for c in token_chunks) == full.choices[0].message.content
    assert full.choices[0].finish_reason == "length"
    assert usage_chunk.choices == [] and usage_chunk.usage == full.usage
    assert full.usage.completion_tokens == 12
    assert full.usage.prompt_tokens == (4 + 3) + (4 + 4) + 3  # ChatML: 4 a message, 3 to prompt the answer
    assert len({c.id for c in chunks}) == 1 and full.id.startswith("chatcmpl-")


def test_openai_client_completions_stream_matches_non_streaming(base_url: str) -> None:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused")
    full = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=9)
    chunks = list(client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=9, stream=True))
    assert len(chunks) == 9 and all(c.choices[0].text for c in chunks)
    assert "".join(c.choices[0].text for c in chunks) == full.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "length" and full.object == "text_completion"
    assert full.usage.completion_tokens == 9
    assert full.usage.prompt_tokens == 5  # "Once upon a time": 4 one-token words, plus BOS


# --- vLLM's stream framing, byte for byte ----------------------------------------------------------


def test_chat_stream_framing(base_url: str) -> None:
    url = f"{base_url}/v1/chat/completions"
    response = httpx.post(url, json=chat_body(3, stream=True, stream_options={"include_usage": True}))
    assert response.headers["content-type"].startswith("text/event-stream")
    *chunks, done = sse_events(response.content)
    assert done == "[DONE]"
    role, first, second, last, usage = [json.loads(chunk) for chunk in chunks]
    assert role["choices"] == [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
    ]
    assert [t["choices"] for t in (first, second)] == [
        [{"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": None}] for text in ("the", " old")
    ]
    assert last["choices"] == [
        {"index": 0, "delta": {"content": " fox"}, "logprobs": None, "finish_reason": "length", "stop_reason": None}
    ]
    assert usage["choices"] == [] and usage["usage"] == {"prompt_tokens": 8, "total_tokens": 11, "completion_tokens": 3}
    for chunk in (role, first, second, last, usage):
        assert chunk["object"] == "chat.completion.chunk" and chunk["model"] == MODEL
        assert set(chunk) == {"id", "object", "created", "model", "choices"} | ({"usage"} if chunk is usage else set())

    # Without include_usage there is no usage chunk.
    plain = sse_events(httpx.post(url, json=chat_body(3, stream=True)).content)
    assert len(plain) == 1 + 3 + 1 and "usage" not in plain[-2]


def test_completion_stream_framing(base_url: str) -> None:
    chunks = stream_chunks(f"{base_url}/v1/completions", completion_body(2))
    first, last = chunks
    assert set(first) == {"id", "object", "created", "model", "choices", "usage"} and first["usage"] is None
    assert first["object"] == "text_completion"
    assert first["choices"] == [
        {"index": 0, "text": "the", "logprobs": None, "finish_reason": None, "stop_reason": None}
    ]
    assert last["choices"][0] == {"index": 0, "text": " old", "logprobs": None, "finish_reason": "length",
                                  "stop_reason": None}  # fmt: skip


def test_max_tokens_options(base_url: str) -> None:
    url = f"{base_url}/v1/chat/completions"
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(url, json=chat).json()["usage"]["completion_tokens"] == 7  # --default-max-tokens
    preferred = {**chat, "max_completion_tokens": 4, "max_tokens": 9}
    assert httpx.post(url, json=preferred).json()["usage"]["completion_tokens"] == 4


def test_stop_string_ends_with_stop(base_url: str) -> None:
    body = completion_body(10, stop=["fox"])
    response = httpx.post(f"{base_url}/v1/completions", json=body).json()
    choice = response["choices"][0]
    assert choice["text"] == "the old" and response["usage"]["completion_tokens"] == 3
    assert choice["finish_reason"] == "stop" and choice["stop_reason"] == "fox"
    streamed = stream_chunks(f"{base_url}/v1/completions", body)
    assert "".join(token_text(c) for c in streamed) == "the old"
    assert streamed[-1]["choices"][0]["finish_reason"] == "stop" and streamed[-1]["choices"][0]["text"] == ""


# --- EOS, ignore_eos, min_tokens -----------------------------------------------------------------------


def test_eos_ends_answers_early_and_deterministically(eos_url: str) -> None:
    url = f"{eos_url}/v1/completions"
    answers = [httpx.post(url, json=completion_body(100, seed=seed)).json() for seed in range(20)]
    lengths = [a["usage"]["completion_tokens"] for a in answers]
    assert max(lengths) < 100 and len(set(lengths)) > 3, lengths  # mean 6: every one ends early
    assert all(a["choices"][0]["finish_reason"] == "stop" and a["choices"][0]["stop_reason"] is None for a in answers)
    # The EOS token is generated and counted, but has no text: one token fewer is visible.
    assert all(len(a["choices"][0]["text"].split()) == n - 1 for a, n in zip(answers, lengths))
    again = httpx.post(url, json=completion_body(100, seed=3)).json()
    assert again["usage"] == answers[3]["usage"] and again["choices"][0]["text"] == answers[3]["choices"][0]["text"]
    streamed = stream_chunks(url, completion_body(100, seed=3, stream_options={"include_usage": True}))
    # The usage chunk leaves out what is null; a whole response writes it.
    assert streamed[-1]["usage"] == {k: v for k, v in answers[3]["usage"].items() if k != "prompt_tokens_details"}
    final = streamed[-2]["choices"][0]
    assert final["text"] == "" and final["finish_reason"] == "stop"
    assert "".join(token_text(c) for c in streamed) == answers[3]["choices"][0]["text"]
    # Without a seed the prompt seeds it: the same prompt ends at the same place.
    unseeded = {httpx.post(url, json=completion_body(100)).json()["usage"]["completion_tokens"] for _ in range(3)}
    assert len(unseeded) == 1


def test_ignore_eos_and_min_tokens(eos_url: str) -> None:
    client = openai.OpenAI(base_url=f"{eos_url}/v1", api_key="unused")
    for seed in range(5):
        full = client.completions.create(model=MODEL, prompt="x", max_tokens=40, seed=seed, extra_body={"ignore_eos": True})
        assert full.usage.completion_tokens == 40 and full.choices[0].finish_reason == "length"
        at_least = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=200, seed=seed,
            extra_body={"min_tokens": 30},
        )  # fmt: skip
        assert at_least.usage.completion_tokens > 30 and at_least.choices[0].finish_reason == "stop"
    with pytest.raises(openai.BadRequestError) as error:
        client.completions.create(model=MODEL, prompt="x", max_tokens=3, extra_body={"min_tokens": 5})
    assert "min_tokens must be less than or equal to max_tokens=3" in error.value.message


# --- usage options and the stream interval -----------------------------------------------------------


def test_continuous_usage_stats_count_every_chunk(base_url: str) -> None:
    options = {"stream_options": {"include_usage": True, "continuous_usage_stats": True}}
    chat = stream_chunks(f"{base_url}/v1/chat/completions", chat_body(4, **options))
    role, *events, final_usage = chat
    assert role["usage"] == {"prompt_tokens": 8, "total_tokens": 8, "completion_tokens": 0}
    assert [e["usage"]["completion_tokens"] for e in events] == [1, 2, 3, 4]
    assert all(e["usage"]["total_tokens"] == 8 + e["usage"]["completion_tokens"] for e in events)
    assert final_usage["choices"] == [] and final_usage["usage"] == events[-1]["usage"]
    completion = stream_chunks(f"{base_url}/v1/completions", completion_body(3, **options))
    assert [c["usage"]["completion_tokens"] for c in completion] == [1, 2, 3, 3]
    assert completion[-1]["choices"] == []


def test_stream_interval_groups_tokens_after_the_first() -> None:
    with start_sim_server("--stream-interval", "3", "--step-ms", "1", "--ignore-eos") as url:
        options = {"stream_options": {"include_usage": True, "continuous_usage_stats": True}}
        chunks = stream_chunks(f"{url}/v1/completions", completion_body(11, **options))
        *events, usage = chunks
        # The first token alone, then 3 a event, the rest with the finish reason.
        assert [e["usage"]["completion_tokens"] for e in events] == [1, 4, 7, 10, 11]
        assert [len(token_text(e).split()) for e in events] == [1, 3, 3, 3, 1]
        assert events[-1]["choices"][0]["finish_reason"] == "length" and usage["usage"]["completion_tokens"] == 11
        full = httpx.post(f"{url}/v1/completions", json=completion_body(11)).json()
        assert "".join(token_text(e) for e in events) == full["choices"][0]["text"]
        chat = stream_chunks(f"{url}/v1/chat/completions", chat_body(5))
        assert [len(token_text(c).split()) for c in chat] == [0, 1, 3, 1]  # role chunk, then 1, 3, 1 tokens
        # The server's inter-token latency is per token, not per event.
        assert Metrics(url).value("vllm:inter_token_latency_seconds_count") == 10 + 10 + 4


# --- /tokenize and /detokenize ----------------------------------------------------------------------------


def test_tokenize_counts_what_generation_charges(base_url: str) -> None:
    prompt = "The lighthouse keeper, naïve and 100% sure"
    tokenized = httpx.post(f"{base_url}/tokenize", json={"model": MODEL, "prompt": prompt}).json()
    assert set(tokenized) == {"count", "max_model_len", "tokens", "token_strs"} and tokenized["token_strs"] is None
    assert tokenized["max_model_len"] == SimConfig().max_model_len and tokenized["count"] == len(tokenized["tokens"])
    usage = httpx.post(f"{base_url}/v1/completions", json=completion_body(1, prompt)).json()["usage"]
    assert usage["prompt_tokens"] == tokenized["count"]
    as_ids = httpx.post(f"{base_url}/v1/completions", json=completion_body(1, tokenized["tokens"])).json()["usage"]
    assert as_ids["prompt_tokens"] == tokenized["count"]
    detokenized = httpx.post(f"{base_url}/detokenize", json={"model": MODEL, "tokens": tokenized["tokens"]}).json()
    assert detokenized == {"prompt": "<|begin_of_text|>" + prompt}
    plain = httpx.post(f"{base_url}/tokenize", json={"prompt": prompt, "add_special_tokens": False,
                                                    "return_token_strs": True}).json()  # fmt: skip
    assert plain["count"] == tokenized["count"] - 1 and "".join(plain["token_strs"]) == prompt
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}]
    chat = httpx.post(f"{base_url}/tokenize", json={"model": MODEL, "messages": messages}).json()
    chat_usage = httpx.post(f"{base_url}/v1/chat/completions", json={"messages": messages, "max_tokens": 1}).json()
    assert chat["count"] == chat_usage["usage"]["prompt_tokens"] == (4 + 3) + (4 + tokenized["count"] - 1) + 3


def test_a_client_builds_prompts_of_an_exact_length(base_url: str) -> None:
    assert httpx.post(f"{base_url}/tokenize", json={"prompt": ""}).json()["tokens"] == [1]  # BOS alone
    for length in (2, 100, 1000):
        prompt = words(length - 1)  # BOS is the first token
        assert httpx.post(f"{base_url}/tokenize", json={"prompt": prompt}).json()["count"] == length
        usage = httpx.post(f"{base_url}/v1/completions", json=completion_body(2, prompt)).json()["usage"]
        assert usage["prompt_tokens"] == length
    # Output text fed back as a prompt costs what it cost to generate.
    answer = httpx.post(f"{base_url}/v1/completions", json=completion_body(50)).json()["choices"][0]["text"]
    assert httpx.post(f"{base_url}/tokenize", json={"prompt": answer, "add_special_tokens": False}).json()["count"] == 50


# --- errors: vLLM's body, {"error": {"message", "type", "param", "code"}} ---------------------------------------

BAD_REQUESTS = [
    ("/v1/completions", b"{not json", 400, "BadRequestError", None),
    ("/v1/chat/completions", b"[1, 2]", 400, "BadRequestError", None),
    ("/v1/completions", json.dumps({"model": MODEL, "max_tokens": 3}).encode(), 400, "BadRequestError", None),
    ("/v1/chat/completions", json.dumps({"model": MODEL}).encode(), 400, "BadRequestError", None),
    ("/v1/completions", json.dumps(completion_body(0)).encode(), 400, "BadRequestError", "max_tokens"),
    ("/v1/completions", json.dumps(completion_body(3, stream_options={})).encode(), 400, "BadRequestError", None),
    ("/v1/completions", json.dumps(completion_body(3, min_tokens=4)).encode(), 400, "BadRequestError", None),
    ("/v1/completions", json.dumps(completion_body(9000)).encode(), 400, "BadRequestError", "max_tokens"),
    ("/v1/completions", json.dumps(completion_body(3, words(8200))).encode(), 400, "BadRequestError", "input_tokens"),
    ("/v1/completions", json.dumps(completion_body(3, model="gpt-4")).encode(), 404, "NotFoundError", "model"),
    ("/tokenize", json.dumps({"model": "gpt-4", "prompt": "x"}).encode(), 404, "NotFoundError", "model"),
    ("/tokenize", json.dumps({"prompt": 5}).encode(), 400, "BadRequestError", None),
    ("/tokenize", b"{", 400, "BadRequestError", None),
    ("/detokenize", json.dumps({"tokens": [17]}).encode(), 400, "BadRequestError", "tokens"),
    ("/detokenize", json.dumps({"tokens": "abc"}).encode(), 400, "BadRequestError", None),
]


@pytest.mark.parametrize(("path", "content", "status", "err_type", "param"), BAD_REQUESTS)
def test_bad_requests_get_vllm_errors(
    base_url: str, path: str, content: bytes, status: int, err_type: str, param: str | None
) -> None:
    response = httpx.post(f"{base_url}{path}", content=content, headers={"content-type": "application/json"})
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    error = body["error"]
    assert error["type"] == err_type and error["code"] == status and error["param"] == param and error["message"]


def test_unknown_paths_and_methods(base_url: str) -> None:
    missing = httpx.get(f"{base_url}/v1/nothing")
    assert missing.status_code == 404 and missing.json() == {"detail": "Not Found"}  # FastAPI's, as in vLLM
    assert httpx.get(f"{base_url}/v1/completions").status_code == 405


def test_openai_client_reads_the_errors(base_url: str) -> None:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError) as not_found:
        client.completions.create(model="no-such-model", prompt="x", max_tokens=1)
    # The client reads vLLM's error object (it types `code` as a string).
    assert (not_found.value.type, not_found.value.param, not_found.value.code) == ("NotFoundError", "model", "404")
    assert "The model `no-such-model` does not exist." in not_found.value.message
    with pytest.raises(openai.BadRequestError) as too_long:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": words(9000)}], max_tokens=1)
    assert too_long.value.param == "input_tokens" and "maximum context length is 8192 tokens" in too_long.value.message
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=MODEL, prompt="x", max_tokens=0)


# --- metrics: exact counts -------------------------------------------------------------------------------------


def test_metrics_count_exactly_what_was_generated() -> None:
    with start_sim_server("--step-ms", "1", "--eos-mean-tokens", "8", "--enable-prompt-tokens-details") as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
        before = Metrics(url)
        assert before.value("vllm:time_to_first_token_seconds_count") == 0
        usages, reasons = [], []
        for index, max_tokens in enumerate((3, 5, 8, 30)):
            chunks = list(client.completions.create(
                model="netbench-sim-slm", prompt=words(40 + index, first=index), max_tokens=max_tokens, stream=True,
                stream_options={"include_usage": True}, seed=index,
            ))  # fmt: skip
            usages.append(chunks[-1].usage)
            reasons.append(next(c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason))
        for index, max_tokens in enumerate((2, 40)):
            response = client.chat.completions.create(
                model="netbench-sim-slm", messages=[{"role": "user", "content": words(20, first=50 + index)}],
                max_tokens=max_tokens, extra_body={"ignore_eos": index == 1},
            )  # fmt: skip
            usages.append(response.usage)
            reasons.append(response.choices[0].finish_reason)
        # The same 100-token prompt twice: the second takes 6 blocks of 16 from the prefix cache.
        repeated = [client.completions.create(model="netbench-sim-slm", prompt=words(99, first=500), max_tokens=1,
                                              extra_body={"ignore_eos": True}) for _ in range(2)]  # fmt: skip
        assert repeated[0].usage.prompt_tokens_details is None
        assert repeated[1].usage.prompt_tokens_details.cached_tokens == 96
        usages += [r.usage for r in repeated]
        reasons += ["length", "length"]

        metrics = Metrics(url)
        labels = {"model_name": "netbench-sim-slm"}
        requests = len(usages)
        prompt_total = sum(u.prompt_tokens for u in usages)
        generated = sum(u.completion_tokens for u in usages)
        assert "stop" in reasons and "length" in reasons  # EOS ended some, max_tokens others
        assert metrics.value("vllm:prompt_tokens_total", **labels) == prompt_total
        assert metrics.value("vllm:generation_tokens_total", **labels) == generated
        assert metrics.value("vllm:request_prompt_tokens_sum") == prompt_total
        assert metrics.value("vllm:request_generation_tokens_sum") == generated
        assert metrics.value("vllm:request_prompt_tokens_count") == requests
        short = sum(u.completion_tokens <= 2 for u in usages)
        assert short >= 2 and metrics.value("vllm:request_generation_tokens_bucket", le="2.0") == short
        for name in ("time_to_first_token_seconds", "e2e_request_latency_seconds", "request_queue_time_seconds"):
            assert metrics.value(f"vllm:{name}_count", **labels) == requests
        assert metrics.value("vllm:inter_token_latency_seconds_count") == generated - requests
        assert metrics.value("vllm:time_per_output_token_seconds_count") == generated - requests
        for reason in ("stop", "length"):
            assert metrics.value("vllm:request_success_total", finished_reason=reason) == reasons.count(reason)
        assert metrics.value("vllm:prefix_cache_queries_total") == prompt_total
        assert metrics.value("vllm:prefix_cache_hits_total") == 96
        # Every step's tokens: the prompts less their cached part, and one a decode.
        assert metrics.value("vllm:iteration_tokens_total_sum") == prompt_total - 96 + generated - requests
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
        assert metrics.bucket_bounds("vllm:request_prompt_tokens")[-2:] == [5000.0, float("inf")]
        assert TOKEN_GAP_BUCKETS_S[0] == 0.01 and REQUEST_LATENCY_BUCKETS_S[0] == 0.3


# --- the timing model --------------------------------------------------------------------------------------------


def test_idle_ttft_and_itl_follow_the_timing_model() -> None:
    config = SimConfig(step_ms=20, prefill_token_ms=0.1, decode_token_ms=0.5)
    model = idle_latency(config, 200, 6)  # 200 prompt tokens: one step of 20 + 200 x 0.1 ms
    args = ("--step-ms", "20", "--prefill-token-ms", "0.1", "--decode-token-ms", "0.5", "--ignore-eos")
    with start_sim_server(*args) as url:
        ttft_sum = "vllm:time_to_first_token_seconds_sum"

        async def run() -> tuple[list[list[float]], list[float]]:
            runs: list[list[float]] = []
            server_ttfts_s: list[float] = []
            async with httpx.AsyncClient() as client:
                await client.get(f"{url}/health")  # connect outside the measurement
                for index in range(10):
                    before_s = Metrics(url).value(ttft_sum)
                    body = completion_body(6, words(199, first=index))  # unique: no prefix-cache hits
                    runs.append(await token_times_s(client, f"{url}/v1/completions", body))
                    server_ttfts_s.append(Metrics(url).value(ttft_sum) - before_s)
            return runs, server_ttfts_s

        runs, server_ttfts_s = asyncio.run(run())
        assert_close(statistics.median(server_ttfts_s), model.ttft_s, "server TTFT median")
        # The client adds its own overhead on top, but never sees a token sooner than the model.
        assert statistics.median(times[0] for times in runs) >= model.ttft_s * (1 - MODEL_TOLERANCE)
        assert_close(statistics.median(gap for times in runs for gap in gaps_s(times)), model.tpot_s, "client ITL")
        assert_close(Metrics(url).mean("vllm:inter_token_latency_seconds"), model.tpot_s, "server ITL mean")


async def _closed_loop_ttfts_s(url: str, concurrency: int, requests_each: int, max_tokens: int) -> list[float]:
    """Client TTFTs of `concurrency` streams, each sending `requests_each` short prompts in turn."""

    async def stream(client: httpx.AsyncClient, lane: int) -> list[float]:
        ttfts = []
        for index in range(requests_each):
            body = completion_body(max_tokens, words(12, first=lane * 100 + index))
            ttfts.append((await token_times_s(client, f"{url}/v1/completions", body))[0])
        return ttfts

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency), timeout=60) as client:
        lanes = await asyncio.gather(*(stream(client, lane) for lane in range(concurrency)))
    return [ttft for lane in lanes for ttft in lane[1:]]  # each lane's first request warms its connection


def test_continuous_batching_keeps_short_prompt_ttft_flat() -> None:
    """Short prompts share steps: TTFT grows by at most the step in flight, not by a prefill each."""
    step_s = 0.020
    with start_sim_server("--step-ms", "20", "--ignore-eos") as url:
        medians = {c: statistics.median(asyncio.run(_closed_loop_ttfts_s(url, c, 4, 6))) for c in (1, 4, 8)}
    alone = idle_latency(SimConfig(step_ms=20), 13, 6).ttft_s
    assert medians[1] >= alone * (1 - MODEL_TOLERANCE)
    # One prefill per request in a row (the old model) would be 4 and 8 steps; a request that
    # arrives while a step runs waits at most that step, whatever the concurrency.
    assert medians[4] < medians[1] + 1.5 * step_s, medians
    assert medians[8] < medians[1] + 1.5 * step_s, medians
    # Both wait between none and one whole step, so they differ by less than a step.
    assert abs(medians[8] - medians[4]) < 1.25 * step_s, medians


def _gaps_around_a_long_prompt(url: str, long_prompt_tokens: int) -> tuple[list[float], float]:
    """A stream's token gaps while a long prompt is prefilled, and the long prompt's TTFT."""

    async def run() -> tuple[list[float], float]:
        async with httpx.AsyncClient(timeout=60) as client:
            decode = asyncio.create_task(token_times_s(client, f"{url}/v1/completions", completion_body(120)))
            await asyncio.sleep(0.15)  # the stream is decoding
            body = completion_body(1, words(long_prompt_tokens - 1, first=7))
            long_ttft_s = (await token_times_s(client, f"{url}/v1/completions", body))[0]
            return gaps_s(await decode), long_ttft_s

    return asyncio.run(run())


def test_a_long_prompt_is_prefilled_in_chunks_between_decodes() -> None:
    """With a 256-token budget, a 1020-token prompt takes 4 steps of 255 prompt tokens and the
    running stream's decode token; without the budget, one long step freezes the stream."""
    step_ms, token_ms, budget = 5.0, 0.2, 256
    args = ("--step-ms", str(step_ms), "--prefill-token-ms", str(token_ms), "--decode-token-ms", "0", "--ignore-eos")
    chunk_step_s = SimConfig(step_ms=step_ms, prefill_token_ms=token_ms, decode_token_ms=0).step_s(budget - 1, 1)
    with start_sim_server(*args, "--max-num-batched-tokens", str(budget)) as url:
        chunked_gaps, chunked_ttft_s = _gaps_around_a_long_prompt(url, 1020)
        metrics = Metrics(url)
    long_gaps = [gap for gap in chunked_gaps if gap > 0.6 * chunk_step_s]
    assert len(long_gaps) == 4, chunked_gaps
    assert_close(statistics.median(long_gaps), chunk_step_s, "decode gap during a chunk")
    assert 4 * chunk_step_s * (1 - MODEL_TOLERANCE) <= chunked_ttft_s <= 5 * chunk_step_s * (1 + MODEL_TOLERANCE)
    # The budget held in every step (the server's own histogram), and some steps used it all.
    steps = metrics.value("vllm:iteration_tokens_total_count")
    assert metrics.value("vllm:iteration_tokens_total_bucket", le="256.0") == steps
    assert metrics.value("vllm:iteration_tokens_total_bucket", le="128.0") == steps - 4

    with start_sim_server(*args, "--max-num-batched-tokens", "2048") as url:
        whole_gaps, _ = _gaps_around_a_long_prompt(url, 1020)
    whole_step_s = SimConfig(step_ms=step_ms, prefill_token_ms=token_ms, decode_token_ms=0).step_s(1020, 1)
    assert_close(max(whole_gaps), whole_step_s, "decode gap during an unchunked prefill")
    assert sum(gap > 0.6 * chunk_step_s for gap in whole_gaps) == 1


def test_requests_beyond_max_num_seqs_wait_in_queue() -> None:
    step_ms, max_tokens = 10.0, 20
    with start_sim_server("--max-num-seqs", "2", "--step-ms", str(step_ms), "--ignore-eos") as url:
        seen: dict[str, set[float]] = {"vllm:num_requests_waiting": set(), "vllm:num_requests_running": set()}

        async def run() -> None:
            async with httpx.AsyncClient(timeout=30) as client:
                requests = [
                    asyncio.create_task(client.post(f"{url}/v1/completions", json=completion_body(max_tokens)))
                    for _ in range(4)
                ]
                while not all(r.done() for r in requests):
                    metrics = await client.get(f"{url}/metrics")
                    for family in text_string_to_metric_families(metrics.text):
                        if family.name in seen:
                            seen[family.name].add(family.samples[0].value)
                    await asyncio.sleep(0.01)
                assert all(r.result().status_code == 200 for r in requests)

        asyncio.run(run())
        # Never more than two run; the two beyond them wait (more, for a moment, when requests
        # arrive between steps: the engine admits at a step, as vLLM's scheduler does).
        assert max(seen["vllm:num_requests_running"]) == 2
        assert 2 <= max(seen["vllm:num_requests_waiting"]) <= 4
        metrics = Metrics(url)
        assert metrics.value("vllm:request_queue_time_seconds_count") == 4
        # The two queued requests cannot start before a running one has finished: max_tokens steps.
        assert metrics.value("vllm:request_queue_time_seconds_sum") >= 2 * max_tokens * step_ms / 1000 * (1 - MODEL_TOLERANCE)


def test_a_saturated_server_runs_at_its_configured_capacity() -> None:
    """Twice as many clients as seats keep the queue full; the server's own count of finished
    requests per second matches `capacity()`."""
    config = SimConfig(step_ms=20, prefill_token_ms=0.1, decode_token_ms=0.5, max_num_seqs=4, ignore_eos=True)
    prompt_tokens, output_tokens, clients, duration_s = 20, 10, 8, 3.0
    model = capacity(config, prompt_tokens, output_tokens)
    args = ("--step-ms", "20", "--prefill-token-ms", "0.1", "--decode-token-ms", "0.5", "--max-num-seqs", "4",
            "--ignore-eos")  # fmt: skip
    done = "vllm:e2e_request_latency_seconds_count"
    with start_sim_server(*args) as url:

        async def client_loop(client: httpx.AsyncClient, lane: int, until_s: float) -> None:
            serial = 0
            while time.monotonic() < until_s:
                body = completion_body(output_tokens, words(prompt_tokens - 1, first=lane * 100 + serial))
                assert (await client.post(f"{url}/v1/completions", json=body)).status_code == 200
                serial += 1

        async def run() -> float:
            async with httpx.AsyncClient(limits=httpx.Limits(max_connections=clients), timeout=60) as client:
                end_s = time.monotonic() + duration_s + 1.5
                loops = [asyncio.create_task(client_loop(client, lane, end_s)) for lane in range(clients)]
                await asyncio.sleep(0.75)  # past the start-up
                first_count, first_s = Metrics(url).value(done), time.monotonic()
                await asyncio.sleep(duration_s)
                rate = (Metrics(url).value(done) - first_count) / (time.monotonic() - first_s)
                await asyncio.gather(*loops)
                return rate

        measured = asyncio.run(run())
    assert model.bound == "max_num_seqs"
    assert_close(measured, model.requests_per_s, "requests per second at saturation", tolerance=0.15)


def test_http_delay_is_overhead_outside_server_metrics() -> None:
    delay_ms, step_ms = 60.0, 30.0
    args = ("--http-delay-ms", str(delay_ms), "--step-ms", str(step_ms), "--prefill-token-ms", "0")
    with start_sim_server(*args) as url:

        async def run() -> list[float]:
            async with httpx.AsyncClient() as client:
                return [(await token_times_s(client, f"{url}/v1/completions", completion_body(1)))[0] for _ in range(5)]

        client_ttfts_s = asyncio.run(run())
        started = time.monotonic()
        httpx.get(f"{url}/health")
        assert time.monotonic() - started >= delay_ms / 1000
        assert min(client_ttfts_s) >= (delay_ms + step_ms) / 1000
        assert_close(Metrics(url).mean("vllm:time_to_first_token_seconds"), step_ms / 1000, "server TTFT mean")


# --- disconnects -----------------------------------------------------------------------------------------


def test_disconnect_mid_stream_frees_the_slot_at_once() -> None:
    with start_sim_server("--step-ms", "10", "--max-num-seqs", "1", "--ignore-eos") as url:
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
    with start_sim_server("--step-ms", "10", "--ignore-eos") as url:
        host, port = url.removeprefix("http://").split(":")
        body = json.dumps(completion_body(5000)).encode()
        head = f"POST /v1/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
            wait_for_gauge(url, "vllm:num_requests_running", 1)
        wait_for_gauge(url, "vllm:num_requests_running", 0)
        assert Metrics(url).value("vllm:request_success_total", finished_reason="abort") == 1


# --- process lifecycle and options ---------------------------------------------------------------------------


def test_every_config_field_is_an_option_and_bad_values_exit_2() -> None:
    shown = subprocess.run([*SERVE_COMMAND, "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0
    for knob in fields(SimConfig):
        assert "--" + knob.name.replace("_", "-") in shown.stdout, knob.name
    assert "--no-enable-prefix-caching" in shown.stdout and "--http-delay-ms" in shown.stdout
    for bad in (["--max-num-seqs", "0"], ["--step-ms", "-1"], ["--model-name", ""]):
        refused = subprocess.run([*SERVE_COMMAND, *bad], capture_output=True, text=True, timeout=60,
                                 stdin=subprocess.DEVNULL)  # fmt: skip
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr


def test_sigint_and_sigterm_stop_cleanly_even_mid_stream() -> None:
    proc, url = spawn_sim_server()
    assert httpx.get(f"{url}/health").status_code == 200
    assert stop_sim_server(proc, signal.SIGINT) == 0

    proc, url = spawn_sim_server("--step-ms", "10", "--ignore-eos")
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
    with start_sim_server("--stamp-events", "--step-ms", "5", "--ignore-eos") as url:
        chunks: list[tuple[dict[str, Any], int]] = []
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=chat_body(5, stream=True)) as response:
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
