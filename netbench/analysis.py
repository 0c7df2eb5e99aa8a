"""The answer to "how much of the latency is network + HTTP, and how much is the model?", in numbers.

Pure numbers, no formatting (the renderers in `report/` word them):
- `split`: network vs server share of the median request, TTFT beside TTFB, and the
  server's own /metrics percentiles beside the client's (the gap is the overhead);
- `ttft_vs_http`: warm TTFT (measured at concurrency 1, or an external reference) against the
  HTTP wall time of the baseline mode (health, models or get) at concurrency 1: the overhead,
  its share of TTFT, a verdict, and the phase that carries it;
- `concurrency_effects`: does concurrency 4 or 8 change wall time / TTFT against concurrency 1?
  A seeded bootstrap 95 % confidence interval of the median difference on per-request records;
- `rule_of_thumb`: the numbers and verdict the one-sentence rule of thumb is written from.
"""

from __future__ import annotations

import csv
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from netbench.outcomes import Outcome
from netbench.phases import derive, select
from netbench.results import RunResult
from netbench.server_metrics import INTERPOLATION_NOTE, ServerPercentiles, counter_summary, percentiles
from netbench.spec import MODES, STREAMING_MODES, SpecError, parse_duration_s

#: modes whose requests do no model work: their HTTP wall time is the HTTP path alone
BASELINE_MODES = ("health", "models", "get")
#: overhead below this share of TTFT is negligible; at or above DOMINANT_SHARE it dominates
NEGLIGIBLE_SHARE = 0.10
DOMINANT_SHARE = 0.50
BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95
#: fewer per-request values than this on either side cannot support an interval
MIN_SAMPLES = 5


class Verdict(str, enum.Enum):
    NEGLIGIBLE = "negligible"
    NON_TRIVIAL = "non-trivial"
    DOMINANT = "dominant"


def verdict_for(share: float) -> Verdict:
    if share < NEGLIGIBLE_SHARE:
        return Verdict.NEGLIGIBLE
    return Verdict.NON_TRIVIAL if share < DOMINANT_SHARE else Verdict.DOMINANT


# --- the per-run split ------------------------------------------------------------------


def _p50(result: RunResult, phase: str) -> int | None:
    stats = result.stats(phase)
    return None if stats is None else stats.p50_us


def _share(part: float | None, whole: float | None) -> float | None:
    return None if part is None or not whole else round(part / whole, 6)


def split(result: RunResult) -> dict[str, object] | None:
    """Network vs server share of the median request (p50 of each phase), TTFT beside TTFB for
    streams, and the server-side percentiles beside the client's where /metrics had them."""
    e2e = _p50(result, "e2e")
    if e2e is None:
        return None
    network, server, ttfb = (_p50(result, p) for p in ("network", "server", "ttfb"))
    after_headers = None if ttfb is None else max(e2e - ttfb, 0)
    out: dict[str, object] = {
        "basis": "p50 of each phase over the successful requests; medians do not add up exactly",
        "e2e_p50_us": e2e,
        "rtt_p50_us": _p50(result, "rtt"),
        "network_p50_us": network,
        "server_p50_us": server,
        "after_headers_p50_us": after_headers,
        "network_share": _share(network, e2e),
        "server_share": _share(server, e2e),
        "after_headers_share": _share(after_headers, e2e),
    }
    if result.spec.streaming:
        ttft = result.stats("ttft")
        ttfb_stats = result.stats("ttfb")
        after = result.stats("ttft_after_headers")
        out["stream"] = {
            "ttfb_p50_us": None if ttfb_stats is None else ttfb_stats.p50_us,
            "ttfb_p95_us": None if ttfb_stats is None else ttfb_stats.p95_us,
            "ttft_p50_us": None if ttft is None else ttft.p50_us,
            "ttft_p95_us": None if ttft is None else ttft.p95_us,
            "ttft_after_headers_p50_us": None if after is None else after.p50_us,
            "ttft_after_headers_p95_us": None if after is None else after.p95_us,
            "network_share_of_ttft": _share(network, None if ttft is None else ttft.p50_us),
        }
    out["server_side"] = server_side(result)
    return out


