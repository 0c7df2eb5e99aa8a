"""The server's own Prometheus metrics, with vLLM's names, labels and bucket layouts.

Each app gets its own `CollectorRegistry` (never the process-global one), so several servers
can live in one process. Labels are vLLM v1's: `model_name` and `engine` (always "0").
Time to first token and end-to-end latency are measured by the HTTP handler, from the request's
arrival at the handler to the first token event / the last event written; queue, prefill and
decode times are the engine's. `time_per_output_token_seconds` is observed once per token gap,
like `inter_token_latency_seconds`, as vLLM v1 does with that (deprecated) name.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from netbench.sim.engine import Engine, SimRequest

# vLLM's bucket boundaries (vllm/v1/metrics/loggers.py), in seconds.
TTFT_BUCKETS_S = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
TOKEN_GAP_BUCKETS_S = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
REQUEST_LATENCY_BUCKETS_S = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0,
    40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip

FINISH_REASONS = ("stop", "length", "abort")
ENGINE_INDEX = "0"


class SimMetrics:
    """All metric families of one server, bound to its model name."""

    def __init__(self, model_name: str, engine: Engine) -> None:
        self.registry = CollectorRegistry()
        labels = ("model_name", "engine")
        values = (model_name, ENGINE_INDEX)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, labels, registry=self.registry).labels(*values)

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, labels, registry=self.registry).labels(*values)

        def histogram(name: str, doc: str, buckets_s: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, labels, registry=self.registry, buckets=buckets_s).labels(*values)

        # Read at scrape time, so the gauges are exact even between engine steps.
        gauge("vllm:num_requests_running", "Number of requests in model execution batches.").set_function(
            lambda: engine.num_running
        )
        gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.").set_function(
            lambda: engine.num_waiting
        )
        self.prompt_tokens = counter("vllm:prompt_tokens", "Number of prefill tokens processed.")
        self.generation_tokens = counter("vllm:generation_tokens", "Number of generation tokens processed.")
        success = Counter(
            "vllm:request_success",
            "Count of successfully processed requests.",
            (*labels, "finished_reason"),
            registry=self.registry,
        )
        # Created up front, as vLLM does, so every reason is exported from the first scrape.
        self.request_success = {reason: success.labels(*values, reason) for reason in FINISH_REASONS}
        self.ttft_s = histogram(
            "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", TTFT_BUCKETS_S
        )
        self.tpot_s = histogram(
            "vllm:time_per_output_token_seconds",
            "Histogram of time per output token in seconds."
            "DEPRECATED: Use vllm:inter_token_latency_seconds instead.",
            TOKEN_GAP_BUCKETS_S,
        )
        self.itl_s = histogram(
            "vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", TOKEN_GAP_BUCKETS_S
        )
        self.e2e_s = histogram(
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            REQUEST_LATENCY_BUCKETS_S,
        )
        self.queue_s = histogram(
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            REQUEST_LATENCY_BUCKETS_S,
        )
        self.prefill_s = histogram(
            "vllm:request_prefill_time_seconds",
            "Histogram of time spent in PREFILL phase for request.",
            REQUEST_LATENCY_BUCKETS_S,
        )
        self.decode_s = histogram(
            "vllm:request_decode_time_seconds",
            "Histogram of time spent in DECODE phase for request.",
            REQUEST_LATENCY_BUCKETS_S,
        )
        self.inference_s = histogram(
            "vllm:request_inference_time_seconds",
            "Histogram of time spent in RUNNING phase for request.",
            REQUEST_LATENCY_BUCKETS_S,
        )

    def exposition(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)


class RequestRecorder:
    """Times one request as its HTTP handler writes it, and records it in `SimMetrics`."""

    def __init__(self, metrics: SimMetrics, arrival_s: float, prompt_tokens: int) -> None:
        self._metrics = metrics
        self._arrival_s = arrival_s
        self._prompt_tokens = prompt_tokens
        self._last_token_s: float | None = None

    def token(self) -> None:
        """A token event is about to be written (or, non-streaming, was received)."""
        now_s = time.monotonic()
        if self._last_token_s is None:
            self._metrics.ttft_s.observe(now_s - self._arrival_s)
            self._metrics.prompt_tokens.inc(self._prompt_tokens)
        else:
            gap_s = now_s - self._last_token_s
            self._metrics.itl_s.observe(gap_s)
            self._metrics.tpot_s.observe(gap_s)
        self._metrics.generation_tokens.inc()
        self._last_token_s = now_s

    def finish(self, request: SimRequest, finish_reason: str) -> None:
        """The last event is about to be written: record the request's latencies."""
        assert request.admitted_s is not None and request.first_token_s is not None
        assert request.finished_s is not None
        metrics = self._metrics
        metrics.e2e_s.observe(time.monotonic() - self._arrival_s)
        metrics.queue_s.observe(request.queue_s)
        metrics.prefill_s.observe(request.first_token_s - request.admitted_s)
        metrics.decode_s.observe(request.finished_s - request.first_token_s)
        metrics.inference_s.observe(request.finished_s - request.admitted_s)
        metrics.request_success[finish_reason].inc()

    def abort(self) -> None:
        """The client went away before the end."""
        self._metrics.request_success["abort"].inc()
