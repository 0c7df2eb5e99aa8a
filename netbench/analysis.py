"""`Analysis`: the answer to "how much of the latency is network + HTTP, and how much is the
model?" across the runs of a report, computed once from their summaries (`summary.Run`).

Pure numbers, no formatting (the renderers in `report/` word them):
- `ttft_vs_http`: warm TTFT (measured at concurrency 1, or an external reference) against the
  HTTP wall time of the baseline mode (health, models or get) at concurrency 1: the overhead,
  its share of TTFT, a verdict, and the part of the request that carries it;
- `concurrency_effects`: does concurrency 4 or 8 change wall time / TTFT against concurrency 1?
  The difference of the medians (the histograms' p50, the one median every output shows), with
  a seeded bootstrap 95 % confidence interval from the per-request records;
- `rule_of_thumb`: the numbers and verdict the one-sentence rule of thumb is written from.
Per-run numbers (the network-vs-server split, server-side /metrics) live in each `RunSummary`.
"""

from __future__ import annotations

import csv
import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from netbench.errors import InputError
from netbench.histograms import equivalent_us, rank
from netbench.serial import FLATTEN, NOT_SERIALISED, OMIT_NONE
from netbench.spec import MODES, STREAMING_MODES, SpecError, parse_duration_s
from netbench.split import ServerEntry, ServerTimingJoin
from netbench.summary import Run, RunSummary

#: modes whose requests do no model work: their HTTP wall time is the HTTP path alone
BASELINE_MODES = ("health", "models", "get")
#: overhead below this share of TTFT is negligible; at or above DOMINANT_SHARE it dominates
NEGLIGIBLE_SHARE = 0.10
DOMINANT_SHARE = 0.50
BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95
#: fewer per-request values than this on either side cannot support an interval
MIN_SAMPLES = 5
#: concurrency is compared on these phases: wall time always, TTFT for streams
EFFECT_PHASES = ("e2e", "ttft")


class Verdict(str, enum.Enum):
    """How large the network and HTTP path's share of warm TTFT is."""

    NEGLIGIBLE = "negligible"
    NON_TRIVIAL = "non-trivial"
    DOMINANT = "dominant"


def verdict_for(share: float) -> Verdict:
    if share < NEGLIGIBLE_SHARE:
        return Verdict.NEGLIGIBLE
    return Verdict.NON_TRIVIAL if share < DOMINANT_SHARE else Verdict.DOMINANT


class TtftOrigin(str, enum.Enum):
    MEASURED = "measured"  # the p50 of a streaming run at concurrency 1
    REFERENCE = "reference"  # --ttft-ref


class Cause(str, enum.Enum):
    """What the largest part of warm TTFT is, and so where latency work pays off."""

    NETWORK = "network"  # round trips on the path: propagation, loss; no serving stack shortens them
    HTTP = "http"  # the server's HTTP framework and handler before any model work
    MODEL = "model"  # queue + prefill: the model and its runtime


class OverheadSource(str, enum.Enum):
    BASELINE = "baseline"  # the baseline run's HTTP wall time
    SERVER_GAP = "server_gap"  # client TTFT - server-side TTFT (means)
    SERVER_TIMINGS = "server_timings"  # client TTFT beyond the server's own prompt time, per request


def sorted_runs(runs: Sequence[Run]) -> list[Run]:
    """Runs in report order: by mode (as MODES lists them), closed loop first, then load."""
    return sorted(
        runs,
        key=lambda r: (
            MODES.index(r.spec.mode) if r.spec.mode in MODES else len(MODES),
            r.spec.input_tokens is not None,  # a sweep over prompt lengths after the runs of --prompt
            r.spec.open_loop,
            r.spec.concurrency,
            r.spec.rate or 0.0,
        ),
    )


# --- where one request's time goes --------------------------------------------------------


@dataclass(frozen=True)
class Component:
    """One part of a request's wall time (µs, p50 unless said otherwise)."""

    key: str  # "connect", "send", "rtt", "server_wait", "after_headers", "response"
    us: float


