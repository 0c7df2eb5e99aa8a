"""The SLO gates' result lines: `SLO e2e.p99<2s: PASS (measured 1.234 ms) [completions c=4]`."""

from __future__ import annotations

from collections.abc import Sequence

from netbench.slo import GateResult


def _shown(gate: GateResult) -> str:
    value, metric = gate.value, gate.slo.metric
    if value is None:
        return "no value"
    if metric == "error_rate":
        return f"{value * 100:.2f} %"
    if metric == "rps":
        return f"{value:.1f} requests/s"
    return f"{value / 1000:.3f} ms"


def gate_lines(gates: Sequence[GateResult]) -> list[str]:
    """One line per gate and run; with several runs, each line names its run."""
    runs = {id(g.summary) for g in gates}
    lines = []
    for gate in gates:
        spec = gate.summary.spec
        load = f"rate={spec.rate:g}/s" if spec.open_loop else f"c={spec.concurrency}"
        where = f" [{spec.mode} {load}]" if len(runs) > 1 else ""
        lines.append(f"SLO {gate.slo.text}: {'PASS' if gate.passed else 'FAIL'} (measured {_shown(gate)}){where}")
    return lines
