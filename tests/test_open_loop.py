"""Open loop without coordinated omission: latency from the intended send time beside the
uncorrected one, schedule lag, the in-flight cap, the client-bound verdict, and a run file
that renders again through `netbench report`."""

import json
import re

import numpy as np
import pytest
from rich.console import Console

from pathlib import Path

from netbench.load_check import client_bound_reasons, load_notes, offered_load
from netbench.pacing import LATE_START_US
from netbench.phases import derive
from netbench.report.csvout import csv_row
from netbench.report.table import print_report
from netbench.results import RunResult, WorkerInfo
from netbench.serial import plain
from netbench.spec import RunSpec
from netbench.summary import HEADLINE_KEYS, summarize
from tests.cli import netbench
from tests.runs import synthetic_records, synthetic_run
from tests.servers.sim import start_sim_server

OPEN = RunSpec(url="http://127.0.0.1:8000/", mode="get", rate=100.0)
ON_TIME = {"sent": 1000, "cap_delayed": 0, "late_starts": 0, "send_span_us": 2 * 10_000_000, "schedule_span_us": 2 * 8_000_000, "open_loop_workers": 2}


@pytest.fixture(scope="module")
def slow_sim():
    """60 ms a request at 4 tokens (a 15 ms step each), one at a time."""
    with start_sim_server("--step-ms", "15", "--max-num-seqs", "1", "--ignore-eos") as url:
        yield url


# --- unit: phases, the verdict, the table ----------------------------------------------------


def test_open_loop_keeps_the_uncorrected_values_beside_the_corrected_ones():
    records = synthetic_records(np.array([10_000, 20_000]), lag_us=np.array([0, 5_000]))
    opened = derive(records, open_loop=True).values_us
    assert opened["e2e_uncorrected"].tolist() == [10_000, 20_000]
    assert opened["e2e"].tolist() == [10_000, 25_000]
    assert opened["ttfb"].tolist() == [5_000, 15_000] and opened["ttfb_uncorrected"].tolist() == [5_000, 10_000]
    closed = derive(records, open_loop=False).values_us
    for name in ("lag", "ttfb_uncorrected", "ttft_uncorrected", "e2e_uncorrected"):
        assert (closed[name] == -1).all()


def test_max_concurrency_defaults_to_256_or_the_concurrency():
    assert OPEN.in_flight == 256
    assert OPEN.replace(concurrency=512).in_flight == 512
    assert OPEN.replace(max_concurrency=3).in_flight == 3
    assert OPEN.replace(rate=None, concurrency=4).in_flight == 4


def test_offered_load_is_requested_vs_sent():
    run = synthetic_run(np.full(10, 1000), OPEN, counters=ON_TIME)
    load = offered_load(run.spec, run.counters)
    assert load.requested_rps == 100.0 and load.sent_rps == pytest.approx(100.0)
    assert load.scheduled_rps == pytest.approx(125.0)  # a Poisson schedule's own rate is not the requested one
    assert load.max_in_flight == 256
    closed = synthetic_run(np.full(10, 1000))
    assert offered_load(closed.spec, closed.counters) is None


def test_headline_keys_describe_what_ran_in_an_open_loop():
    # an open-loop --duration run: 37 requests measured (the spec's n, 32, never ran), with at
    # most 4 in flight although --concurrency kept its default of 1
    spec = OPEN.replace(duration_s=2.0, max_concurrency=4)
    run = synthetic_run(np.full(37, 1000), spec, counters=ON_TIME)
    summary = summarize(run)
    assert (spec.n, spec.concurrency) == (32, 1)
    assert (summary.n, summary.concurrency) == (37, 4)
    headline = {key: plain(summary)[key] for key in HEADLINE_KEYS}
    assert headline == {"mode": "get", "concurrency": 4, "n": 37, "median_wall_s": 0.001, "p95_wall_s": 0.001}
    assert {key: csv_row(summary)[key] for key in HEADLINE_KEYS} == headline
    # the default cap: 256 in flight, or --concurrency when that is larger
    assert summarize(synthetic_run(np.full(5, 1000), OPEN, counters=ON_TIME)).concurrency == 256
    # closed loop: the concurrency as given, and n the requests measured (here an interrupted run)
    closed = synthetic_run(np.full(5, 1000), RunSpec(url="http://127.0.0.1:8000/", mode="get", concurrency=3, n=50))
    assert (summarize(closed).n, summarize(closed).concurrency) == (5, 3)