def request_parts(s: RunSummary) -> tuple[Component, ...]:
    """A run's median request in parts: connection setup amortised over every request (reused
    connections have none), send, RTT, server wait (framework + handler), then for streams the
    wait after the headers for the first token and the rest of the stream, else the response.
    Medians of each part: they need not add up to the median e2e exactly."""
    ok = s.ok or 1
    setup = sum(p.mean_us * p.count / ok for p in (s.phase(n) for n in ("dns", "connect", "tls")) if p is not None)
    e2e, ttfb, ttft = (s.phase(n) for n in ("e2e", "ttfb", "ttft"))
    parts: list[tuple[str, float | None]] = [
        ("connect", setup),
        ("send", _p50(s, "send")),
        ("rtt", _p50(s, "rtt")),
        ("server_wait", _p50(s, "server")),
    ]
    if s.spec.streaming and ttft is not None:
        parts.append(("after_headers", _p50(s, "ttft_after_headers")))
        parts.append(("response", None if e2e is None else max(e2e.p50_us - ttft.p50_us, 0)))
    else:
        parts.append(("response", None if e2e is None or ttfb is None else max(e2e.p50_us - ttfb.p50_us, 0)))
    return tuple(Component(key, float(us)) for key, us in parts if us is not None)


def _p50(s: RunSummary, phase: str) -> int | None:
    stats = s.phase(phase)
    return None if stats is None else stats.p50_us


# --- TTFT vs HTTP latency -----------------------------------------------------------------


@dataclass(frozen=True)
class TtftParts:
    """Warm TTFT in its causes (µs, medians of the parts; they need not add up exactly):
    network round trips (rtt + retransmission waits), the HTTP framework and handler (the
    baseline's server time, no model work; else the stream's server wait to its headers), and
    the rest, the model (queue + prefill)."""

    network_us: float
    http_us: float
    model_us: float
    cause: Cause
    #: the model part is the server's own prompt time: the HTTP part then holds the server's
    #: untimed work too (tokenization, queueing before the prompt)
    timed_by_server: bool = False


@dataclass(frozen=True)
class ConnectionCost:
    """What a new connection costs beside a reused one (µs): the TCP handshake and, over https,
    TLS; measured on the runs' new connections, else the TCP handshake estimated as one RTT."""

    tcp_us: float
    tls_us: float | None
    measured: bool
    #: TLS by kind: a full handshake (it carried the certificate) and a resumed session
    tls_full_us: float | None = None
    tls_resumed_us: float | None = None
    http2: bool = False


def _ttft_parts(
    ttft_us: float, stream: RunSummary | None, baseline: RunSummary | None, join: ServerTimingJoin | None = None
) -> TtftParts | None:
    """With the server's own prompt time per request (`join`), the model is that time and HTTP
    is the rest beyond the network (framework, tokenization, queue before the prompt)."""
    paths = [r for r in (stream, baseline) if r is not None and _p50(r, "rtt") is not None]
    if join is not None and join.server_prompt_p50_us is not None and paths:
        network = float(_p50(paths[0], "rtt") or 0)
        model = float(join.server_prompt_p50_us)
        http = max(ttft_us - network - model, 0.0)
        parts = {Cause.NETWORK: network, Cause.HTTP: http, Cause.MODEL: model}
        return TtftParts(network, http, model, max(parts, key=lambda cause: parts[cause]), timed_by_server=True)
    framework = baseline if baseline is not None and _p50(baseline, "server") is not None else stream
    if not paths or framework is None or _p50(framework, "server") is None:
        return None
    path = paths[0]
    retransmit = path.phase("retransmit_wait")
    network = float(_p50(path, "rtt") or 0) + (0.0 if retransmit is None else retransmit.mean_us * retransmit.count / max(path.ok, 1))
    http = float(_p50(framework, "server") or 0)
    model = max(ttft_us - network - http, 0.0)
    parts = {Cause.NETWORK: network, Cause.HTTP: http, Cause.MODEL: model}
    return TtftParts(network, http, model, max(parts, key=lambda cause: parts[cause]))


def connection_cost(runs: Sequence[RunSummary]) -> ConnectionCost | None:
    """From the run with the most new connections; else one RTT of any run, estimated."""
    with_new = [r for r in runs if r.phase("connect") is not None]
    if with_new:
        run = max(with_new, key=lambda r: r.phase("connect").count)  # type: ignore[union-attr]
        tls, full, resumed = (run.phase(p) for p in ("tls", "tls_full", "tls_resumed"))
        return ConnectionCost(
            float(run.phase("connect").p50_us),  # type: ignore[union-attr]
            None if tls is None else float(tls.p50_us),
            True,
            None if full is None else float(full.p50_us),
            None if resumed is None else float(resumed.p50_us),
            run.spec.http2,
        )
    rtts = [_p50(r, "rtt") for r in runs if _p50(r, "rtt") is not None]
    return ConnectionCost(float(rtts[0]), None, False) if rtts else None


