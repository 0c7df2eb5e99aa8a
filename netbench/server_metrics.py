"""Server-side truth: scrape Prometheus `/metrics` before and after a run and take the difference.

vLLM (and SGLang, with its own prefix) export latency histograms measured inside the server:
time to first token, end-to-end latency, queue time. The difference of two scrapes is the
server-side distribution of the requests sent in between; client minus server is the network +
HTTP + framework overhead (docs/architecture.md, "Network vs server split"). Bucket counts only bound a
percentile, so `bucket_percentile` interpolates linearly within the bucket, as Prometheus's
`histogram_quantile` does, and every output says so.

llama.cpp's `llama-server --metrics` exports counters and gauges instead (`llamacpp:` prefix):
tokens and seconds of prompt processing and generation, decode calls, requests processing and
deferred. The run keeps the counters' differences and the gauges' values before and after;
`counter_summary` derives the means per token and per request from them. A server without
`/metrics` is reported as not available, with the reason; nothing is guessed.

Whatever a server answers (a body of any size or shape, NaN samples, a bucket without `le`),
a scrape ends as a `Scrape`, usable or "not available (reason)": never an exception. The
stored form (`RunResult.server_metrics`) is plain JSON: it survives the run file, and
`check_stored` is its schema when a run file is read back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from prometheus_client.parser import text_string_to_metric_families

from netbench.curl import fetch
from netbench.secrets import redact_url
from netbench.spec import RunSpec
from netbench.workloads import Request, api_base, request_headers

METRICS_PATH = "/metrics"
#: a scrape is a probe, not part of the run: it must not hold the run up for long
_SCRAPE_TIMEOUT_S = 10.0
#: histogram name suffixes (after "vllm:" or "sglang:") -> the client phase they correspond to
HISTOGRAMS: dict[str, str] = {
    "ttft": "time_to_first_token_seconds",
    "e2e": "e2e_request_latency_seconds",
    "queue": "request_queue_time_seconds",
    "itl": "inter_token_latency_seconds",
}
_PREFIXES = ("vllm:", "sglang:")
LLAMA_CPP_PREFIX = "llamacpp:"
#: llama.cpp declares this one a counter, but it is a maximum: its difference means nothing
_LLAMA_CPP_MAXIMA = frozenset({"llamacpp:n_tokens_max"})
_SUCCESS_COUNTER = "request_success"
INTERPOLATION_NOTE = "interpolated linearly within histogram buckets"


@dataclass
class Scrape:
    """One scrape: the histograms and counters of interest, or why there are none."""

    url: str
    error: str | None = None
    #: key ("ttft", ...) -> (metric name, {upper bound: cumulative count}, sum in s, count)
    histograms: dict[str, tuple[str, dict[float, float], float, float]] = field(default_factory=dict)
    #: finished_reason -> requests counted by the server's success counter
    successes: dict[str, float] = field(default_factory=dict)
    #: llama.cpp's counters and gauges, by the name /metrics gives them
    counters: dict[str, float] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)
    families: int = 0
    #: families of interest left out, and why (a bucket without `le`, a NaN sample, ...)
    skipped: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


def metrics_url(spec: RunSpec) -> str:
    """The server's /metrics: beside /v1 for the OpenAI modes, at the origin for --mode get."""
    if spec.mode == "get":
        parts = urlsplit(spec.url)
        return urlunsplit((parts.scheme, parts.netloc, METRICS_PATH, "", ""))
    return api_base(spec.url) + METRICS_PATH


def scrape(spec: RunSpec) -> Scrape:
    """GET /metrics (through curl.fetch, with the run's TLS and auth settings) and parse it.
    The scrape's URL is kept redacted: it goes into the run file."""
    url = metrics_url(spec)
    shown = redact_url(url)
    probe = spec.replace(timeout_s=min(spec.timeout_s, _SCRAPE_TIMEOUT_S))
    fetched = fetch(probe, Request(url, "GET", request_headers(spec, False), None, False))
    if fetched.error:
        return Scrape(shown, error=f"the scrape failed ({fetched.error})")
    if fetched.status != 200:
        return Scrape(shown, error=f"HTTP {fetched.status} from {METRICS_PATH}: the server does not expose Prometheus metrics")
    return parse(shown, fetched.body.decode("utf-8", errors="replace"))


class _Unusable(ValueError):
    """A family of interest that cannot be used as it is (its message says why)."""


def parse(url: str, text: str) -> Scrape:
    """Read Prometheus text with prometheus_client's parser; keep the latency histograms."""
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as error:  # noqa: BLE001  (a third-party parser of whatever the server sent)
        return Scrape(url, error=f"{METRICS_PATH} is not Prometheus text ({type(error).__name__}: {str(error)[:200]})")
    if not families:
        return Scrape(url, error=f"{METRICS_PATH} is empty")
    out = Scrape(url, families=len(families))
    for family in families:
        try:
            _keep(family, out)
        except _Unusable as error:
            out.skipped.append(f"{family.name}: {error}")
    return out


