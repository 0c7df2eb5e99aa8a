"""The perf suite (`benchmarks/`, `make perf`) with tiny counts, so that it cannot rot.

No timing thresholds here: the smoke run checks that every benchmark runs against the real
servers and that every figure and verdict reaches perf.json and perf.md; the parts that are
pure functions (wrk's output, percentiles, the tree's memory) are checked exactly.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from benchmarks import report, run_perf
from benchmarks.overhead import CLIENTS as OVERHEAD_CLIENTS
from benchmarks.peers import parse_wrk
from benchmarks.proctree import measure
from benchmarks.stats import percentiles
from benchmarks.token_lag import CLIENTS as LAG_CLIENTS

WRK_OUTPUT = """\
Running 3s test @ http://127.0.0.1:53427/null
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   738.06us    1.47ms  13.23ms   87.13%
    Req/Sec    31.77k    14.64k   60.47k    70.00%
  Latency Distribution
     50%   17.00us
     75%  837.00us
     90%    2.72ms
     99%    6.82ms
  95287 requests in 3.02s, 13.63MB read
Requests/sec:  31585.80
Transfer/sec:      4.52MB
"""


def test_parse_wrk_reads_percentiles_max_and_rate_in_microseconds():
    result = parse_wrk(WRK_OUTPUT, concurrency=4)
    assert result.requests == 95287
    assert result.requests_per_s == 31585.80
    assert (result.latency.p50_us, result.latency.p99_us, result.latency.max_us) == (17.0, 6820.0, 13230.0)


def test_parse_wrk_rejects_output_without_a_latency_distribution():
    with pytest.raises(ValueError, match="unreadable wrk output"):
        parse_wrk(WRK_OUTPUT.replace("     99%    6.82ms\n", ""), concurrency=1)


def test_percentiles_are_nearest_rank():
    values = np.arange(1, 101)
    assert percentiles(values) == percentiles(values[::-1])
    summary = percentiles(values)
    assert (summary.count, summary.p50_us, summary.p99_us, summary.max_us) == (100, 50.0, 99.0, 100.0)
    assert percentiles(np.array([], dtype=np.int64)) is None


@pytest.mark.integration
def test_measure_counts_the_memory_of_child_processes():
    # The parent stays small; a child it spawns holds 200 MiB: only a tree-wide measure sees it.
    child = "import time; block = b'x' * (200 * 2**20); time.sleep(0.5)"
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}], check=True)"
    tree = measure([sys.executable, "-c", parent], timeout_s=60)
    assert tree.returncode == 0
    assert tree.processes == 2
    assert tree.peak_rss_kib >= 200 * 1024
    assert tree.peak_sampled_rss_kib >= 200 * 1024
    assert tree.cpu_s > 0


@pytest.mark.integration
def test_smoke_plan_writes_every_figure(tmp_path):
    assert run_perf.main(["--plan", "smoke", "--out", str(tmp_path)]) == 0
    perf = json.loads((tmp_path / "perf.json").read_text())
    for level in ("c1", "c4"):
        assert list(perf["overhead"][level]) == list(OVERHEAD_CLIENTS)
        for client, figures in perf["overhead"][level].items():
            assert figures["p50_us"] > 0 and figures["p99_us"] >= figures["p50_us"], (level, client)
            assert figures["requests_per_s"] > 0, (level, client)
    for level in ("c1", "c8"):
        assert list(perf["token_lag"][level]) == list(LAG_CLIENTS)
        for client, figures in perf["token_lag"][level].items():
            # every token of every request was stamped and seen (4 tokens a request)
            assert figures["count"] == 4 * int(level[1:]), (level, client)
    for name in ("get_small", "get_large", "streams"):
        figures = perf["scale"][name]
        assert figures["peak_rss_mib"] > 10 and figures["cpu_s"] > 0, name
        assert figures["processes"] >= 2, name  # the parent and at least one worker
    targets = perf["targets"]
    assert len(targets) == 7 and all(t["measured"] is not None for t in targets)

    markdown = (tmp_path / "perf.md").read_text()
    for heading in ("## Targets", "## 1. Null-server overhead", "## 2. Token timing precision", "## 3. Scale"):
        assert heading in markdown
    for client in OVERHEAD_CLIENTS:
        assert f"| {client} | 1 |" in markdown and f"| {client} | 4 |" in markdown

    # Every target, when missed, is explained from the same run's figures.
    missed = [t | {"measured": None, "passed": False} for t in targets]
    rendered = report.render_markdown(perf | {"targets": missed})
    section = rendered.split("## Missed targets, and what this run says limits them")[1]
    assert len([line for line in section.splitlines() if line.startswith("- ")]) == 7
    assert section.count("bare pycurl") == 6


@pytest.mark.integration
def test_truth_table_rows_agree_with_the_server(tmp_path):
    """`make truth` with one stream case and one failing case: the counts each side saw agree,
    and the figures reach the Markdown."""
    from benchmarks import truth_table
    from tests.servers.truth import TruthServer

    stream_case = truth_table.Case("multi", "chat", 1, {"n": 8, "pattern": (1, 3)})
    with TruthServer() as server:
        row = truth_table.stream_row(stream_case, server, tmp_path, 3)
    assert (row.requests, row.tokens, row.server_tokens, row.events, row.server_events) == (3, 24, 24, 12, 12)
    assert 0 <= row.ttft_error_p50_ms <= row.ttft_error_max_ms and row.ttft_ms > row.server_first_token_ms > 0
    failing_case = truth_table.Case("error", "chat", 1, {"n": 4}, every=2)
    (tmp_path / "failing").mkdir()
    with TruthServer() as server:
        failed = truth_table.failing_row(failing_case, server, tmp_path / "failing", 6)
    assert (failed.requests, failed.sent_shape, failed.failures, failed.ok) == (6, 3, {"stream_error": 3}, 3)
    text = truth_table.markdown([row], [failed])
    assert f"| {row.tokens} ({row.server_tokens}) | {row.events} ({row.server_events}) |" in text
    assert "| error (n=4) | chat | 6 | 3 | stream_error 3 | 3 |" in text
