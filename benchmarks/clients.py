"""Each client of the suite run as its own process tree, measured the same way.

`run_netbench` runs the real CLI (`netbench run ... --json`), as a user would; `run_peer`
runs one of `benchmarks.peers`' clients. Both return what the client reported plus what
its process tree cost (`proctree.TreeStats`).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.proctree import TreeStats, measure

REPO_ROOT = Path(__file__).resolve().parents[1]
NETBENCH = (sys.executable, "-c", "from netbench.cli import entry; entry()")


class ClientFailed(RuntimeError):
    """A client exited non-zero or printed no result: the suite's figures would be wrong."""


@dataclass(frozen=True)
class ClientRun:
    report: dict[str, Any]  # the client's own JSON output
    tree: TreeStats


def _run(command: list[str], timeout_s: float) -> ClientRun:
    tree = measure(command, timeout_s, cwd=REPO_ROOT)  # the root: `-m benchmarks.peers` must resolve
    if tree.returncode != 0:
        raise ClientFailed(f"{' '.join(command)} exited {tree.returncode}:\n{tree.stderr[-3000:]}")
    try:
        report = json.loads(tree.stdout)
    except ValueError as error:
        raise ClientFailed(f"{' '.join(command)} printed no JSON ({error}):\n{tree.stdout[-2000:]}") from error
    return ClientRun(report, tree)


def run_netbench(*args: str, timeout_s: float = 900.0) -> ClientRun:
    """`netbench run ARGS --json --no-progress`; a run with any failed request is an error."""
    run = _run([*NETBENCH, "run", *args, "--json", "--no-progress"], timeout_s)
    if run.report["failed"]:
        raise ClientFailed(f"netbench run {' '.join(args)}: {run.report['failed']} requests failed: {run.report['errors']}")
    return run


def run_peer(client: str, url: str, concurrency: int, n: int, *, model: str = "", max_tokens: int = 0, timeout_s: float = 600.0) -> ClientRun:
    command = [sys.executable, "-m", "benchmarks.peers", client, "--url", url, "--concurrency", str(concurrency), "--n", str(n)]
    if model:
        command += ["--model", model, "--max-tokens", str(max_tokens)]
    run = _run(command, timeout_s)
    if run.report["failed"]:
        raise ClientFailed(f"{client} at concurrency {concurrency}: {run.report['failed']} requests failed")
    return run
