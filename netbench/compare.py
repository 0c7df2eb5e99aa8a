"""`netbench compare base.json new.json`: per phase, p50/p95/p99 on both sides, the difference,
and whether it is significant.

The values are the runs' summaries' (the histograms: every request, the one definition every
output shows). Significance comes from a seeded bootstrap interval of the quantile difference on
the per-request records (`analysis.bootstrap_interval`), when both runs kept records with the
phase and each side has at least `MIN_TAIL` values beyond the quantile; otherwise the row says
why it is not tested (a histogram-only comparison holds no per-request data to resample).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field, replace

import numpy as np

from netbench.analysis import BOOTSTRAP_RESAMPLES, CONFIDENCE, bootstrap_interval
from netbench.histograms import equivalent_us
from netbench.load_check import load_notes
from netbench.phases import PHASES
from netbench.serial import NOT_SERIALISED
from netbench.summary import Run, describe_load

QUANTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))


class Change(str, enum.Enum):
    """What a tested difference says: the interval lies above 0, below it, or holds it."""

    SLOWER = "slower"
    FASTER = "faster"
    NONE = "none"

#: a quantile's interval needs this many values beyond it on each side (p99: 1000 records)
MIN_TAIL = 10


@dataclass(frozen=True)
class QuantileChange:
    statistic: str  # "p50", "p95", "p99"
    base_us: int
    new_us: int
    diff_us: int  # new - base
    diff_ratio: float | None  # (new - base) / base
    #: bootstrap interval of new - base (µs) on the records; None when not tested
    ci_low_us: float | None = None
    ci_high_us: float | None = None
    #: True/False when tested; None with `untested` saying why
    significant: bool | None = None
    untested: str | None = None
    #: None when not tested
    change: Change | None = field(default=None, metadata=NOT_SERIALISED)


@dataclass(frozen=True)
class PhaseChange:
    phase: str
    base_count: int
    new_count: int
    changes: tuple[QuantileChange, ...]


@dataclass(frozen=True)
class Side:
    """One side of a comparison, as the header line names it."""

    mode: str
    url: str
    load: str
    requests: int
    error_rate: float
    achieved_rps: float
    records: int


@dataclass(frozen=True)
class Comparison:
    base_label: str
    new_label: str
    phases: tuple[PhaseChange, ...]
    #: "bootstrap on per-request records" or "histogram only (...)"
    method: str
    confidence: float
    #: facts a reader must know: different specs, client-bound runs, ...
    notes: tuple[str, ...]
    base_summary: Side
    new_summary: Side


def compare_runs(
    base: Run,
    new: Run,
    base_label: str = "base",
    new_label: str = "new",
    resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> Comparison:
    with_records = len(base.result.records) > 0 and len(new.result.records) > 0
    phases = []
    for phase in PHASES:
        base_stats, new_stats = base.summary.phase(phase.name), new.summary.phase(phase.name)
        if base_stats is None or new_stats is None:
            continue
        samples = None
        if with_records and phase.name in base.per_request_us and phase.name in new.per_request_us:
            # in the histograms' resolution: the intervals are of the statistics the rows show
            samples = (equivalent_us(base.values_us(phase.name)), equivalent_us(new.values_us(phase.name)))
        changes = []
        for statistic, q in QUANTILES:
            base_us, new_us = getattr(base_stats, f"{statistic}_us"), getattr(new_stats, f"{statistic}_us")
            point = QuantileChange(statistic, base_us, new_us, new_us - base_us, (new_us - base_us) / base_us if base_us else None)
            changes.append(_tested(point, q, samples, with_records, resamples, confidence, seed))
        phases.append(PhaseChange(phase.name, base_stats.count, new_stats.count, tuple(changes)))
    if with_records:
        method = "bootstrap on per-request records"
    else:
        missing = " and ".join(label for label, r in ((base_label, base), (new_label, new)) if len(r.result.records) == 0)
        method = f"histogram only ({missing} kept no per-request records): no significance test"
    return Comparison(
        base_label=base_label,
        new_label=new_label,
        phases=tuple(phases),
        method=method,
        confidence=confidence,
        notes=tuple(_notes(base, new, base_label, new_label)),
        base_summary=_side(base),
        new_summary=_side(new),
    )


def _tested(
    point: QuantileChange,
    q: float,
    samples: tuple[np.ndarray, np.ndarray] | None,
    with_records: bool,
    resamples: int,
    confidence: float,
    seed: int,
) -> QuantileChange:
    """The change with its bootstrap interval, or with the reason it could not be tested."""
    if samples is None:
        # With records, a phase they do not give per request (recorded per token gap, say).
        reason = "the records hold no per-request values of this phase" if with_records else "histogram only"
        return replace(point, untested=reason)
    needed = math.ceil(MIN_TAIL / (1.0 - q))
    if min(len(s) for s in samples) < needed:
        return replace(point, untested=f"{point.statistic} needs {needed} records on each side")
    low, high = bootstrap_interval(samples[0], samples[1], q, resamples, confidence, seed)
    change = Change.SLOWER if low > 0 else Change.FASTER if high < 0 else Change.NONE
    return replace(point, ci_low_us=low, ci_high_us=high, significant=change is not Change.NONE, change=change)


def _side(run: Run) -> Side:
    s = run.summary
    return Side(s.mode, s.url, describe_load(s.spec), s.requests, round(s.error_rate, 6), round(s.achieved_rps, 2),
                len(run.result.records))  # fmt: skip


def _notes(base: Run, new: Run, base_label: str, new_label: str) -> list[str]:
    notes = []
    for what, a, b in (
        ("mode", base.summary.mode, new.summary.mode),
        ("URL", base.summary.url, new.summary.url),
        ("load model", "open loop" if base.spec.open_loop else "closed loop", "open loop" if new.spec.open_loop else "closed loop"),
    ):
        if a != b:
            notes.append(f"different {what}: {a} in {base_label}, {b} in {new_label}")
    for label, run in ((base_label, base), (new_label, new)):
        s = run.summary
        notes += [f"{label}: {note}" for note in load_notes(s.open_loop, s.client_bound_reasons)]
        if s.interrupted:
            notes.append(f"{label}: the run was interrupted")
        sampled_out = run.result.counters.get("records_sampled_out", 0)
        if sampled_out:
            notes.append(f"{label}: intervals use a uniform sample of {len(run.result.records)} of {s.requests} requests")
    return notes
