"""PNG plots for the report (matplotlib's Agg canvas, no display), drawn from `netbench.figures`:
the phases stacked per mode and concurrency, and CDFs of TTFT and of HTTP wall time per run.
Each `*_figure` function returns the matplotlib Figure (what the tests inspect); `write_plots`
saves them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from netbench.capacity import CapacityCurve
from netbench.figures import SEGMENTS, Cdf, PhaseBars

PHASES_PNG = "network_latency_phases.png"
CDF_PNGS = {"ttft": "network_latency_ttft_cdf.png", "e2e": "network_latency_wall_cdf.png"}
CDF_CAPTIONS = {"ttft": "CDF of TTFT", "e2e": "CDF of HTTP wall time"}
_DPI = 110
#: how each stacked part is named and coloured (figures.SEGMENTS order)
SEGMENT_STYLE = {
    "connect": ("connection setup (amortised)", "#8c564b"),
    "send": ("send", "#9467bd"),
    "rtt": ("network RTT", "#1f77b4"),
    "server_wait": ("server wait (to headers)", "#ff7f0e"),
    "after_headers": ("after headers to first token", "#2ca02c"),
    "response": ("rest of the stream / body", "#bcbd22"),
}
PHASES_TITLE = "Where a request's time goes, per mode and concurrency"


def phases_figure(bars: PhaseBars) -> Figure:
    rows = max(len(bars.modes), 1)
    figure = Figure(figsize=(9, 1.2 + 1.6 * rows), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, 1, squeeze=False)[:, 0]
    for ax, (mode, mode_bars) in zip(axes, bars.modes):
        y = np.arange(len(mode_bars))
        left = np.zeros(len(mode_bars))
        for index, key in enumerate(SEGMENTS):
            name, colour = SEGMENT_STYLE[key]
            widths = np.array([bar.segments_ms[index] for bar in mode_bars])
            ax.barh(y, widths, left=left, color=colour, label=name if ax is axes[0] else None, height=0.6)
            left += widths
        ax.plot([bar.e2e_p50_ms for bar in mode_bars], y, "k|", markersize=18, label="e2e p50" if ax is axes[0] else None)
        ax.set_yticks(y, [bar.label for bar in mode_bars])
        ax.invert_yaxis()
        ax.set_title(mode, loc="left", fontsize=10)
        ax.set_xlabel("ms (p50 of each part)")
    if not bars.modes:
        axes[0].text(0.5, 0.5, "no successful requests", ha="center", va="center")
    figure.legend(loc="outside lower center", ncols=4, fontsize=8)
    figure.suptitle(PHASES_TITLE)
    return figure


def cdf_figure(cdf: Cdf) -> Figure:
    figure = Figure(figsize=(8, 4.5), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    for curve in cdf.curves:
        ax.step(curve.xs_ms, curve.shares, where="post", label=curve.label)
    ax.set_xscale("log")
    ax.set_xlabel("ms (log scale)")
    ax.set_ylabel("share of requests")
    ax.set_ylim(0, 1.01)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(cdf.title)
    return figure


def write_plots(bars: PhaseBars, cdfs: Sequence[Cdf], folder: str | Path) -> list[tuple[str, Path]]:
    """Write the PNGs into `folder` (a CDF only when some run has the phase); return
    (caption, path) of each one written."""
    target = Path(folder)
    target.mkdir(exist_ok=True)  # its parent was checked (outputs.check_folder)
    phases_figure(bars).savefig(target / PHASES_PNG)
    written = [("Phases stacked per mode and concurrency (p50)", target / PHASES_PNG)]
    for cdf in cdfs:
        if cdf.curves:
            cdf_figure(cdf).savefig(target / CDF_PNGS[cdf.phase])
            written.append((CDF_CAPTIONS[cdf.phase], target / CDF_PNGS[cdf.phase]))
    return written


CAPACITY_TITLE = "Latency and completed rate against the offered rate (netbench capacity)"


def capacity_figure(curve: CapacityCurve) -> Figure:
    """Above: each latency a gate names, per offered rate (o passed, x failed), the gates'
    bounds dashed; below: the completed rate against the offered one. The rate found is the
    dotted vertical line."""
    figure = Figure(figsize=(8, 7), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    latency, rates = figure.subplots(2, 1, sharex=True)
    offered = np.array(curve.offered_rps, dtype=float)
    passed = np.array(curve.passed, dtype=bool)
    for key, values in curve.latencies_ms:
        ys = np.array([np.nan if v is None else v for v in values], dtype=float)
        (line,) = latency.plot(offered, ys, "-", label=key)
        latency.plot(offered[passed], ys[passed], "o", color=line.get_color())
        latency.plot(offered[~passed], ys[~passed], "x", color=line.get_color(), markersize=9)
    for gate in curve.gate_lines:
        latency.axhline(gate.bound_ms, linestyle="--", color="grey", linewidth=1, label=f"gate {gate.text}")
    latency.set_ylabel("ms")
    latency.set_yscale("log")
    latency.grid(True, which="both", alpha=0.3)
    rates.plot(offered, curve.achieved_rps, "o-", label="completed")
    if offered.size:
        rates.plot([0, offered.max()], [0, offered.max()], ":", color="grey", label="completed = offered")
    if curve.saturated_rps is not None:
        rates.axhline(curve.saturated_rps, linestyle="--", color="grey", linewidth=1, label="saturated throughput")
    rates.set_xlabel("offered rate, requests/s")
    rates.set_ylabel("requests/s")
    rates.grid(True, alpha=0.3)
    for ax in (latency, rates):
        if curve.rate_rps is not None:
            ax.axvline(curve.rate_rps, linestyle=":", color="black", label="highest rate meeting the gates" if ax is latency else None)
        ax.legend(fontsize=8)
    figure.suptitle(CAPACITY_TITLE)
    return figure


def write_capacity_plot(curve: CapacityCurve, path: str | Path) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    capacity_figure(curve).savefig(target)
    return target
