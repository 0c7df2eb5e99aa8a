"""The terminal table of `netbench compare`: per phase, p50/p95/p99 of both runs, the
difference, its bootstrap interval and whether it is significant."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table

from netbench.compare import Change, Comparison, QuantileChange
from netbench.report.units import ms, ms_signed


def compare_table(comparison: Comparison) -> Table:
    c = comparison
    title = f"compare base -> new · {c.method}"
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 0))
    table.add_column("phase", no_wrap=True)
    table.add_column("", no_wrap=True)
    for column in ("base ms", "new ms", "diff ms", "%", f"{c.confidence:.0%} CI ms"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("signif.", no_wrap=True)
    for phase in c.phases:
        for row, change in enumerate(phase.changes):
            table.add_row(
                phase.phase if row == 0 else "", change.statistic, ms(change.base_us), ms(change.new_us), *_difference(change),
                end_section=row == len(phase.changes) - 1,
            )  # fmt: skip
    return table


def _difference(change: QuantileChange) -> tuple[str, ...]:
    percent = None if change.diff_ratio is None else change.diff_ratio * 100
    if percent is None:
        ratio = "n/a"
    else:  # the ms column holds the size of a change; past 999 % the percentage says little more
        ratio = ">+999" if percent > 999 else f"{percent:+.0f}" if abs(percent) >= 100 else f"{percent:+.1f}"
    if change.change is None:
        return ms_signed(change.diff_us), ratio, "-", "-"
    interval = f"{ms_signed(change.ci_low_us)}..{ms_signed(change.ci_high_us)}"
    verdict = "no" if change.change is Change.NONE else f"[bold]{change.change.value}[/bold]"
    return ms_signed(change.diff_us), ratio, interval, verdict


def header_lines(comparison: Comparison) -> list[str]:
    lines = []
    for side, label, s in (
        ("base", comparison.base_label, comparison.base_summary),
        ("new", comparison.new_label, comparison.new_summary),
    ):
        lines.append(
            f"{side} = {label}: {s.mode} · {s.url} · {s.load} · {s.requests} requests, "
            f"{s.error_rate * 100:.2f} % failed, {s.achieved_rps} requests/s, {s.records} records"
        )
    return lines


def footnotes(comparison: Comparison) -> list[str]:
    """Why the '-' rows were not tested (each reason once), then the comparison's notes."""
    reasons = dict.fromkeys(q.untested for p in comparison.phases for q in p.changes if q.untested)
    lines = [f"not tested (-): {'; '.join(reasons)}"] if reasons else []
    return lines + [f"note: {note}" for note in comparison.notes]


def print_comparison(comparison: Comparison, console: Console | None = None) -> None:
    console = console or Console()
    for line in header_lines(comparison):
        console.print(line, highlight=False, markup=False)
    console.print(compare_table(comparison))
    for line in footnotes(comparison):
        console.print(line, highlight=False, markup=False)
