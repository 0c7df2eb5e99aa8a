"""`RunSummary`: every number the outputs show of one run, computed once from its `RunResult`.

`summarize` queries each phase's histogram once (`PhaseHistograms.stats`), judges the load once
(`load_check`), splits the median request once (`split`), and that is all: the table, `--json`,
the CSV row, the Markdown report, the SLO gates and `compare` only read a summary. The JSON
output is `serial.plain(summary)`; its schema is docs/json-schema.md.

`Run` pairs a result with its summary for the cross-run layers (`analysis`, `compare`, the
plots), and derives the per-request phases of its records once, when first asked: the records
supply confidence intervals and CDFs, never a point estimate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from netbench.histograms import PhaseStats
from netbench.load_check import HostLoad, OfferedLoad, client_bound_reasons, host_loads, load_notes, offered_load
from netbench.outcomes import Outcome
from netbench.phases import PHASES, Phase, derive, select
from netbench.results import RunResult
from netbench.secrets import redact_url
from netbench.serial import NOT_SERIALISED, rounded
from netbench.spec import RunSpec
from netbench.split import Split, split
from netbench.throughput import Throughput, Tokens, throughput, tokens

#: the original exercise's summary keys, first in the JSON and the CSV, in this order
HEADLINE_KEYS = ("mode", "concurrency", "n", "median_wall_s", "p95_wall_s")


@dataclass(frozen=True)
class Connections:
    new: int
    reused: int


@dataclass(frozen=True)
class RunSummary:
    mode: str
    #: closed loop: requests kept in flight; open loop: the in-flight cap (the most the client allowed)
    concurrency: int
    #: requests measured (sent and finished, failed ones included), warm-up excluded
    n: int
    median_wall_s: float | None
    p95_wall_s: float | None
    url: str
    model: str | None
    rate: float | None
    requests: int
    ok: int
    failed: int
    errors: dict[Outcome, int]
    error_rate: float = field(metadata=rounded(6))
    connections: Connections
    tokens_per_request: float | None
    #: token-carrying events per request (below tokens_per_request when events carry several)
    events_per_request: float | None
    #: requests whose usage total differed from what their events' own counts added up to
    usage_mismatches: int
    achieved_rps: float = field(metadata=rounded(2))
    #: requests, tokens and goodput per second (throughput.py)
    throughput: Throughput
    #: prompt and output tokens counted against those asked for; None for runs that are no streams
    tokens: Tokens | None
    #: open loop: requested vs sent rate, the in-flight cap; None in closed loop
    open_loop: OfferedLoad | None
    client_bound: bool
    client_bound_reasons: tuple[str, ...]
    elapsed_s: float = field(metadata=rounded(6))
    interrupted: bool
    clamped_marks: int
    #: requests whose network-vs-server split cannot be known (split_uncertainty >= server)
    split_uncertain: int
    overflow: dict[str, int]
    #: every phase of `phases.PHASES`; None where it has no value or cannot apply
    phases: dict[str, PhaseStats | None]
    #: network vs server share of the median request, TTFT beside TTFB, server-side /metrics
    split: Split | None
    #: per client host: workers, requests, achieved rate, client CPU
    hosts: tuple[HostLoad, ...]
    notes: tuple[str, ...]
    # --- what renderers need beside the JSON's keys ---
    spec: RunSpec = field(metadata=NOT_SERIALISED)
    started_at_s: float = field(default=0.0, metadata=NOT_SERIALISED)
    libcurl: str | None = field(default=None, metadata=NOT_SERIALISED)
    #: "SIGINT" / "SIGTERM" when a signal stopped the run
    stop_signal: str | None = field(default=None, metadata=NOT_SERIALISED)
    #: workers that died or raised: their share of the run is missing
    workers_failed: int = field(default=0, metadata=NOT_SERIALISED)

    def phase(self, name: str) -> PhaseStats | None:
        return self.phases.get(name)


def describe_load(spec: RunSpec) -> str:
    """How a run's load is named in titles: `concurrency 4`, `rate 20/s (poisson)`."""
    return f"rate {spec.rate:g}/s ({spec.arrival})" if spec.open_loop else f"concurrency {spec.concurrency}"