@dataclass(frozen=True)
class TtftReference:
    """An external warm TTFT (e.g. an earlier in-process measurement), and where it came from."""

    ttft_us: float
    source: str


def load_ttft_ref(text: str) -> TtftReference:
    """`27ms` (a duration with its unit) or a CSV file of earlier TTFT measurements, whose
    median is used."""
    path = Path(text)
    if path.suffix.lower() == ".csv" or path.is_file():
        return _ttft_from_csv(path)
    if text.strip().replace(".", "", 1).isdigit():
        raise InputError("ttft_ref", text, "give a unit, e.g. 27ms, or a CSV file")
    try:
        seconds = parse_duration_s(text)
    except SpecError as error:
        raise InputError("ttft_ref", text, str(error)) from None
    if seconds <= 0:
        raise InputError("ttft_ref", text, "a TTFT must be > 0")
    return TtftReference(seconds * 1e6, f"--ttft-ref {text}")


_UNIT_SUFFIXES = (("_us", 1.0), ("_µs", 1.0), ("_ms", 1e3), ("_s", 1e6))
_NOT_A_MEDIAN = ("p9", "max", "min", "mean", "std", "after")


def _ttft_from_csv(path: Path) -> TtftReference:
    """The median of the TTFT column: the first header naming ttft (p50/median preferred, no
    p95/max/after-headers columns); its unit from the suffix (_us, _ms, _s), else ms."""
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError("ttft_ref", str(path), f"cannot read it ({error})") from None
    columns = [c for c in (rows[0].keys() if rows else []) if c and "ttft" in c.lower()]
    columns = [c for c in columns if not any(word in c.lower() for word in _NOT_A_MEDIAN)]
    columns.sort(key=lambda c: 0 if ("p50" in c.lower() or "median" in c.lower()) else 1)
    if not columns:
        raise InputError("ttft_ref", str(path), "no TTFT column (a header containing 'ttft', e.g. ttft_ms)")
    column = columns[0]
    name = column.strip().lower()
    scale, unit = next(((s, suffix[1:]) for suffix, s in _UNIT_SUFFIXES if name.endswith(suffix)), (1e3, "ms, assumed"))
    values = []
    for row in rows:
        cell = (row.get(column) or "").strip()
        if cell:
            try:
                values.append(float(cell) * scale)
            except ValueError:
                raise InputError("ttft_ref", str(path), f"{cell!r} in column {column} is not a number") from None
    values = [v for v in values if v > 0]
    if not values:
        raise InputError("ttft_ref", str(path), f"column {column} has no positive value")
    return TtftReference(float(np.median(values)), f"median of {len(values)} values of column {column} ({unit}) in {path}")


@dataclass(frozen=True)
class TtftVsHttp:
    #: warm TTFT: the reference when given, else the p50 of the streaming run at concurrency 1
    ttft_us: float | None
    ttft_source: str | None
    baseline_mode: str | None
    #: the HTTP path alone: the baseline run at concurrency 1
    baseline_p50_us: float | None
    baseline_p95_us: float | None
    overhead_us: float | None
    overhead_source: OverheadSource | None
    overhead_share_of_ttft: float | None
    verdict: Verdict | None
    #: where the baseline's time goes (µs by part), and the largest part
    baseline_components_us: dict[str, float]
    carrier: str | None
    #: the measured streaming run's server-side TTFT mean (/metrics), and client - server (means)
    server_ttft_mean_us: float | None
    client_minus_server_ttft_mean_us: float | None
    #: why a piece is missing, in words a report can print
    missing: tuple[str, ...]
    #: warm TTFT in network, HTTP and model time, and what a new connection costs
    parts: TtftParts | None = field(default=None, metadata=OMIT_NONE)
    new_connection: ConnectionCost | None = field(default=None, metadata=OMIT_NONE)
    ttft_origin: TtftOrigin | None = field(default=None, metadata=NOT_SERIALISED)
    #: the streaming run at concurrency 1 (when it has TTFT values), and the baseline run
    measured: RunSummary | None = field(default=None, metadata=NOT_SERIALISED)
    baseline: RunSummary | None = field(default=None, metadata=NOT_SERIALISED)
    #: the measured run's server-side TTFT histogram, as its summary holds it
    server_ttft: ServerEntry | None = field(default=None, metadata=NOT_SERIALISED)


