"""server_metrics: parsing with prometheus_client, the before/after difference, bucket
interpolation, llama.cpp's counters (on /metrics recorded from the real llama-server, and live),
"not available" with its reason, and the runner's scrape against real servers."""

from __future__ import annotations

import contextlib
import http.server
import math
import threading
from collections.abc import Iterator

import pytest

from netbench.runner import run
from netbench.server_metrics import (
    bucket_percentile,
    counter_summary,
    difference,
    metrics_url,
    parse,
    percentiles,
    scrape,
)
from netbench.server_timing import from_llama_cpp
from netbench.spec import RunSpec
from tests import llama_cpp_samples
from tests.synthetic_runs import exposition

URL = "http://127.0.0.1:9/metrics"


# --- parsing and differences ----------------------------------------------------------------


def test_parse_keeps_vllm_latency_histograms_and_the_success_counter():
    scraped = parse(URL, exposition({"time_to_first_token_seconds": [0.003, 0.015]}, successes=2))
    assert scraped.ok
    name, buckets, total_s, count = scraped.histograms["ttft"]
    assert name == "vllm:time_to_first_token_seconds"
    assert count == 2 and total_s == pytest.approx(0.018)
    assert buckets[0.005] == 1 and buckets[0.02] == 2 and buckets[math.inf] == 2
    assert set(scraped.histograms) == {"ttft", "e2e", "queue"}
    assert scraped.successes == {"length": 2}


def test_sglang_prefix_is_read_too():
    scraped = parse(URL, exposition({"time_to_first_token_seconds": [0.01]}, prefix="sglang:"))
    assert scraped.histograms["ttft"][0] == "sglang:time_to_first_token_seconds"


def test_difference_counts_only_what_happened_between_the_scrapes():
    before = parse(URL, exposition({"time_to_first_token_seconds": [0.5] * 3}, successes=3))
    after = parse(URL, exposition({"time_to_first_token_seconds": [0.5] * 3 + [0.015] * 5}, successes=8))
    diff = difference(before, after)
    assert diff["available"] is True
    ttft = diff["histograms"]["ttft"]
    assert ttft["count"] == 5
    assert ttft["sum_s"] == pytest.approx(0.075)
    buckets = dict((str(b), c) for b, c in ttft["buckets"])
    assert buckets["0.01"] == 0 and buckets["0.02"] == 5 and buckets["0.5"] == 5 and buckets["+Inf"] == 5
    assert diff["successes"] == {"length": 5}
    assert percentiles(diff)["ttft"].mean_us == pytest.approx(15_000)


def test_a_counter_reset_is_not_a_difference():
    before = parse(URL, exposition({"time_to_first_token_seconds": [0.01] * 4}))
    after = parse(URL, exposition({"time_to_first_token_seconds": [0.01]}))
    diff = difference(before, after)
    assert diff["available"] is False and "restart" in diff["reason"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('{"detail":"Not Found"}', "not Prometheus text"),
        ("<html><body>metrics</body></html>", "not Prometheus text"),
        ("", "empty"),
        ("# HELP up x\n# TYPE up gauge\nup 1\n", "no vLLM-style latency histograms"),
    ],
)
def test_bodies_that_are_not_vllm_metrics_are_not_available(body, reason):
    diff = difference(parse(URL, body), parse(URL, body))
    assert diff["available"] is False
    assert reason in diff["reason"]


# --- llama.cpp's counters ---------------------------------------------------------------------


def test_llama_cpp_counters_and_gauges_are_read_by_their_exposition_names():
    scraped = parse(URL, llama_cpp_samples.metrics("after"))
    assert scraped.ok and not scraped.histograms
    assert set(scraped.counters) == {
        "llamacpp:prompt_tokens_total", "llamacpp:prompt_tokens_cached_total", "llamacpp:prompt_seconds_total",
        "llamacpp:tokens_predicted_total", "llamacpp:tokens_predicted_seconds_total", "llamacpp:n_decode_total",
        "llamacpp:spec_decode_num_draft_tokens_total", "llamacpp:spec_decode_num_accepted_tokens_total",
        "llamacpp:spec_decode_num_drafts_total",
    }  # fmt: skip
    # n_tokens_max is declared a counter but is a maximum: kept as a value, never differenced
    assert scraped.gauges["llamacpp:n_tokens_max"] == 45
    assert scraped.gauges["llamacpp:requests_processing"] == 0
    assert scraped.gauges["llamacpp:requests_deferred"] == 0


