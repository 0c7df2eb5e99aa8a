"""What a run delivered (throughput.py), goodput counted per request in the worker (slo.py,
worker.Recorder), the closed loop for a duration (pacing.py), the answer per prompt length
(prompt_lengths.py and its words), and run files of schema 2 read into today's records."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from netbench.analysis import Verdict, analyse
from netbench.outcomes import Outcome
from netbench.pacing import ClosedLoop
from netbench.phases import RECORD_DTYPE, Record, empty_records
from netbench.prompt_lengths import prompt_lengths
from netbench.report.lengths_section import lengths_rule_text, lengths_section
from netbench.results import RunResult, _encode_array
from netbench.slo import meets_gates, request_gates
from netbench.summary import Run
from netbench.throughput import throughput, tokens
from netbench.worker import Recorder
from tests.synthetic_runs import make_run


def test_request_gates_are_the_per_request_phases():
    gates = request_gates(["ttft.p95<200ms", "itl.p99<50ms", "error_rate<1%", "e2e.p50<=1s", "rps>10"])
    assert [g.text for g in gates] == ["ttft.p95<200ms", "e2e.p50<=1s"]


def test_a_request_meets_every_gate_on_its_own_values_or_is_not_good():
    gates = request_gates(["ttft.p95<200ms", "e2e.p50<=1s"])
    values = {"ttft": np.array([100_000, 250_000, 150_000, -1]), "e2e": np.array([1_000_000, 500_000, 1_000_001, 9])}
    assert meets_gates(gates, values, 4).tolist() == [True, False, False, False]


def _record(ttft_us: int, e2e_us: int, ok: bool = True) -> Record:
    base = empty_records(1)[0]
    fields = dict(zip(RECORD_DTYPE.names, base.tolist()))
    fields.update(
        pretransfer_mark_us=10, posttransfer_mark_us=12, starttransfer_mark_us=500, total_mark_us=e2e_us,
        first_token_mark_us=ttft_us, tokens=8, event_tokens=8, new_connection=False, http_status=200 if ok else 500,
        error_class=int(Outcome.OK if ok else Outcome.HTTP_5XX), usage_prompt_tokens=100, requested_prompt_tokens=100,
        requested_output_tokens=10,
    )  # fmt: skip
    return Record(**fields)


def test_goodput_is_counted_over_every_request_not_the_record_sample():
    recorder = Recorder(0, False, max_records=3, seed=0, gates=request_gates(["ttft.p95<200ms"]))
    measured = SimpleNamespace(measured=True)
    ttfts = [100_000] * 70 + [300_000] * 25  # 70 good, 25 too slow, 5 failed
    for ttft in ttfts:
        recorder.on_done(measured, _record(ttft, 400_000), [], Outcome.OK)  # type: ignore[arg-type]
    for _ in range(5):
        recorder.on_done(measured, _record(100_000, 400_000, ok=False), [], Outcome.HTTP_5XX)  # type: ignore[arg-type]
    recorder.flush()
    records, _ = recorder.records()
    assert len(records) == 3 and recorder.counters["good"] == 70 and recorder.counters["requests"] == 100
    # the token books of the 95 successful requests: as asked for, and all 8 tokens short of 10
    c = recorder.counters
    assert (c["prompt_tokens"], c["prompts_counted"], c["prompt_mismatch"]) == (9500, 95, 0)
    assert (c["requested_output_tokens"], c["outputs_capped"], c["short_outputs"]) == (950, 95, 95)


def test_without_gates_there_is_no_goodput():
    recorder = Recorder(0, False, max_records=3, seed=0)
    recorder.on_done(SimpleNamespace(measured=True), _record(1, 2), [], Outcome.OK)  # type: ignore[arg-type]
    recorder.flush()
    assert "good" not in recorder.counters


def test_throughput_from_the_counters():
    counters = {"tokens": 2000, "prompt_tokens": 12_800, "prompts_counted": 100, "good": 80}
    t = throughput(counters, ok=100, requests=125, elapsed_s=4.0, streaming=True, tpot=None)
    assert (t.requests_per_s, t.output_tokens_per_s, t.prompt_tokens_per_s, t.total_tokens_per_s) == (25.0, 500.0, 3200.0, 3700.0)
    assert (t.good, t.goodput_share, t.goodput_rps) == (80, 0.64, 20.0)
    built_only = throughput({"tokens": 10, "requested_prompt_tokens": 400, "prompts_sized": 4}, 4, 4, 2.0, True, None)
    assert built_only.prompt_tokens_per_s == 200.0  # the server sent no usage: the built lengths
    assert throughput({}, 4, 4, 2.0, False, None).output_tokens_per_s is None
    run = Run.of(make_run("completions", 1, [110_000] * 20, ttft_us=[10_000] * 20, tokens=11))
    per_request = run.summary.throughput.request_output_tokens_per_s_p50
    assert per_request == pytest.approx(1e6 / run.summary.phase("tpot").p50_us)  # 1 / TPOT: 100 tokens/s here
    assert 99 < per_request < 101


def test_token_counts_mean_what_they_say():
    k = tokens({"prompt_tokens": 300, "prompts_counted": 3, "requested_prompt_tokens": 330, "prompts_sized": 3,
                "prompt_mismatch": 1, "tokens": 30, "requested_output_tokens": 36, "outputs_capped": 3,
                "short_outputs": 2}, ok=3, streaming=True)  # fmt: skip
    assert (k.prompt_tokens_mean, k.requested_prompt_tokens_mean, k.output_tokens_mean, k.requested_output_tokens_mean) == (100, 110, 10, 12)
    assert (k.prompt_mismatch, k.short_outputs) == (1, 2)
    assert tokens({}, 0, streaming=False) is None


def test_a_closed_loop_for_a_duration_starts_until_its_end():
    loop = ClosedLoop(None, until_us=1000)
    assert [loop.take(t) for t in (0, 0, 999)] == [0, 0, 999]
    assert loop.wait_us(999) == 0 and loop.take(1000) is None and loop.wait_us(1000) is None
    counted = ClosedLoop(2)
    assert [counted.take(5), counted.take(6), counted.take(7)] == [5, 6, None]


# --- the answer per prompt length ------------------------------------------------------------------------


def _length_run(input_tokens: str, ttft_us: int, send_us: float) -> Run:
    result = make_run("completions", 1, [ttft_us + 150_000] * 20, ttft_us=[ttft_us] * 20, send_us=send_us)
    result.spec = result.spec.replace(input_tokens=input_tokens)
    result.counters.update(prompt_tokens=20 * int(input_tokens), prompts_counted=20)
    result.records["request_bytes"] = 300 + 4 * int(input_tokens)
    return Run.of(result)


def test_the_overhead_share_per_prompt_length_and_where_it_crosses_the_verdicts():
    baseline = Run.of(make_run("health", 1, [900] * 20))
    runs = [baseline, _length_run("16", 4_000, 5), _length_run("256", 9_000, 20), _length_run("2048", 60_000, 100)]
    analysis = analyse(runs)
    found = prompt_lengths(runs, analysis.ttft_vs_http)
    assert found is not None and [r.input_tokens for r in found.rows] == ["16", "256", "2048"]
    shares = [r.share for r in found.rows]
    baseline_us = analysis.ttft_vs_http.baseline_p50_us
    assert shares[0] == pytest.approx((baseline_us + found.rows[0].send_p50_us) / found.rows[0].ttft_p50_us)
    assert [r.verdict for r in found.rows] == [Verdict.NON_TRIVIAL, Verdict.NON_TRIVIAL, Verdict.NEGLIGIBLE]
    assert [r.request_bytes for r in found.rows] == [364, 1324, 8492]
    [crossing] = found.crossings
    assert crossing.share == 0.10 and 256 < crossing.prompt_tokens < 2048
    assert (crossing.below, crossing.above) == (Verdict.NON_TRIVIAL, Verdict.NEGLIGIBLE)
    text = lengths_rule_text(found)
    assert text is not None and text.startswith(f"By prompt length, HTTP overhead next to TTFT: below ~{crossing.prompt_tokens:.0f} prompt tokens it is non-trivial (")
    assert f"; above ~{crossing.prompt_tokens:.0f} it is negligible (" in text and "at 2048 tokens)" in text
    table = lengths_section(found)
    assert table[0] == "### By prompt length" and sum(line.startswith("| 2048 |") for line in table) == 1


def test_one_prompt_length_or_none_gives_no_per_length_answer():
    runs = [Run.of(make_run("health", 1, [900] * 20)), _length_run("16", 4_000, 5)]
    assert prompt_lengths(runs, analyse(runs).ttft_vs_http) is None
    assert lengths_section(None) == [] and lengths_rule_text(None) is None


# --- run files --------------------------------------------------------------------------------------------


def test_a_schema_2_run_file_reads_into_todays_records(tmp_path):
    run = make_run("completions", 1, [100_000] * 3, ttft_us=[10_000] * 3)
    data = run.to_dict()
    old_dtype = np.dtype([d for d in RECORD_DTYPE.descr if d[0] not in ("requested_prompt_tokens", "requested_output_tokens")])
    old = np.zeros(3, dtype=old_dtype)
    for name in old_dtype.names:
        old[name] = run.records[name]
    data["schema_version"] = 2
    data["records"] = _encode_array(old)
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    loaded = RunResult.load(path)
    assert loaded.records.dtype == RECORD_DTYPE
    assert (loaded.records["requested_prompt_tokens"] == -1).all() and (loaded.records["tokens"] == 16).all()
