"""Run files: a lossless round trip; `merge` equals one histogram of every value; `compare`
finds a real shift significant, an identical run not, and says when it is histogram-only."""

import dataclasses
import json
from collections import Counter

import numpy as np
import pytest

from netbench import compare
from netbench.cli import error_line
from netbench.errors import MergeRefused
from netbench.histograms import PERCENTILES, new_histogram
from netbench.merge import merge_results
from netbench.phases import PHASE_NAMES
from netbench.results import SCHEMA_VERSION, RunResult
from netbench.spec import RunSpec
from netbench.summary import Run, summarize
from tests.cli import invoke
from tests.runs import synthetic_run

OPEN = RunSpec(url="http://127.0.0.1:8000/", mode="get", rate=50.0, max_concurrency=8)
LOAD_COUNTERS = {"sent": 0, "cap_delayed": 0, "late_starts": 0, "send_span_us": 10_000_000, "schedule_span_us": 9_990_000, "open_loop_workers": 1}


def compare_runs(base: RunResult, new: RunResult, *labels: str) -> compare.Comparison:
    return compare.compare_runs(Run.of(base), Run.of(new), *labels)


def lognormal_us(n: int, seed: int, median_ms: float = 50.0) -> np.ndarray:
    return np.round(np.random.default_rng(seed).lognormal(np.log(median_ms * 1000), 0.5, n)).astype(np.int64)


def two_hosts(values_us: np.ndarray, seed: int = 1) -> tuple[RunResult, RunResult]:
    """One load split at random across two hosts, as `netbench run` on each would record it."""
    to_a = np.random.default_rng(seed).random(values_us.size) < 0.4
    lag = np.random.default_rng(seed + 1).integers(0, 3000, values_us.size)
    runs = []
    for host, mask, start, seed in (("host-a", to_a, 1000.0, 1), ("host-b", ~to_a, 1000.5, 2)):
        counters = {**LOAD_COUNTERS, "sent": int(mask.sum())}
        spec = OPEN.replace(seed=seed)
        runs.append(synthetic_run(values_us[mask], spec, lag[mask], counters=counters, host=host, started_at_s=start))
    return runs[0], runs[1]


def test_run_file_round_trip_is_lossless(tmp_path):
    run = synthetic_run(lognormal_us(500, 3), OPEN, np.full(500, 700), counters={**LOAD_COUNTERS, "sent": 500})
    run.notes = ["a note"]
    run.server_metrics = {"available": False, "reason": "no /metrics"}
    path = tmp_path / "run.json"
    run.save(path)
    data = json.loads(path.read_text())
    assert data["schema_version"] == SCHEMA_VERSION == 3
    loaded = RunResult.load(path)
    assert loaded.to_dict() == run.to_dict()
    assert np.array_equal(loaded.records, run.records) and loaded.records.dtype == run.records.dtype
    for name in PHASE_NAMES:
        assert loaded.histograms.stats(name) == run.histograms.stats(name)
    assert loaded.spec == run.spec and loaded.counters == run.counters and loaded.workers == run.workers
    loaded.save(tmp_path / "again.json")
    assert (tmp_path / "again.json").read_text() == path.read_text()


def test_run_file_keeps_no_secret(tmp_path):
    spec = RunSpec(url="http://127.0.0.1:8000/", mode="get", api_key="sk-secret", headers=(("Authorization", "Bearer sk-secret"),))
    synthetic_run(lognormal_us(10, 1), spec).save(tmp_path / "run.json")
    assert "sk-secret" not in (tmp_path / "run.json").read_text()


def test_merged_percentiles_equal_one_histogram_of_every_value():
    values = lognormal_us(5000, 7)
    a, b = two_hosts(values)
    merged = merge_results([a, b])
    alone = synthetic_run(values, OPEN, np.random.default_rng(2).integers(0, 3000, values.size))
    one = new_histogram()
    for value in values.tolist():
        one.record_value(value)
    histogram = merged.histograms.histograms["e2e_uncorrected"]
    for q in (*PERCENTILES, 10.0, 75.0, 99.9, 100.0):
        assert histogram.get_value_at_percentile(q) == one.get_value_at_percentile(q)
    assert histogram.total_count == values.size and histogram.get_max_value() == one.get_max_value()
    # every phase, corrected ones included, as if one host had measured it all
    merged_phases, alone_phases = summarize(merged).phases, summarize(alone).phases
    for name in ("e2e", "ttfb", "lag", "wait", "e2e_uncorrected"):
        assert merged_phases[name] is not None
        assert merged_phases[name].count == values.size
    assert merged_phases["e2e_uncorrected"] == alone_phases["e2e_uncorrected"]


def test_merge_sums_counters_concatenates_records_and_totals_the_load():
    a, b = two_hosts(lognormal_us(1000, 5))
    merged = merge_results([a, b], names=["a.json", "b.json"])
    assert merged.counters == Counter(a.counters) + Counter(b.counters)
    assert len(merged.records) == len(a.records) + len(b.records)
    assert sorted(w.index for w in merged.workers) == [0, 1]
    assert set(merged.records["worker"].tolist()) == {0, 1}
    assert merged.spec.rate == 100.0 and merged.spec.in_flight == 16
    assert merged.started_at_s == 1000.0 and merged.elapsed_s == pytest.approx(10.5)
    assert merged.notes[0] == "merged from 2 runs: a.json, b.json"
    assert not any("--seed" in note for note in merged.notes)
    same_seed = merge_results([a, dataclasses.replace(b, spec=b.spec.replace(seed=1))])
    assert any(note.startswith("runs share a --seed") for note in same_seed.notes)
    assert merged.context["merged_from"] == ["a.json", "b.json"]


