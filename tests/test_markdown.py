"""The Markdown report against golden files built from synthetic, deterministic RunResults.

Regenerate deliberately, after checking the difference by eye:
    NETBENCH_UPDATE_GOLDEN=1 pytest tests/test_markdown.py
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

from netbench.analysis import TtftReference, analyse
from netbench.report import markdown
from netbench.report.markdown import rule_of_thumb_text
from netbench.summary import Run
from tests.synthetic_runs import make_run, sweep

GOLDEN = Path(__file__).parent / "golden"


def render_markdown(results, ttft_ref=None, plots=()):
    return markdown.render_markdown(analyse([Run.of(r) for r in results], ttft_ref), plots)


def rule_text(results) -> str:
    return rule_of_thumb_text(analyse([Run.of(r) for r in results]).rule_of_thumb)
PLOTS = (("Phases stacked per mode and concurrency (p50)", "network_latency_phases.png"),)


def _check(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("NETBENCH_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no golden file {path}: run with NETBENCH_UPDATE_GOLDEN=1 once, and read it"
    assert text == path.read_text(), f"{name} differs from its golden file"


@functools.cache
def _scenarios() -> dict[str, str]:
    unavailable = {"available": False, "url": "http://127.0.0.1:8000/metrics",
                   "reason": "HTTP 404 from /metrics: the server does not expose Prometheus metrics"}  # fmt: skip
    no_baseline = sweep(modes=("completions",), levels=(1, 4), keep_records=False, server_side=False)
    for run in no_baseline:
        run.server_metrics = unavailable
    noted = make_run("health", 1, [300] * 8, notes=["the server has no /health (HTTP 404): measuring GET /v1/models instead"])
    noted.counters.update(requests=2, timeout=2)
    return {
        # what `make bench` makes: health and completions at 1, 4, 8, with vLLM-style /metrics
        "sweep.md": render_markdown(sweep(), plots=PLOTS),
        # a fast model behind a slow HTTP layer: the verdict turns
        "dominant.md": render_markdown(sweep(ttft_us=1_000, http_delay_us=30_000, levels=(1, 4))),
        # no baseline, no records, no /metrics, an external TTFT reference
        "missing.md": render_markdown(no_baseline, TtftReference(27_000, "--ttft-ref 27ms")),
        # failures and notes in the runs table's notes column; nothing to compare against
        "notes.md": render_markdown([noted]),
    }


@pytest.mark.parametrize("name", ["sweep.md", "dominant.md", "missing.md", "notes.md"])
def test_markdown_matches_its_golden_file(name):
    _check(name, _scenarios()[name])


def test_the_report_has_every_section_the_exercise_asks_for():
    text = _scenarios()["sweep.md"]
    assert "| mode | concurrency | n | median_wall_s | p95_wall_s | notes |" in text
    for heading in ("## TTFT vs HTTP latency", "## Does concurrency change latency?", "## Rule of thumb", "## Plots"):
        assert heading in text
    assert "![Phases stacked per mode and concurrency (p50)](network_latency_phases.png)" in text


#: what the words of a report must never say: a propagation delay is no "HTTP overhead", the
#: client is not "on this node", and the path's time is inside TTFT, not "on top of" it
UNTRUE = ("HTTP overhead", "On this node", "on this node", "on top of")


def test_the_rule_of_thumb_names_the_cause_the_numbers_show():
    # the model dominates: a 20 ms TTFT behind 0.3 ms of HTTP on loopback
    model = rule_text(sweep(levels=(1, 8)))
    assert model.startswith("Measured from this client, the network and HTTP path takes ~0.")
    assert "(1.4 %, negligible)" in model
    assert "Most of it is the model (queue + prefill), so latency work pays off in the model and its runtime" in model
    assert "Concurrency 8 raises median TTFT by" in model
    # a fast model behind a slow HTTP layer: the serving stack
    framework = rule_text(sweep(ttft_us=1_000, http_delay_us=30_000, levels=(1,)))
    assert "(98 %, the larger part)" in framework
    assert "Most of it is the server's HTTP framework and handler, so time before any model work" in framework
    assert "the serving stack (framework, proxies) is where to start" in framework and "model and its runtime" not in framework
    # a far client: 40 ms of round trip against 5 ms of model
    far = rule_text(sweep(ttft_us=5_000, rtt_us=40_000, levels=(1,)))
    assert ": 40.03 ms of network round trip," in far  # 40 ms in HDR resolution
    assert "Most of it is the network round trip, so propagation no serving stack can shorten: run the client closer" in far
    assert "Without keep-alive each request would pay ~40.03 ms more for the TCP handshake." in far
    assert "non-trivial" in rule_text(sweep(ttft_us=10_000, http_delay_us=2_000, levels=(1,)))
    for text in (model, framework, far):
        assert not any(phrase in text for phrase in UNTRUE), text


def test_the_servers_own_timings_measure_the_path_per_request():
    # llama.cpp timed its prompt at 17 ms of a 20 ms TTFT: 3 ms is the path to the model (the
    # histograms' resolution shows 20 ms as 20.02 and 17 as 17.01)
    runs = [make_run("completions", 1, [200_000] * 16, ttft_us=[20_000] * 16, server_prompt_us=17_000),
            make_run("health", 1, [300] * 16)]  # fmt: skip
    text = rule_text(runs)
    assert "(client TTFT beyond the server's own prompt time, per request) takes ~3.00 ms of a warm TTFT of 20.02 ms (15 %" in text
    assert "2.97 ms of HTTP framework, tokenization and queue (what the server did not time) and 17.01 ms of the model (the server's prompt time)" in text
    report = render_markdown(runs)
    assert "- Per request, the server's own timings: 16 requests joined (100 %); prompt time p50 17.01 ms, client TTFT beyond it p50 3.00 ms" in report
    assert "the server's prompt time is 85 % of TTFT" in report


def test_the_report_words_are_true_too():
    for name, text in _scenarios().items():
        assert not any(phrase in text for phrase in UNTRUE), name


def test_pipes_in_notes_do_not_break_the_table():
    text = render_markdown([make_run("health", 1, [300] * 5, notes=["a | b"])])
    assert "a \\| b" in text
