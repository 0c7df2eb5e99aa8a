"""The terminal breakdown table: phases as rows, count / p50 / p95 / p99 / max (ms) as columns."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from netbench.analysis import server_side
from netbench.phases import PHASE_BY_NAME, PHASES, Phase
from netbench.report.hosts import print_hosts
from netbench.report.server_counters import counters_line
from netbench.report.units import ms, ms_signed
from netbench.results import RunResult
from netbench.load_check import client_bound_reasons, offered_load
from netbench.summary import applies

#: rows that split the latency into network and server parts, shown under a rule
SPLIT_PHASES = ("rtt", "network", "server", "ttft_after_headers")


def breakdown_table(result: RunResult) -> Table:
    spec = result.spec
    load = f"rate {spec.rate:g}/s ({spec.arrival})" if spec.open_loop else f"concurrency {spec.concurrency}"
    title = f"{spec.mode} · {result.context.get('url', spec.url)} · {load} · n {result.requests}"
    if result.interrupted:
        title += " · INTERRUPTED"
    if client_bound_reasons(result):
        title += " · CLIENT-BOUND"
    table = Table(title=title, title_justify="left")
    table.add_column("phase")
    for column in ("count", "p50 ms", "p95 ms", "p99 ms", "max ms"):
        table.add_column(column, justify="right")
    for phase in PHASES:
        if phase.name not in SPLIT_PHASES:
            _add_row(table, result, phase)
    table.add_section()
    for name in SPLIT_PHASES:
        _add_row(table, result, PHASE_BY_NAME[name])
    return table


def _add_row(table: Table, result: RunResult, phase: Phase) -> None:
    if phase.open_loop_only and not result.spec.open_loop:
        return  # lag and the uncorrected rows exist only when there is a schedule
    stats = result.stats(phase.name) if applies(phase, result) else None
    label = phase.name
    if stats is None:
        table.add_row(label, "-", "n/a", "n/a", "n/a", "n/a", style="dim")
        return
    table.add_row(label, str(stats.count), ms(stats.p50_us), ms(stats.p95_us), ms(stats.p99_us), ms(stats.max_us))


def footer_lines(result: RunResult) -> list[str]:
    counters = result.counters
    failures = ", ".join(f"{k} {v}" for k, v in result.failures.items()) or "none"
    lines = [
        f"requests: {result.ok} ok, {result.failed} failed ({failures})",
        f"connections: {counters.get('connections_new', 0)} new, {counters.get('connections_reused', 0)} reused",
        f"achieved: {result.achieved_rps:.1f} requests/s over {result.elapsed_s:.3f} s",
    ]
    load = offered_load(result)
    if load is not None:
        scheduled, sent = ("n/a" if r is None else f"{r:.1f}/s" for r in (load.scheduled_rps, load.sent_rps))
        lines.append(
            f"rate: requested {load.requested_rps:g}/s ({load.arrival}), scheduled {scheduled}, sent {sent}; "
            f"at most {load.max_in_flight} in flight; ttfb/ttft/e2e from the intended send time"
        )
    if result.tokens_per_request is not None:
        lines.append(f"tokens per request: {result.tokens_per_request:.1f}")
    if result.requests and result.ok == 0:
        lines.append("every request failed: the target did not serve this run")
    if counters.get("clamped_marks"):
        lines.append(f"clamped: {counters['clamped_marks']} requests had libcurl marks out of order (CPU starvation)")
    lines += server_side_lines(result)
    lines += [f"note: {note}" for note in result.notes]
    return lines


def server_side_lines(result: RunResult) -> list[str]:
    """The server's own /metrics beside the client's numbers, when the run scraped it."""
    side = server_side(result)
    if side is None:
        return []
    if not side["available"]:
        return [f"server-side metrics: not available ({side['reason']})"]
    lines = [f"server-side /metrics (p50/p95 {side['method']}; mean exact):"]
    for key in ("ttft", "e2e", "queue", "itl"):
        entry = side.get(key)
        if not isinstance(entry, dict):
            continue
        if entry["server_single_bucket"]:
            low, high = entry["server_p50_bucket_us"]
            spread = f"all in the {ms(low)}-{'inf' if high is None else ms(high)} ms bucket"
        else:
            p95 = ("≥ " if entry["server_p95_is_lower_bound"] else "") + ms(entry["server_p95_us"])
            spread = f"p50 {ms(entry['server_p50_us'])} p95 {p95}"
        line = f"  {key}: server {spread}, mean {ms(entry['server_mean_us'])} ms ({entry['count']} counted)"
        if "client_p50_us" in entry:
            line += f"; client p50 {ms(entry['client_p50_us'])} p95 {ms(entry['client_p95_us'])} mean {ms(entry['client_mean_us'])} ms"
            line += f"; client - server (mean) {ms_signed(entry['gap_mean_us'])} ms"
        lines.append(line)
    if isinstance(side.get("counters"), dict):
        lines.append(f"  {counters_line(side['counters'])}")
    if "note" in side:
        lines.append(f"  {side['note']}")
    return lines


def print_report(result: RunResult, console: Console | None = None) -> None:
    console = console or Console()
    console.print(breakdown_table(result))
    print_hosts(result, console)
    for line in footer_lines(result):
        console.print(line, highlight=False, markup=False)
