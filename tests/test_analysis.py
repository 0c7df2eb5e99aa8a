"""analysis: the split, TTFT vs HTTP, the bootstrap interval, concurrency effects, the rule of thumb."""

from __future__ import annotations

import numpy as np
import pytest

from netbench import analysis
from netbench.analysis import (
    BOOTSTRAP_RESAMPLES,
    Verdict,
    _resampled_quantiles,
    bootstrap_interval,
    load_ttft_ref,
    median_diff,
    rule_of_thumb,
    verdict_for,
)
from netbench.histograms import rank
from netbench.results import RunResult
from netbench.serial import plain
from netbench.spec import SpecError
from netbench.summary import Run, summarize
from tests.synthetic_runs import make_run, metrics_difference, sweep


def split(result: RunResult) -> dict:
    """The run's split as its JSON holds it."""
    return plain(summarize(result).split)


def ttft_vs_http(results, ttft_ref=None):
    return analysis.ttft_vs_http([summarize(r) for r in results], ttft_ref)


def concurrency_effects(results):
    return list(analysis.concurrency_effects([Run.of(r) for r in results]).effects)

# --- the split ------------------------------------------------------------------------------


def test_split_of_synthetic_records_with_known_values():
    # every request reuses its connection: rtt from TCP_INFO = 100 µs, send 10, wait 1000, e2e 2000
    run = make_run("health", 1, [2000] * 20, wait_us=1000, send_us=10, rtt_us=100, new_connections=0)
    out = split(run)
    assert out["rtt_p50_us"] == 100
    assert out["server_p50_us"] == 900  # wait - rtt
    assert out["network_p50_us"] == 110  # send + rtt (no dns/connect/tls on reused connections)
    assert out["e2e_p50_us"] == 2000
    assert out["network_share"] == pytest.approx(110 / 2000)
    assert out["server_share"] == pytest.approx(900 / 2000)
    ttfb = 10 + 10 + 1000  # pretransfer + send + wait
    assert out["after_headers_p50_us"] == 2000 - ttfb
    assert "stream" not in out
    assert out["server_side"] is None  # no scrape in this run


def test_split_of_a_stream_puts_ttft_ttfb_and_after_headers_side_by_side():
    # values under 2048 µs are exact in the HDR histograms (3 significant digits)
    run = make_run("completions", 1, [2040] * 20, ttft_us=[2000] * 20, wait_us=1000, send_us=10, rtt_us=100,
                   new_connections=0)  # fmt: skip
    stream = split(run)["stream"]
    assert stream["ttft_p50_us"] == 2000
    assert stream["ttfb_p50_us"] == 1020
    assert stream["ttft_after_headers_p50_us"] == 2000 - 1020
    assert stream["network_share_of_ttft"] == pytest.approx(110 / 2000)


def test_split_reports_server_side_beside_client_and_survives_the_run_file(tmp_path):
    ttft = np.full(10, 20_000)
    metrics = metrics_difference(np.full(10, 0.015), np.full(10, 0.2), np.zeros(10))
    run = make_run("completions", 1, [250_000] * 10, ttft_us=ttft, server_metrics=metrics)
    run.save(tmp_path / "run.json")
    side = split(RunResult.load(tmp_path / "run.json"))["server_side"]
    assert side["available"] is True
    assert "interpolated" in side["method"]
    ttft_entry = side["ttft"]
    assert ttft_entry["count"] == 10
    assert ttft_entry["server_mean_us"] == pytest.approx(15_000)
    assert ttft_entry["gap_mean_us"] == pytest.approx(5_000, abs=20)  # HDR: 3 significant digits
    assert ttft_entry["server_single_bucket"] is True  # 15 ms: all in the 10-20 ms bucket
    assert ttft_entry["server_p50_bucket_us"] == [10_000, 20_000]
    assert "client_p50_us" not in side["queue"]  # the client has no queue-time phase to compare


def test_summary_json_carries_the_split():
    run = make_run("health", 1, [2000] * 5, wait_us=1000)
    summary = plain(summarize(run))
    assert summary["split"]["e2e_p50_us"] == 2000
    assert list(summary)[:5] == ["mode", "concurrency", "n", "median_wall_s", "p95_wall_s"]


def test_split_says_when_the_server_has_no_metrics():
    unavailable = {"available": False, "url": "u", "reason": "HTTP 404 from /metrics"}
    run = make_run("health", 1, [2000] * 5, server_metrics=unavailable)
    assert split(run)["server_side"] == {"available": False, "reason": "HTTP 404 from /metrics"}


# --- the bootstrap --------------------------------------------------------------------------


def test_resampled_quantiles_match_brute_force_resampling():
    x = np.sort(np.random.default_rng(1).lognormal(0, 1, 15))
    for q in (0.5, 0.95, 0.3):
        fast = _resampled_quantiles(x, q, 100_000, np.random.default_rng(2))
        resamples = np.sort(x[np.random.default_rng(3).integers(0, x.size, (100_000, x.size))], axis=1)
        brute = resamples[:, rank(x.size, q * 100) - 1]  # hdrh's quantile of each resample
        levels = (0.05, 0.25, 0.5, 0.75, 0.95)
        np.testing.assert_allclose(np.quantile(fast, levels), np.quantile(brute, levels), rtol=0.02)
        assert fast.mean() == pytest.approx(brute.mean(), rel=0.01)


