"""The terminal breakdown table: phases as rows, count / p50 / p95 / p99 / max (ms) as columns."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from netbench.phases import PHASE_BY_NAME, PHASES, Phase
from netbench.report.hosts import print_hosts
from netbench.report.run_words import run_lines
from netbench.report.server_counters import counters_line
from netbench.report.units import ms, ms_signed
from netbench.report.workload import throughput_lines, token_lines
from netbench.summary import RunSummary, describe_load

#: rows that split the latency into network and server parts, shown under a rule
SPLIT_PHASES = ("rtt", "network", "server", "ttft_after_headers")


def breakdown_table(s: RunSummary) -> Table:
    title = f"{s.mode} · {s.url} · {describe_load(s.spec)} · n {s.requests}"
    if s.interrupted:
        title += " · INTERRUPTED"
    if s.client_bound:
        title += " · CLIENT-BOUND"
    table = Table(title=Text(title), title_justify="left")  # a URL or a model id is any text, never markup
    table.add_column("phase")
    for column in ("count", "p50 ms", "p95 ms", "p99 ms", "max ms"):
        table.add_column(column, justify="right")
    for phase in PHASES:
        if phase.name not in SPLIT_PHASES:
            _add_row(table, s, phase)
    table.add_section()
    for name in SPLIT_PHASES:
        _add_row(table, s, PHASE_BY_NAME[name])
    return table


def _add_row(table: Table, s: RunSummary, phase: Phase) -> None:
    if phase.open_loop_only and not s.spec.open_loop:
        return  # lag and the uncorrected rows exist only when there is a schedule
    stats = s.phase(phase.name)
    if stats is None:
        table.add_row(phase.name, "-", "n/a", "n/a", "n/a", "n/a", style="dim")
        return
    table.add_row(phase.name, str(stats.count), ms(stats.p50_us), ms(stats.p95_us), ms(stats.p99_us), ms(stats.max_us))


def footer_lines(s: RunSummary) -> list[str]:
    failures = ", ".join(f"{outcome.key} {count}" for outcome, count in s.errors.items()) or "none"
    lines = [
        f"requests: {s.ok} ok, {s.failed} failed ({failures})",
        f"connections: {s.connections.new} new, {s.connections.reused} reused",
        f"achieved: {s.achieved_rps:.1f} requests/s over {s.elapsed_s:.3f} s",
    ]
    load = s.open_loop
    if load is not None:
        scheduled, sent = ("n/a" if r is None else f"{r:.1f}/s" for r in (load.scheduled_rps, load.sent_rps))
        lines.append(
            f"rate: requested {load.requested_rps:g}/s ({load.arrival}), scheduled {scheduled}, sent {sent}; "
            f"at most {load.max_in_flight} in flight; ttfb/ttft/e2e from the intended send time"
        )
    lines += token_lines(s) + throughput_lines(s) + run_lines(s)
    if s.requests and s.ok == 0:
        lines.append("every request failed: the target did not serve this run")
    if s.clamped_marks:
        lines.append(f"clamped: {s.clamped_marks} requests had libcurl marks out of order (CPU starvation)")
    lines += server_side_lines(s)
    lines += [f"note: {note}" for note in s.notes]
    return lines


def server_side_lines(s: RunSummary) -> list[str]:
    """The server's own /metrics beside the client's numbers, when the run scraped it."""
    side = None if s.split is None else s.split.server_side
    if side is None:
        return []
    if not side.available:
        return [f"server-side metrics: not available ({side.reason})"]
    lines = [f"server-side /metrics (p50/p95 {side.method}; mean exact):"]
    for key in ("ttft", "e2e", "queue", "itl"):
        entry = side.metrics.get(key)
        if entry is None:
            continue
        if entry.server_single_bucket:
            low, high = entry.server_p50_bucket_us
            spread = f"all in the {ms(low)}-{'inf' if high is None else ms(high)} ms bucket"
        else:
            p95 = ("≥ " if entry.server_p95_is_lower_bound else "") + ms(entry.server_p95_us)
            spread = f"p50 {ms(entry.server_p50_us)} p95 {p95}"
        line = f"  {key}: server {spread}, mean {ms(entry.server_mean_us)} ms ({entry.count} counted)"
        client = entry.client
        if client is not None:
            line += f"; client p50 {ms(client.client_p50_us)} p95 {ms(client.client_p95_us)} mean {ms(client.client_mean_us)} ms"
            line += f"; client - server (mean) {ms_signed(client.gap_mean_us)} ms"
        lines.append(line)
    if side.counters is not None:
        lines.append(f"  {counters_line(side.counters)}")
    if side.note is not None:
        lines.append(f"  {side.note}")
    return lines


def print_report(s: RunSummary, console: Console | None = None) -> None:
    console = console or Console()
    console.print(breakdown_table(s))
    print_hosts(s, console)
    for line in footer_lines(s):
        console.print(line, highlight=False, markup=False)
