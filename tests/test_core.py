"""The commands' logic in process: `core.measure` through the real CLI with the runner replaced
by synthetic runs (no server, no worker): what goes to stdout and stderr, what is written, and
the exit status."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from netbench import core
from netbench.core import ExitStatus
from netbench.outcomes import Outcome
from netbench.results import RunResult
from netbench.spec import RunSpec
from tests.cli import invoke
from tests.runs import synthetic_run


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[RunSpec]:
    """Replace the runner: each spec gets a synthetic run of its own (1-3 ms), recorded here."""
    seen: list[RunSpec] = []

    def fake_run(spec: RunSpec, on_progress=None, clock=None) -> RunResult:
        seen.append(spec)
        result = synthetic_run(np.array([1000, 2000, 3000]), spec)
        result.context.update(url=spec.url, libcurl="PycURL/7 libcurl/8.0 OpenSSL/3")
        return result

    monkeypatch.setattr(core, "run", fake_run)
    return seen


URL = ("--url", "http://127.0.0.1:8000/x", "--mode", "get")


def test_json_is_one_object_on_stdout_and_the_gates_go_to_stderr(runs):
    done = invoke("run", *URL, "--json", "--slo", "e2e.p50<1us", "--slo", "error_rate<1%")
    assert done.code == ExitStatus.SLO_FAILED
    summary = json.loads(done.stdout)
    assert (summary["mode"], summary["n"], summary["phases"]["e2e"]["p50_us"]) == ("get", 3, 2000)
    assert done.stderr.splitlines() == ["SLO e2e.p50<1us: FAIL (measured 2.000 ms)", "SLO error_rate<1%: PASS (measured 0.00 %)"]


def test_the_table_then_the_gates_on_stdout(runs):
    done = invoke("run", *URL, "--slo", "e2e.max<1s")
    assert done.code == ExitStatus.OK and done.stderr == ""
    assert done.stdout.index("requests: 3 ok") < done.stdout.index("SLO e2e.max<1s: PASS")


def test_a_sweep_writes_a_csv_row_and_a_run_file_per_run(runs, tmp_path):
    done = invoke("sweep", *URL[:2], "--mode", "health,get", "--concurrency", "1,2", "--csv", str(tmp_path / "r.csv"),
                  "-o", str(tmp_path / "runs") + "/", "--n", "7")  # fmt: skip
    assert done.code == ExitStatus.OK, done.stderr
    assert [(s.mode, s.concurrency, s.n) for s in runs] == [("health", 1, 7), ("health", 2, 7), ("get", 1, 7), ("get", 2, 7)]
    assert "sweep: p50 unless marked" in done.stdout
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert [(r["mode"], r["concurrency"], r["n"]) for r in rows] == [("health", "1", "3"), ("health", "2", "3"), ("get", "1", "3"), ("get", "2", "3")]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["get-c1.json", "get-c2.json", "health-c1.json", "health-c2.json"]


def test_failed_requests_win_over_a_failed_gate_and_max_error_rate_decides(runs, monkeypatch):
    fake = core.run

    def failing(spec, on_progress=None, clock=None):
        result = fake(spec)
        result.counters.update({"requests": 1, Outcome.HTTP_5XX.key: 1})  # 1 of 4 failed
        return result

    monkeypatch.setattr(core, "run", failing)
    assert invoke("run", *URL, "--slo", "e2e.p50<1us").code == ExitStatus.FAILED_REQUESTS
    assert invoke("run", *URL, "--slo", "e2e.p50<1us", "--max-error-rate", "0.25").code == ExitStatus.SLO_FAILED


@pytest.mark.parametrize(("signal", "status"), [("SIGINT", ExitStatus.INTERRUPTED), ("SIGTERM", ExitStatus.TERMINATED)])
def test_an_interrupted_run_ends_the_sweep_and_wins(runs, monkeypatch, signal, status):
    fake = core.run

    def interrupted(spec, on_progress=None, clock=None):
        result = fake(spec)
        result.interrupted, result.context["stop_signal"] = True, signal
        return result

    monkeypatch.setattr(core, "run", interrupted)
    done = invoke("sweep", *URL[:2], "--mode", "health", "--concurrency", "1,4", "--slo", "e2e.p50<1us", "--json")
    assert done.code == status
    assert len(runs) == 1 and json.loads(done.stdout)["interrupted"] is True  # c=4 never ran


def test_bad_gates_and_phases_fail_before_any_run(runs):
    assert invoke("run", *URL, "--slo", "e2e.p50<3").code == ExitStatus.BAD_INPUT
    assert invoke("run", *URL, "--hgrm", "nope", "x.hgrm").code == ExitStatus.BAD_INPUT
    assert runs == []


def test_a_csv_with_other_columns_is_refused_before_the_load_naming_the_flag(runs, tmp_path):
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    done = invoke("run", *URL, "--csv", str(tmp_path / "other.csv"))
    assert done.code == ExitStatus.BAD_INPUT and runs == [] and done.stdout == ""
    assert done.stderr == f"netbench: error: --csv '{tmp_path / 'other.csv'}': the file has other columns than this netbench writes; choose another file\n"
