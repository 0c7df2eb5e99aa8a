"""`make bench`'s script (scripts/bench.sh) on a fresh machine's layout: no output folder yet,
the built-in server started and stopped by the script, tiny counts. A clean clone's `make bench`
once failed here after the load had been refused (netbench creates no parent folder, and the
script had relied on the folders an earlier run left)."""

from __future__ import annotations

import csv
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).parents[1]


def test_bench_writes_every_output_into_a_folder_that_did_not_exist(tmp_path: Path) -> None:
    out = tmp_path / "fresh" / "benchmarks_out"
    env = {**os.environ, "NETBENCH": str(Path(sys.executable).with_name("netbench")), "OUT": str(out),
           "SWEEP_ARGS": "--n 8", "INPUT_TOKENS": "16,64"}  # fmt: skip
    done = subprocess.run(["bash", str(REPO / "scripts" / "bench.sh")], env=env, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    with open(out / "network_latency_bench.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    # health and completions at 1, 4 and 8, then completions at each prompt length
    assert [(r["mode"], r["concurrency"]) for r in rows] == [
        ("health", "1"), ("health", "4"), ("health", "8"), ("completions", "1"), ("completions", "4"),
        ("completions", "8"), ("completions", "1"), ("completions", "1"),
    ]  # fmt: skip
    assert all((r["requests"], r["ok"], r["failed"]) == ("8", "8", "0") for r in rows), rows
    assert all(float(r["output_tokens_per_s"]) > 0 for r in rows if r["mode"] == "completions")
    runs = sorted(p.name for p in (out / "runs" / "network_latency_bench").iterdir())
    assert runs == sorted([*(f"{m}-c{c}.json" for m in ("health", "completions") for c in (1, 4, 8)),
                           "completions-c1-in16.json", "completions-c1-in64.json"])  # fmt: skip
    report = (out / "network_latency_bench.md").read_text()
    assert "### By prompt length" in report and "## Rule of thumb" in report
    assert all((out / name).stat().st_size > 10_000 for name in ("network_latency_phases.png", "network_latency_ttft_cdf.png"))
    # the server the script started is gone
    (port,) = re.findall(r"bench: built-in server at http://127\.0\.0\.1:(\d+)", done.stdout)
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", int(port)), timeout=5):
        pass