def _keep(family: object, out: Scrape) -> None:
    """Keep what `out` needs of one family; _Unusable when it is one of interest and unusable."""
    name, kind = family.name, family.type  # type: ignore[attr-defined]
    if name.startswith(LLAMA_CPP_PREFIX):
        _llama_cpp_family(family, out)
        return
    base = _unprefixed(name)
    if base is None:
        return
    if kind == "histogram":
        for key, suffix in HISTOGRAMS.items():
            if base == suffix:
                out.histograms[key] = _histogram(family)
    elif kind == "counter" and base == _SUCCESS_COUNTER:
        successes: dict[str, float] = {}
        for sample in family.samples:  # type: ignore[attr-defined]
            if sample.name.endswith("_total"):
                reason = str(sample.labels.get("finished_reason", ""))
                successes[reason] = successes.get(reason, 0.0) + _finite(sample.value)
        for reason, count in successes.items():
            out.successes[reason] = out.successes.get(reason, 0.0) + count


def _finite(value: object) -> float:
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise _Unusable(f"a sample of {value!r} (not a finite number)")
    return float(value)


def _llama_cpp_family(family: object, out: Scrape) -> None:
    """llama.cpp's unlabelled counters and gauges. prometheus_client names every counter
    sample `<family>_total`; the family name is what llama.cpp declared."""
    name, kind = family.name, family.type  # type: ignore[attr-defined]
    value = sum(sample.value for sample in family.samples)  # type: ignore[attr-defined]
    if not math.isfinite(value):
        return
    if kind == "counter" and name not in _LLAMA_CPP_MAXIMA:
        out.counters[f"{name}_total"] = value
    elif kind in ("counter", "gauge"):
        out.gauges[name] = value


def _unprefixed(name: str) -> str | None:
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix) :]
    return None


def _histogram(family: object) -> tuple[str, dict[float, float], float, float]:
    """Sum every label set (models, engines) into one cumulative bucket table."""
    buckets: dict[float, float] = {}
    total_s = count = 0.0
    for sample in family.samples:  # type: ignore[attr-defined]
        if sample.name.endswith("_bucket"):
            bound = _bound(sample.labels.get("le"))
            buckets[bound] = buckets.get(bound, 0.0) + _finite(sample.value)
        elif sample.name.endswith("_sum"):
            total_s += _finite(sample.value)
        elif sample.name.endswith("_count"):
            count += _finite(sample.value)
    if not math.isfinite(total_s + count + sum(buckets.values())):
        raise _Unusable("its counts overflow")
    return family.name, buckets, total_s, count  # type: ignore[attr-defined]


def _bound(text: object) -> float:
    """A bucket's `le`: a number or +Inf."""
    try:
        bound = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise _Unusable(f"a bucket whose le is {text!r}") from None
    if math.isnan(bound) or bound == -math.inf:
        raise _Unusable(f"a bucket whose le is {text!r}")
    return bound


def difference(before: Scrape, after: Scrape, warmup_included: int = 0) -> dict[str, object]:
    """What the server counted between two scrapes, as the JSON stored in the run file."""
    if not before.ok or not after.ok:
        return {"available": False, "url": after.url, "reason": before.error or after.error}
    histograms: dict[str, object] = {}
    for key, (name, buckets_after, sum_after, count_after) in after.histograms.items():
        if key not in before.histograms:
            continue
        _, buckets_before, sum_before, count_before = before.histograms[key]
        bounds = sorted(buckets_after)
        deltas = [buckets_after[b] - buckets_before.get(b, 0.0) for b in bounds]
        if not all(math.isfinite(d) for d in [*deltas, count_after - count_before, sum_after - sum_before]):
            return {"available": False, "url": after.url, "reason": f"{name}'s counts are too large to subtract"}
        if count_after < count_before or any(d < 0 for d in deltas):
            return {"available": False, "url": after.url, "reason": "the server's counters went backwards (a restart during the run)"}
        histograms[key] = {
            "metric": name,
            "count": int(round(count_after - count_before)),
            "sum_s": sum_after - sum_before,
            "buckets": [[_bound_text(b), int(round(d))] for b, d in zip(bounds, deltas)],
        }
    counters = {name: value - before.counters[name] for name, value in after.counters.items() if name in before.counters}
    successes = {k: v - before.successes.get(k, 0.0) for k, v in after.successes.items()}
    if not all(math.isfinite(v) for v in [*counters.values(), *successes.values()]):
        return {"available": False, "url": after.url, "reason": "the server's counters are too large to subtract"}
    if any(delta < 0 for delta in counters.values()):
        return {"available": False, "url": after.url, "reason": "the server's counters went backwards (a restart during the run)"}
    if not histograms and not counters:
        skipped = "; ".join(dict.fromkeys(before.skipped + after.skipped))
        return {"available": False, "url": after.url,
                "reason": f"{METRICS_PATH} has no vLLM-style latency histograms or llama.cpp counters"
                + (f" that can be read (left out: {skipped[:300]})" if skipped else "")}  # fmt: skip
    out: dict[str, object] = {
        "available": True,
        "url": after.url,
        "method": INTERPOLATION_NOTE,
        "warmup_included": warmup_included,
        "histograms": histograms,
        "successes": {k: int(round(v)) for k, v in successes.items() if round(v)},
    }
    if counters:
        # counts are whole numbers; the *_seconds_total counters keep their fraction
        out["counters"] = {k: v if k.endswith("_seconds_total") else int(round(v)) for k, v in counters.items()}
        out["gauges"] = {k: {"before": before.gauges.get(k), "after": v} for k, v in after.gauges.items()}
    return out