def test_llama_cpp_difference_is_what_the_recorded_responses_say_the_server_did():
    """Between the two recorded scrapes the server served exactly the recorded requests, one at a
    time: its counters moved by the sums of their own `timings`."""
    diff = difference(parse(URL, llama_cpp_samples.metrics("before")), parse(URL, llama_cpp_samples.metrics("after")))
    assert diff["available"] is True and diff["histograms"] == {}
    timings = [from_llama_cpp(llama_cpp_samples.final(name)) for name in llama_cpp_samples.NAMES]
    counters = diff["counters"]
    assert counters["llamacpp:tokens_predicted_total"] == sum(t.generated_tokens for t in timings)
    assert counters["llamacpp:prompt_tokens_cached_total"] == sum(t.cached_tokens for t in timings)
    assert counters["llamacpp:prompt_tokens_total"] == sum(t.prompt_tokens - t.cached_tokens for t in timings)
    # each request's generation time, summed by the server in µs and printed in seconds
    assert counters["llamacpp:tokens_predicted_seconds_total"] * 1e6 == pytest.approx(
        sum(t.server_decode_us for t in timings), abs=len(timings)
    )
    assert diff["gauges"]["llamacpp:requests_processing"] == {"before": 0, "after": 0}
    summary = counter_summary(diff, requests=len(timings))
    assert summary["generated_tokens"] == counters["llamacpp:tokens_predicted_total"]
    assert summary["generation_us_per_request"] == pytest.approx(sum(t.server_decode_us for t in timings) / len(timings), abs=1)
    steps = sum(t.generated_tokens - 1 for t in timings)
    assert summary["generation_us_per_step"] == pytest.approx(sum(t.server_decode_us for t in timings) / steps, abs=1)
    assert summary["requests_processing_after"] == summary["requests_deferred_after"] == 0


def test_llama_cpp_counters_that_go_backwards_are_a_restart():
    after, before = (parse(URL, llama_cpp_samples.metrics(w)) for w in ("before", "after"))
    diff = difference(before, after)
    assert diff["available"] is False and "restart" in diff["reason"]


def test_counter_summary_needs_llama_cpp_counters_that_counted_something():
    vllm = difference(parse(URL, exposition({})), parse(URL, exposition({"time_to_first_token_seconds": [0.01]})))
    assert counter_summary(vllm, requests=1) is None
    assert counter_summary(None, requests=1) is None
    assert counter_summary({"available": False, "reason": "x"}, requests=1) is None
    idle = parse(URL, llama_cpp_samples.metrics("after"))
    assert counter_summary(difference(idle, idle), requests=3) is None  # e.g. a health run


def test_llama_cpp_counters_are_reported_where_vllm_histograms_are():
    from netbench.report.markdown import server_section
    from netbench.report.table import server_side_lines
    from netbench.summary import summarize
    from tests.synthetic_runs import make_run

    before, after = (parse(URL, llama_cpp_samples.metrics(w)) for w in ("before", "after"))
    n = len(llama_cpp_samples.NAMES)
    run = summarize(make_run("completions", 1, [250_000] * n, ttft_us=[20_000] * n, server_metrics=difference(before, after)))
    side = run.split.server_side
    assert side.counters == counter_summary(difference(before, after), n) and side.note is None
    line = "llama.cpp counters: 32 prompt tokens evaluated (+124 from the cache) in 134.7 ms (4.21 ms/token)"
    assert any(line in text for text in server_side_lines(run))
    assert any(line in text for text in server_section([run]))
    idle = summarize(make_run("health", 1, [300] * 4, server_metrics=difference(after, after)))
    assert idle.split.server_side.note.startswith("the server's counters counted no request")


# --- bucket interpolation -------------------------------------------------------------------


def test_bucket_percentile_interpolates_within_the_bucket():
    buckets = [(1.0, 0), (2.0, 10), (4.0, 20), (math.inf, 20)]
    median = bucket_percentile(buckets, 0.5)
    assert (median.value, median.low, median.high, median.open) == (2.0, 1.0, 2.0, False)
    q25 = bucket_percentile(buckets, 0.25)
    assert q25.value == pytest.approx(1.5)
    q95 = bucket_percentile(buckets, 0.95)
    assert q95.value == pytest.approx(3.8) and (q95.low, q95.high) == (2.0, 4.0)


def test_bucket_percentile_first_bucket_starts_at_zero_and_inf_is_a_lower_bound():
    assert bucket_percentile([(10.0, 4), (math.inf, 4)], 0.5).value == pytest.approx(5.0)
    tail = bucket_percentile([(10.0, 1), (math.inf, 4)], 0.95)
    assert tail.open and tail.value == 10.0
    assert bucket_percentile([(10.0, 0), (math.inf, 0)], 0.5) is None
    assert bucket_percentile([], 0.5) is None


def test_percentiles_flag_a_single_bucket():
    diff = difference(parse(URL, exposition({})), parse(URL, exposition({"time_to_first_token_seconds": [0.015] * 4,
                                                                          "e2e_request_latency_seconds": [0.1, 0.9]})))  # fmt: skip
    out = percentiles(diff)
    assert out["ttft"].single_bucket and out["ttft"].p50_bucket_us == (10_000, 20_000)
    assert not out["e2e"].single_bucket
    assert "queue" not in out  # counted nothing


