"""Timing bounds a loaded host can break by chance, and the remeasuring that judges them.

A bound on how late or how far off a measured time may be holds on a quiet host; on a busy
2-core CI box a descheduled process (client, server or delay line) can push one measurement past
it. Such a bound raises HostNoise, and a test marked `remeasured` measures again, with fresh
fixtures, up to REMEASURES more times when that is all that happened. A systematic error (a
wrong anchor, offset or phase) breaks the bound in every measurement and still fails; any other
assertion (a count, a class, causality) fails at once.
"""

from __future__ import annotations

import pytest

#: measurements after the first that a HostNoise failure may take (pytest-rerunfailures)
REMEASURES = 2


class HostNoise(AssertionError):
    """A timing bound broken: a host that stalled a process can do this by chance."""


def within(holds: bool, detail: object = "") -> None:
    """Raises HostNoise with `detail` unless the timing bound `holds`."""
    if not holds:
        raise HostNoise(detail)


remeasured = pytest.mark.flaky(reruns=REMEASURES, only_rerun=[HostNoise])
