"""`netbench capacity` in words: one line per step as it finishes, the table of every step (the
rate/latency curve) and the answer."""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.console import Console
from rich.table import Table

from netbench.capacity import CapacityResult, Limit, Step, StepKind
from netbench.report.units import ms

_LIMITS = {
    Limit.RESOLVED: "the passing and failing rates lie within the resolution",
    Limit.SYNCHRONOUS: "one request at a time already fails a gate",
    Limit.STEPS: "the search ran out of steps (--max-steps)",
    Limit.TIME: "the search ran out of time (--max-time)",
    Limit.CLIENT: "a step was client-bound",
    Limit.INTERRUPTED: "the search was interrupted",
}


_KIND_SHORT = {StepKind.SYNCHRONOUS: "sync", StepKind.THROUGHPUT: "saturate", StepKind.RATE: "rate"}


def _load(step: Step) -> str:
    if step.kind is StepKind.RATE:
        return f"{step.offered_rps:.4g}/s"
    return f"{step.kind.value} c={step.concurrency}"


def _gates(step: Step) -> str:
    failed = [g.gate for g in step.gates if not g.passed]
    if step.error_rate and not failed and not step.passed:
        failed.append(f"errors {100 * step.error_rate:.1f} %")
    return "PASS" if step.passed else "FAIL " + ", ".join(failed)


def capacity_lines(steps: Sequence[Step]) -> list[str]:
    """One line per step: its load, what it achieved, its latency and the gates."""
    lines = []
    for s in steps:
        latency = f"ttft p95 {ms(s.ttft_p95_us)} ms, " if s.ttft_p95_us is not None else ""
        lines.append(
            f"capacity: {_load(s)}: {s.achieved_rps:.2f} requests/s completed, {s.requests} requests, "
            f"{latency}e2e p95 {ms(s.e2e_p95_us)} ms: {_gates(s)}"
        )
    return lines


def capacity_table(found: CapacityResult) -> Table:
    """Every step, the rate/latency curve (the failing gates are in the step lines and JSON)."""
    table = Table(title="capacity: every step (rates /s, latencies p50 / p95 ms)", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), collapse_padding=True)  # fmt: skip
    for column in ("step", "offered", "completed", "n", "failed", "ttft", "e2e", "goodput", "gates"):
        table.add_column(column, justify="left" if column in ("step", "gates") else "right")
    for s in found.steps:
        table.add_row(
            _KIND_SHORT[s.kind] if s.kind is StepKind.RATE else f"{_KIND_SHORT[s.kind]} c={s.concurrency}",
            "" if s.offered_rps is None else f"{s.offered_rps:.4g}",
            f"{s.achieved_rps:.3g}",
            str(s.requests),
            f"{100 * s.error_rate:.0f} %",
            f"{ms(s.ttft_p50_us)} / {ms(s.ttft_p95_us)}" if s.ttft_p50_us is not None else "n/a",
            f"{ms(s.e2e_p50_us)} / {ms(s.e2e_p95_us)}",
            "" if s.goodput_share is None else f"{100 * s.goodput_share:.0f} %",
            "PASS" if s.passed else "FAIL",
        )
    return table


def answer(found: CapacityResult) -> str:
    gates = " and ".join(found.gates)
    if found.rate_rps is None:
        head = f"no rate meets {gates}"
    else:
        head = f"capacity: {found.rate_rps:.4g} requests/s meet {gates}"
        if found.failed_rps is not None:
            head += f"; {found.failed_rps:.4g}/s did not"
    anchors = []
    if found.synchronous_rps is not None:
        anchors.append(f"one request at a time {found.synchronous_rps:.4g}/s")
    if found.saturated_rps is not None:
        anchors.append(f"saturated throughput {found.saturated_rps:.4g}/s")
    rate_steps = sum(1 for s in found.steps if s.kind is StepKind.RATE)
    text = f"{head} ({', '.join(anchors)}; {rate_steps} rate steps, resolution {100 * found.resolution:g} %; {_LIMITS[found.limit]})"
    return text + (f". {found.note}." if found.note else ".")


def print_capacity(found: CapacityResult, console: Console | None = None) -> None:
    console = console or Console()
    console.print(capacity_table(found))
    console.print(answer(found), highlight=False, markup=False)