def server_side(result: RunResult) -> dict[str, object] | None:
    """The server's /metrics percentiles beside the client's; the gap is network + HTTP +
    framework. None when the run has no scrape at all (an old run file)."""
    metrics = result.server_metrics
    if metrics is None:
        return None
    if not metrics.get("available"):
        return {"available": False, "reason": metrics.get("reason")}
    out: dict[str, object] = {"available": True, "method": INTERPOLATION_NOTE}
    for key, server in percentiles(metrics).items():
        client = result.stats(_client_phase(key, result)) if key in ("ttft", "e2e", "itl") else None
        entry: dict[str, object] = {
            "metric": server.metric,
            "count": server.count,
            "server_p50_us": _round(server.p50_us),
            "server_p50_bucket_us": _bounds(server.p50_bucket_us),
            "server_p95_us": _round(server.p95_us),
            "server_p95_bucket_us": _bounds(server.p95_bucket_us),
            "server_p95_is_lower_bound": server.p95_open,
            "server_single_bucket": server.single_bucket,
            "server_mean_us": _round(server.mean_us),
        }
        if client is not None:
            entry.update(
                client_p50_us=client.p50_us,
                client_p95_us=client.p95_us,
                client_mean_us=_round(client.mean_us),
                gap_p50_us=_round(client.p50_us - server.p50_us),
                gap_p95_us=None if server.p95_open else _round(client.p95_us - server.p95_us),
                # _sum / _count is exact: the mean gap carries no bucket interpolation
                gap_mean_us=_round(client.mean_us - server.mean_us),
            )
        out[key] = entry
    counters = counter_summary(metrics, result.ok)
    if counters is not None:  # llama.cpp: counters, not histograms
        out["counters"] = counters
    elif len(out) == 2:
        what = "counters" if metrics.get("counters") else "latency histograms"
        out["note"] = f"the server's {what} counted no request of this run (this mode does not reach the engine)"
    return out


def _client_phase(key: str, result: RunResult) -> str:
    """The client phase the server's own histogram measures: in an open loop, from the actual
    send (the server never sees the time a request waited for the schedule or the cap)."""
    if result.spec.open_loop and key in ("ttft", "e2e"):
        return f"{key}_uncorrected"
    return key


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _bounds(bucket_us: tuple[float, float]) -> list[float | None]:
    """A bucket's [low, high] in µs; an infinite bound is None (JSON has no infinity)."""
    return [None if np.isinf(b) else round(b, 1) for b in bucket_us]


# --- TTFT vs HTTP latency -----------------------------------------------------------------


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
        raise SpecError(f"--ttft-ref {text!r}: give a unit, e.g. 27ms, or a CSV file")
    seconds = parse_duration_s(text)
    if seconds <= 0:
        raise SpecError(f"--ttft-ref {text!r}: a TTFT must be > 0")
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
        raise SpecError(f"--ttft-ref {path}: cannot read it ({error})") from None
    columns = [c for c in (rows[0].keys() if rows else []) if c and "ttft" in c.lower()]
    columns = [c for c in columns if not any(word in c.lower() for word in _NOT_A_MEDIAN)]
    columns.sort(key=lambda c: 0 if ("p50" in c.lower() or "median" in c.lower()) else 1)
    if not columns:
        raise SpecError(f"--ttft-ref {path}: no TTFT column (a header containing 'ttft', e.g. ttft_ms)")
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
                raise SpecError(f"--ttft-ref {path}: {cell!r} in column {column} is not a number") from None
    values = [v for v in values if v > 0]
    if not values:
        raise SpecError(f"--ttft-ref {path}: column {column} has no positive value")
    return TtftReference(float(np.median(values)), f"median of {len(values)} values of column {column} ({unit}) in {path}")


@dataclass(frozen=True)
class Component:
    """One part of the baseline's HTTP wall time (µs, p50 unless said otherwise)."""

    key: str
    us: float


