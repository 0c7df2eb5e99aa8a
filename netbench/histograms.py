"""Per-phase HDR histograms with shared bounds: bulk recording, encode/add, overflow counts, and
the one query that turns a histogram into the statistics every output shows (`PhaseStats`).

Recording is separate from querying (as in HdrHistogram itself): workers call `record_many`
with numpy arrays of µs durations; the parent decodes and adds; the run summary asks `stats`
once per phase. Values above the shared upper bound are counted as overflow, never dropped
silently; a phase name this netbench does not know is an error, never dropped silently.

Queries go through hdrh's public API only: percentiles are hdrh's own
`get_percentile_to_value_dict` (one pass for every percentile); the mean is hdrh's definition
(each bucket at its median equivalent value) over a `BucketView`, the non-empty buckets read
once through `get_count_at_index` and the equivalent-value functions, because hdrh's own
`get_mean_value` walks a pure-Python iterator (40 ms a histogram, measured).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from hdrh.histogram import HdrHistogram

from netbench.phases import PHASE_NAMES
from netbench.serial import NOT_SERIALISED, rounded

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour
SIGNIFICANT_DIGITS = 3
#: the percentiles every output shows
PERCENTILES = (50.0, 95.0, 99.0)
#: also computed in the same pass, for SLO gates (`ttft.p90<...`, `e2e.p999<...`)
GATE_PERCENTILES = (90.0, 99.9)


class UnknownPhaseError(ValueError):
    """A histogram under a phase name this netbench does not know (a newer run file, a typo)."""


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


@dataclass(frozen=True)
class PhaseStats:
    """What the outputs show of one phase, in µs: THE point estimates (there is no other median)."""

    count: int
    p50_us: int
    p95_us: int
    p99_us: int
    max_us: int
    #: hdrh's mean; written to 0.1 µs (far finer than the histogram's 3 significant digits)
    mean_us: float = field(metadata=rounded(1))
    p90_us: int = field(default=0, metadata=NOT_SERIALISED)
    p999_us: int = field(default=0, metadata=NOT_SERIALISED)


@dataclass(frozen=True)
class BucketView:
    """The non-empty buckets of one histogram: lowest and highest equivalent value, count."""

    lowest_us: np.ndarray
    highest_us: np.ndarray
    counts: np.ndarray

    @classmethod
    def of(cls, histogram: HdrHistogram) -> BucketView:
        # Only the indices from the smallest to the largest value recorded can hold a count:
        # a few hundred for most phases, of the ~23,000 a histogram has.
        if histogram.total_count == 0:
            return cls(*(np.zeros(0, dtype=np.int64) for _ in range(3)))
        first = histogram.get_counts_array_index(histogram.get_min_value())
        last = histogram.get_counts_array_index(histogram.get_max_value())
        counts = np.fromiter((histogram.get_count_at_index(i) for i in range(first, last + 1)), dtype=np.int64)
        index = np.flatnonzero(counts)
        values = [histogram.get_value_from_index(first + int(i)) for i in index]
        lowest = np.array([histogram.get_lowest_equivalent_value(v) for v in values], dtype=np.int64)
        highest = np.array([histogram.get_highest_equivalent_value(v) for v in values], dtype=np.int64)
        return cls(lowest, highest, counts[index])

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def mean_us(self) -> float:
        """hdrh's get_mean_value: each bucket counted at its median equivalent value."""
        median = self.lowest_us + ((self.highest_us - self.lowest_us + 1) >> 1)
        return float(np.sum(median * self.counts) / self.total) if self.total else 0.0

    def cdf_ms(self) -> tuple[np.ndarray, np.ndarray]:
        """(highest equivalent value in ms, share of values at or below it) of every bucket."""
        return self.highest_us / 1000, np.cumsum(self.counts) / max(self.total, 1)


_REFERENCE = new_histogram()  # only its equivalent-value arithmetic is used