def test_bootstrap_interval_covers_the_true_difference_at_about_its_nominal_rate():
    rng = np.random.default_rng(42)
    trials, covered, n = 400, 0, 40
    true_diff = 3.0  # b is a shifted by 3: medians differ by exactly 3
    for trial in range(trials):
        a = rng.lognormal(1.0, 0.5, n)
        b = rng.lognormal(1.0, 0.5, n) + true_diff
        low, high = bootstrap_interval(a, b, resamples=1000, seed=trial)
        covered += low <= true_diff <= high
    assert 0.90 <= covered / trials <= 0.99


def _significant(interval: tuple[float, float]) -> bool:
    low, high = interval
    return low > 0 or high < 0


def test_identical_distributions_are_not_significant():
    rng = np.random.default_rng(5)
    same = rng.normal(10, 2, 32)
    assert not _significant(bootstrap_interval(same, same.copy()))
    trials = 300
    false_positives = sum(
        _significant(bootstrap_interval(rng.normal(10, 2, 32), rng.normal(10, 2, 32), resamples=1000, seed=t))
        for t in range(trials)
    )
    assert false_positives / trials <= 0.10


def test_a_real_shift_is_significant_and_the_interval_is_seeded():
    rng = np.random.default_rng(9)
    a, b = rng.normal(10, 1, 50), rng.normal(14, 1, 50)
    # the point estimates are the caller's (the histograms' medians); the interval is resampled
    first = median_diff(10.0, 14.5, a, b, seed=3)
    assert first.significant and first.low > 0
    assert (first.diff, first.median_a, first.median_b, first.n_a, first.n_b) == (4.5, 10.0, 14.5, 50, 50)
    assert median_diff(10.0, 14.5, a, b, seed=3) == first
    assert (first.low, first.high) == bootstrap_interval(a, b, seed=3)
    assert bootstrap_interval(b, a, seed=3)[1] < 0
    with pytest.raises(ValueError):
        bootstrap_interval([], b)


# --- concurrency effects --------------------------------------------------------------------


def test_concurrency_effects_find_what_the_synthetic_sweep_built_in():
    effects = {(e.mode, e.phase, e.concurrency): e for e in concurrency_effects(sweep())}
    assert set(effects) == {("health", "e2e", 4), ("health", "e2e", 8), ("completions", "e2e", 4),
                            ("completions", "ttft", 4), ("completions", "e2e", 8), ("completions", "ttft", 8)}  # fmt: skip
    assert not effects["health", "e2e", 4].diff.significant  # health does not slow down
    ttft8 = effects["completions", "ttft", 8].diff
    assert ttft8.significant and ttft8.low <= 35_000 <= ttft8.high  # queue built in: 7 x 0.25 x 20 ms


def test_concurrency_effects_say_why_they_could_not_be_tested():
    without_records = concurrency_effects(sweep(keep_records=False, modes=("health",)))
    assert all(e.diff is None and "no per-request records" in e.reason for e in without_records)
    no_base = concurrency_effects(sweep(modes=("health",), levels=(4, 8)))
    assert all(e.diff is None and "no health run at concurrency 1" in e.reason for e in no_base)
    few = [make_run("health", 1, [100, 200, 300]), make_run("health", 4, [100, 200, 300])]
    assert "fewer than" in concurrency_effects(few)[0].reason


# --- TTFT vs HTTP and the rule of thumb -----------------------------------------------------


def test_verdict_thresholds():
    assert verdict_for(0.01) is Verdict.NEGLIGIBLE
    assert verdict_for(0.2) is Verdict.NON_TRIVIAL
    assert verdict_for(0.8) is Verdict.DOMINANT


def test_ttft_vs_http_measures_overhead_from_the_baseline():
    comparison = ttft_vs_http(sweep())
    assert comparison.baseline.spec.mode == "health" and comparison.baseline.spec.concurrency == 1
    assert comparison.overhead_us == comparison.baseline_p50_us
    assert comparison.overhead_share_of_ttft == pytest.approx(comparison.overhead_us / comparison.ttft_us)
    assert comparison.verdict is Verdict.NEGLIGIBLE
    assert comparison.carrier == "server_wait"
    gap = comparison.client_minus_server_ttft_mean_us
    assert gap == pytest.approx(0.05 * comparison.measured.phase("ttft").mean_us, rel=0.01)
    assert comparison.missing == ()


def test_rule_of_thumb_changes_its_verdict_when_overhead_dominates():
    fast_model = sweep(baseline_us=300, ttft_us=1_000, http_delay_us=30_000, levels=(1,))
    rule = rule_of_thumb(ttft_vs_http(fast_model), [])
    assert rule.verdict is Verdict.DOMINANT
    assert rule.share > 0.5
    assert rule.carrier == "server_wait"
    assert rule_of_thumb(ttft_vs_http(sweep(levels=(1,))), []).verdict is Verdict.NEGLIGIBLE


