"""`--hgrm PHASE FILE`: a phase's HDR percentile spectrum in wrk2's .hgrm format (milliseconds)."""

from __future__ import annotations

from pathlib import Path

from netbench.results import RunResult

_US_PER_MS = 1000.0


def write_hgrm(results: list[RunResult], phase: str, path: str | Path) -> None:
    """One run: `path`. A sweep: one file per run, named `<stem>-<mode>-c<C><suffix>`."""
    target = Path(path)
    for result in results:
        out = target
        if len(results) > 1:
            out = target.with_name(f"{target.stem}-{result.spec.mode}-c{result.spec.concurrency}{target.suffix}")
        with open(out, "wb") as handle:  # hdrh writes bytes
            result.histograms.histograms[phase].output_percentile_distribution(handle, _US_PER_MS)