@pytest.mark.parametrize(
    ("counters", "cpu_s", "expected"),
    [
        (ON_TIME, 1.0, []),
        ({**ON_TIME, "late_starts": 10}, 1.0, []),  # exactly 1 %: p99 not above the bound
        ({**ON_TIME, "late_starts": 11}, 1.0, ["schedule lag p99 above 10 ms: 11 of 1000 requests that had a free slot started late"]),
        # 900 waited for the cap: 11 late among the 100 others is far above 1 %
        ({**ON_TIME, "cap_delayed": 900, "late_starts": 11}, 1.0, ["schedule lag p99 above 10 ms: 11 of 100"]),
        (ON_TIME, 9.5, ["worker 0 on host-a used 95 % of a CPU (above 90 %)"]),
    ],
)
def test_client_bound_verdict(counters, cpu_s, expected):
    run = synthetic_run(np.full(10, 1000), OPEN, counters=counters)
    run.workers = [WorkerInfo(0, "host-a", 1, 10, 0.0, 10.0, cpu_s)]
    reasons = client_bound_reasons(run.workers, offered_load(run.spec, run.counters))
    assert len(reasons) == len(expected)
    assert all(r.startswith(e) for r, e in zip(reasons, expected))


def test_cap_waits_are_a_note_not_a_client_bound_verdict():
    run = synthetic_run(np.full(10, 1000), OPEN.replace(max_concurrency=4), counters={**ON_TIME, "cap_delayed": 500})
    load = offered_load(run.spec, run.counters)
    assert client_bound_reasons(run.workers, load) == []
    (note,) = load_notes(load, [])
    assert summarize(run).notes == (note,)
    assert note.startswith("in-flight cap reached: 500 of 1000 requests waited for one of the 4 slots")


def render(run: RunResult) -> str:
    console = Console(record=True, width=200)
    print_report(summarize(run), console)
    return console.export_text()


def test_table_shows_uncorrected_rows_rate_and_client_bound_only_for_open_loop():
    late = {**ON_TIME, "late_starts": 50}
    opened = synthetic_run(np.full(10, 1000), OPEN, np.full(10, 300), counters=late)
    text = render(opened)
    rows = {line.split()[1]: line for line in text.splitlines() if line.startswith("│ ")}
    assert rows["lag"].split()[3] == "10" and rows["e2e_uncorrected"].split()[3] == "10"
    assert "n/a" in rows["ttft_uncorrected"]  # shown, with no value for a GET
    assert "CLIENT-BOUND" in text.split("┏")[0]  # in the title
    assert "rate: requested 100/s (poisson), scheduled 125.0/s, sent 100.0/s; at most 256 in flight" in text
    assert "note: client-bound: schedule lag p99 above 10 ms" in text
    closed = render(synthetic_run(np.full(10, 1000)))
    assert "uncorrected" not in closed and "│ lag" not in closed and "rate:" not in closed
    assert "CLIENT-BOUND" not in closed


# --- integration: the built-in server with a slow timing model --------------------------------