#: where a baseline request's time goes; "connect" is amortised over reused connections
COMPONENT_KEYS = ("connect", "send", "rtt", "server_wait", "response")


@dataclass(frozen=True)
class TtftVsHttp:
    # warm TTFT: the reference when given, else the streaming run at concurrency 1
    ttft_us: float | None
    ttft_source: str | None
    measured_ttft: RunResult | None
    # the HTTP path alone: the baseline run at concurrency 1
    baseline: RunResult | None
    baseline_p50_us: float | None
    baseline_p95_us: float | None
    overhead_us: float | None
    #: "baseline": the baseline's wall time; "server_gap": client TTFT - server-side TTFT
    overhead_source: str | None
    share: float | None
    verdict: Verdict | None
    components: tuple[Component, ...]
    carrier: Component | None
    #: the measured streaming run's server-side TTFT (/metrics), and client mean - server mean
    #: (exact: _sum / _count needs no bucket interpolation)
    server_ttft: ServerPercentiles | None
    server_gap_us: float | None
    #: why a piece is missing, in words a report can print
    missing: tuple[str, ...]


def sorted_runs(results: Sequence[RunResult]) -> list[RunResult]:
    """Runs in report order: by mode (as MODES lists them), closed loop first, then load."""
    return sorted(
        results,
        key=lambda r: (
            MODES.index(r.spec.mode) if r.spec.mode in MODES else len(MODES),
            r.spec.open_loop,
            r.spec.concurrency,
            r.spec.rate or 0.0,
        ),
    )


def _find(results: Sequence[RunResult], modes: Sequence[str], concurrency: int = 1) -> RunResult | None:
    """The first closed-loop run, in the order of `modes`, at this concurrency, that has e2e values."""
    for mode in modes:
        for result in results:
            spec = result.spec
            if spec.mode == mode and not spec.open_loop and spec.concurrency == concurrency and result.ok:
                return result
    return None


def baseline_components(result: RunResult) -> tuple[Component, ...]:
    """The baseline request's wall time in parts: connection setup amortised over all requests
    (reused connections have none), send, RTT, server wait (framework + handler), response."""
    ok = result.ok or 1
    setup = 0.0
    for phase in ("dns", "connect", "tls"):
        stats = result.stats(phase)
        if stats is not None:
            setup += stats.mean_us * stats.count / ok
    e2e, ttfb = _p50(result, "e2e"), _p50(result, "ttfb")
    parts = [
        ("connect", setup),
        ("send", _p50(result, "send")),
        ("rtt", _p50(result, "rtt")),
        ("server_wait", _p50(result, "server")),
        ("response", None if e2e is None or ttfb is None else max(e2e - ttfb, 0)),
    ]
    return tuple(Component(key, float(us)) for key, us in parts if us is not None)


def ttft_vs_http(results: Sequence[RunResult], ttft_ref: TtftReference | None = None) -> TtftVsHttp:
    missing: list[str] = []
    stream = _find(results, STREAMING_MODES)
    ttft_stats = None if stream is None else stream.stats("ttft")
    if ttft_ref is not None:
        ttft_us, ttft_source = ttft_ref.ttft_us, ttft_ref.source
    elif ttft_stats is not None and stream is not None:
        ttft_us = float(ttft_stats.p50_us)
        ttft_source = f"p50 of {stream.spec.mode} at concurrency 1"
    else:
        ttft_us = ttft_source = None
        missing.append("no warm TTFT: no successful completions or chat run at concurrency 1, and no --ttft-ref")

    server_ttft = percentiles(stream.server_metrics).get("ttft") if stream is not None else None
    server_gap = None
    if server_ttft is not None and ttft_stats is not None:
        server_gap = ttft_stats.mean_us - server_ttft.mean_us

    baseline = _find(results, BASELINE_MODES)
    components: tuple[Component, ...] = ()
    baseline_p50 = baseline_p95 = overhead = None
    overhead_source = None
    if baseline is not None:
        e2e = baseline.stats("e2e")
        assert e2e is not None  # ok > 0
        baseline_p50, baseline_p95 = float(e2e.p50_us), float(e2e.p95_us)
        overhead, overhead_source = baseline_p50, "baseline"
        components = baseline_components(baseline)
    else:
        missing.append("no baseline run: health, models or get at concurrency 1")
        if server_gap is not None:
            overhead, overhead_source = max(server_gap, 0.0), "server_gap"

    share = None if overhead is None or not ttft_us else overhead / ttft_us
    return TtftVsHttp(
        ttft_us=ttft_us,
        ttft_source=ttft_source,
        measured_ttft=stream if ttft_stats is not None else None,
        baseline=baseline,
        baseline_p50_us=baseline_p50,
        baseline_p95_us=baseline_p95,
        overhead_us=overhead,
        overhead_source=overhead_source,
        share=share,
        verdict=None if share is None else verdict_for(share),
        components=components,
        carrier=max(components, key=lambda c: c.us) if components else None,
        server_ttft=server_ttft,
        server_gap_us=server_gap,
        missing=tuple(missing),
    )


