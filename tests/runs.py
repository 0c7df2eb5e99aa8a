"""Synthetic `RunResult`s for unit tests: records built from given durations, then recorded
the way a worker records them (derive -> per-phase histograms, counters)."""

from __future__ import annotations

from collections import Counter

import numpy as np

from netbench.histograms import PhaseHistograms
from netbench.outcomes import Outcome
from netbench.phases import derive, empty_records
from netbench.results import RunResult, WorkerInfo
from netbench.spec import RunSpec


def synthetic_records(e2e_us: np.ndarray, lag_us: np.ndarray | None = None, worker: int = 0) -> np.ndarray:
    """Successful GETs on reused connections: headers at half of e2e, intended start `lag_us` early."""
    e2e_us = np.asarray(e2e_us, dtype=np.int64)
    records = empty_records(e2e_us.size)
    records["start_us"] = np.arange(e2e_us.size) * 1000
    records["intended_start_us"] = records["start_us"] - (0 if lag_us is None else np.asarray(lag_us, dtype=np.int64))
    for mark in ("queue_mark_us", "namelookup_mark_us", "connect_mark_us", "appconnect_mark_us"):
        records[mark] = 0
    records["pretransfer_mark_us"] = 10
    records["posttransfer_mark_us"] = 12
    records["starttransfer_mark_us"] = e2e_us // 2
    records["total_mark_us"] = e2e_us
    records["http_status"] = 200
    records["error_class"] = Outcome.OK
    records["new_connection"] = False
    records["worker"] = worker
    return records


def synthetic_run(
    e2e_us: np.ndarray,
    spec: RunSpec | None = None,
    lag_us: np.ndarray | None = None,
    keep_records: bool = True,
    counters: dict[str, int] | None = None,
    host: str = "host-a",
    started_at_s: float = 1_000.0,
) -> RunResult:
    spec = spec or RunSpec(url="http://127.0.0.1:8000/", mode="get")
    records = synthetic_records(e2e_us, lag_us)
    histograms = PhaseHistograms()
    histograms.record_phases(derive(records, open_loop=spec.open_loop).values_us)
    all_counters = Counter({"requests": len(records), Outcome.OK.key: len(records), "connections_reused": len(records)})
    all_counters.update(counters or {})
    return RunResult(
        spec=spec,
        histograms=histograms,
        counters=all_counters,
        records=records if keep_records else records[:0],
        workers=[WorkerInfo(0, host, 4242, len(records), started_at_s, 10.0, 1.0)],
        started_at_s=started_at_s,
        elapsed_s=10.0,
        context={"url": spec.url},
    )
