"""The report's plots, checked on the figures themselves: what each bar and curve holds (the
summaries' numbers), titles, axis labels and legends, and which PNGs are written."""

from __future__ import annotations

import numpy as np
import pytest

from netbench.analysis import request_parts
from netbench.figures import SEGMENTS, cdf, cdfs, phase_bars
from netbench.histograms import BucketView
from netbench.report.plot import PHASES_TITLE, SEGMENT_STYLE, cdf_figure, phases_figure, write_plots
from netbench.summary import Run
from tests.synthetic_runs import sweep


@pytest.fixture(scope="module")
def runs() -> list[Run]:
    return [Run.of(r) for r in sweep()]


def test_the_bars_stack_each_runs_median_parts(runs):
    bars = phase_bars(runs)
    assert [mode for mode, _ in bars.modes] == ["health", "completions"]
    for mode, mode_bars in bars.modes:
        assert [b.label for b in mode_bars] == ["c=1", "c=4", "c=8"]
        for bar, run in zip(mode_bars, [r for r in runs if r.spec.mode == mode]):
            parts = {c.key: c.us / 1000 for c in request_parts(run.summary)}
            assert bar.segments_ms == tuple(parts.get(key, 0.0) for key in SEGMENTS)
            assert bar.e2e_p50_ms == run.summary.phase("e2e").p50_us / 1000
    health, completions = (dict(zip(SEGMENTS, b.segments_ms)) for b in (bars.modes[0][1][0], bars.modes[1][1][0]))
    assert health["after_headers"] == 0 and completions["after_headers"] > 0  # only streams wait for a token


def test_the_phases_figure_draws_the_bars(runs):
    bars = phase_bars(runs)
    figure = phases_figure(bars)
    assert figure._suptitle.get_text() == PHASES_TITLE
    axes = figure.axes
    assert [ax.get_title(loc="left") for ax in axes] == ["health", "completions"]
    assert all(ax.get_xlabel() == "ms (p50 of each part)" for ax in axes)
    for ax, (_, mode_bars) in zip(axes, bars.modes):
        assert [t.get_text() for t in ax.get_yticklabels()] == [b.label for b in mode_bars]
        # one rectangle per (segment, run), segment by segment, each as wide as its part
        widths = np.array([p.get_width() for p in ax.patches]).reshape(len(SEGMENTS), len(mode_bars))
        np.testing.assert_allclose(widths, np.array([b.segments_ms for b in mode_bars]).T)
        (marker,) = ax.lines
        np.testing.assert_allclose(marker.get_xdata(), [b.e2e_p50_ms for b in mode_bars])
    legend = [t.get_text() for t in figure.legends[0].get_texts()]
    assert sorted(legend) == sorted([SEGMENT_STYLE[key][0] for key in SEGMENTS] + ["e2e p50"])


def test_cdfs_come_from_the_records(runs):
    ttft = cdf(runs, "ttft", "CDF of time to first token")
    assert [c.label for c in ttft.curves] == ["completions c=1", "completions c=4", "completions c=8"]
    first = ttft.curves[0]
    values = next(r for r in runs if r.spec.mode == "completions").values_us("ttft")
    np.testing.assert_array_equal(first.xs_ms, np.sort(values) / 1000)
    np.testing.assert_array_equal(first.shares, np.arange(1, values.size + 1) / values.size)
    figure = cdf_figure(ttft)
    (ax,) = figure.axes
    assert (ax.get_title(), ax.get_xlabel(), ax.get_ylabel(), ax.get_xscale()) == (
        "CDF of time to first token", "ms (log scale)", "share of requests", "log")  # fmt: skip
    assert [line.get_label() for line in ax.lines] == [c.label for c in ttft.curves]
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), first.xs_ms)


def test_without_records_a_cdf_is_the_histograms_buckets():
    runs = [Run.of(r) for r in sweep(keep_records=False, levels=(1,))]
    (curve,) = cdf(runs, "ttft", "t").curves
    view = BucketView.of(runs[1].result.histograms.histograms["ttft"])
    np.testing.assert_array_equal(curve.xs_ms, view.highest_us / 1000)
    assert curve.shares[-1] == 1.0 and np.all(np.diff(curve.shares) > 0)


def test_write_plots_writes_a_cdf_only_where_a_run_has_the_phase(tmp_path):
    health_only = [Run.of(r) for r in sweep(modes=("health",), levels=(1,))]
    written = write_plots(phase_bars(health_only), cdfs(health_only), tmp_path)
    assert [(caption, path.name) for caption, path in written] == [
        ("Phases stacked per mode and concurrency (p50)", "network_latency_phases.png"),
        ("CDF of HTTP wall time", "network_latency_wall_cdf.png"),
    ]
    assert all(path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") for _, path in written)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["network_latency_phases.png", "network_latency_wall_cdf.png"]