def test_merge_refuses_other_modes_paths_and_repeats_unless_forced():
    a = synthetic_run(lognormal_us(50, 1), RunSpec(url="http://127.0.0.1:8000/x", mode="get"))
    other_path = synthetic_run(lognormal_us(50, 2), RunSpec(url="http://127.0.0.1:8000/y", mode="get"), host="host-b")
    with pytest.raises(MergeRefused, match=r"URL path '/x' in a.json but '/y' in b.json") as refused:
        merge_results([a, other_path], names=["a.json", "b.json"])
    assert "--force" not in str(refused.value) and "(pass --force to merge anyway)" in error_line(refused.value)
    closed_vs_open = synthetic_run(lognormal_us(50, 2), RunSpec(url="http://127.0.0.1:8000/x", mode="get", rate=5.0), host="h")
    with pytest.raises(MergeRefused, match="load 'closed loop' in a.json but 'open loop'"):
        merge_results([a, closed_vs_open], names=["a.json", "b.json"])
    with pytest.raises(MergeRefused, match="repeats a run already in a.json"):
        merge_results([a, a], names=["a.json", "b.json"])
    forced = merge_results([a, other_path], names=["a.json", "b.json"], force=True)
    assert any(note.startswith("merged with --force although URL path") for note in forced.notes)
    assert forced.requests == 100


def test_merge_recomputes_the_client_bound_verdict():
    late = {**LOAD_COUNTERS, "sent": 100, "late_starts": 5}
    a = synthetic_run(lognormal_us(100, 1), OPEN, counters=late)
    a.notes = ["a note"]
    b = synthetic_run(lognormal_us(100, 2), OPEN, counters={**LOAD_COUNTERS, "sent": 900}, host="host-b")
    assert summarize(a).client_bound and any(note.startswith("client-bound:") for note in summarize(a).notes)
    merged = summarize(merge_results([a, b]))
    # 5 late starts of 1000 is not above 1 %: the merged run is not client-bound, and says nothing of it
    assert not merged.client_bound
    assert not any("client-bound" in note for note in merged.notes) and "run 1: a note" in merged.notes


def test_compare_finds_a_shift_significant_and_an_identical_run_not():
    base = synthetic_run(lognormal_us(3000, 1))
    slower = synthetic_run(lognormal_us(3000, 2, median_ms=60.0))
    same = synthetic_run(lognormal_us(3000, 1))
    shifted = {p.phase: p for p in compare_runs(base, slower).phases}
    e2e = {q.statistic: q for q in shifted["e2e"].changes}
    assert e2e["p50"].significant is True and e2e["p50"].ci_low_us > 0 and e2e["p50"].change is compare.Change.SLOWER
    assert e2e["p50"].diff_us == pytest.approx(10_000, rel=0.15)
    assert e2e["p95"].significant is True
    assert e2e["p99"].significant is True  # 3000 records: enough for p99
    unchanged = {p.phase: p for p in compare_runs(base, same).phases}
    for change in unchanged["e2e"].changes:
        assert change.diff_us == 0 and change.significant is False and change.change is compare.Change.NONE
        assert change.ci_low_us <= 0 <= change.ci_high_us


def test_compare_is_histogram_only_without_records_and_untested_with_too_few():
    base = synthetic_run(lognormal_us(300, 1), keep_records=False)
    new = synthetic_run(lognormal_us(300, 2))
    comparison = compare_runs(base, new, "base.json", "new.json")
    assert comparison.method.startswith("histogram only (base.json kept no per-request records)")
    assert all(q.significant is None for p in comparison.phases for q in p.changes)
    few = {p.phase: p for p in compare_runs(synthetic_run(lognormal_us(300, 1)), new).phases}
    tested = {q.statistic: q for q in few["e2e"].changes}
    assert tested["p50"].significant is not None and tested["p95"].significant is not None
    assert tested["p99"].significant is None and tested["p99"].untested == "p99 needs 1000 records on each side"


def test_merge_and_compare_commands(tmp_path):
    a, b = two_hosts(lognormal_us(600, 4))
    a.save(tmp_path / "a.json")
    b.save(tmp_path / "b.json")
    done = invoke("merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "-o", str(tmp_path / "all.json"))
    assert done.code == 0, done.stderr
    merged = RunResult.load(tmp_path / "all.json")
    assert merged.histograms.stats("e2e") == merge_results([a, b]).histograms.stats("e2e")
    shown = invoke("compare", str(tmp_path / "a.json"), str(tmp_path / "all.json"))
    assert shown.code == 0, shown.stderr
    assert "bootstrap on per-request records" in shown.stdout and "e2e_uncorrected" in shown.stdout
    as_json = invoke("compare", str(tmp_path / "a.json"), str(tmp_path / "all.json"), "--json").json()
    e2e = next(p for p in as_json["phases"] if p["phase"] == "e2e")
    assert [c["statistic"] for c in e2e["changes"]] == ["p50", "p95", "p99"]
    assert e2e["base_count"] == len(a.records) and e2e["new_count"] == 600