def counter_summary(server_metrics: dict[str, object] | None, requests: int) -> dict[str, object] | None:
    """llama.cpp's counter differences as netbench reports them: tokens, seconds, and the means
    derived from them; None without llama.cpp counters or when they counted no token (the mode
    never reached the engine). `requests`: the requests of the run the server completed
    (llama.cpp has no request counter; the per-request means divide by it).

    llamacpp:prompt_seconds_total is the wall time of the batches that evaluated prompt tokens:
    at concurrency > 1 prompts share batches, so its per-request mean is below each request's
    own prompt time. tokens_predicted_seconds_total sums each request's own generation time
    (first token to last), so its per-request mean is exact; the first token of a request comes
    with the prompt, so a decode step is that time over the tokens after the first.
    """
    if not server_metrics or not server_metrics.get("available"):
        return None
    counters = server_metrics.get("counters")
    if not isinstance(counters, dict) or not counters:
        return None
    gauges = server_metrics.get("gauges") or {}

    def count(name: str) -> int:
        return int(counters.get(f"{LLAMA_CPP_PREFIX}{name}", 0))

    def ratio_us(seconds: float, divisor: int) -> float | None:
        return round(seconds * 1e6 / divisor, 3) if divisor > 0 else None

    def after(name: str) -> float | None:
        gauge = gauges.get(f"{LLAMA_CPP_PREFIX}{name}")  # type: ignore[union-attr]
        return gauge.get("after") if isinstance(gauge, dict) else None

    prompt_s = float(counters.get(f"{LLAMA_CPP_PREFIX}prompt_seconds_total", 0.0))
    generation_s = float(counters.get(f"{LLAMA_CPP_PREFIX}tokens_predicted_seconds_total", 0.0))
    prompt_tokens, generated = count("prompt_tokens_total"), count("tokens_predicted_total")
    if not (prompt_tokens or generated or count("prompt_tokens_cached_total")):
        return None
    return {
        "server": "llama.cpp",
        "requests": requests,
        "prompt_tokens": prompt_tokens,
        "cached_prompt_tokens": count("prompt_tokens_cached_total"),
        "generated_tokens": generated,
        "decode_calls": count("n_decode_total"),
        "prompt_s": prompt_s,
        "generation_s": generation_s,
        "prompt_us_per_token": ratio_us(prompt_s, prompt_tokens),
        "prompt_us_per_request": ratio_us(prompt_s, requests),
        "generation_us_per_request": ratio_us(generation_s, requests),
        "generation_us_per_step": ratio_us(generation_s, generated - requests),
        "requests_processing_after": after("requests_processing"),
        "requests_deferred_after": after("requests_deferred"),
    }


def _bound_text(bound: float) -> str | float:
    return "+Inf" if math.isinf(bound) else bound


@dataclass(frozen=True)
class BucketQuantile:
    """A quantile read from cumulative buckets, in the bounds' unit: the interpolated value and
    the bucket it lies in. `open`: the rank lies in the +Inf bucket, so `value` is the last
    finite bound, a lower bound only."""

    value: float
    low: float
    high: float
    open: bool = False


