"""server_timing: llama.cpp's `timings` on responses recorded from the real llama-server
(tests/data/llama_cpp/, written by capture.py there), TGI's headers as TGI's router writes
them, W3C Server-Timing from the spec's examples, and hostile input of every kind."""

from __future__ import annotations

import math
import random

import pytest

from netbench.server_timing import (
    MAX_DURATION_US,
    ServerTimings,
    TimingMetric,
    from_headers,
    from_llama_cpp,
    from_server_timing,
    from_tgi_headers,
    header_pairs,
    parse_server_timing,
)
from tests.http_bytes import header_lines
from tests.llama_cpp_samples import BODIES, STREAMS, carries_token, events, final, recorded


# --- llama.cpp, recorded ------------------------------------------------------------------------


@pytest.mark.parametrize("name", STREAMS + BODIES)
def test_llama_cpp_timings_of_recorded_responses(name):
    body = final(name)
    raw = body["timings"]
    timings = from_llama_cpp(body)
    assert timings is not None and timings.source == "llama.cpp"
    assert timings.server_prompt_us == round(raw["prompt_ms"] * 1000) > 0
    assert timings.server_decode_us == round(raw["predicted_ms"] * 1000) > 0
    assert timings.server_inference_us == timings.server_total_us == timings.server_prompt_us + timings.server_decode_us
    assert timings.server_queue_us is None  # llama.cpp does not time its queue
    assert timings.cached_tokens == raw["cache_n"]
    assert timings.prompt_tokens == raw["prompt_n"] + raw["cache_n"]
    assert timings.generated_tokens == raw["predicted_n"]
    # the object alone parses the same as the body or event around it
    assert from_llama_cpp(raw) == timings


@pytest.mark.parametrize("name", ["completions_stream", "completions", "chat"])
def test_llama_cpp_timings_agree_with_usage(name):
    body = final(name)
    timings = from_llama_cpp(body)
    usage = body["usage"]
    assert timings.prompt_tokens == usage["prompt_tokens"]
    assert timings.cached_tokens == usage["prompt_tokens_details"]["cached_tokens"]
    assert timings.generated_tokens == usage["completion_tokens"]


@pytest.mark.parametrize("name", ["completions_stream", "chat_stream"])
def test_only_the_last_stream_event_carries_timings_and_it_counts_the_tokens_streamed(name):
    stream = events(name)
    assert [from_llama_cpp(e) is not None for e in stream] == [False] * (len(stream) - 1) + [True]
    assert from_llama_cpp(stream[-1]).generated_tokens == sum(carries_token(e) for e in stream)


