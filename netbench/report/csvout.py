"""The CSV row per run, appended under a file lock: the headline columns first, then the rest."""

from __future__ import annotations

import csv
import fcntl
import io
import time
from collections.abc import Sequence
from pathlib import Path

from netbench.errors import InputError
from netbench.phases import PHASE_NAMES
from netbench.serial import plain
from netbench.summary import HEADLINE_KEYS, RunSummary

_PERCENTILE_KEYS = ("p50", "p95", "p99")
COLUMNS: tuple[str, ...] = (
    *HEADLINE_KEYS,
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
    "output_tokens_per_s",
    "prompt_tokens_per_s",
    "goodput_rps",
    "connections_new",
    "connections_reused",
    "interrupted",
    *(f"{phase}_{q}_ms" for phase in PHASE_NAMES for q in _PERCENTILE_KEYS),
)


class CsvColumnsError(InputError):
    """The target CSV was written with other columns: reported as one line, exit code 2."""

    def __init__(self, path: Path) -> None:
        super().__init__("csv", str(path), "the file has other columns than this netbench writes; choose another file")


def csv_row(s: RunSummary) -> dict[str, object]:
    notes = ["interrupted", *s.notes] if s.interrupted else list(s.notes)
    row: dict[str, object] = {key: getattr(s, key) for key in HEADLINE_KEYS}
    throughput = plain(s.throughput)  # rounded as the JSON output has it
    row.update(
        notes="; ".join(notes),
        timestamp=time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(s.started_at_s)),
        url=s.url,
        model=s.model or "",
        rate=s.rate or "",
        requests=s.requests,
        ok=s.ok,
        failed=s.failed,
        error_rate=round(s.error_rate, 6),
        errors=" ".join(f"{outcome.key}={count}" for outcome, count in s.errors.items()),
        achieved_rps=round(s.achieved_rps, 2),
        tokens_per_request="" if s.tokens_per_request is None else round(s.tokens_per_request, 2),
        output_tokens_per_s=throughput["output_tokens_per_s"],
        prompt_tokens_per_s=throughput["prompt_tokens_per_s"],
        goodput_rps=throughput.get("goodput_rps"),  # omitted without a per-request --slo gate
        connections_new=s.connections.new,
        connections_reused=s.connections.reused,
        interrupted=s.interrupted,
    )
    for phase in PHASE_NAMES:
        stats = s.phase(phase)
        for q in _PERCENTILE_KEYS:
            row[f"{phase}_{q}_ms"] = "" if stats is None else getattr(stats, f"{q}_us") / 1000
    return {k: "" if v is None else v for k, v in row.items()}


def render_csv(summaries: Sequence[RunSummary]) -> str:
    """One row per run, header included (`netbench report --format csv`)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_row(s) for s in summaries)
    return buffer.getvalue()


def _check_header(target: Path, header: str) -> None:
    if header and header != ",".join(COLUMNS):
        raise CsvColumnsError(target)


def check_columns(path: str | Path) -> None:
    """Refuse, before any load is sent, a CSV that another netbench (or anything else) wrote."""
    target = Path(path)
    if target.is_file():
        with open(target, newline="") as handle:
            _check_header(target, handle.readline().rstrip("\r\n"))


def append_rows(path: str | Path, summaries: Sequence[RunSummary]) -> None:
    """Append one row per run; the header is written when the file is new. Atomic under
    concurrent writers: the whole append happens under an exclusive lock, as one write."""
    target = Path(path)
    rows = [csv_row(s) for s in summaries]  # built before the lock: other writers wait less
    with open(target, "a+", newline="") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            handle.seek(0)
            header = handle.readline().rstrip("\r\n")
            _check_header(target, header)
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
