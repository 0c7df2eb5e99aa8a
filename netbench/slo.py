"""SLO gates: `ttft.p95<200ms`, `e2e.p99<2s`, `error_rate<1%`, `rps>=100`, parsed and evaluated."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

from netbench.histograms import mean_us, percentiles_us
from netbench.phases import PHASE_NAMES
from netbench.results import RunResult
from netbench.spec import SpecError, parse_duration_s

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}
_STATISTICS = ("p50", "p90", "p95", "p99", "p999", "max", "mean")
_PATTERN = re.compile(r"^\s*([a-z0-9_]+)(?:\.([a-z0-9]+))?\s*(<=|>=|<|>)\s*(\S+)\s*$")


@dataclass(frozen=True)
class Slo:
    text: str
    metric: str  # a phase name, "error_rate" or "rps"
    statistic: str | None  # for phases
    compare: Callable[[float, float], bool]
    bound: float  # µs for phases, a fraction for error_rate, requests/s for rps


@dataclass(frozen=True)
class Verdict:
    slo: Slo
    passed: bool
    line: str


def parse_slo(text: str) -> Slo:
    match = _PATTERN.match(text)
    if not match:
        raise SpecError(f"--slo {text!r}: expected e.g. 'ttft.p95<200ms', 'error_rate<1%' or 'rps>=100'")
    metric, statistic, op, value = match.groups()
    if metric == "error_rate":
        bound = _number(text, value[:-1]) / 100 if value.endswith("%") else _number(text, value)
    elif metric == "rps":
        bound = _number(text, value)
    elif metric in PHASE_NAMES:
        if statistic not in _STATISTICS:
            raise SpecError(f"--slo {text!r}: a phase needs one of .{', .'.join(_STATISTICS)}")
        bound = _duration_us(text, value)
    else:
        raise SpecError(f"--slo {text!r}: unknown metric {metric!r} (a phase, error_rate or rps)")
    if metric in ("error_rate", "rps") and statistic:
        raise SpecError(f"--slo {text!r}: {metric} takes no statistic")
    return Slo(text.strip(), metric, statistic, _OPERATORS[op], bound)


def _duration_us(text: str, value: str) -> float:
    # A bare number is refused: k6 reads `p(95)<200` as ms, a duration elsewhere as seconds.
    if not value.rstrip("0123456789.").strip():
        raise SpecError(f"--slo {text!r}: give the bound a unit, e.g. {value}ms or {value}s")
    try:
        return parse_duration_s(value) * 1e6
    except SpecError as error:
        raise SpecError(f"--slo {text!r}: {error}") from None


def _number(text: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise SpecError(f"--slo {text!r}: {value!r} is not a number") from None


def measured_value(slo: Slo, result: RunResult) -> float | None:
    """The run's value of the SLO's metric (µs for phases); None when the phase has no value."""
    if slo.metric == "error_rate":
        return result.error_rate
    if slo.metric == "rps":
        return result.achieved_rps
    histogram = result.histograms.histograms[slo.metric]
    if histogram.total_count == 0:
        return None
    if slo.statistic == "max":
        return float(histogram.get_max_value())
    if slo.statistic == "mean":
        return mean_us(histogram)
    assert slo.statistic is not None
    percentile = 99.9 if slo.statistic == "p999" else float(slo.statistic[1:])
    return float(percentiles_us(histogram, (percentile,))[0])


def _show(slo: Slo, value: float) -> str:
    if slo.metric == "error_rate":
        return f"{value * 100:.2f} %"
    if slo.metric == "rps":
        return f"{value:.1f} requests/s"
    return f"{value / 1000:.3f} ms"


def evaluate(slos: list[Slo], results: list[RunResult]) -> list[Verdict]:
    """Each gate against each run; a phase with no value fails its gate (nothing was shown)."""
    verdicts = []
    for result in results:
        spec = result.spec
        load = f"rate={spec.rate:g}/s" if spec.open_loop else f"c={spec.concurrency}"
        where = f"{spec.mode} {load}" if len(results) > 1 else ""
        for slo in slos:
            value = measured_value(slo, result)
            passed = value is not None and slo.compare(value, slo.bound)
            shown = "no value" if value is None else _show(slo, value)
            line = f"SLO {slo.text}: {'PASS' if passed else 'FAIL'} (measured {shown})" + (f" [{where}]" if where else "")
            verdicts.append(Verdict(slo, passed, line))
    return verdicts
