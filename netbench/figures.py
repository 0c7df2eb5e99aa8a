"""The numbers each plot of the report draws, computed here so that `report/plot.py` only draws.

- `PhaseBars`: per mode, one bar per run, stacked from the parts of its median request
  (`analysis.request_parts`), with the median e2e beside it;
- `Cdf`: one curve per run of a phase's distribution, from the per-request records, or, for a
  run file without records, from its HDR histogram (every bucket, at its highest equivalent value).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from netbench.analysis import request_parts, sorted_runs
from netbench.histograms import BucketView
from netbench.summary import Run, RunSummary

#: the stacked parts of a bar, in order (analysis.request_parts's keys)
SEGMENTS = ("connect", "send", "rtt", "server_wait", "after_headers", "response")
#: the phases drawn as CDFs, and the title of each figure
CDF_PHASES = (("ttft", "CDF of time to first token"), ("e2e", "CDF of HTTP wall time (end to end)"))


def load_label(s: RunSummary) -> str:
    return f"{s.spec.rate:g}/s" if s.spec.open_loop else f"c={s.spec.concurrency}"


@dataclass(frozen=True)
class Bar:
    label: str
    #: ms, in SEGMENTS order (0 where a part does not apply)
    segments_ms: tuple[float, ...]
    e2e_p50_ms: float


@dataclass(frozen=True)
class PhaseBars:
    #: (mode, its bars), modes in report order
    modes: tuple[tuple[str, tuple[Bar, ...]], ...]


@dataclass(frozen=True)
class Curve:
    label: str
    xs_ms: np.ndarray
    #: the share of requests at or below each x
    shares: np.ndarray


@dataclass(frozen=True)
class Cdf:
    phase: str
    title: str
    curves: tuple[Curve, ...]


def phase_bars(runs: Sequence[Run]) -> PhaseBars:
    summaries = [r.summary for r in sorted_runs(runs) if r.summary.phase("e2e") is not None]
    modes = []
    for mode in dict.fromkeys(s.mode for s in summaries):
        bars = []
        for s in (s for s in summaries if s.mode == mode):
            parts = {c.key: c.us / 1000 for c in request_parts(s)}
            e2e = s.phase("e2e")
            assert e2e is not None
            bars.append(Bar(load_label(s), tuple(parts.get(key, 0.0) for key in SEGMENTS), e2e.p50_us / 1000))
        modes.append((mode, tuple(bars)))
    return PhaseBars(tuple(modes))


def cdf(runs: Sequence[Run], phase: str, title: str) -> Cdf:
    """One curve per run that has the phase (none: an empty figure is not drawn)."""
    curves = []
    for run in sorted_runs(runs):
        values = run.values_us(phase)
        if values.size:
            xs = np.sort(values) / 1000
            shares = np.arange(1, xs.size + 1) / xs.size
        elif run.summary.phase(phase) is not None:
            xs, shares = BucketView.of(run.result.histograms.histograms[phase]).cdf_ms()
        else:
            continue
        curves.append(Curve(f"{run.spec.mode} {load_label(run.summary)}", xs, shares))
    return Cdf(phase, title, tuple(curves))


def cdfs(runs: Sequence[Run]) -> list[Cdf]:
    return [cdf(runs, phase, title) for phase, title in CDF_PHASES]
