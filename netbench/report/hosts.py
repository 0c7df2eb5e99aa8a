"""The per-host table of a run (`load_check.HostLoad`): for each client host, its workers,
requests, achieved rate and client CPU, so that one overloaded host in a spread-out run (the
Ray backend) is visible."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from netbench.load_check import HostLoad
from netbench.summary import RunSummary


def hosts_table(loads: tuple[HostLoad, ...]) -> Table:
    table = Table(title="client hosts", title_justify="left")
    table.add_column("host")
    for column in ("workers", "requests", "req/s", "client CPU % (max)"):
        table.add_column(column, justify="right")
    table.add_column("")
    for load in loads:
        flags = []
        if load.client_bound:
            flags.append("CLIENT-BOUND (see the notes)")
        if load.failed_workers:
            flags.append(f"{load.failed_workers} worker(s) failed")
        table.add_row(
            Text(load.host),  # any text: never rich markup
            str(load.workers),
            str(load.requests),
            f"{load.achieved_rps:.1f}",
            f"{load.cpu_percent:.0f} ({load.max_cpu_percent:.0f})",
            "; ".join(flags),
            style="bold red" if flags else None,
        )
    return table


def print_hosts(s: RunSummary, console: Console) -> None:
    """The table, for runs spread over hosts or run on Ray (one host says nothing new)."""
    if len(s.hosts) > 1 or s.spec.backend == "ray":
        console.print(hosts_table(s.hosts))
