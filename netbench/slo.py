"""SLO gates: `ttft.p95<200ms`, `e2e.p99<2s`, `error_rate<1%`, `rps>=100`, parsed and evaluated
against run summaries (the same numbers every output shows), and, for goodput, against each
request: a request is good when it succeeded and each per-request phase a gate names meets
the gate's bound on the request's own value (`ttft.p95<200ms`: its TTFT under 200 ms), as
vLLM's `--goodput` counts it. Per-token phases (itl, token_lag) have no value per request and
do not count. Wording the results is `report/gates.py`'s job."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from netbench.errors import InputError
from netbench.phases import PHASE_BY_NAME, PHASE_NAMES
from netbench.spec import SpecError, parse_duration_s
from netbench.summary import RunSummary

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}
#: a gate's statistic -> the PhaseStats field it reads
_STATISTICS = {s: f"{s}_us" for s in ("p50", "p90", "p95", "p99", "p999", "max", "mean")}
_PATTERN = re.compile(r"^\s*([a-z0-9_]+)(?:\.([a-z0-9]+))?\s*(<=|>=|<|>)\s*(\S+)\s*$")


@dataclass(frozen=True)
class Slo:
    text: str
    metric: str  # a phase name, "error_rate" or "rps"
    statistic: str | None  # for phases
    compare: Callable[[float, float], bool]
    bound: float  # µs for phases, a fraction for error_rate, requests/s for rps


@dataclass(frozen=True)
class GateResult:
    """One gate against one run: the value measured (None: the phase has no value) and whether
    it passed (a gate on a phase with no value fails: nothing was shown)."""

    slo: Slo
    summary: RunSummary
    value: float | None
    passed: bool


def parse_slo(text: str) -> Slo:
    match = _PATTERN.match(text)
    if not match:
        raise InputError("slo", text, "expected e.g. 'ttft.p95<200ms', 'error_rate<1%' or 'rps>=100'")
    metric, statistic, op, value = match.groups()
    if metric == "error_rate":
        bound = _number(text, value[:-1]) / 100 if value.endswith("%") else _number(text, value)
    elif metric == "rps":
        bound = _number(text, value)
    elif metric in PHASE_NAMES:
        if statistic not in _STATISTICS:
            raise InputError("slo", text, f"a phase needs one of .{', .'.join(_STATISTICS)}")
        bound = _duration_us(text, value)
    else:
        raise InputError("slo", text, f"unknown metric {metric!r} (a phase, error_rate or rps)")
    if metric in ("error_rate", "rps") and statistic:
        raise InputError("slo", text, f"{metric} takes no statistic")
    return Slo(text.strip(), metric, statistic, _OPERATORS[op], bound)


def _duration_us(text: str, value: str) -> float:
    # A bare number is refused: k6 reads `p(95)<200` as ms, a duration elsewhere as seconds.
    if not value.rstrip("0123456789.").strip():
        raise InputError("slo", text, f"give the bound a unit, e.g. {value}ms or {value}s")
    try:
        return parse_duration_s(value) * 1e6
    except SpecError as error:
        raise InputError("slo", text, str(error)) from None


def _number(text: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise InputError("slo", text, f"{value!r} is not a number") from None


def measured_value(slo: Slo, summary: RunSummary) -> float | None:
    """The run's value of the SLO's metric (µs for phases); None when the phase has no value."""
    if slo.metric == "error_rate":
        return summary.error_rate
    if slo.metric == "rps":
        return summary.achieved_rps
    stats = summary.phase(slo.metric)
    if stats is None:
        return None
    assert slo.statistic is not None
    return float(getattr(stats, _STATISTICS[slo.statistic]))


def evaluate(slos: list[Slo], summaries: list[RunSummary]) -> list[GateResult]:
    """Each gate against each run."""
    results = []
    for summary in summaries:
        for slo in slos:
            value = measured_value(slo, summary)
            results.append(GateResult(slo, summary, value, value is not None and slo.compare(value, slo.bound)))
    return results


def request_gates(texts: Sequence[str]) -> list[Slo]:
    """The gates of `texts` that a single request can meet: those on per-request phases."""
    gates = [parse_slo(text) for text in texts]
    return [g for g in gates if g.metric in PHASE_BY_NAME and not PHASE_BY_NAME[g.metric].per_token]


def meets_gates(gates: Sequence[Slo], values_us: Mapping[str, np.ndarray], count: int) -> np.ndarray:
    """Which of `count` successful requests meet every gate (a phase the request lacks fails it)."""
    good = np.ones(count, dtype=bool)
    for gate in gates:
        values = values_us[gate.metric]
        good &= (values >= 0) & gate.compare(values, gate.bound)
    return good