def _find(runs: Sequence[RunSummary], modes: Sequence[str], concurrency: int = 1) -> RunSummary | None:
    """The first closed-loop run, in the order of `modes`, at this concurrency, that has e2e values."""
    for mode in modes:
        for s in runs:
            if s.spec.mode == mode and not s.spec.open_loop and s.spec.concurrency == concurrency and s.ok:
                return s
    return None


def ttft_vs_http(runs: Sequence[RunSummary], ttft_ref: TtftReference | None = None) -> TtftVsHttp:
    missing: list[str] = []
    stream = _find(runs, STREAMING_MODES)
    ttft_stats = None if stream is None else stream.phase("ttft")
    origin: TtftOrigin | None = None
    if ttft_ref is not None:
        ttft_us, ttft_source, origin = ttft_ref.ttft_us, ttft_ref.source, TtftOrigin.REFERENCE
    elif ttft_stats is not None and stream is not None:
        ttft_us, origin = float(ttft_stats.p50_us), TtftOrigin.MEASURED
        ttft_source = f"p50 of {stream.spec.mode} at concurrency 1"
    else:
        ttft_us = ttft_source = None
        missing.append("no warm TTFT: no successful completions or chat run at concurrency 1, and no --ttft-ref")

    side = None if stream is None or stream.split is None else stream.split.server_side
    server_ttft = None if side is None else side.metrics.get("ttft")
    server_gap = None if server_ttft is None or server_ttft.client is None else server_ttft.client.gap_mean_us

    baseline = _find(runs, BASELINE_MODES)
    components: tuple[Component, ...] = ()
    baseline_p50 = baseline_p95 = overhead = None
    overhead_source = None
    if baseline is not None:
        e2e = baseline.phase("e2e")
        assert e2e is not None  # ok > 0
        baseline_p50, baseline_p95 = float(e2e.p50_us), float(e2e.p95_us)
        overhead, overhead_source = baseline_p50, OverheadSource.BASELINE
        components = request_parts(baseline)
    else:
        missing.append("no baseline run: health, models or get at concurrency 1")
        if server_gap is not None:
            overhead, overhead_source = max(server_gap, 0.0), OverheadSource.SERVER_GAP
    join = None if stream is None or stream.split is None else stream.split.server_timings
    if origin is TtftOrigin.MEASURED and join is not None and join.ttft_beyond_server_p50_us is not None:
        # The server timed its own prompt for each request: what is beyond it is the path to the
        # model, measured per request rather than through a stand-in request.
        overhead, overhead_source = float(join.ttft_beyond_server_p50_us), OverheadSource.SERVER_TIMINGS

    share = None if overhead is None or not ttft_us else overhead / ttft_us
    carrier = max(components, key=lambda c: c.us) if components else None
    return TtftVsHttp(
        ttft_us=ttft_us,
        ttft_source=ttft_source,
        baseline_mode=None if baseline is None else baseline.spec.mode,
        baseline_p50_us=baseline_p50,
        baseline_p95_us=baseline_p95,
        overhead_us=overhead,
        overhead_source=overhead_source,
        overhead_share_of_ttft=share,
        verdict=None if share is None else verdict_for(share),
        baseline_components_us={c.key: c.us for c in components},
        carrier=None if carrier is None else carrier.key,
        server_ttft_mean_us=None if server_ttft is None else server_ttft.server_mean_us,
        client_minus_server_ttft_mean_us=server_gap,
        missing=tuple(missing),
        parts=None if ttft_us is None else _ttft_parts(ttft_us, stream, baseline, join if overhead_source is OverheadSource.SERVER_TIMINGS else None),
        new_connection=connection_cost(runs),
        ttft_origin=origin,
        measured=stream if ttft_stats is not None else None,
        baseline=baseline,
        server_ttft=server_ttft,
    )


# --- significance: does concurrency change latency? --------------------------------------


