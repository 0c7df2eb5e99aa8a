"""`netbench compare base.json new.json`: per phase, p50/p95/p99 on both sides, the difference,
and whether it is significant.

Percentiles come from the histograms (every request). Significance comes from a seeded
bootstrap interval of the quantile difference on the per-request records
(`analysis.bootstrap_median_diff`), when both runs kept records for the phase and each side
has at least `MIN_TAIL` values beyond the quantile; otherwise the row says why it is not
tested (a histogram-only comparison holds no per-request data to resample).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from netbench.analysis import BOOTSTRAP_RESAMPLES, CONFIDENCE, bootstrap_median_diff, per_request_us
from netbench.load_check import is_load_note
from netbench.phases import PHASES
from netbench.results import RunResult
from netbench.summary import applies

QUANTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))
#: a quantile's interval needs this many values beyond it on each side (p99: 1000 records)
MIN_TAIL = 10
#: phases recorded per token gap, not per request: no records to resample
_NO_RECORDS = ("itl", "token_lag")


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


@dataclass(frozen=True)
class PhaseChange:
    phase: str
    base_count: int
    new_count: int
    changes: tuple[QuantileChange, ...]


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
    base_summary: dict[str, object]
    new_summary: dict[str, object]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def compare_runs(
    base: RunResult,
    new: RunResult,
    base_label: str = "base",
    new_label: str = "new",
    resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> Comparison:
    with_records = len(base.records) > 0 and len(new.records) > 0
    phases = []
    for phase in PHASES:
        if not (applies(phase, base) and applies(phase, new)):
            continue
        base_stats, new_stats = base.stats(phase.name), new.stats(phase.name)
        if base_stats is None or new_stats is None:
            continue
        samples = None
        if with_records and phase.name not in _NO_RECORDS:
            samples = (per_request_us(base, phase.name), per_request_us(new, phase.name))
        changes = []
        for statistic, q in QUANTILES:
            base_us, new_us = getattr(base_stats, f"{statistic}_us"), getattr(new_stats, f"{statistic}_us")
            point = QuantileChange(statistic, base_us, new_us, new_us - base_us, (new_us - base_us) / base_us if base_us else None)
            changes.append(_tested(point, q, samples, phase.name, resamples, confidence, seed))
        phases.append(PhaseChange(phase.name, base_stats.count, new_stats.count, tuple(changes)))
    if with_records:
        method = "bootstrap on per-request records"
    else:
        missing = " and ".join(label for label, r in ((base_label, base), (new_label, new)) if len(r.records) == 0)
        method = f"histogram only ({missing} kept no per-request records): no significance test"
    return Comparison(
        base_label=base_label,
        new_label=new_label,
        phases=tuple(phases),
        method=method,
        confidence=confidence,
        notes=tuple(_notes(base, new, base_label, new_label)),
        base_summary=_run_summary(base),
        new_summary=_run_summary(new),
    )


def _tested(
    point: QuantileChange,
    q: float,
    samples: tuple[np.ndarray, np.ndarray] | None,
    phase: str,
    resamples: int,
    confidence: float,
    seed: int,
) -> QuantileChange:
    """The change with its bootstrap interval, or with the reason it could not be tested."""
    if samples is None:
        reason = "per-token phase: no per-request records" if phase in _NO_RECORDS else "histogram only"
        return replace(point, untested=reason)
    needed = math.ceil(MIN_TAIL / (1.0 - q))
    fewest = min(len(s) for s in samples)
    if fewest < needed:
        return replace(point, untested=f"{point.statistic} needs {needed} records on each side")
    interval = bootstrap_median_diff(samples[0], samples[1], resamples, confidence, seed, quantile=q)
    return replace(point, ci_low_us=interval.low, ci_high_us=interval.high, significant=interval.significant)


def _run_summary(result: RunResult) -> dict[str, object]:
    spec = result.spec
    return {
        "mode": spec.mode,
        "url": result.context.get("url", spec.url),
        "load": f"rate {spec.rate:g}/s ({spec.arrival})" if spec.open_loop else f"concurrency {spec.concurrency}",
        "requests": result.requests,
        "error_rate": round(result.error_rate, 6),
        "achieved_rps": round(result.achieved_rps, 2),
        "records": len(result.records),
    }


def _notes(base: RunResult, new: RunResult, base_label: str, new_label: str) -> list[str]:
    notes = []
    for what, a, b in (
        ("mode", base.spec.mode, new.spec.mode),
        ("URL", base.context.get("url", base.spec.url), new.context.get("url", new.spec.url)),
        ("load model", "open loop" if base.spec.open_loop else "closed loop", "open loop" if new.spec.open_loop else "closed loop"),
    ):
        if a != b:
            notes.append(f"different {what}: {a} in {base_label}, {b} in {new_label}")
    for label, result in ((base_label, base), (new_label, new)):
        notes += [f"{label}: {note}" for note in result.notes if is_load_note(note)]
        if result.interrupted:
            notes.append(f"{label}: the run was interrupted")
        sampled_out = result.counters.get("records_sampled_out", 0)
        if sampled_out:
            notes.append(f"{label}: intervals use a uniform sample of {len(result.records)} of {result.requests} requests")
    return notes