def bucket_percentile(buckets: list[tuple[float, float]], q: float) -> BucketQuantile | None:
    """The q-quantile (0..1) of cumulative buckets [(upper bound, cumulative count)],
    interpolated linearly within its bucket, as Prometheus's histogram_quantile does (the first
    bucket starts at 0). None when the buckets counted nothing."""
    buckets = sorted(buckets)
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, cumulative in buckets:
        if cumulative >= rank and cumulative > lower_count:
            if math.isinf(bound):
                return BucketQuantile(lower_bound, lower_bound, bound, open=True)
            fraction = (rank - lower_count) / (cumulative - lower_count)
            return BucketQuantile(lower_bound + (bound - lower_bound) * fraction, lower_bound, bound)
        if not math.isinf(bound):
            lower_bound = bound
        lower_count = cumulative
    return BucketQuantile(lower_bound, lower_bound, math.inf, open=True)


@dataclass(frozen=True)
class ServerPercentiles:
    """Server-side p50/p95 of one histogram in µs, interpolated within buckets (`*_bucket_us`
    is the bucket each lies in: the resolution), and the exact mean from _sum / _count."""

    key: str
    metric: str
    count: int
    p50_us: float
    p95_us: float
    p50_bucket_us: tuple[float, float]
    p95_bucket_us: tuple[float, float]
    p95_open: bool
    mean_us: float
    #: every counted request fell in one bucket: the interpolated values only say "in this bucket"
    single_bucket: bool = False


def percentiles(server_metrics: dict[str, object] | None) -> dict[str, ServerPercentiles]:
    """The server-side percentiles of each stored histogram that counted any request."""
    if not server_metrics or not server_metrics.get("available"):
        return {}
    out: dict[str, ServerPercentiles] = {}
    for key, h in server_metrics.get("histograms", {}).items():  # type: ignore[union-attr]
        count = int(h["count"])
        buckets = [(float(b), float(c)) for b, c in h["buckets"]]
        p50, p95 = bucket_percentile(buckets, 0.50), bucket_percentile(buckets, 0.95)
        if count <= 0 or p50 is None or p95 is None:
            continue
        out[key] = ServerPercentiles(
            key=key,
            metric=str(h["metric"]),
            count=count,
            p50_us=p50.value * 1e6,
            p95_us=p95.value * 1e6,
            p50_bucket_us=(p50.low * 1e6, p50.high * 1e6),
            p95_bucket_us=(p95.low * 1e6, p95.high * 1e6),
            p95_open=p95.open,
            mean_us=float(h["sum_s"]) / count * 1e6,
            single_bucket=any(c == count for _, c in _per_bucket(buckets)),
        )
    return out


def _per_bucket(buckets: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Cumulative counts -> counts per bucket."""
    out, previous = [], 0.0
    for bound, cumulative in sorted(buckets):
        out.append((bound, cumulative - previous))
        previous = cumulative
    return out


def check_stored(stored: object) -> None:
    """The schema of `difference`'s output as a run file holds it: ValueError naming the field
    (`server_metrics.histograms.ttft.count: ...`) when a reader of it could not use it."""

    def fail(where: str, problem: str) -> None:
        raise ValueError(f"server_metrics{where}: {problem}")

    def number(value: object, where: str, whole: bool = False) -> None:
        kinds = int if whole else int | float
        if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
            fail(where, f"{value!r} is not a finite {'integer' if whole else 'number'}")

    def mapping(value: object, where: str) -> dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            fail(where, "not an object")
        return value  # type: ignore[return-value]

    data = mapping(stored, "")
    if not isinstance(data.get("available"), bool):
        fail(".available", "not true or false")
    for key in ("url", "reason", "method"):
        if key in data and not isinstance(data[key], str | None):
            fail(f".{key}", "not a string")
    if not data["available"]:
        return
    for key, h in mapping(data.get("histograms", {}), ".histograms").items():
        where = f".histograms.{key}"
        h = mapping(h, where)
        if not isinstance(h.get("metric"), str):
            fail(f"{where}.metric", "not a string")
        number(h.get("count"), f"{where}.count", whole=True)
        number(h.get("sum_s"), f"{where}.sum_s")
        buckets = h.get("buckets")
        if not isinstance(buckets, list):
            fail(f"{where}.buckets", "not a list")
        for bucket in buckets:  # type: ignore[union-attr]
            if not isinstance(bucket, list) or len(bucket) != 2:
                fail(f"{where}.buckets", f"{bucket!r} is not a [bound, count] pair")
            bound, count = bucket
            if bound != "+Inf":
                number(bound, f"{where}.buckets")
            number(count, f"{where}.buckets", whole=True)
    for key, value in mapping(data.get("successes", {}), ".successes").items():
        number(value, f".successes.{key}", whole=True)
    for key, value in mapping(data.get("counters", {}), ".counters").items():
        number(value, f".counters.{key}")
    for key, gauge in mapping(data.get("gauges", {}), ".gauges").items():
        for side, value in mapping(gauge, f".gauges.{key}").items():
            if value is not None:
                number(value, f".gauges.{key}.{side}")