# --- significance: does concurrency change latency? --------------------------------------


@dataclass(frozen=True)
class MedianDiff:
    """quantile(b) - quantile(a) (the median unless `quantile` says otherwise) with a bootstrap
    confidence interval, in the samples' unit."""

    diff: float
    low: float
    high: float
    median_a: float
    median_b: float
    n_a: int
    n_b: int
    confidence: float
    resamples: int
    seed: int
    quantile: float = 0.5

    @property
    def significant(self) -> bool:
        """The interval excludes 0."""
        return self.low > 0 or self.high < 0


def bootstrap_median_diff(
    a: np.ndarray | Sequence[float],
    b: np.ndarray | Sequence[float],
    resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
    quantile: float = 0.5,
) -> MedianDiff:
    """Percentile bootstrap of quantile(b) - quantile(a), the median by default: both samples
    resampled independently with replacement, seeded, so the same data always gives the same
    interval."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        raise ValueError("bootstrap_median_diff needs two non-empty samples")
    rng = np.random.default_rng(seed)
    resampled_a = _resampled_quantiles(np.sort(a), quantile, resamples, rng)
    diffs = _resampled_quantiles(np.sort(b), quantile, resamples, rng) - resampled_a
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(diffs, [tail, 1.0 - tail])
    value_a, value_b = float(np.quantile(a, quantile)), float(np.quantile(b, quantile))
    return MedianDiff(
        diff=value_b - value_a,
        low=float(low),
        high=float(high),
        median_a=value_a,
        median_b=value_b,
        n_a=int(a.size),
        n_b=int(b.size),
        confidence=confidence,
        resamples=resamples,
        seed=seed,
        quantile=quantile,
    )


def _resampled_quantiles(ordered: np.ndarray, q: float, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """`resamples` draws of np.quantile(resample, q) (linear method), each resample n values
    drawn with replacement from `ordered` (sorted), in O(resamples) instead of O(resamples x n).

    Exact, not an approximation: a resample is x[ceil(n U_i) - 1] for n uniforms U_i, so its
    k-th smallest value is x[ceil(n U_(k)) - 1], and the k-th order statistic of n uniforms is
    Beta(k, n + 1 - k). The next one, given U_(k), is the smallest of n - k uniforms on
    (U_(k), 1): U_(k) + (1 - U_(k)) Beta(1, n - k). np.quantile interpolates between the two.
    """
    n = ordered.size
    position = (n - 1) * q
    k = int(np.floor(position))  # 0-based: the k+1-th smallest value
    fraction = position - k
    first = rng.beta(k + 1, n - k, resamples)
    low = ordered[np.clip(np.ceil(n * first).astype(np.int64), 1, n) - 1]
    if fraction == 0 or k + 1 >= n:
        return low
    second = first + (1.0 - first) * rng.beta(1, n - k - 1, resamples)
    high = ordered[np.clip(np.ceil(n * second).astype(np.int64), 1, n) - 1]
    return low + fraction * (high - low)


def per_request_us(result: RunResult, phase: str) -> np.ndarray:
    """One phase's value for every successful kept record (µs); empty when records are absent."""
    records = result.records
    ok, events = select(records, result.events, records["error_class"] == Outcome.OK)
    if len(ok) == 0:
        return np.zeros(0, dtype=np.int64)
    values = derive(ok, events, open_loop=result.spec.open_loop).values_us[phase]
    return values[values >= 0]


