"""PNG plots for the report (matplotlib's Agg canvas, no display): the phases stacked per mode and
concurrency, and CDFs of TTFT and of HTTP wall time per run.

CDFs come from the per-request records; a run file without records falls back to its HDR
histogram, walked with the percentile iterator (exact counts at each recorded value).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from netbench.analysis import per_request_us, sorted_runs
from netbench.results import RunResult

PHASES_PNG = "network_latency_phases.png"
TTFT_CDF_PNG = "network_latency_ttft_cdf.png"
WALL_CDF_PNG = "network_latency_wall_cdf.png"
_DPI = 110
#: the stacked parts of one request, in order, and their colours
_SEGMENTS = (
    ("connection setup (amortised)", "#8c564b"),
    ("send", "#9467bd"),
    ("network RTT", "#1f77b4"),
    ("server wait (to headers)", "#ff7f0e"),
    ("after headers to first token", "#2ca02c"),
    ("rest of the stream / body", "#bcbd22"),
)


def _p50_ms(result: RunResult, phase: str) -> float:
    stats = result.stats(phase)
    return 0.0 if stats is None else stats.p50_us / 1000


def segments_ms(result: RunResult) -> list[float]:
    """The p50 of each stacked part, in ms (medians: the stack need not add up to e2e exactly)."""
    ok = result.ok or 1
    setup = sum(s.mean_us * s.count / ok for s in (result.stats(p) for p in ("dns", "connect", "tls")) if s) / 1000
    e2e, ttfb = _p50_ms(result, "e2e"), _p50_ms(result, "ttfb")
    if result.spec.streaming and result.stats("ttft") is not None:
        after_headers = _p50_ms(result, "ttft_after_headers")
        rest = max(e2e - _p50_ms(result, "ttft"), 0.0)
    else:
        after_headers, rest = 0.0, max(e2e - ttfb, 0.0)
    return [setup, _p50_ms(result, "send"), _p50_ms(result, "rtt"), _p50_ms(result, "server"), after_headers, rest]


def _label(result: RunResult) -> str:
    spec = result.spec
    return f"{spec.rate:g}/s" if spec.open_loop else f"c={spec.concurrency}"


def plot_phases(results: Sequence[RunResult], path: Path) -> None:
    runs = [r for r in sorted_runs(results) if r.stats("e2e") is not None]
    modes = list(dict.fromkeys(r.spec.mode for r in runs))
    figure = Figure(figsize=(9, 1.2 + 1.6 * max(len(modes), 1)), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(max(len(modes), 1), 1, squeeze=False)[:, 0]
    for ax, mode in zip(axes, modes):
        mode_runs = [r for r in runs if r.spec.mode == mode]
        y = np.arange(len(mode_runs))
        left = np.zeros(len(mode_runs))
        for index, (name, colour) in enumerate(_SEGMENTS):
            widths = np.array([segments_ms(r)[index] for r in mode_runs])
            ax.barh(y, widths, left=left, color=colour, label=name if ax is axes[0] else None, height=0.6)
            left += widths
        e2e = [_p50_ms(r, "e2e") for r in mode_runs]
        ax.plot(e2e, y, "k|", markersize=18, label="e2e p50" if ax is axes[0] else None)
        ax.set_yticks(y, [_label(r) for r in mode_runs])
        ax.invert_yaxis()
        ax.set_title(mode, loc="left", fontsize=10)
        ax.set_xlabel("ms (p50 of each part)")
    if not modes:
        axes[0].text(0.5, 0.5, "no successful requests", ha="center", va="center")
    figure.legend(loc="outside lower center", ncols=4, fontsize=8)
    figure.suptitle("Where a request's time goes, per mode and concurrency")
    figure.savefig(path)


def cdf_points(result: RunResult, phase: str) -> tuple[np.ndarray, np.ndarray]:
    """(values in ms, cumulative share) from the records, else from the histogram."""
    values = per_request_us(result, phase)
    if values.size:
        ordered = np.sort(values) / 1000
        return ordered, np.arange(1, ordered.size + 1) / ordered.size
    histogram = result.histograms.histograms[phase]
    total = histogram.get_total_count()
    if not total:
        return np.zeros(0), np.zeros(0)
    points = [(item.value_iterated_to, item.total_count_to_this_value) for item in histogram.get_percentile_iterator(5)]
    xs = np.array([p[0] for p in points], dtype=np.float64) / 1000
    return xs, np.array([p[1] for p in points], dtype=np.float64) / total


def plot_cdf(results: Sequence[RunResult], phase: str, title: str, path: Path) -> bool:
    """One CDF line per run that has the phase; False (nothing written) when none has it."""
    curves = [(r, *cdf_points(r, phase)) for r in sorted_runs(results)]
    curves = [(r, xs, ys) for r, xs, ys in curves if xs.size]
    if not curves:
        return False
    figure = Figure(figsize=(8, 4.5), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    for result, xs, ys in curves:
        ax.step(xs, ys, where="post", label=f"{result.spec.mode} {_label(result)}")
    ax.set_xscale("log")
    ax.set_xlabel("ms (log scale)")
    ax.set_ylabel("share of requests")
    ax.set_ylim(0, 1.01)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    figure.savefig(path)
    return True


def write_plots(results: Sequence[RunResult], folder: str | Path) -> list[tuple[str, Path]]:
    """Write the PNGs into `folder`; return (caption, path) of each one written."""
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    plot_phases(results, target / PHASES_PNG)
    written.append(("Phases stacked per mode and concurrency (p50)", target / PHASES_PNG))
    if plot_cdf(results, "ttft", "CDF of time to first token", target / TTFT_CDF_PNG):
        written.append(("CDF of TTFT", target / TTFT_CDF_PNG))
    if plot_cdf(results, "e2e", "CDF of HTTP wall time (end to end)", target / WALL_CDF_PNG):
        written.append(("CDF of HTTP wall time", target / WALL_CDF_PNG))
    return written
