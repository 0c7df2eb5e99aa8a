"""One run from spec to `RunResult`: probe the target, plan the workers, run them on a backend
(`netbench.backends`), scrape the server's /metrics around the measured part, merge."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from netbench import signals
from netbench.backends import backend_for
from netbench.backends.base import Backend, BackendRun, ProgressCallback, stopped_result
from netbench.curl import curl_version, fetch
from netbench.datasets import SAMPLE_MAX, DatasetPrompts, load_dataset, reference_tokens, sample
from netbench.errors import InputError
from netbench.lengths import Lengths, parse_lengths
from netbench.histograms import PhaseHistograms
from netbench.pacing import split_evenly
from netbench.phases import empty_events, empty_records
from netbench.prompts import CalibrationError, FixedPrompt, PromptSource, SyntheticPrompts, calibrate
from netbench.results import RunResult, WorkerInfo
from netbench.secrets import redact, redact_url
from netbench.server_metrics import Scrape, difference, scrape
from netbench.server_probe import ProbeError, TokenCounter, exact_output_fields, find_counter
from netbench.spec import RunSpec
from netbench.worker import WorkerResult, WorkerTask
from netbench.workloads import HEALTH_PATH, MODELS_PATH, Request, RequestSource, build_request


@dataclass(frozen=True)
class Target:
    """A spec with its model resolved, the requests to send, and what the probes found."""

    spec: RunSpec
    #: the URL and method every request goes to (a stream's body is each request's own)
    request: Request
    source: RequestSource
    notes: tuple[str, ...]


def prepare(spec: RunSpec) -> Target:
    """Resolve what the run sends: the default model, /health's fallback. Failures here are
    not fatal: a target that refuses everything is reported by the run itself."""
    notes: list[str] = []
    path = None
    if spec.mode == "health":
        if fetch(spec, build_request(spec, HEALTH_PATH)).status == 404:
            path = MODELS_PATH
            notes.append("the server has no /health (HTTP 404): measuring GET /v1/models instead")
    if spec.streaming and not spec.model:
        listed = fetch(spec, build_request(spec.replace(mode="models")))
        model = _first_model_id(listed.body) if listed.status == 200 else None
        if model:
            spec = spec.replace(model=model)
        else:
            why = listed.error or (f"HTTP {listed.status}" if listed.status != 200 else "no model id in the answer")
            notes.append(f"could not list models ({why}); pass --model")
    request = build_request(spec, path)
    if not spec.streaming:
        return Target(spec, request, RequestSource(request), tuple(notes))
    nonce = random.SystemRandom().getrandbits(62)  # this run's prompts are no other run's
    prompts = _prompts(spec, nonce, notes)
    outputs, exact = None, ()
    if spec.output_tokens is not None:
        outputs = parse_lengths(spec.output_tokens, "--output-tokens", spec.seed + 1)
        exact, refused = exact_output_fields(spec)
        if refused:
            notes.append(refused)
    return Target(spec, request, RequestSource(request, spec, prompts, outputs, exact), tuple(notes))


def _prompts(spec: RunSpec, nonce: int, notes: list[str]) -> PromptSource:
    """Where each request's prompt comes from: a data set, prompts built to --input-tokens, or
    --prompt; a problem with the server's counts is bad input, found before any load."""
    if spec.dataset is not None:
        entries = load_dataset(spec.dataset)
        chosen = sample(entries, SAMPLE_MAX if spec.duration_s else spec.n + spec.warmup, spec.seed)
        if spec.output_tokens is None and any(e.reference and e.output_tokens is None for e in chosen):
            counter = find_counter(spec)
            if counter is not None and counter.count_plain is not None:
                try:
                    chosen = reference_tokens(chosen, counter.count_plain)
                except ProbeError as error:
                    raise InputError("dataset", spec.dataset, f"cannot count the reference answers: {error}") from None
            else:
                notes.append("the data set's reference answers could not be counted (no /tokenize): those requests ask for --max-tokens")
        return DatasetPrompts(chosen, spec.mode == "chat", nonce, spec.unique_prefix)
    if spec.input_tokens is None:
        return FixedPrompt(spec.prompt, nonce, spec.unique_prefix)
    try:
        return _sized_prompts(spec, nonce, notes)
    except (ProbeError, CalibrationError) as error:
        raise InputError("input_tokens", spec.input_tokens, f"cannot size prompts in the server's tokenizer: {error}") from None