@dataclass(frozen=True)
class MedianDiff:
    """median(b) - median(a) from the histograms (the quantile `quantile`, the median unless
    said otherwise), with a bootstrap confidence interval from per-request samples, in µs."""

    diff: float
    low: float
    high: float
    median_a: float
    median_b: float
    #: the per-request samples the interval was resampled from
    n_a: int
    n_b: int
    confidence: float
    resamples: int
    seed: int
    quantile: float
    #: the interval excludes 0
    significant: bool


def bootstrap_interval(
    a: np.ndarray | Sequence[float],
    b: np.ndarray | Sequence[float],
    quantile: float = 0.5,
    resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of quantile(b) - quantile(a), the quantile as hdrh defines
    it (the value at rank max(round(q n), 1), no interpolation): both samples resampled
    independently with replacement, seeded, so the same data always gives the same interval.
    Given samples in the histograms' resolution (`histograms.equivalent_us`), it is the
    interval of the very statistic the histograms report."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        raise ValueError("bootstrap_interval needs two non-empty samples")
    rng = np.random.default_rng(seed)
    resampled_a = _resampled_quantiles(np.sort(a), quantile, resamples, rng)
    diffs = _resampled_quantiles(np.sort(b), quantile, resamples, rng) - resampled_a
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(diffs, [tail, 1.0 - tail])
    return float(low), float(high)


def median_diff(
    point_a: float,
    point_b: float,
    a: np.ndarray,
    b: np.ndarray,
    quantile: float = 0.5,
    resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> MedianDiff:
    """The difference of two point estimates (the histograms'), with the interval from `a`, `b`."""
    low, high = bootstrap_interval(a, b, quantile, resamples, confidence, seed)
    return MedianDiff(
        diff=point_b - point_a, low=low, high=high, median_a=point_a, median_b=point_b,
        n_a=int(np.size(a)), n_b=int(np.size(b)), confidence=confidence, resamples=resamples, seed=seed,
        quantile=quantile, significant=low > 0 or high < 0,
    )  # fmt: skip


def _resampled_quantiles(ordered: np.ndarray, q: float, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """`resamples` draws of the q-quantile (hdrh's: the k-th smallest value, k = rank(n, q)) of
    a resample of n values drawn with replacement from `ordered` (sorted), in O(resamples)
    instead of O(resamples x n).

    Exact, not an approximation: a resample is x[ceil(n U_i) - 1] for n uniforms U_i, so its
    k-th smallest value is x[ceil(n U_(k)) - 1], and the k-th order statistic of n uniforms is
    Beta(k, n + 1 - k).
    """
    n = ordered.size
    k = min(rank(n, q * 100), n)
    kth = rng.beta(k, n + 1 - k, resamples)
    return ordered[np.clip(np.ceil(n * kth).astype(np.int64), 1, n) - 1]


@dataclass(frozen=True)
class ConcurrencyEffect:
    mode: str
    #: "e2e" (wall time) or "ttft"
    phase: str
    concurrency: int
    base_concurrency: int
    #: why it could not be tested; None when it was
    reason: str | None = field(default=None, metadata=OMIT_NONE)
    diff: MedianDiff | None = field(default=None, metadata={**FLATTEN, **OMIT_NONE})


@dataclass(frozen=True)
class ConcurrencyEffects:
    method: str
    effects: tuple[ConcurrencyEffect, ...]


def concurrency_effects(runs: Sequence[Run], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> ConcurrencyEffects:
    """Every closed-loop run at concurrency > 1 against the same mode at concurrency 1."""
    effects: list[ConcurrencyEffect] = []
    closed = [r for r in runs if not r.spec.open_loop]
    for mode in dict.fromkeys(r.spec.mode for r in closed):
        mine = sorted((r for r in closed if r.spec.mode == mode), key=lambda r: r.spec.concurrency)
        base = next((r for r in mine if r.spec.concurrency == 1), None)
        for other in (r for r in mine if r.spec.concurrency > 1):
            for phase in EFFECT_PHASES:
                if phase == "ttft" and mode not in STREAMING_MODES:
                    continue
                effects.append(_effect(base, other, phase, resamples, seed))
    method = (
        f"median(c) - median(c=1) of the histograms; bootstrap {CONFIDENCE * 100:.0f} % CI on the per-request "
        f"records, {resamples} resamples, seed {seed}"
    )
    return ConcurrencyEffects(method, tuple(effects))


def _effect(base: Run | None, other: Run, phase: str, resamples: int, seed: int) -> ConcurrencyEffect:
    mode, c = other.spec.mode, other.spec.concurrency
    if base is None:
        return ConcurrencyEffect(mode, phase, c, 1, f"no {mode} run at concurrency 1 to compare with")
    for run in (base, other):
        if len(run.result.records) == 0:
            return ConcurrencyEffect(mode, phase, c, 1, f"the {mode} c={run.spec.concurrency} run kept no per-request records")
        values = run.values_us(phase)
        if values.size < MIN_SAMPLES or run.summary.phase(phase) is None:
            reason = f"the {mode} c={run.spec.concurrency} run has {values.size} {phase} values (fewer than {MIN_SAMPLES})"
            return ConcurrencyEffect(mode, phase, c, 1, reason)
    a, b = base.summary.phase(phase), other.summary.phase(phase)
    assert a is not None and b is not None
    samples = (equivalent_us(base.values_us(phase)), equivalent_us(other.values_us(phase)))
    diff = median_diff(a.p50_us, b.p50_us, *samples, 0.5, resamples, CONFIDENCE, seed)
    return ConcurrencyEffect(mode, phase, c, 1, diff=diff)


# --- the rule of thumb --------------------------------------------------------------------


@dataclass(frozen=True)
class RuleOfThumb:
    """What the generated rule of thumb says, as numbers; None fields mean "not known"."""

    verdict: Verdict | None
    overhead_us: float | None = field(metadata=NOT_SERIALISED)
    overhead_source: OverheadSource | None = field(metadata=NOT_SERIALISED)
    ttft_us: float | None = field(metadata=NOT_SERIALISED)
    share: float | None = field(metadata=NOT_SERIALISED)
    #: the part of the baseline that carries the overhead
    carrier: str | None = field(metadata=NOT_SERIALISED)
    #: warm TTFT by cause, and what a new connection costs
    parts: TtftParts | None = field(metadata=NOT_SERIALISED)
    new_connection: ConnectionCost | None = field(metadata=NOT_SERIALISED)
    #: the effect of the highest concurrency on TTFT (streams) or wall time, when tested
    concurrency: ConcurrencyEffect | None = field(metadata=NOT_SERIALISED)
    #: why no verdict could be given
    missing: tuple[str, ...] = field(metadata=NOT_SERIALISED)


def rule_of_thumb(comparison: TtftVsHttp, effects: Sequence[ConcurrencyEffect]) -> RuleOfThumb:
    tested = [e for e in effects if e.diff is not None]
    preferred = [e for e in tested if e.phase == "ttft" and e.mode in STREAMING_MODES] or [
        e for e in tested if e.phase == "e2e" and e.mode in STREAMING_MODES
    ] or tested
    highest = max(preferred, key=lambda e: e.concurrency, default=None)
    return RuleOfThumb(
        verdict=comparison.verdict,
        overhead_us=comparison.overhead_us,
        overhead_source=comparison.overhead_source,
        ttft_us=comparison.ttft_us,
        share=comparison.overhead_share_of_ttft,
        carrier=comparison.carrier,
        parts=comparison.parts,
        new_connection=comparison.new_connection,
        concurrency=highest,
        missing=comparison.missing if comparison.verdict is None else (),
    )


# --- all of it ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Analysis:
    ttft_vs_http: TtftVsHttp
    concurrency: ConcurrencyEffects
    rule_of_thumb: RuleOfThumb
    #: the runs analysed, in report order
    runs: tuple[RunSummary, ...] = field(metadata=NOT_SERIALISED)
    resamples: int = field(default=BOOTSTRAP_RESAMPLES, metadata=NOT_SERIALISED)
    seed: int = field(default=0, metadata=NOT_SERIALISED)


def analyse(
    runs: Sequence[Run], ttft_ref: TtftReference | None = None, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> Analysis:
    ordered = sorted_runs(runs)
    summaries = tuple(r.summary for r in ordered)
    comparison = ttft_vs_http(summaries, ttft_ref)
    effects = concurrency_effects(ordered, resamples, seed)
    return Analysis(comparison, effects, rule_of_thumb(comparison, effects.effects), summaries, resamples, seed)