def test_missing_baseline_falls_back_to_the_server_gap_and_says_so():
    runs = sweep(modes=("completions",), levels=(1,))
    comparison = ttft_vs_http(runs)
    assert comparison.baseline is None
    assert any("no baseline run" in reason for reason in comparison.missing)
    assert comparison.overhead_source == "server_gap"
    assert comparison.overhead_us == pytest.approx(1000, rel=0.05)  # 5 % of a ~20 ms TTFT, as built
    without_metrics = ttft_vs_http(sweep(modes=("completions",), levels=(1,), server_side=False))
    assert without_metrics.overhead_us is None and without_metrics.verdict is None


def test_missing_ttft_is_said_and_a_reference_fills_it():
    health_only = sweep(modes=("health",), levels=(1,))
    comparison = ttft_vs_http(health_only)
    assert comparison.ttft_us is None and comparison.verdict is None
    assert any("no warm TTFT" in reason for reason in comparison.missing)
    rule = rule_of_thumb(comparison, [])
    assert rule.verdict is None and rule.missing
    with_ref = ttft_vs_http(health_only, load_ttft_ref("27ms"))
    assert with_ref.ttft_us == 27_000
    assert with_ref.overhead_share_of_ttft == pytest.approx(with_ref.overhead_us / 27_000)


def test_the_rule_prefers_the_highest_concurrency_ttft_effect():
    runs = sweep()
    rule = rule_of_thumb(ttft_vs_http(runs), concurrency_effects(runs))
    assert (rule.concurrency.mode, rule.concurrency.phase, rule.concurrency.concurrency) == ("completions", "ttft", 8)


# --- --ttft-ref -----------------------------------------------------------------------------


def test_ttft_ref_durations():
    assert load_ttft_ref("27ms").ttft_us == 27_000
    assert load_ttft_ref("0.5s").ttft_us == 500_000
    for bad in ("27", "fast", "-3ms", "0ms"):
        with pytest.raises(SpecError):
            load_ttft_ref(bad)


def test_ttft_ref_from_a_csv_of_earlier_measurements(tmp_path):
    plain = tmp_path / "day007.csv"
    plain.write_text("run,ttft_ms,cold\n1,25,no\n2,27,no\n3,40,no\n")
    ref = load_ttft_ref(str(plain))
    assert ref.ttft_us == 27_000 and "ttft_ms" in ref.source and "3 values" in ref.source
    seconds = tmp_path / "s.csv"
    seconds.write_text("ttft_p95_ms,ttft_p50_s\n99,0.030\n99,0.020\n")
    assert load_ttft_ref(str(seconds)).ttft_us == pytest.approx(25_000)  # p50 column, not p95
    micro = tmp_path / "us.csv"
    micro.write_text("ttft_us\n1000\n\n3000\n")
    assert load_ttft_ref(str(micro)).ttft_us == 2000
    no_unit = tmp_path / "bare.csv"
    no_unit.write_text("TTFT\n12\n")
    assert load_ttft_ref(str(no_unit)).ttft_us == 12_000 and "assumed" in load_ttft_ref(str(no_unit)).source


def test_ttft_ref_csv_errors_are_one_line(tmp_path):
    cases = {"nocol.csv": "a,b\n1,2\n", "text.csv": "ttft_ms\nfast\n", "empty.csv": "ttft_ms\n\n"}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(SpecError):
            load_ttft_ref(str(tmp_path / name))
    with pytest.raises(SpecError):
        load_ttft_ref(str(tmp_path / "missing.csv"))


def test_default_resamples_are_enough_for_a_stable_interval():
    rng = np.random.default_rng(0)
    a, b = rng.normal(10, 1, 200), rng.normal(10.5, 1, 200)
    lows = [bootstrap_interval(a, b, seed=s)[0] for s in range(5)]
    assert max(lows) - min(lows) < 0.1  # seed-to-seed wobble of the bound is small at BOOTSTRAP_RESAMPLES
    assert BOOTSTRAP_RESAMPLES >= 1000


def test_open_loop_server_gap_uses_the_uncorrected_client_phases():
    # The server never sees the schedule's wait: the gap must come from the actual send.
    from netbench.spec import RunSpec
    from netbench.split import _client_phase
    from tests.runs import synthetic_run

    closed = synthetic_run(np.array([1000, 2000])).spec
    opened = synthetic_run(np.array([1000, 2000]), spec=RunSpec(url="http://h", mode="chat", rate=10.0)).spec
    assert [_client_phase(k, closed) for k in ("ttft", "e2e", "itl")] == ["ttft", "e2e", "itl"]
    assert [_client_phase(k, opened) for k in ("ttft", "e2e", "itl")] == ["ttft_uncorrected", "e2e_uncorrected", "itl"]