def _sized_prompts(spec: RunSpec, nonce: int, notes: list[str]) -> SyntheticPrompts:
    assert spec.input_tokens is not None
    counter = find_counter(spec)
    if counter is None:
        raise ProbeError("it answers neither /tokenize nor a probe completion with usage.prompt_tokens")
    lengths = parse_lengths(spec.input_tokens, "--input-tokens", spec.seed)
    prompts = SyntheticPrompts(calibrate(counter.count, counter.cheap, counter.method), lengths, nonce, spec.shared_prefix_tokens)
    if lengths.kind != "normal" and lengths.minimum < prompts.minimum_tokens:
        raise InputError("input_tokens", spec.input_tokens, (
            f"the server adds {prompts.calibration.overhead} tokens to every prompt (BOS, the chat template)"
            + (f" and {spec.shared_prefix_tokens} are shared" if spec.shared_prefix_tokens else "")
            + f": ask for at least {prompts.minimum_tokens}"
        ))  # fmt: skip
    prompts, off = _verified(prompts, counter)
    c = prompts.calibration
    sizing = "exactly" if c.exact and not off else "approximately"
    notes.append(
        f"prompts of {lengths.describe()} tokens, sized {sizing} in the server's tokenizer ({c.method}; it adds "
        f"{c.overhead} to each), each request its own"
        + (f", the first {spec.shared_prefix_tokens} tokens shared" if spec.shared_prefix_tokens else "")
    )
    if off:
        notes.append(f"a probe prompt counted {off} in the server's tokenizer: its words do not add up one token each")
    return prompts


def _verified(prompts: SyntheticPrompts, counter: TokenCounter) -> tuple[SyntheticPrompts, str | None]:
    """Count probe prompts of the shortest and longest lengths; a constant difference is the
    overhead misjudged (shifted once), any other is reported."""
    lengths = prompts.lengths
    high = lengths.high if lengths.kind != "normal" else round(lengths.mean + 2 * lengths.sd)
    targets = sorted({max(lengths.minimum, prompts.minimum_tokens), max(high, prompts.minimum_tokens)})

    def differences(p: SyntheticPrompts) -> list[tuple[int, int]]:
        probe = [dataclasses.replace(p, lengths=Lengths("fixed", t, t)).prompt(-2) for t in targets]
        return [(t, counter.count(q.text or "")) for t, q in zip(targets, probe)]

    counted = differences(prompts)
    offsets = {c - t for t, c in counted}
    if offsets == {0} or not prompts.calibration.exact:
        return prompts, None
    if len(offsets) == 1:
        shifted = dataclasses.replace(prompts, calibration=prompts.calibration.shifted(offsets.pop()))
        counted = differences(shifted)
        if all(c == t for t, c in counted):
            return shifted, None
        prompts = shifted
    return prompts, ", ".join(f"{c} tokens for {t} asked" for t, c in counted if c != t)


def _first_model_id(body: bytes) -> str | None:
    """The first model id of a /v1/models answer; None for any other body (however nested)."""
    try:
        model = json.loads(body)["data"][0]["id"]
    except (ValueError, KeyError, IndexError, TypeError, RecursionError):
        return None
    return model if isinstance(model, str) and model.strip() and len(model) <= _MAX_MODEL_ID_CHARS else None


#: a longer "model id" is no model id
_MAX_MODEL_ID_CHARS = 1024


def plan(spec: RunSpec, source: RequestSource, cores: int | None = None) -> list[WorkerTask]:
    """P = min(in-flight, cores) workers; in-flight slots, n and warm-up split exactly."""
    workers = spec.workers or max(1, min(spec.in_flight, cores or os.cpu_count() or 1))
    workers = min(workers, spec.in_flight)
    slots = split_evenly(spec.in_flight, workers)
    counts = split_evenly(spec.n, workers)
    warmups = split_evenly(spec.warmup, workers)
    return [WorkerTask(spec, source, i, workers, slots[i], counts[i], warmups[i]) for i in range(workers)]


