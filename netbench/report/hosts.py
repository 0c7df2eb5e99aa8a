"""The per-host view of a run: for each client host, its workers, requests, achieved rate and
client CPU, so that one overloaded host in a spread-out run (the Ray backend) is visible.

A host is flagged client-bound as its workers are (`load_check.CPU_BOUND_PERCENT` of a CPU):
each worker drives its requests from one CPU, so one starved worker delays its own requests
whatever the others do. Hence the flag follows the host's busiest worker, not its mean.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from rich.console import Console
from rich.table import Table

from netbench.load_check import CPU_BOUND_PERCENT
from netbench.results import RunResult, WorkerInfo


@dataclass(frozen=True)
class HostLoad:
    host: str
    workers: int
    #: workers that returned an error instead of (or with part of) their share
    failed_workers: int
    requests: int
    #: the host's requests over its own span (first start to last finish of its workers)
    achieved_rps: float
    #: CPU time over measured time, over the host's workers (100 = each worker one busy CPU)
    cpu_percent: float
    #: the busiest worker's
    max_cpu_percent: float

    @property
    def client_bound(self) -> bool:
        return self.max_cpu_percent > CPU_BOUND_PERCENT


def host_loads(result: RunResult) -> list[HostLoad]:
    """One entry per host, in the order the hosts first appear among the workers."""
    by_host: dict[str, list[WorkerInfo]] = {}
    for w in result.workers:
        by_host.setdefault(w.host, []).append(w)
    loads = []
    for host, workers in by_host.items():
        measured = [w for w in workers if w.elapsed_s > 0]
        requests = sum(w.requests for w in workers)
        first_s = min((w.started_at_s for w in measured), default=0.0)
        span_s = max((w.started_at_s + w.elapsed_s - first_s for w in measured), default=0.0)
        elapsed_s = sum(w.elapsed_s for w in measured)
        loads.append(
            HostLoad(
                host=host,
                workers=len(workers),
                failed_workers=sum(1 for w in workers if w.error),
                requests=requests,
                achieved_rps=requests / span_s if span_s > 0 else 0.0,
                cpu_percent=100.0 * sum(w.cpu_s for w in measured) / elapsed_s if elapsed_s > 0 else 0.0,
                max_cpu_percent=max((w.cpu_percent for w in measured), default=0.0),
            )
        )
    return loads


def host_summary(result: RunResult) -> list[dict[str, object]]:
    """The JSON summary's "hosts" list."""
    return [
        asdict(load)
        | {
            "achieved_rps": round(load.achieved_rps, 2),
            "cpu_percent": round(load.cpu_percent, 1),
            "max_cpu_percent": round(load.max_cpu_percent, 1),
            "client_bound": load.client_bound,
        }
        for load in host_loads(result)
    ]


def hosts_table(loads: list[HostLoad]) -> Table:
    table = Table(title="client hosts", title_justify="left")
    table.add_column("host")
    for column in ("workers", "requests", "req/s", "client CPU % (max)"):
        table.add_column(column, justify="right")
    table.add_column("")
    for load in loads:
        flags = []
        if load.client_bound:
            flags.append(f"CLIENT-BOUND (> {CPU_BOUND_PERCENT:.0f} % of a CPU)")
        if load.failed_workers:
            flags.append(f"{load.failed_workers} worker(s) failed")
        table.add_row(
            load.host,
            str(load.workers),
            str(load.requests),
            f"{load.achieved_rps:.1f}",
            f"{load.cpu_percent:.0f} ({load.max_cpu_percent:.0f})",
            "; ".join(flags),
            style="bold red" if flags else None,
        )
    return table


def print_hosts(result: RunResult, console: Console) -> None:
    """The table, for runs spread over hosts or run on Ray (one host says nothing new)."""
    loads = host_loads(result)
    if len(loads) > 1 or result.spec.backend == "ray":
        console.print(hosts_table(loads))
