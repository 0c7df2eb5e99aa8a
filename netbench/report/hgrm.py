"""`--hgrm PHASE FILE`: a phase's HDR percentile spectrum in wrk2's .hgrm format (milliseconds)."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path

from hdrh.histogram import HdrHistogram

from netbench.results import RunResult

_US_PER_MS = 1000.0
_STDDEV = re.compile(rb"(StdDeviation\s+= )\s*[0-9.]+")


def hgrm_paths(path: str | Path, labels: Sequence[str]) -> list[Path]:
    """One run: `path`. A sweep: one file per run, named `<stem>-<run label><suffix>`."""
    target = Path(path)
    if len(labels) == 1:
        return [target]
    return [target.with_name(f"{target.stem}-{label}{target.suffix}") for label in labels]


def write_hgrm(results: list[RunResult], phase: str, path: str | Path) -> None:
    for result, out in zip(results, hgrm_paths(path, [r.label for r in results])):
        out.write_bytes(hgrm_bytes(result.histograms.histograms[phase]))


def hgrm_bytes(histogram: HdrHistogram) -> bytes:
    buffer = io.BytesIO()
    histogram.output_percentile_distribution(buffer, _US_PER_MS)
    # hdrh scales every value to ms but the standard deviation, which it prints in µs
    stddev_ms = b"%12.*f" % (histogram.significant_figures, histogram.get_stddev() / _US_PER_MS)
    return _STDDEV.sub(lambda m: m.group(1) + stddev_ms, buffer.getvalue(), count=1)
