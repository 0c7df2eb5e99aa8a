"""The CSV row per run, appended under a file lock: the seed's columns first, then the rest."""

from __future__ import annotations

import csv
import fcntl
import io
import time
from pathlib import Path

from netbench.phases import PHASE_NAMES
from netbench.results import RunResult
from netbench.summary import SEED_KEYS, summarize

DEFAULT_CSV = "benchmarks_out/network_latency_bench.csv"
_PERCENTILE_KEYS = ("p50", "p95", "p99")
COLUMNS: tuple[str, ...] = (
    *SEED_KEYS,
    "notes",
    "timestamp",
    "url",
    "model",
    "rate",
    "requests",
    "ok",
    "failed",
    "error_rate",
    "errors",
    "achieved_rps",
    "tokens_per_request",
    "connections_new",
    "connections_reused",
    "interrupted",
    *(f"{phase}_{q}_ms" for phase in PHASE_NAMES for q in _PERCENTILE_KEYS),
)


class CsvColumnsError(ValueError):
    """The target CSV was written with other columns: reported as one line, exit code 2."""


def csv_row(result: RunResult) -> dict[str, object]:
    summary = summarize(result)
    notes = list(result.notes)
    if result.interrupted:
        notes.insert(0, "interrupted")
    row: dict[str, object] = {key: summary[key] for key in SEED_KEYS}
    row.update(
        notes="; ".join(notes),
        timestamp=time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(result.started_at_s)),
        url=summary["url"],
        model=summary["model"] or "",
        rate=summary["rate"] or "",
        requests=summary["requests"],
        ok=summary["ok"],
        failed=summary["failed"],
        error_rate=summary["error_rate"],
        errors=" ".join(f"{k}={v}" for k, v in result.failures.items()),
        achieved_rps=summary["achieved_rps"],
        tokens_per_request="" if result.tokens_per_request is None else round(result.tokens_per_request, 2),
        connections_new=result.counters.get("connections_new", 0),
        connections_reused=result.counters.get("connections_reused", 0),
        interrupted=result.interrupted,
    )
    phases = summary["phases"]
    for phase in PHASE_NAMES:
        stats = phases[phase]  # type: ignore[index]
        for q in _PERCENTILE_KEYS:
            row[f"{phase}_{q}_ms"] = "" if stats is None else stats[f"{q}_us"] / 1000
    return {k: "" if v is None else v for k, v in row.items()}


def append_rows(path: str | Path, results: list[RunResult]) -> None:
    """Append one row per run; the header is written when the file is new. Atomic under
    concurrent writers: the whole append happens under an exclusive lock, as one write."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    rows = [csv_row(result) for result in results]  # built before the lock: other writers wait less
    with open(target, "a+", newline="") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            handle.seek(0)
            header = handle.readline().rstrip("\r\n")
            if header and header != ",".join(COLUMNS):
                raise CsvColumnsError(f"{target} has other columns than this netbench writes; choose another --csv file")
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
            if not header:
                writer.writeheader()
            writer.writerows(rows)
            handle.seek(0, io.SEEK_END)
            handle.write(buffer.getvalue())
            handle.flush()
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
