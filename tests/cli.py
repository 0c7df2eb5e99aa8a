"""The command line as a user runs it: in this process (`invoke`, most tests: fast, and the
commands' output captured through the core's `Env`), or as the real console script in a
subprocess (`netbench`, for what only a process shows: signals, exit codes, environment)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from dataclasses import dataclass

from netbench.cli import run_cli
from netbench.core import Env


@dataclass(frozen=True)
class Completed:
    code: int
    stdout: str
    stderr: str

    def json(self) -> dict:
        return json.loads(self.stdout)


def invoke(*args: str) -> Completed:
    """One command line run in process, as `netbench ARGS` would run it."""
    stdout, stderr = io.StringIO(), io.StringIO()
    code = run_cli(args, Env(stdout, stderr))
    return Completed(int(code), stdout.getvalue(), stderr.getvalue())


def netbench(*args: str, timeout_s: float = 300, env: dict[str, str] | None = None) -> Completed:
    proc = subprocess.run(
        [sys.executable, "-m", "netbench", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    return Completed(proc.returncode, proc.stdout, proc.stderr)