def test_a_chat_stream_opens_with_a_role_chunk_and_carries_no_usage_unasked():
    stream = events("chat_stream")
    assert stream[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
    assert not any("usage" in e for e in stream)  # only with stream_options.include_usage


@pytest.mark.parametrize("name", ["chat_stream_timings_per_token", "completions_stream_timings_per_token"])
def test_timings_per_token_puts_running_timings_on_every_token_event(name):
    stream = events(name)
    tokens = [from_llama_cpp(e) for e in stream if carries_token(e)]
    assert all(t is not None for t in tokens)
    # the prompt is done before the first token: every event repeats the same prompt time
    assert len({t.server_prompt_us for t in tokens}) == 1
    # each token event counts one more token, and the server's clock moves on
    assert [t.generated_tokens for t in tokens] == list(range(1, len(tokens) + 1))
    decode = [t.server_decode_us for t in tokens]
    assert decode == sorted(decode) and decode[0] <= 1  # the first token costs no decode step
    assert from_llama_cpp(stream[-1]) == tokens[-1]


def test_llama_cpp_headers_carry_no_timings():
    head, _ = recorded("completions")
    assert from_headers(header_lines(head)) is None


@pytest.mark.parametrize(
    "timings",
    [
        {"prompt_ms": float("nan"), "predicted_ms": float("inf"), "prompt_n": -1, "predicted_n": 1.5, "cache_n": True},
        {"prompt_ms": -3.0, "predicted_ms": "12", "prompt_n": "7", "predicted_n": None, "cache_n": [1]},
        {"prompt_ms": 1e300, "predicted_ms": 10**30, "prompt_n": 10**20, "predicted_n": {"x": 1}, "cache_n": -0.0},
    ],
)
def test_hostile_llama_cpp_values_become_none(timings):
    result = from_llama_cpp({"timings": timings})
    assert result is None or (result.server_prompt_us is None and result.server_decode_us is None)
    if result is not None:
        assert result.generated_tokens is None and result.prompt_tokens is None


def test_llama_cpp_integral_floats_are_counts_and_a_partial_object_keeps_what_is_good():
    result = from_llama_cpp({"timings": {"prompt_ms": 2.5, "predicted_n": 4.0, "cache_n": 0}})
    assert result == ServerTimings("llama.cpp", server_prompt_us=2500, generated_tokens=4, cached_tokens=0)
    assert result.server_total_us is None  # the sum needs both parts


@pytest.mark.parametrize("body", [None, [], "timings", 3, {"timings": None}, {"timings": [1, 2]}, {}, {"timings": {}}])
def test_bodies_without_a_timings_object_have_none(body):
    assert from_llama_cpp(body) is None


# --- TGI ----------------------------------------------------------------------------------------

# A /generate response as TGI sent it, quoted in huggingface/huggingface_hub issue #2281.
TGI_RESPONSE = """HTTP/1.1 200 OK\r
content-type: application/json\r
x-compute-type: gpu+optimized\r
x-compute-time: 0.111191439\r
x-compute-characters: 23\r
x-total-time: 111\r
x-validation-time: 0\r
x-queue-time: 0\r
x-inference-time: 110\r
x-time-per-token: 36\r
x-prompt-tokens: 7\r
x-generated-tokens: 3\r
content-length: 318\r
"""


def test_tgi_headers_as_tgi_sends_them():
    timings = from_tgi_headers(header_pairs(TGI_RESPONSE))
    assert timings == ServerTimings(
        source="tgi",
        server_queue_us=0,
        server_inference_us=110_000,
        server_total_us=111_191,  # x-compute-time, seconds: finer than x-total-time's whole ms
        prompt_tokens=7,
        generated_tokens=3,
    )
    assert from_headers(header_pairs(TGI_RESPONSE)) == timings


def test_tgi_total_falls_back_to_whole_milliseconds_and_names_are_case_insensitive():
    timings = from_tgi_headers({"X-Total-Time": "250", "X-Queue-Time": "40", "x-compute-time": "soon"})
    assert (timings.server_total_us, timings.server_queue_us) == (250_000, 40_000)


def test_a_tgi_stream_carries_no_timings():
    # generate_stream_internal sends its headers before generation: no timing among them
    headers = {"x-compute-type": "gpu+optimized", "x-compute-characters": "23", "X-Accel-Buffering": "no"}
    assert from_tgi_headers(headers) is None and from_headers(headers) is None


@pytest.mark.parametrize("value", ["nan", "inf", "-5", "1e3", "1_000", "0x10", "", " ", "12 ms", "1.2.3", "9" * 40])
def test_hostile_tgi_values_become_none(value):
    assert from_tgi_headers({"x-queue-time": value, "x-prompt-tokens": value, "x-compute-time": value}) is None


def test_tgi_duplicates_take_the_first_and_huge_values_are_dropped():
    pairs = [("x-queue-time", "5"), ("x-queue-time", "7"), ("x-inference-time", str(MAX_DURATION_US))]
    assert from_tgi_headers(pairs) == ServerTimings("tgi", server_queue_us=5000)


# --- W3C Server-Timing --------------------------------------------------------------------------


def test_server_timing_examples_of_the_spec():
    assert parse_server_timing("missedCache") == (TimingMetric("missedCache"),)
    assert parse_server_timing("cpu;dur=2.4") == (TimingMetric("cpu", 2400),)
    assert parse_server_timing('cache;desc="Cache Read";dur=23.2') == (TimingMetric("cache", 23200, "Cache Read"),)
    assert parse_server_timing("db;dur=53, app;dur=47.2") == (TimingMetric("db", 53000), TimingMetric("app", 47200))


def test_server_timing_across_headers_with_quoted_commas_escapes_and_whitespace():
    metrics = parse_server_timing(['queue ; dur = 1.5 ; desc="wait, then \\"go\\""', "prefill;dur=20,decode;dur=80.25"])
    assert metrics == (
        TimingMetric("queue", 1500, 'wait, then "go"'),
        TimingMetric("prefill", 20000),
        TimingMetric("decode", 80250),
    )
    timings = from_server_timing(['queue;dur=1.5', "prefill;dur=20,decode;dur=80.25,total;dur=110"])
    assert timings == ServerTimings(
        "server-timing", server_queue_us=1500, server_prompt_us=20000, server_decode_us=80250, server_total_us=110_000
    )


def test_server_timing_first_parameter_and_first_metric_win_and_desc_may_be_a_token():
    assert parse_server_timing("a;dur=1;dur=2;desc=x;desc=y") == (TimingMetric("a", 1000, "x"),)
    assert from_server_timing("Total;dur=5, total;dur=9").server_total_us == 5000
    assert from_server_timing("total;desc=no-dur, total;dur=9").server_total_us == 9000


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        # from litellm issue #3200: `total=30.4` is no metric name
        ('cache;desc="Cache Hit";dur=23.3,total=30.4', (TimingMetric("cache", 23300, "Cache Hit"),)),
        ("a;dur=nan, b;dur=-1, c;dur=1e9, d;dur=inf, e;dur=", tuple(TimingMetric(n) for n in "abcde")),
        ('bad;desc="never closed, good;dur=1', ()),
        ("bad junk;dur=1, good;dur=2", (TimingMetric("good", 2000),)),
        ("=1, ;dur=2, good;dur=3, a;;dur=4, b;=5", (TimingMetric("good", 3000),)),
        ("x;dur=" + "9" * 12, (TimingMetric("x"),)),  # longer than a day
        (", ,,  ,", ()),
        ("", ()),
    ],
)
def test_malformed_server_timing_entries_are_skipped(header, expected):
    assert parse_server_timing(header) == expected