def run(
    spec: RunSpec,
    on_progress: ProgressCallback | None = None,
    backend: Backend | None = None,
    clock: Callable[[], float] = time.time,
) -> RunResult:
    """Measure one run: probe the target, run the workers, merge their results. `clock` is the
    wall clock a run that started no worker is dated by."""
    backend = backend or backend_for(spec.backend, spec.ray_address)
    signals_before = signals.received_count()
    target = prepare(spec)
    tasks = plan(target.spec, target.source, backend.cores())
    started_at_s = clock()
    # Server-side /metrics: scraped once every worker is warm and after the run, so that the
    # difference holds the measured requests only.
    before: list[Scrape] = []
    stopped = signals.signals_since(signals_before)
    if stopped:  # a Ctrl-C during the probes: no load is sent
        done = BackendRun([stopped_result(t, socket.gethostname(), os.getpid()) for t in tasks], [], signals.signal_name(stopped[0]))
    else:
        done = backend.run(tasks, on_progress, lambda: before.append(scrape(target.spec)))
    result = merge_workers(target.spec, done.results, started_at_s)
    if before:
        first = before[0]
        if not first.ok:
            after = first  # its reason says why
        elif done.stop_signal is not None:
            # A stopped run is not kept waiting for a scrape (up to 10 s) that no longer matters.
            after = Scrape(first.url, error=f"the run was stopped by {done.stop_signal} before the last scrape")
        else:
            after = scrape(target.spec)
        result.server_metrics = difference(first, after)
    result.interrupted = done.stop_signal is not None or any(w.interrupted for w in done.results)
    result.notes = list(target.notes) + done.problems + [f"worker {w.index}: {w.error}" for w in done.results if w.error]
    result.notes += failure_notes(result, done.results)
    # A worker that died or raised took its share of the run with it: the run failed (exit 1).
    lost = len(tasks) - len(done.results) + sum(1 for w in done.results if w.error)
    if lost:
        result.counters["workers_failed"] = lost
    result.context = {"url": redact_url(target.request.url), "method": target.request.method, "libcurl": curl_version()}
    if done.stop_signal is not None:
        result.context["stop_signal"] = done.stop_signal
        result.notes.append(f"stopped by {done.stop_signal}: the numbers cover the requests that finished before it")
    # Notes quote servers, libcurl and exceptions, which may echo what the run sent.
    result.notes = [redact(note, spec.secret_values()) for note in result.notes]
    return result


def merge_workers(spec: RunSpec, worker_results: list[WorkerResult], started_at_s: float) -> RunResult:
    histograms = PhaseHistograms()
    counters: Counter[str] = Counter()
    for w in worker_results:
        histograms.add_encoded(w.histograms)
        counters.update(w.counters)
    records = [w.records for w in worker_results if len(w.records)]
    events = [w.events for w in worker_results if len(w.records)]
    infos = [
        WorkerInfo(
            w.index, w.host, w.pid, w.counters.get("requests", 0), w.started_at_s, w.elapsed_s, w.cpu_s,
            None if w.error is None else redact(w.error, spec.secret_values()),
            late_input=w.counters.get("late_input", 0), input_lag_max_us=w.input_lag_max_us,
        )
        for w in worker_results
    ]
    return RunResult(
        spec=spec,
        histograms=histograms,
        counters=counters,
        records=np.concatenate(records) if records else empty_records(0),
        events=np.concatenate(events) if events else empty_events(),
        workers=infos,
        started_at_s=min((w.started_at_s for w in worker_results if w.started_at_s), default=started_at_s),
        elapsed_s=max((w.elapsed_s for w in worker_results), default=0.0),
    )


def failure_notes(result: RunResult, worker_results: list[WorkerResult]) -> list[str]:
    """Why requests failed, in curl's words, and redirects that were measured, not followed."""
    kinds: dict[str, str] = {}
    for w in worker_results:
        for kind, note in w.failure_notes.items():
            kinds.setdefault(kind, note)
    notes = [kinds[kind] for kind in sorted(kinds)]
    redirects = {k: v for k, v in result.counters.items() if k.startswith("status_3")}
    if redirects and not result.spec.follow_redirects:
        statuses = ", ".join(f"HTTP {k[len('status_'):]} x{v}" for k, v in sorted(redirects.items()))
        notes.append(f"redirects answered and not followed ({statuses}): pass --follow-redirects to measure the target")
    return notes
