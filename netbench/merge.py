"""`netbench merge`: runs made at the same time on several hosts, merged into one run, losslessly.

Histograms are added (HDR counts, so the merged percentiles are those of one histogram of
every value), counters summed, per-request records and workers concatenated (worker
indices renumbered so they stay unique), and the merged spec describes the total load:
n, concurrency, rate and the in-flight cap are summed. Runs of another mode, another URL
path or another load model (open vs closed loop) are refused unless forced. What the merged
load says about the client (client-bound, the in-flight cap) is judged again by its summary.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from urllib.parse import urlsplit

import numpy as np

from netbench.errors import MergeRefused
from netbench.histograms import PhaseHistograms
from netbench.phases import empty_events, empty_records
from netbench.results import RunResult, WorkerInfo
from netbench.spec import RunSpec, SpecError


def merge_results(results: Sequence[RunResult], names: Sequence[str] | None = None, force: bool = False) -> RunResult:
    """One run holding every measurement of `results`; `names` label them in messages."""
    if len(results) < 2:
        raise SpecError("merge needs at least two run files")
    labels = list(names) if names is not None else [f"run {i + 1}" for i in range(len(results))]
    differences = _differences(results, labels)
    if differences and not force:
        raise MergeRefused(differences)

    histograms = PhaseHistograms()
    counters: Counter[str] = Counter()
    workers: list[WorkerInfo] = []
    records: list[np.ndarray] = []
    events: list[np.ndarray] = []
    for result in results:
        histograms.add(result.histograms)
        counters.update(result.counters)
        offset = len(workers)
        workers += [dataclasses.replace(w, index=w.index + offset) for w in result.workers]
        if len(result.records):
            renumbered = result.records.copy()
            renumbered["worker"] += offset
            records.append(renumbered)
            events.append(result.events)

    started_at_s = min(r.started_at_s for r in results)
    ended_at_s = max(r.started_at_s + r.elapsed_s for r in results)
    return RunResult(
        spec=_total_spec([r.spec for r in results]),
        histograms=histograms,
        counters=counters,
        records=np.concatenate(records) if records else empty_records(0),
        events=np.concatenate(events) if events else empty_events(),
        workers=workers,
        started_at_s=started_at_s,
        elapsed_s=ended_at_s - started_at_s,
        interrupted=any(r.interrupted for r in results),
        notes=_notes(results, labels, differences),
        context={**results[0].context, "merged_from": labels},
    )


def _request_path(result: RunResult) -> str:
    return urlsplit(str(result.context.get("url", result.spec.url))).path


def _differences(results: Sequence[RunResult], labels: Sequence[str]) -> list[str]:
    """What makes these runs not one load: mode, URL path, open vs closed loop, a repeated run."""
    first, first_label = results[0], labels[0]
    out = []
    for result, label in zip(results[1:], labels[1:]):
        pairs = (
            ("mode", first.spec.mode, result.spec.mode),
            ("URL path", _request_path(first), _request_path(result)),
            ("load", _load_model(first.spec), _load_model(result.spec)),
        )
        out += [f"{what} {a!r} in {first_label} but {b!r} in {label}" for what, a, b in pairs if a != b]
    # By position, not label: `merge a.json a.json` names one file twice. A run is known by its
    # workers (host, pid, start), or by its own start and span when it has no workers.
    seen: dict[tuple[str, float, float], int] = {}
    for i, result in enumerate(results):
        keys = [(f"worker {w.host} pid {w.pid}", w.started_at_s, float(w.pid)) for w in result.workers]
        for key in keys or [("its start and span", result.started_at_s, result.elapsed_s)]:
            if seen.get(key, i) != i:
                out.append(f"{labels[i]} repeats a run already in {labels[seen[key]]} ({key[0]})")
                break
            seen[key] = i
    return out


def _load_model(spec: RunSpec) -> str:
    return "open loop" if spec.open_loop else "closed loop"


def _total_spec(specs: Sequence[RunSpec]) -> RunSpec:
    """The first spec, with the load summed over every run."""
    first = specs[0]
    open_loop = all(s.open_loop for s in specs)
    return first.replace(
        n=sum(s.n for s in specs),
        concurrency=sum(s.concurrency for s in specs),
        warmup=sum(s.warmup for s in specs),
        rate=sum(s.rate for s in specs if s.rate is not None) if open_loop else None,
        duration_s=first.duration_s if open_loop else None,
        max_concurrency=sum(s.in_flight for s in specs) if open_loop else None,
        workers=None,
    )


def _notes(results: Sequence[RunResult], labels: Sequence[str], differences: list[str]) -> list[str]:
    notes = [f"merged from {len(results)} runs: {', '.join(labels)}"]
    notes += [f"merged with --force although {d}" for d in differences]
    if max(r.started_at_s for r in results) > min(r.started_at_s + r.elapsed_s for r in results):
        notes.append("the runs did not all overlap in time: the merged rate is not one simultaneous load")
    seeds = [r.spec.seed for r in results if r.spec.open_loop and r.spec.arrival == "poisson"]
    if len(seeds) != len(set(seeds)):
        notes.append("runs share a --seed: their Poisson schedules coincide, so the merged arrivals are not one Poisson process")
    if any(r.server_metrics for r in results):
        # Each host's before/after scrape of a shared server counts every host's requests.
        notes.append("server-side /metrics left out: each run's scrape may count the other runs' requests")
    for result, label in zip(results, labels):
        notes += [f"{label}: {note}" for note in result.notes]
    return list(dict.fromkeys(notes))