def test_metrics_url_sits_beside_v1_or_at_the_origin():
    assert metrics_url(RunSpec(url="http://127.0.0.1:8000/v1")) == "http://127.0.0.1:8000/metrics"
    assert metrics_url(RunSpec(url="http://127.0.0.1:8000/prefix/v1/", mode="health")) == "http://127.0.0.1:8000/prefix/metrics"
    assert metrics_url(RunSpec(url="http://127.0.0.1:8000/a/b?x=1", mode="get")) == "http://127.0.0.1:8000/metrics"


# --- scraping real servers ------------------------------------------------------------------


class _NotFound(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = b'{"detail":"Not Found"}' if self.path == "/metrics" else b"{}"
        self.send_response(404 if self.path == "/metrics" else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def _no_metrics_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.integration
def test_a_server_without_metrics_is_not_available_with_the_reason():
    with _no_metrics_server() as url:
        scraped = scrape(RunSpec(url=url))
    assert not scraped.ok and "HTTP 404" in scraped.error


@pytest.mark.integration
def test_a_refused_scrape_says_so(refused_url):
    scraped = scrape(RunSpec(url=refused_url))
    assert not scraped.ok and "curl error 7" in scraped.error


@pytest.mark.integration
def test_metrics_difference_counts_exactly_the_requests_netbench_sent(sim_url, tmp_path):
    # warm-up requests come before the first scrape: only the measured ones are counted
    result = run(RunSpec(url=sim_url, mode="completions", concurrency=3, n=13, warmup=5, max_tokens=4))
    metrics = result.server_metrics
    assert metrics is not None and metrics["available"] is True, metrics
    assert result.ok == 13
    for key in ("ttft", "e2e", "queue"):
        assert metrics["histograms"][key]["count"] == 13, key
    assert metrics["successes"] == {"length": 13}
    assert metrics["warmup_included"] == 0
    # the same server, a second run: its own requests only, not the first run's
    again = run(RunSpec(url=sim_url, mode="chat", n=7, max_tokens=2))
    assert again.server_metrics["histograms"]["ttft"]["count"] == 7
    # a mode that never reaches the engine: the scrape works, and counts nothing
    health = run(RunSpec(url=sim_url, mode="health", n=9))
    assert health.server_metrics["available"] is True
    assert all(h["count"] == 0 for h in health.server_metrics["histograms"].values())
    # the stored difference survives the run file
    result.save(tmp_path / "run.json")
    from netbench.results import RunResult

    assert RunResult.load(tmp_path / "run.json").server_metrics == metrics


def _prompt_tokens(base_url: str, prompt: str) -> int:
    """The prompt's length in tokens, by the server's own tokenizer (/tokenize)."""
    import json
    import urllib.request

    request = urllib.request.Request(f"{base_url}/tokenize", data=json.dumps({"content": prompt}).encode())
    with urllib.request.urlopen(request, timeout=30) as response:
        return len(json.load(response)["tokens"])


@pytest.mark.slm
@pytest.mark.integration
@pytest.mark.parametrize("concurrency", [1, 4])
def test_llama_cpp_counters_count_exactly_the_requests_netbench_sent(slm_server, concurrency):
    # llama-server closes each connection after a stream (tests/test_slm.py): no reset for that
    spec = RunSpec(url=slm_server.openai_url, mode="completions", concurrency=concurrency, n=8, warmup=2,
                   max_tokens=6, model=slm_server.model_id, prompt="1, 2, 3, 4, 5,",
                   unique_prefix=False)  # the prompt as it is: its length is counted below  # fmt: skip
    result = run(spec)
    assert result.ok == 8, result.notes
    metrics = result.server_metrics
    assert metrics["available"] is True and metrics["warmup_included"] == 0, metrics
    counters = metrics["counters"]
    # every measured request's output tokens (the warm-up's are before the first scrape)
    assert counters["llamacpp:tokens_predicted_total"] == round(result.tokens_per_request * result.ok)
    # every prompt token of the 8 requests, evaluated or taken from the KV cache
    evaluated = counters["llamacpp:prompt_tokens_total"] + counters["llamacpp:prompt_tokens_cached_total"]
    assert evaluated == 8 * _prompt_tokens(slm_server.base_url, spec.prompt)
    # nothing still running or waiting when the run's last response has arrived
    assert metrics["gauges"]["llamacpp:requests_processing"]["after"] == 0
    assert metrics["gauges"]["llamacpp:requests_deferred"]["after"] == 0
    summary = counter_summary(metrics, result.ok)
    assert summary["generation_us_per_step"] > 0 and summary["decode_calls"] >= summary["generated_tokens"] / concurrency
