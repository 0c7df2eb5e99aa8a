"""Percentiles as every client in the suite reports them, and ratios that survive a zero."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Percentiles:
    """A latency distribution's summary, µs (floats: wrk prints fractions of a µs)."""

    count: int
    p50_us: float
    p99_us: float
    max_us: float


def percentiles(values_us: np.ndarray) -> Percentiles | None:
    """Nearest-rank percentiles (the value a sample reached), as HdrHistogram and wrk report."""
    if values_us.size == 0:
        return None
    p50, p99 = np.percentile(values_us, (50, 99), method="inverted_cdf")
    return Percentiles(int(values_us.size), float(p50), float(p99), float(values_us.max()))


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, None when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0 or math.isnan(denominator):
        return None
    return numerator / denominator


def median(values: list[float]) -> float:
    return float(np.median(values))
