"""Every exit code (README, "Exit codes") through the installed console script, against real
loopback servers: 0 ok, 1 failed requests, 2 bad input, 3 an SLO failed. (130 is tested
with the signal handling.)"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.runs import synthetic_run

pytestmark = pytest.mark.integration  # the console script in a subprocess, real servers

NETBENCH = Path(sys.executable).parent / "netbench"


def netbench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(NETBENCH), *args], capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module", autouse=True)
def console_script():
    assert NETBENCH.exists(), f"the console script is not installed at {NETBENCH}"


def test_0_when_the_run_is_clean_and_every_gate_passes(sim_url):
    done = netbench("run", "--url", sim_url, "--n", "4", "--no-progress", "--slo", "error_rate<1%", "--slo", "e2e.p99<30s")
    assert done.returncode == 0, done.stderr
    assert "SLO error_rate<1%: PASS" in done.stdout and "SLO e2e.p99<30s: PASS" in done.stdout


def test_1_when_requests_fail(refused_url):
    done = netbench("run", "--url", refused_url, "--n", "3", "--no-progress")
    assert done.returncode == 1, done.stderr
    assert "requests: 0 ok, 3 failed (refused 3)" in done.stdout


def test_1_wins_over_3_when_requests_failed_and_a_gate_failed(refused_url):
    done = netbench("run", "--url", refused_url, "--n", "3", "--no-progress", "--slo", "error_rate<1%")
    assert done.returncode == 1
    assert "SLO error_rate<1%: FAIL (measured 100.00 %)" in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("run", "--url", "http://127.0.0.1:1", "--concurrency", "0"), "--concurrency must be an integer >= 1"),
        (("run", "--url", "http://127.0.0.1:1", "--rate", "10", "--slo", "ttft.p95<200"), "give the bound a unit"),
        (("compare", "no-such-base.json", "no-such-new.json"), "cannot read run file no-such-base.json"),
        (("merge", "only-one.json", "-o", "out.json"), "cannot read run file only-one.json"),
    ],
)
def test_2_on_bad_input_with_one_line(args, message, tmp_path):
    done = subprocess.run([str(NETBENCH), *args], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and message in done.stderr and "Traceback" not in done.stderr


def test_2_when_merging_runs_of_different_modes(tmp_path):
    from netbench.spec import RunSpec

    synthetic_run(np.full(5, 1000), RunSpec(url="http://127.0.0.1:8000/v1", mode="models")).save(tmp_path / "a.json")
    synthetic_run(np.full(5, 1000), RunSpec(url="http://127.0.0.1:8000/v1", mode="health"), host="b").save(tmp_path / "b.json")
    done = netbench("merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "-o", str(tmp_path / "all.json"))
    assert done.returncode == 2
    assert "cannot merge: mode 'models'" in done.stderr and "--force" in done.stderr
    assert not (tmp_path / "all.json").exists()
    forced = netbench("merge", "--force", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "-o", str(tmp_path / "all.json"))
    assert forced.returncode == 0 and (tmp_path / "all.json").exists()


def test_3_when_a_gate_fails_after_the_report(sim_url, tmp_path):
    done = netbench("run", "--url", sim_url, "--n", "4", "--no-progress", "--slo", "e2e.p50<1us", "--slo", "error_rate<1%")
    assert done.returncode == 3, done.stderr
    out = done.stdout
    assert out.index("requests: 4 ok") < out.index("SLO e2e.p50<1us: FAIL") < out.index("SLO error_rate<1%: PASS")
    # with --json the verdicts go to stderr, so stdout stays one JSON object
    as_json = netbench("run", "--url", sim_url, "--n", "4", "--no-progress", "--json", "--slo", "e2e.p50<1us")
    assert as_json.returncode == 3
    assert json.loads(as_json.stdout)["ok"] == 4 and "SLO e2e.p50<1us: FAIL" in as_json.stderr
