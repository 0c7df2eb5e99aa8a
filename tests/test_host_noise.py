"""The remeasuring of tests/host_noise.py: only a broken timing bound measures again, and a bound
broken every time still fails."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

BODY = '''
import itertools
from tests.host_noise import remeasured, within

attempts = itertools.count(1)

@remeasured
def test_it():
    attempt = next(attempts)
    print("attempt", attempt)
    {failure}
'''


@pytest.mark.parametrize(("failure", "outcome", "attempts"), [
    ("within(attempt >= 2, 'a stall')", {"passed": 1, "rerun": 1}, 2),  # noise once: measured again, passes
    ("within(False, 'off every time')", {"failed": 1, "rerun": 2}, 3),  # a systematic error fails all three
    ("assert attempt >= 2", {"failed": 1}, 1),  # a count or causality: no second measurement
])  # fmt: skip
def test_only_a_timing_bound_measures_again(pytester: pytest.Pytester, failure: str, outcome: dict[str, int], attempts: int) -> None:
    pytester.makepyfile(BODY.format(failure=failure))
    pytester.syspathinsert(str(Path(__file__).resolve().parents[1]))
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-s")
    assert result.parseoutcomes() == outcome
    assert [int(n) for n in re.findall(r"attempt (\d+)\n", result.stdout.str())] == list(range(1, attempts + 1))