@pytest.mark.integration
def test_capped_open_loop_measures_from_the_intended_time(slow_sim, tmp_path):
    run_file, hgrm = tmp_path / "run.json", tmp_path / "e2e.hgrm"
    # 40/s offered, one request in flight, 60 ms each: at most ~16/s get through, the rest queue
    done = netbench(
        "run", "--url", slow_sim, "--mode", "completions", "--max-tokens", "4", "--rate", "40", "--n", "30",
        "--max-concurrency", "1", "--arrival", "constant", "--json", "-o", str(run_file), "--hgrm", "e2e", str(hgrm),
    )  # fmt: skip
    assert done.code == 0, done.stderr
    summary = done.json()
    phases = summary["phases"]
    assert phases["lag"]["count"] == 30
    assert phases["lag"]["p50_us"] > 100_000  # the queue behind the cap, not noise
    for name in ("ttfb", "ttft", "e2e"):
        assert phases[name]["p50_us"] > phases[f"{name}_uncorrected"]["p50_us"] + 100_000
    load = summary["open_loop"]
    assert load["requested_rps"] == 40.0 and load["sent"] == 30 and load["max_in_flight"] == 1
    assert load["cap_delayed"] > 10
    assert load["scheduled_rps"] > 35 and load["sent_rps"] < 30  # the schedule kept 40/s, the cap held sending below
    assert any(note.startswith("in-flight cap reached:") for note in summary["notes"])

    run = RunResult.load(run_file)
    # per request, exactly: corrected = uncorrected + lag
    values = derive(run.records, open_loop=True).values_us
    for name in ("ttfb", "ttft", "e2e"):
        assert np.array_equal(values[name], values[f"{name}_uncorrected"] + values["lag"])
    assert (run.records["start_us"] >= run.records["intended_start_us"]).all()

    lines = hgrm.read_text().splitlines()
    assert lines[0].split() == ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"]
    assert lines[-2].startswith("#[Max") and "TotalCount     =       30.000" in lines[-2]
    mean_ms, stddev_ms = map(float, re.match(r"#\[Mean += +([0-9.]+), StdDeviation += +([0-9.]+)\]", lines[-3]).groups())
    assert mean_ms == pytest.approx(phases["e2e"]["mean_us"] / 1000, rel=1e-3)
    assert 0 < stddev_ms < mean_ms  # in ms, like every other value in the file


@pytest.mark.integration
def test_run_file_renders_again_through_report(slow_sim, tmp_path):
    run_file = tmp_path / "run.json"
    done = netbench(
        "run", "--url", slow_sim, "--mode", "completions", "--max-tokens", "2", "--rate", "20", "--n", "20",
        "--json", "-o", str(run_file),
    )  # fmt: skip
    assert done.code == 0, done.stderr
    at_run_time = done.json()
    # the default cap (256 slots) is never all busy at 20/s: nothing waits for it
    assert at_run_time["open_loop"]["cap_delayed"] == 0 and at_run_time["open_loop"]["max_in_flight"] == 256
    assert at_run_time["phases"]["lag"]["count"] == 20
    assert at_run_time["client_bound"] == bool(at_run_time["client_bound_reasons"])
    again = netbench("report", str(run_file), "--format", "json")
    assert again.code == 0, again.stderr
    assert json.loads(again.stdout)["runs"][0] == at_run_time
    table = netbench("report", str(run_file), "--format", "table")
    assert table.code == 0 and "e2e_uncorrected" in table.stdout and "rate: requested 20/s" in table.stdout


@pytest.mark.integration
def test_a_duration_run_reports_the_requests_it_measured_and_its_cap(slow_sim):
    done = netbench("run", "--url", slow_sim, "--mode", "health", "--rate", "20", "--duration", "1s", "--json")
    assert done.code == 0, done.stderr
    summary = done.json()
    assert summary["n"] == summary["requests"] == summary["open_loop"]["sent"] > 10  # ~20, not --n's 32
    assert summary["concurrency"] == summary["open_loop"]["max_in_flight"] == 256  # not --concurrency's 1


def test_the_late_start_bound_is_the_documented_one():
    docs = (Path(__file__).parents[1] / "docs" / "usage-open-loop.md").read_text()
    bound = f"{LATE_START_US / 1000:g} ms"
    assert f"started more than {bound} late" in docs and f"schedule lag p99 was above {bound}" in docs
    run = synthetic_run(np.full(10, 1000), OPEN, counters={**ON_TIME, "late_starts": 11})
    (reason,) = client_bound_reasons(run.workers, offered_load(run.spec, run.counters))
    assert reason.startswith(f"schedule lag p99 above {bound}:")
    assert plain(summarize(run))["open_loop"]["late_start_bound_us"] == LATE_START_US