@dataclass(frozen=True)
class ConcurrencyEffect:
    mode: str
    #: "e2e" (wall time) or "ttft"
    phase: str
    base_concurrency: int
    concurrency: int
    diff: MedianDiff | None  # µs; None when it could not be tested
    reason: str | None = None


#: concurrency is compared on these phases: wall time always, TTFT for streams
EFFECT_PHASES = ("e2e", "ttft")


def concurrency_effects(
    results: Sequence[RunResult], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> list[ConcurrencyEffect]:
    """Every closed-loop run at concurrency > 1 against the same mode at concurrency 1."""
    effects: list[ConcurrencyEffect] = []
    closed = [r for r in results if not r.spec.open_loop]
    modes = list(dict.fromkeys(r.spec.mode for r in closed))
    for mode in modes:
        runs = sorted((r for r in closed if r.spec.mode == mode), key=lambda r: r.spec.concurrency)
        base = next((r for r in runs if r.spec.concurrency == 1), None)
        for other in (r for r in runs if r.spec.concurrency > 1):
            for phase in EFFECT_PHASES:
                if phase == "ttft" and mode not in STREAMING_MODES:
                    continue
                effects.append(_effect(base, other, phase, resamples, seed))
    return effects


def _effect(base: RunResult | None, other: RunResult, phase: str, resamples: int, seed: int) -> ConcurrencyEffect:
    mode, c = other.spec.mode, other.spec.concurrency
    if base is None:
        return ConcurrencyEffect(mode, phase, 1, c, None, f"no {mode} run at concurrency 1 to compare with")
    samples = []
    for run in (base, other):
        values = per_request_us(run, phase)
        if len(run.records) == 0:
            reason = f"the {mode} c={run.spec.concurrency} run kept no per-request records"
            return ConcurrencyEffect(mode, phase, 1, c, None, reason)
        if values.size < MIN_SAMPLES:
            reason = f"the {mode} c={run.spec.concurrency} run has {values.size} {phase} values (fewer than {MIN_SAMPLES})"
            return ConcurrencyEffect(mode, phase, 1, c, None, reason)
        samples.append(values)
    return ConcurrencyEffect(mode, phase, 1, c, bootstrap_median_diff(samples[0], samples[1], resamples, CONFIDENCE, seed))


# --- the rule of thumb --------------------------------------------------------------------


@dataclass(frozen=True)
class RuleOfThumb:
    """What the generated rule of thumb says, as numbers; None fields mean "not known"."""

    verdict: Verdict | None
    overhead_us: float | None
    #: "baseline" or "server_gap", as in TtftVsHttp
    overhead_source: str | None
    ttft_us: float | None
    share: float | None
    carrier: Component | None
    #: the effect of the highest concurrency on TTFT (streams) or wall time, when tested
    concurrency: ConcurrencyEffect | None
    #: why no verdict could be given
    missing: tuple[str, ...]


def rule_of_thumb(comparison: TtftVsHttp, effects: Sequence[ConcurrencyEffect]) -> RuleOfThumb:
    tested = [e for e in effects if e.diff is not None]
    preferred = [e for e in tested if e.phase == "ttft" and e.mode in STREAMING_MODES] or [
        e for e in tested if e.phase == "e2e" and e.mode in STREAMING_MODES
    ] or tested
    highest = max(preferred, key=lambda e: e.concurrency, default=None)
    missing = comparison.missing if comparison.verdict is None else ()
    return RuleOfThumb(
        verdict=comparison.verdict,
        overhead_us=comparison.overhead_us,
        overhead_source=comparison.overhead_source,
        ttft_us=comparison.ttft_us,
        share=comparison.share,
        carrier=comparison.carrier,
        concurrency=highest,
        missing=missing,
    )
