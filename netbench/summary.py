"""The pure-number summary of a run that every renderer shares (no formatting here)."""

from __future__ import annotations

from netbench.analysis import split
from netbench.load_check import client_bound_reasons, offered_load
from netbench.phases import PHASES, Phase
from netbench.report.hosts import host_summary
from netbench.results import RunResult

#: the seed's summary keys, always first (DESIGN.md, "Outputs")
SEED_KEYS = ("mode", "concurrency", "n", "median_wall_s", "p95_wall_s")


def applies(phase: Phase, result: RunResult) -> bool:
    """Whether a phase can exist for this run at all (ttft for a GET cannot)."""
    if phase.streaming_only and not result.spec.streaming:
        return False
    return not (phase.open_loop_only and not result.spec.open_loop)


def phase_summary(result: RunResult) -> dict[str, dict[str, float] | None]:
    """Per phase: count and percentiles in µs; None where the phase has no value."""
    out: dict[str, dict[str, float] | None] = {}
    for phase in PHASES:
        stats = result.stats(phase.name) if applies(phase, result) else None
        out[phase.name] = None if stats is None else {
            "count": stats.count,
            "p50_us": stats.p50_us,
            "p95_us": stats.p95_us,
            "p99_us": stats.p99_us,
            "max_us": stats.max_us,
            "mean_us": round(stats.mean_us, 1),
        }
    return out


def wall_seconds(result: RunResult) -> tuple[float | None, float | None]:
    """The seed's median and p95 wall time (end to end), in seconds."""
    e2e = result.stats("e2e")
    if e2e is None:
        return None, None
    return e2e.p50_us / 1e6, e2e.p95_us / 1e6


def summarize(result: RunResult) -> dict[str, object]:
    spec = result.spec
    median_s, p95_s = wall_seconds(result)
    load = offered_load(result)
    client_bound = client_bound_reasons(result)
    return {
        "mode": spec.mode,
        "concurrency": spec.concurrency,
        "n": spec.n,
        "median_wall_s": median_s,
        "p95_wall_s": p95_s,
        "url": result.context.get("url", spec.url),
        "model": spec.model,
        "rate": spec.rate,
        "requests": result.requests,
        "ok": result.ok,
        "failed": result.failed,
        "errors": result.failures,
        "error_rate": round(result.error_rate, 6),
        "connections": {
            "new": result.counters.get("connections_new", 0),
            "reused": result.counters.get("connections_reused", 0),
        },
        "tokens_per_request": result.tokens_per_request,
        "achieved_rps": round(result.achieved_rps, 2),
        # open loop: requested vs sent rate, the in-flight cap; None in closed loop
        "open_loop": None if load is None else load.as_dict(),
        "client_bound": bool(client_bound),
        "client_bound_reasons": client_bound,
        "elapsed_s": round(result.elapsed_s, 6),
        "interrupted": result.interrupted,
        "clamped_marks": result.counters.get("clamped_marks", 0),
        "overflow": {k: v for k, v in result.histograms.overflow.items() if v},
        "phases": phase_summary(result),
        # network vs server share of the median request, TTFT beside TTFB, server-side /metrics
        "split": split(result),
        # per client host: workers, requests, achieved rate, client CPU (see report/hosts.py)
        "hosts": host_summary(result),
        "notes": list(result.notes),
    }
