"""One run's answer in numbers: the network vs server share of its median request, TTFT beside
TTFB for streams, and the server's own /metrics percentiles beside the client's (the gap is the
network + HTTP + framework overhead). Built once by `summary.summarize` from the run's phase
statistics; no formatting here (the renderers in `report/` word it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from netbench.histograms import PhaseStats
from netbench.serial import FLATTEN, OMIT_NONE, rounded
from netbench.server_metrics import INTERPOLATION_NOTE, ServerPercentiles, counter_summary, percentiles
from netbench.spec import RunSpec

Phases = Mapping[str, PhaseStats | None]
#: the server-side histograms with a client phase to compare against
_CLIENT_COUNTERPARTS = ("ttft", "e2e", "itl")


@dataclass(frozen=True)
class StreamSplit:
    ttfb_p50_us: int | None
    ttfb_p95_us: int | None
    ttft_p50_us: int | None
    ttft_p95_us: int | None
    ttft_after_headers_p50_us: int | None
    ttft_after_headers_p95_us: int | None
    network_share_of_ttft: float | None
    #: ttft_after_headers p50 / ttft p50: the part of TTFT after the server answered
    after_headers_share_of_ttft: float | None


@dataclass(frozen=True)
class ClientGap:
    """The client's view of what a server histogram measured, and client - server."""

    client_p50_us: int
    client_p95_us: int
    client_mean_us: float
    gap_p50_us: float
    #: None when the server's p95 lies in its +Inf bucket (a lower bound only)
    gap_p95_us: float | None
    #: _sum / _count is exact: the mean gap carries no bucket interpolation
    gap_mean_us: float


@dataclass(frozen=True)
class ServerEntry:
    """One server-side histogram (µs), p50/p95 interpolated within buckets, mean exact."""

    metric: str
    count: int
    server_p50_us: float
    #: [low, high] of the bucket p50 lies in (the resolution); None for an infinite bound
    server_p50_bucket_us: tuple[float | None, float | None]
    server_p95_us: float
    server_p95_bucket_us: tuple[float | None, float | None]
    server_p95_is_lower_bound: bool
    #: every counted request fell in one bucket: p50/p95 only say "in this bucket"
    server_single_bucket: bool
    server_mean_us: float
    client: ClientGap | None = field(default=None, metadata={**FLATTEN, **OMIT_NONE})


@dataclass(frozen=True)
class ServerSide:
    available: bool
    reason: str | None = field(default=None, metadata=OMIT_NONE)
    method: str | None = field(default=None, metadata=OMIT_NONE)
    #: by key: "ttft", "e2e", "queue", "itl", ... (the histograms that counted this run's requests)
    metrics: dict[str, ServerEntry] = field(default_factory=dict, metadata=FLATTEN)
    #: llama.cpp: its counters' differences and the means from them (server_metrics.counter_summary)
    counters: dict[str, object] | None = field(default=None, metadata=OMIT_NONE)
    note: str | None = field(default=None, metadata=OMIT_NONE)


@dataclass(frozen=True)
class ServerTimingJoin:
    """The server's own per-request timings (llama.cpp's `timings`, TGI's headers, Server-Timing)
    beside the client's, over the requests that carried them (p50/p95 µs)."""

    joined: int
    join_rate: float = field(metadata=rounded(4))
    server_prompt_p50_us: int | None
    ttft_beyond_server_p50_us: int | None
    ttft_beyond_server_p95_us: int | None
    server_total_p50_us: int | None
    e2e_beyond_server_p50_us: int | None
    e2e_beyond_server_p95_us: int | None
    #: the server's prompt time over the client's TTFT, at the medians
    server_share_of_ttft: float | None


@dataclass(frozen=True)
class Split:
    basis: str
    e2e_p50_us: int
    rtt_p50_us: int | None
    network_p50_us: int | None
    server_p50_us: int | None
    after_headers_p50_us: int | None
    network_share: float | None
    server_share: float | None
    after_headers_share: float | None
    stream: StreamSplit | None = field(default=None, metadata=OMIT_NONE)
    #: None when the run has no scrape at all (an old run file)
    server_side: ServerSide | None = None
    #: None when no request carried the server's own timings
    server_timings: ServerTimingJoin | None = field(default=None, metadata=OMIT_NONE)


def _p50(phases: Phases, name: str) -> int | None:
    stats = phases.get(name)
    return None if stats is None else stats.p50_us


def _p95(phases: Phases, name: str) -> int | None:
    stats = phases.get(name)
    return None if stats is None else stats.p95_us


def share(part: float | None, whole: float | None) -> float | None:
    return None if part is None or not whole else round(part / whole, 6)


