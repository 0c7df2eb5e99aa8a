"""Nothing lost: a run stopped by SIGINT or SIGTERM prints and writes what it measured, marked
interrupted; a worker killed with SIGKILL is reported beside the other workers' results and fails
the run; and no worker process outlives its run, however the run ends.

Each run streams from the built-in server (about 0.2-0.4 s a request), as a subprocess in its own
session, so a signal can go to it alone (`kill PID`) or to its whole group (Ctrl-C in a terminal).
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers.ports import alive
from tests.servers.sim import start_sim_server

pytestmark = pytest.mark.integration

START_DEADLINE_S = 120.0
STOP_DEADLINE_S = 30.0
GONE_DEADLINE_S = 10.0
_E2E_COUNT = re.compile(r"^vllm:e2e_request_latency_seconds_count\{[^}]*\} (\S+)$", re.MULTILINE)


@pytest.fixture(scope="module")
def slow_sim() -> Iterator[str]:
    with start_sim_server("--step-ms", "50", "--ignore-eos") as base_url:
        yield base_url


def served(base_url: str) -> int:
    """Requests the server has finished so far (its own /metrics)."""
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=10) as response:
        return int(sum(float(v) for v in _E2E_COUNT.findall(response.read().decode())))


def children(pid: int) -> list[int]:
    pids: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            pids += [int(p) for p in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except FileNotFoundError:
            pass
    return pids


def assert_gone(pids: list[int]) -> None:
    deadline = time.monotonic() + GONE_DEADLINE_S
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in pids if alive(p)], "processes left behind"


@dataclass
class Run:
    proc: subprocess.Popen[str]
    run_file: Path
    csv_file: Path
    #: the netbench process and every child it had mid-run (workers, multiprocessing's helper)
    family: list[int]
    workers: list[int]


def start_run(base_url: str, tmp_path: Path, n: int, max_tokens: int) -> Run:
    """Start `netbench run` (2 workers, 1 stream each) and return once the server has finished a
    few of its requests."""
    run_file, csv_file = tmp_path / "run.json", tmp_path / "rows.csv"
    before = served(base_url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "netbench", "run", "--url", base_url, "--mode", "completions",
         "--concurrency", "2", "--n", str(n), "--max-tokens", str(max_tokens), "--no-progress",
         "--csv", str(csv_file), "-o", str(run_file)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + START_DEADLINE_S
    while served(base_url) < before + 4:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run did not get going"
        time.sleep(0.05)
    family = [proc.pid, *children(proc.pid)]
    workers = [p for p in family[1:] if b"multiprocessing.spawn" in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert len(workers) == 2
    return Run(proc, run_file, csv_file, family, workers)


def finish(run: Run) -> tuple[str, dict, dict]:
    """Wait for the run's end; return (stdout, run file, CSV row)."""
    stdout, stderr = run.proc.communicate(timeout=STOP_DEADLINE_S + 90)
    assert "Traceback" not in stdout + stderr, stderr
    with open(run.csv_file, newline="") as handle:
        [row] = list(csv.DictReader(handle))
    return stdout, json.loads(run.run_file.read_text()), row


@pytest.mark.parametrize(
    ("signum", "to_group", "code"),
    [
        pytest.param(signal.SIGINT, True, 130, id="ctrl-c"),
        pytest.param(signal.SIGTERM, False, 143, id="kill"),
        pytest.param(signal.SIGTERM, True, 143, id="kill-group"),
    ],
)
def test_a_signal_stops_the_run_and_keeps_what_was_measured(
    slow_sim: str, tmp_path: Path, signum: int, to_group: bool, code: int
) -> None:
    n = 400  # far more than the run gets through before the signal
    run = start_run(slow_sim, tmp_path, n, max_tokens=8)
    if to_group:
        os.killpg(run.proc.pid, signum)
    else:
        run.proc.send_signal(signum)
    sent_at = time.monotonic()
    stdout, result, row = finish(run)
    assert time.monotonic() - sent_at < STOP_DEADLINE_S
    assert run.proc.returncode == code

    ok = result["counters"]["ok"]
    assert 0 < ok < n and result["counters"]["requests"] == ok  # in-flight requests were dropped, not failed
    assert result["interrupted"] is True
    assert result["context"]["stop_signal"] == signal.Signals(signum).name
    # Both workers survived the signal (it reached them too, for the group) and reported.
    assert [w["requests"] > 0 for w in result["workers"]] == [True, True]
    assert not any("died" in note for note in result["notes"])
    assert "INTERRUPTED" in stdout and f"requests: {ok} ok, 0 failed" in stdout
    assert (row["interrupted"], row["ok"]) == ("True", str(ok)) and row["notes"].startswith("interrupted")
    assert_gone(run.family)


def test_a_killed_worker_is_reported_and_fails_the_run(slow_sim: str, tmp_path: Path) -> None:
    n = 48  # 24 a worker, about 0.25 s each: the survivor is still busy when the other is killed
    run = start_run(slow_sim, tmp_path, n, max_tokens=4)
    victim = run.workers[0]
    os.kill(victim, signal.SIGKILL)
    stdout, result, row = finish(run)
    assert run.proc.returncode == 1

    assert result["counters"]["workers_failed"] == 1
    assert any(f"(pid {victim}) died with exit code -9" in note for note in result["notes"])
    # The survivor's whole share is there, measured.
    [survivor] = result["workers"]
    assert survivor["pid"] != victim
    assert result["counters"]["ok"] == survivor["requests"] == n // 2
    assert f"requests: {n // 2} ok" in stdout
    assert row["ok"] == str(n // 2) and "died with exit code -9" in row["notes"]
    assert_gone(run.family)


def test_workers_do_not_outlive_a_killed_run(slow_sim: str, tmp_path: Path) -> None:
    """SIGKILL gives netbench no chance to stop its workers: they must notice on their own."""
    run = start_run(slow_sim, tmp_path, 400, max_tokens=8)
    os.kill(run.proc.pid, signal.SIGKILL)
    run.proc.communicate(timeout=STOP_DEADLINE_S)
    assert_gone(run.family)