def applies(phase: Phase, spec: RunSpec) -> bool:
    """Whether a phase can exist for this run at all (ttft for a GET cannot)."""
    if phase.streaming_only and not spec.streaming:
        return False
    return not (phase.open_loop_only and not spec.open_loop)


def summarize(result: RunResult) -> RunSummary:
    """The summary of one run; the only place its histograms are queried."""
    spec, counters = result.spec, result.counters
    phases = {p.name: result.histograms.stats(p.name) if applies(p, spec) else None for p in PHASES}
    e2e = phases["e2e"]
    load = offered_load(spec, counters)
    reasons = client_bound_reasons(result.workers, load, phases["token_lag"])
    libcurl = result.context.get("libcurl")
    stop_signal = result.context.get("stop_signal")
    return RunSummary(
        mode=spec.mode,
        concurrency=spec.in_flight,
        n=result.requests,
        median_wall_s=None if e2e is None else e2e.p50_us / 1e6,
        p95_wall_s=None if e2e is None else e2e.p95_us / 1e6,
        url=redact_url(str(result.context.get("url", spec.url))),  # run files of older netbench kept it whole
        model=spec.model,
        rate=spec.rate,
        requests=result.requests,
        ok=result.ok,
        failed=result.failed,
        errors={o: counters[o.key] for o in Outcome if o is not Outcome.OK and counters.get(o.key)},
        error_rate=result.error_rate,
        connections=Connections(counters.get("connections_new", 0), counters.get("connections_reused", 0)),
        tokens_per_request=result.tokens_per_request,
        events_per_request=counters.get("events", 0) / result.ok if spec.streaming and result.ok else None,
        usage_mismatches=counters.get("usage_mismatch", 0),
        achieved_rps=result.achieved_rps,
        throughput=throughput(counters, result.ok, result.requests, result.elapsed_s, spec.streaming, phases["tpot"]),
        tokens=tokens(counters, result.ok, spec.streaming),
        open_loop=load,
        client_bound=bool(reasons),
        client_bound_reasons=tuple(reasons),
        elapsed_s=result.elapsed_s,
        interrupted=result.interrupted,
        clamped_marks=counters.get("clamped_marks", 0),
        split_uncertain=counters.get("split_uncertain", 0),
        overflow={k: v for k, v in result.histograms.overflow.items() if v},
        phases=phases,
        split=split(spec, phases, result.server_metrics, result.ok),
        hosts=tuple(host_loads(result.workers)),
        # A run file written before the load notes moved here holds them already: said once.
        notes=tuple(dict.fromkeys([*result.notes, *load_notes(load, reasons)])),
        spec=spec,
        started_at_s=result.started_at_s,
        libcurl=None if libcurl is None else str(libcurl),
        stop_signal=None if stop_signal is None else str(stop_signal),
        workers_failed=counters.get("workers_failed", 0),
    )


@dataclass
class Run:
    """A run as the cross-run layers see it: its result, its summary, its per-request phases."""

    result: RunResult
    summary: RunSummary

    @classmethod
    def of(cls, result: RunResult) -> Run:
        return cls(result, summarize(result))

    @property
    def spec(self) -> RunSpec:
        return self.result.spec

    @cached_property
    def per_request_us(self) -> dict[str, np.ndarray]:
        """Each phase's values over the successful kept records and their token events (µs,
        the phase's missing values left out); with no records, empty."""
        records = self.result.records
        ok, events = select(records, self.result.events, records["error_class"] == Outcome.OK)
        if len(ok) == 0:
            return {}
        # The one place the layers above the worker derive phases from records.
        derived = derive(ok, events, open_loop=self.spec.open_loop).values_us
        return {name: values[values >= 0] for name, values in derived.items()}

    def values_us(self, phase: str) -> np.ndarray:
        return self.per_request_us.get(phase, np.zeros(0, dtype=np.int64))