def split(spec: RunSpec, phases: Phases, server_metrics: dict[str, object] | None, ok: int) -> Split | None:
    """Network vs server share of the median request (p50 of each phase); None without e2e values."""
    e2e = _p50(phases, "e2e")
    if e2e is None:
        return None
    network, server, ttfb = (_p50(phases, p) for p in ("network", "server", "ttfb"))
    after_headers = None if ttfb is None else max(e2e - ttfb, 0)
    stream = None
    if spec.streaming:
        ttft, after = _p50(phases, "ttft"), _p50(phases, "ttft_after_headers")
        stream = StreamSplit(
            ttfb_p50_us=ttfb,
            ttfb_p95_us=_p95(phases, "ttfb"),
            ttft_p50_us=ttft,
            ttft_p95_us=_p95(phases, "ttft"),
            ttft_after_headers_p50_us=after,
            ttft_after_headers_p95_us=_p95(phases, "ttft_after_headers"),
            network_share_of_ttft=share(network, ttft),
            after_headers_share_of_ttft=share(after, ttft),
        )
    return Split(
        basis="p50 of each phase over the successful requests; medians do not add up exactly",
        e2e_p50_us=e2e,
        rtt_p50_us=_p50(phases, "rtt"),
        network_p50_us=network,
        server_p50_us=server,
        after_headers_p50_us=after_headers,
        network_share=share(network, e2e),
        server_share=share(server, e2e),
        after_headers_share=share(after_headers, e2e),
        stream=stream,
        server_side=server_side(spec, phases, server_metrics, ok),
        server_timings=server_timing_join(phases, ok),
    )


def server_timing_join(phases: Phases, ok: int) -> ServerTimingJoin | None:
    joined = max((phases[p].count for p in ("server_prompt", "server_total") if phases.get(p) is not None), default=0)
    if not joined or not ok:
        return None
    prompt, ttft = _p50(phases, "server_prompt"), _p50(phases, "ttft")
    return ServerTimingJoin(
        joined=joined,
        join_rate=joined / ok,
        server_prompt_p50_us=prompt,
        ttft_beyond_server_p50_us=_p50(phases, "ttft_beyond_server"),
        ttft_beyond_server_p95_us=_p95(phases, "ttft_beyond_server"),
        server_total_p50_us=_p50(phases, "server_total"),
        e2e_beyond_server_p50_us=_p50(phases, "e2e_beyond_server"),
        e2e_beyond_server_p95_us=_p95(phases, "e2e_beyond_server"),
        server_share_of_ttft=share(prompt, ttft),
    )


def server_side(spec: RunSpec, phases: Phases, metrics: dict[str, object] | None, ok: int) -> ServerSide | None:
    """The server's /metrics percentiles beside the client's, or llama.cpp's counters for the
    run's `ok` requests; None without a scrape."""
    if metrics is None:
        return None
    if not metrics.get("available"):
        return ServerSide(available=False, reason=str(metrics.get("reason")))
    entries = {key: _entry(server, phases.get(_client_phase(key, spec))) for key, server in percentiles(metrics).items()}
    counters = counter_summary(metrics, ok)  # llama.cpp: counters, not histograms
    note = None
    if not entries and counters is None:
        what = "counters" if metrics.get("counters") else "latency histograms"
        note = f"the server's {what} counted no request of this run (this mode does not reach the engine)"
    return ServerSide(available=True, method=INTERPOLATION_NOTE, metrics=entries, counters=counters, note=note)


def _client_phase(key: str, spec: RunSpec) -> str:
    """The client phase the server's own histogram measures: in an open loop, from the actual
    send (the server never sees the time a request waited for the schedule or the cap)."""
    if key not in _CLIENT_COUNTERPARTS:
        return ""
    if spec.open_loop and key in ("ttft", "e2e"):
        return f"{key}_uncorrected"
    return key


def _entry(server: ServerPercentiles, client: PhaseStats | None) -> ServerEntry:
    gap = None
    if client is not None:
        gap = ClientGap(
            client_p50_us=client.p50_us,
            client_p95_us=client.p95_us,
            client_mean_us=_round(client.mean_us),
            gap_p50_us=_round(client.p50_us - server.p50_us),
            gap_p95_us=None if server.p95_open else _round(client.p95_us - server.p95_us),
            gap_mean_us=_round(client.mean_us - server.mean_us),
        )
    return ServerEntry(
        metric=server.metric,
        count=server.count,
        server_p50_us=_round(server.p50_us),
        server_p50_bucket_us=_bounds(server.p50_bucket_us),
        server_p95_us=_round(server.p95_us),
        server_p95_bucket_us=_bounds(server.p95_bucket_us),
        server_p95_is_lower_bound=server.p95_open,
        server_single_bucket=server.single_bucket,
        server_mean_us=_round(server.mean_us),
        client=gap,
    )


def _round(value: float) -> float:
    return round(value, 1)


def _bounds(bucket_us: tuple[float, float]) -> tuple[float | None, float | None]:
    """A bucket's [low, high] in µs; an infinite bound is None (JSON has no infinity)."""
    low, high = (None if b == float("inf") else round(b, 1) for b in bucket_us)
    return low, high