def equivalent_us(values_us: np.ndarray) -> np.ndarray:
    """Each value as the histograms resolve it: the highest value equivalent to it (what a
    percentile of a histogram reports), so that statistics of samples match the histograms'."""
    values = np.asarray(values_us, dtype=np.int64)
    distinct, inverse = np.unique(values, return_inverse=True)
    mapped = np.array([_REFERENCE.get_highest_equivalent_value(v) for v in distinct.tolist()], dtype=np.int64)
    return mapped[inverse].reshape(values.shape)


def rank(count: int, percentile: float) -> int:
    """hdrh's rank of a percentile among `count` values (1-based): max(round(p count / 100), 1)."""
    return max(int(min(percentile, 100.0) * count / 100 + 0.5), 1)


def _check(name: str) -> None:
    if name not in PHASE_NAMES:
        raise UnknownPhaseError(f"unknown phase {name!r} (this netbench knows {', '.join(PHASE_NAMES)})")


class PhaseHistograms:
    """One histogram per phase name, plus the count of values too large to record."""

    def __init__(self) -> None:
        self.histograms: dict[str, HdrHistogram] = {name: new_histogram() for name in PHASE_NAMES}
        self.overflow: dict[str, int] = dict.fromkeys(PHASE_NAMES, 0)

    def record_many(self, name: str, values_us: np.ndarray) -> None:
        """Record every value >= 0 (negative means 'does not apply')."""
        _check(name)
        values = values_us[values_us >= 0]
        if values.size == 0:
            return
        too_large = values > HIGHEST_US
        if too_large.any():
            self.overflow[name] += int(np.count_nonzero(too_large))
            values = values[~too_large]
        # record_value is pure Python: one call per distinct value, not per sample.
        distinct, counts = np.unique(values, return_counts=True)
        histogram = self.histograms[name]
        for value, count in zip(distinct.tolist(), counts.tolist()):
            if not histogram.record_value(value, count):
                self.overflow[name] += count

    def record_phases(self, values_us: dict[str, np.ndarray]) -> None:
        """Record every phase of `phases.derive(...).values_us` at once."""
        for name, values in values_us.items():
            self.record_many(name, values)

    def encode(self) -> dict[str, object]:
        """A picklable, JSON-able form: hdrh's compressed base64 strings."""
        return {
            "histograms": {n: h.encode().decode("ascii") for n, h in self.histograms.items() if h.total_count},
            "overflow": {n: c for n, c in self.overflow.items() if c},
        }

    def add_encoded(self, encoded: dict[str, object]) -> None:
        """Merge another set's `encode()` output into this one (lossless)."""
        for name, text in encoded.get("histograms", {}).items():  # type: ignore[union-attr]
            _check(name)
            self.histograms[name].decode_and_add(text)
        for name, count in encoded.get("overflow", {}).items():  # type: ignore[union-attr]
            _check(name)
            self.overflow[name] += int(count)

    def add(self, other: PhaseHistograms) -> None:
        """Add another set's counts into this one (hdrh's add: no re-encoding)."""
        for name, histogram in other.histograms.items():
            if histogram.total_count:
                self.histograms[name].add(histogram)
        for name, count in other.overflow.items():
            self.overflow[name] += count

    @classmethod
    def decode(cls, encoded: dict[str, object]) -> PhaseHistograms:
        merged = cls()
        merged.add_encoded(encoded)
        return merged

    def stats(self, name: str) -> PhaseStats | None:
        """The statistics of one phase; None when it has no value (the phase does not apply).
        The run summary calls this once per phase: every output reads the summary."""
        histogram = self.histograms[name]
        count = histogram.total_count
        if count == 0:
            return None
        at = histogram.get_percentile_to_value_dict([*PERCENTILES, *GATE_PERCENTILES])
        return PhaseStats(
            count=count,
            p50_us=at[50.0],
            p95_us=at[95.0],
            p99_us=at[99.0],
            max_us=histogram.get_max_value(),
            mean_us=BucketView.of(histogram).mean_us(),
            p90_us=at[90.0],
            p999_us=at[99.9],
        )
