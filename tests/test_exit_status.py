"""The exit status: one pure function of a command's result or error, and the README's table of
codes and their precedence ("the first in this order wins: 130/143, 1, 3") as a table test."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from netbench.core import CommandResult, ExitStatus, exit_status
from netbench.errors import InputError, MergeRefused
from netbench.results import RunFileError
from netbench.spec import SpecError

S = ExitStatus
# interrupted, stop signal, failed requests, a gate failed -> status
PRECEDENCE = [
    (False, None, False, False, S.OK),
    (False, None, False, True, S.SLO_FAILED),
    (False, None, True, False, S.FAILED_REQUESTS),
    (False, None, True, True, S.FAILED_REQUESTS),  # 1 wins over 3
    (True, "SIGINT", False, False, S.INTERRUPTED),
    (True, "SIGINT", True, True, S.INTERRUPTED),  # 130 wins over 1 and 3
    (True, "SIGTERM", False, False, S.TERMINATED),
    (True, "SIGTERM", True, True, S.TERMINATED),  # 143 wins over 1 and 3
    (True, None, True, False, S.INTERRUPTED),  # a worker interrupted without a signal seen here
]


@pytest.mark.parametrize(("interrupted", "signal", "failed", "gates_failed", "status"), PRECEDENCE)
def test_precedence(interrupted, signal, failed, gates_failed, status):
    result = CommandResult(stop_signal=signal, interrupted=interrupted, failed=failed, gates_failed=gates_failed)
    assert exit_status(result) is status


@pytest.mark.parametrize(
    "error",
    [SpecError("bad"), InputError("slo", "x<", "expected ..."), MergeRefused(["mode 'a' in x but 'b' in y"]),
     RunFileError("cannot read run file x"), FileNotFoundError("x"), PermissionError("y")],  # fmt: skip
)
def test_bad_input_is_2(error):
    assert exit_status(error) is S.BAD_INPUT


def test_an_interrupt_outside_a_run_is_130_and_a_bug_is_not_swallowed():
    assert exit_status(KeyboardInterrupt()) is S.INTERRUPTED
    with pytest.raises(ZeroDivisionError):
        exit_status(ZeroDivisionError())


def test_the_readme_lists_every_code_and_the_same_precedence():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    assert sorted(int(code) for code in re.findall(r"^\| (\d+) \|", section, re.M)) == sorted(s.value for s in S)
    assert "the first in this order wins: 130/143, 1, 4, 3" in section
