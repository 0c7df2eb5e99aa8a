"""Per-phase HDR histograms with shared bounds: bulk recording, encode/merge, overflow counts.

Recording is separate from querying (as in HdrHistogram itself): workers call
`record_many` with numpy arrays of µs durations; the parent decodes and adds; reports ask
`stats`. Values above the shared upper bound are counted as overflow, never dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hdrh.histogram import HdrHistogram

from netbench.phases import PHASE_NAMES

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour
SIGNIFICANT_DIGITS = 3
PERCENTILES = (50.0, 95.0, 99.0)


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


@dataclass(frozen=True)
class PhaseStats:
    """What a report shows of one phase, in µs."""

    count: int
    p50_us: int
    p95_us: int
    p99_us: int
    max_us: int
    min_us: int
    mean_us: float


class PhaseHistograms:
    """One histogram per phase name, plus the count of values too large to record."""

    def __init__(self) -> None:
        self.histograms: dict[str, HdrHistogram] = {name: new_histogram() for name in PHASE_NAMES}
        self.overflow: dict[str, int] = dict.fromkeys(PHASE_NAMES, 0)

    def record_many(self, name: str, values_us: np.ndarray) -> None:
        """Record every value >= 0 (negative means 'does not apply')."""
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
            if name in self.histograms:
                self.histograms[name].decode_and_add(text)
        for name, count in encoded.get("overflow", {}).items():  # type: ignore[union-attr]
            self.overflow[name] = self.overflow.get(name, 0) + int(count)

    @classmethod
    def decode(cls, encoded: dict[str, object]) -> PhaseHistograms:
        merged = cls()
        merged.add_encoded(encoded)
        return merged

    def stats(self, name: str) -> PhaseStats | None:
        """Percentiles of one phase; None when it has no value (the phase does not apply)."""
        histogram = self.histograms[name]
        count = histogram.total_count
        if count == 0:
            return None
        p50, p95, p99 = percentiles_us(histogram, PERCENTILES)
        return PhaseStats(
            count=count,
            p50_us=p50,
            p95_us=p95,
            p99_us=p99,
            max_us=histogram.get_max_value(),
            min_us=histogram.get_min_value(),
            mean_us=mean_us(histogram),
        )


def _recorded(histogram: HdrHistogram) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lowest equivalent value, size of its equivalent range, count) of every non-empty bucket.

    hdrh walks its ~23,000 counts in pure Python for each percentile (0.1 s a call); this is
    the same bucket arithmetic over the counts array, vectorised."""
    counts = np.ctypeslib.as_array(histogram.counts)
    index = np.flatnonzero(counts)
    half_count = histogram.sub_bucket_half_count
    bucket = (index >> histogram.sub_bucket_half_count_magnitude) - 1
    sub_bucket = (index & (half_count - 1)) + half_count
    first = bucket < 0
    sub_bucket = np.where(first, sub_bucket - half_count, sub_bucket)
    bucket = np.where(first, 0, bucket) + histogram.unit_magnitude
    lowest = sub_bucket.astype(np.int64) << bucket
    return lowest, np.int64(1) << bucket, counts[index].astype(np.int64)


def percentiles_us(histogram: HdrHistogram, percentiles: tuple[float, ...]) -> list[int]:
    """hdrh's get_value_at_percentile for several percentiles at once (same results)."""
    lowest, size, counts = _recorded(histogram)
    cumulative = np.cumsum(counts)
    out = []
    for percentile in percentiles:
        target = max(int(min(percentile, 100.0) * histogram.total_count / 100 + 0.5), 1)
        at = int(np.searchsorted(cumulative, target))
        out.append(int(lowest[at] + size[at] - 1) if percentile else int(lowest[at]))
    return out


def mean_us(histogram: HdrHistogram) -> float:
    """hdrh's get_mean_value: each bucket counted at its median equivalent value."""
    lowest, size, counts = _recorded(histogram)
    return float(np.sum((lowest + (size >> 1)) * counts) / histogram.total_count)