def test_unknown_names_and_missing_durations_give_no_timings():
    assert from_server_timing("db;dur=53, app;dur=47.2, total") is None
    assert from_headers([("Server-Timing", "db;dur=1"), ("server-timing", "prefill;dur=2")]).server_prompt_us == 2000


def test_over_long_server_timing_values_are_not_parsed():
    assert parse_server_timing("total;dur=1," + "x," * 20_000) == ()


# --- header blocks ------------------------------------------------------------------------------


def test_header_pairs_keep_only_the_last_response_of_a_block():
    block = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nServer-Timing: total;dur=3\r\nbad line\r\n: x\r\n\r\n"
    assert header_pairs(block) == [("Server-Timing", "total;dur=3")]
    head, _ = recorded("chat")
    assert header_pairs(head) == header_lines(head)


# --- nothing raises -----------------------------------------------------------------------------


def test_random_input_never_raises():
    rng = random.Random(16)
    alphabet = ';=,"\\ \t\x00\xff\u2028abcdur0123456789.-eE+'
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(40)))
        for metric in parse_server_timing([text, text[::-1]]):
            assert metric.dur_us is None or 0 <= metric.dur_us <= MAX_DURATION_US
        from_server_timing(text)
        from_tgi_headers({"x-queue-time": text, "x-compute-time": text, "x-generated-tokens": text})
        header_pairs(text)
        from_llama_cpp({"timings": {"prompt_ms": text, "predicted_n": text}})
    for junk in (None, 5, b"bytes", [("a",)], [(1, 2)], [["x-queue-time", "1"]], {"x-queue-time": 1}, object()):
        assert from_headers(junk) is None  # type: ignore[arg-type]
        assert parse_server_timing(junk) == ()  # type: ignore[arg-type]
    assert from_llama_cpp({"timings": {"prompt_ms": math.pi}}).server_prompt_us == 3142
