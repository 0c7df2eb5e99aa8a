"""`RunResult`, what one run measured, and the versioned run file it is saved to and loaded from."""

from __future__ import annotations

import base64
import io
import json
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from netbench.histograms import PhaseHistograms, PhaseStats
from netbench.outcomes import FAILURES, Outcome
from netbench.phases import EVENT_DTYPE, RECORD_DTYPE, empty_events, empty_records
from netbench.spec import RunSpec

#: 3: records with the prompt and output tokens each request asked for; 2: records by field name
#: with token events beside them; 1: older records, no events (all read)
SCHEMA_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)


class RunFileError(ValueError):
    """A run file that cannot be read: reported as one line, exit code 2."""


@dataclass(frozen=True)
class WorkerInfo:
    index: int
    host: str
    pid: int
    requests: int
    started_at_s: float
    elapsed_s: float
    cpu_s: float
    error: str | None = None

    @property
    def cpu_percent(self) -> float:
        return 100.0 * self.cpu_s / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass
class RunResult:
    spec: RunSpec
    histograms: PhaseHistograms
    counters: Counter[str]
    records: np.ndarray
    workers: list[WorkerInfo]
    started_at_s: float
    elapsed_s: float
    interrupted: bool = False
    #: facts about the target and the run a reader must see (fallbacks, client-bound, ...)
    notes: list[str] = field(default_factory=list)
    #: the resolved request target, curl version, and similar context
    context: dict[str, object] = field(default_factory=dict)
    #: server-side /metrics differences, when the server exposes them
    server_metrics: dict[str, object] | None = None
    #: the kept records' token events, in record order (phases.EVENT_DTYPE)
    events: np.ndarray = field(default_factory=empty_events)

    # --- derived numbers every renderer shares ---
    def stats(self, phase: str) -> PhaseStats | None:
        return self.histograms.stats(phase)

    @property
    def requests(self) -> int:
        return self.counters.get("requests", 0)

    @property
    def ok(self) -> int:
        return self.counters.get(Outcome.OK.key, 0)

    @property
    def failed(self) -> int:
        return self.requests - self.ok

    @property
    def failures(self) -> dict[str, int]:
        return {o.key: self.counters[o.key] for o in FAILURES if self.counters.get(o.key)}

    @property
    def error_rate(self) -> float:
        return self.failed / self.requests if self.requests else 0.0

    @property
    def achieved_rps(self) -> float:
        return self.requests / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def tokens_per_request(self) -> float | None:
        return self.counters.get("tokens", 0) / self.ok if self.spec.streaming and self.ok else None

    @property
    def label(self) -> str:
        """A short name unique within a sweep, for file names: `completions-c4`, `chat-c1-r20`,
        `completions-c1-in256` (--input-tokens 256; 128:512 is `in128-512`)."""
        spec = self.spec
        label = f"{spec.mode}-c{spec.concurrency}" + (f"-r{spec.rate:g}" if spec.open_loop else "")
        if spec.input_tokens is not None:
            label += "-in" + "".join(c if c.isalnum() else "-" for c in spec.input_tokens)
        return label

    # --- the run file ---
    def to_dict(self, include_records: bool = True) -> dict[str, object]:
        return {
            "schema_version": SCHEMA_VERSION,
            "spec": self.spec.public_dict(),
            "counters": dict(self.counters),
            "histograms": self.histograms.encode(),
            "workers": [asdict(w) for w in self.workers],
            "started_at_s": self.started_at_s,
            "elapsed_s": self.elapsed_s,
            "interrupted": self.interrupted,
            "notes": list(self.notes),
            "context": dict(self.context),
            "server_metrics": self.server_metrics,
            "records": _encode_array(self.records) if include_records else None,
            "events": _encode_array(self.events) if include_records else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> RunResult:
        version = data.get("schema_version")
        if version not in READABLE_VERSIONS:
            raise RunFileError(f"unsupported run file schema_version {version!r} (this netbench reads {READABLE_VERSIONS})")
        records = _decode_array(data["records"]) if data.get("records") else empty_records(0)  # type: ignore[arg-type]
        events = _decode_array(data["events"]) if data.get("events") else empty_events()  # type: ignore[arg-type]
        if version == 1:
            records = _records_from_v1(records)
        elif version == 2:
            records = _records_by_name(records)
        if records.dtype != RECORD_DTYPE or events.dtype != EVENT_DTYPE or len(events) != records["events_kept"].sum():
            raise ValueError("the records or their events do not have this netbench's layout")
        return cls(
            spec=RunSpec.from_public_dict(data["spec"]),  # type: ignore[arg-type]
            histograms=PhaseHistograms.decode(data["histograms"]),  # type: ignore[arg-type]
            counters=Counter(data["counters"]),  # type: ignore[arg-type]
            records=records,
            workers=[WorkerInfo(**w) for w in data.get("workers", [])],  # type: ignore[union-attr,arg-type]
            started_at_s=float(data.get("started_at_s", 0.0)),  # type: ignore[arg-type]
            elapsed_s=float(data.get("elapsed_s", 0.0)),  # type: ignore[arg-type]
            interrupted=bool(data.get("interrupted", False)),
            notes=list(data.get("notes", [])),  # type: ignore[call-overload]
            context=dict(data.get("context", {})),  # type: ignore[call-overload]
            server_metrics=data.get("server_metrics"),  # type: ignore[arg-type]
            events=events,
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> RunResult:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as error:
            raise RunFileError(f"cannot read run file {path}: {error}") from None
        if not isinstance(data, dict):
            raise RunFileError(f"{path} is not a netbench run file")
        try:
            return cls.from_dict(data)
        except (KeyError, TypeError, ValueError) as error:
            raise RunFileError(f"{path} is not a valid netbench run file: {error}") from None


def _encode_array(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return base64.b64encode(zlib.compress(buffer.getvalue())).decode("ascii")


def _decode_array(text: str) -> np.ndarray:
    raw = zlib.decompress(base64.b64decode(text))
    return np.load(io.BytesIO(raw), allow_pickle=False)


def _records_by_name(old: np.ndarray, renamed: dict[str, str] | None = None) -> np.ndarray:
    """Older records in today's layout, field by field (what they lack stays MISSING)."""
    records = empty_records(len(old))
    renamed = renamed or {}
    for name in old.dtype.names or ():
        if renamed.get(name, name) in RECORD_DTYPE.names:
            records[renamed.get(name, name)] = old[name]
    return records


def _records_from_v1(old: np.ndarray) -> np.ndarray:
    """Version 1 records in today's layout. Version 1 counted token events as `tokens` (usage
    aside) and kept no events: itl and token_lag live in its histograms only."""
    records = _records_by_name(old, {"tcp_rtt_us": "tcp_min_rtt_us"})
    if "tokens" in (old.dtype.names or ()):
        records["events"] = records["event_tokens"] = old["tokens"]
    return records
