"""Concurrent appends to one CSV: every row present, whole, and the header written once."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from netbench.report.csvout import COLUMNS

pytestmark = pytest.mark.integration

PROCESSES = 8


def read_rows(path: Path) -> list[list[str]]:
    """The rows under the header, which must be there once, each row whole."""
    with open(path, newline="") as handle:
        header, *rows = list(csv.reader(handle))
    assert header == list(COLUMNS)
    assert all(len(row) == len(COLUMNS) for row in rows)
    return rows


def run_at_once(commands: list[list[str]]) -> None:
    """Start every command before waiting for any; each must succeed."""
    procs = [
        subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for command in commands
    ]
    try:
        for proc in procs:
            _, stderr = proc.communicate(timeout=300)
            assert proc.returncode == 0, stderr
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_concurrent_runs_append_every_row_intact(sim_url: str, tmp_path: Path) -> None:
    """8 `netbench run` processes at once, each GETting its own URL, into one CSV."""
    target = tmp_path / "shared.csv"
    urls = [f"{sim_url}/health?run={i}" for i in range(PROCESSES)]
    run_at_once([
        [sys.executable, "-m", "netbench", "run", "--mode", "get", "--url", url, "--n", "3", "--no-progress",
         "--csv", str(target)]
        for url in urls
    ])  # fmt: skip
    rows = read_rows(target)
    assert len(rows) == PROCESSES
    by_url = {row[COLUMNS.index("url")]: dict(zip(COLUMNS, row)) for row in rows}
    assert sorted(by_url) == sorted(urls)
    for row in by_url.values():
        assert (row["mode"], row["requests"], row["ok"], row["failed"]) == ("get", "3", "3", "0")


# A writer process: append `rows` rows, each naming (writer, row) in its url column. The run is
# summarised once, so that the appends, lock and all, are what runs.
_WRITER = """
import dataclasses
import sys
from netbench.report import csvout
from netbench.results import RunResult
from netbench.summary import summarize

template = summarize(RunResult.load(sys.argv[1]))
writer, rows, target = sys.argv[2], int(sys.argv[3]), sys.argv[4]
for i in range(rows):
    csvout.append_rows(target, [dataclasses.replace(template, url=f"writer={writer} row={i}")])
"""


def test_appends_under_contention_lose_nothing(sim_url: str, tmp_path: Path) -> None:
    """Many small appends from 8 processes at once: the lock, not luck, keeps every row."""
    run_file = tmp_path / "run.json"
    made = subprocess.run(
        [sys.executable, "-m", "netbench", "run", "--mode", "get", "--url", f"{sim_url}/health",
         "--n", "2", "--no-progress", "-o", str(run_file)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    target, rows_each = tmp_path / "contended.csv", 40
    run_at_once([
        [sys.executable, "-c", _WRITER, str(run_file), str(w), str(rows_each), str(target)] for w in range(PROCESSES)
    ])
    urls = sorted(row[COLUMNS.index("url")] for row in read_rows(target))
    assert urls == sorted(f"writer={w} row={r}" for w in range(PROCESSES) for r in range(rows_each))
