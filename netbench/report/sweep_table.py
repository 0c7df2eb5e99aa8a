"""The side-by-side table of a sweep: one row per run, the headline columns and the key phases."""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.console import Console
from rich.table import Table

from netbench.report.units import ms
from netbench.summary import RunSummary

_KEY_PHASES = ("ttfb", "ttft", "network", "server")


def sweep_table(summaries: Sequence[RunSummary]) -> Table:
    # no vertical rules: the eleven columns fit an 80-column terminal
    table = Table(title="sweep: p50 unless marked, ms (C = concurrency)", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), collapse_padding=True)
    for column in ("mode", "C", "n", "fail", "e2e", "e2e p95", *_KEY_PHASES, "req/s"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    for s in summaries:
        e2e = s.phase("e2e")
        row = [s.mode, str(s.concurrency), str(s.n), str(s.failed), ms(e2e.p50_us if e2e else None), ms(e2e.p95_us if e2e else None)]
        for phase in _KEY_PHASES:
            stats = s.phase(phase)
            row.append(ms(stats.p50_us if stats else None))
        row.append(f"{s.achieved_rps:.0f}")
        table.add_row(*row)
    return table


def print_sweep(summaries: Sequence[RunSummary], console: Console | None = None) -> None:
    (console or Console()).print(sweep_table(summaries))
