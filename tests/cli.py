"""Run the real console script (`python -m netbench`) as a user would, and capture what it printed."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Completed:
    code: int
    stdout: str
    stderr: str

    def json(self) -> dict:
        return json.loads(self.stdout)


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
