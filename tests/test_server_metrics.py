"""server_metrics: parsing with prometheus_client, the before/after difference, bucket
interpolation, "not available" with its reason, and the runner's scrape against real servers."""

from __future__ import annotations

import contextlib
import http.server
import math
import threading
from collections.abc import Iterator

import pytest

from netbench.runner import run
from netbench.server_metrics import bucket_percentile, difference, metrics_url, parse, percentiles, scrape
from netbench.spec import RunSpec
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


@pytest.mark.integration
@pytest.mark.slm
def test_the_llama_cpp_server_has_no_metrics(slm_server):
    result = run(RunSpec(url=slm_server.openai_url, mode="completions", n=2, max_tokens=2, model=slm_server.model_id))
    assert result.ok == 2
    assert result.server_metrics["available"] is False
    assert "HTTP 404" in result.server_metrics["reason"]
