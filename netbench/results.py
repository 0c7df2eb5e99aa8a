"""`RunResult`, what one run measured, and the versioned run file it is saved to and loaded from.

A run file is checked against its schema as it is read (`from_dict`): every field's type, the
encoded histograms and record arrays decoded, their layout and lengths. A file that fails is a
`RunFileError` naming the file and the field (one line, exit code 2), never a traceback later.
A run file is written whole or not at all (a temporary file renamed over the target).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import io
import json
import math
import os
import tempfile
import typing
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from netbench.histograms import PhaseHistograms, PhaseStats
from netbench.outcomes import FAILURES, Outcome
from netbench.phases import EVENT_DTYPE, RECORD_DTYPE, empty_events, empty_records
from netbench.secrets import redact_url
from netbench.server_metrics import check_stored
from netbench.spec import RunSpec, SpecError

#: 3: records with the prompt and output tokens each request asked for; 2: records by field name
#: with token events beside them; 1: older records, no events (all read)
SCHEMA_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)


class RunFileError(ValueError):
    """A run file that cannot be read: reported as one line, exit code 2."""


class _Invalid(ValueError):
    """A field of a run file that breaks the schema: `field` names it."""

    def __init__(self, field: str, problem: str) -> None:
        self.field, self.problem = field, problem
        super().__init__(f"field {field}: {problem}")


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
    #: measured requests whose input waited unread in the kernel over curl.LATE_INPUT_US
    late_input: int = 0
    #: the longest such wait (µs; 0: none)
    input_lag_max_us: int = 0

    @property
    def cpu_percent(self) -> float:
        return 100.0 * self.cpu_s / self.elapsed_s if self.elapsed_s > 0 else 0.0


def run_label(spec: RunSpec) -> str:
    """A short name unique within a sweep, for file names: `completions-c4`, `chat-c1-r20`,
    `completions-c1-in256` (--input-tokens 256; 128:512 is `in128-512`)."""
    label = f"{spec.mode}-c{spec.concurrency}" + (f"-r{spec.rate:g}" if spec.open_loop else "")
    if spec.input_tokens is not None:
        label += "-in" + "".join(c if c.isalnum() else "-" for c in spec.input_tokens)
    return label


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
        return run_label(self.spec)

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
            "context": {k: redact_url(v) if k == "url" and isinstance(v, str) else v for k, v in self.context.items()},
            "server_metrics": self.server_metrics,
            "records": _encode_array(self.records) if include_records else None,
            "events": _encode_array(self.events) if include_records else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> RunResult:
        """A run file's content, checked against the schema (RunFileError naming the field)."""
        try:
            return _checked(data)
        except _Invalid as error:
            raise RunFileError(str(error)) from None

    def save(self, path: str | Path) -> None:
        """Write the run file whole or not at all: a full disk leaves no truncated file."""
        target = Path(path)
        text = json.dumps(self.to_dict(), indent=1) + "\n"
        if target.exists() and not target.is_file():  # /dev/stdout, a pipe: nothing to rename over
            target.write_text(text)
            return
        descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(descriptor, "w") as handle:
                handle.write(text)
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    @classmethod
    def load(cls, path: str | Path) -> RunResult:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError, RecursionError) as error:
            raise RunFileError(f"cannot read run file {path}: {error}") from None
        if not isinstance(data, dict):
            raise RunFileError(f"{path} is not a netbench run file (not a JSON object)")
        try:
            return cls.from_dict(data)
        except RunFileError as error:
            raise RunFileError(f"{path} is not a valid netbench run file: {error}") from None


# --- the run file's schema --------------------------------------------------------------------

_WORKER_TYPES = typing.get_type_hints(WorkerInfo)
_SPEC_TYPES = typing.get_type_hints(RunSpec)


def _matches(value: object, hint: object) -> bool:
    """Whether a JSON value fits a type hint of RunSpec or WorkerInfo."""
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint in (str, bool, type(None)):
        return isinstance(value, hint)  # type: ignore[arg-type]
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple:  # headers: [[name, value], ...]
        return isinstance(value, list) and all(
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair) for pair in value
        )
    return bool(args) and any(_matches(value, arg) for arg in args)  # X | None


#: the last second a date can be written for (9999-12-31): a start beyond is no wall-clock time
_LAST_TIMESTAMP_S = 253_402_300_799.0


def _number(data: dict[str, object], key: str, high: float = math.inf) -> float:
    value = data.get(key, 0.0)
    if not _matches(value, float) or not 0 <= value <= high:  # type: ignore[operator]
        raise _Invalid(key, f"{value!r} is not a finite number from 0 to {high:g}")
    return float(value)  # type: ignore[arg-type]


def _list_of(data: dict[str, object], key: str, kind: type) -> list:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, kind) for v in value):
        raise _Invalid(key, f"not a list of {kind.__name__}")
    return value


def _object(value: object, key: str) -> dict[str, object]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise _Invalid(key, "not an object")
    return value


def _spec(data: dict[str, object]) -> RunSpec:
    spec = _object(data.get("spec"), "spec")
    for key, value in spec.items():
        if key in _SPEC_TYPES and not _matches(value, _SPEC_TYPES[key]):
            raise _Invalid(f"spec.{key}", f"{value!r} is not of type {_SPEC_TYPES[key]}")
    try:
        return RunSpec.from_public_dict(spec)
    except (SpecError, TypeError, ValueError) as error:
        raise _Invalid("spec", str(error)) from None


def _counters(data: dict[str, object]) -> Counter[str]:
    counters = _object(data.get("counters", {}), "counters")
    for key, value in counters.items():
        if not _matches(value, int) or value < 0:  # type: ignore[operator]
            raise _Invalid(f"counters.{key}", f"{value!r} is not a whole number >= 0")
    if counters.get(Outcome.OK.key, 0) > counters.get("requests", 0):  # type: ignore[operator]
        raise _Invalid("counters.ok", "more requests succeeded than were sent")
    return Counter(counters)  # type: ignore[arg-type]


def _histograms(data: dict[str, object]) -> PhaseHistograms:
    encoded = _object(data.get("histograms", {}), "histograms")
    phases = _object(encoded.get("histograms", {}), "histograms.histograms")
    overflow = _object(encoded.get("overflow", {}), "histograms.overflow")
    histograms = PhaseHistograms()
    for name, text in phases.items():
        if not isinstance(text, str):
            raise _Invalid(f"histograms.{name}", "not an encoded histogram (a string)")
        try:
            histograms.add_encoded({"histograms": {name: text}})
        except Exception as error:  # noqa: BLE001  (hdrh's decoder raises zlib, base64 and its own errors)
            raise _Invalid(f"histograms.{name}", f"unreadable ({type(error).__name__}: {str(error)[:120]})") from None
    for name, count in overflow.items():
        if not _matches(count, int) or count < 0:  # type: ignore[operator]
            raise _Invalid(f"histograms.overflow.{name}", f"{count!r} is not a whole number >= 0")
        try:
            histograms.add_encoded({"overflow": {name: count}})
        except ValueError as error:
            raise _Invalid(f"histograms.overflow.{name}", str(error)) from None
    return histograms


def _array(data: dict[str, object], key: str) -> np.ndarray | None:
    text = data.get(key)
    if text is None:
        return None
    if not isinstance(text, str):
        raise _Invalid(key, "not an encoded array (a string)")
    try:
        return _decode_array(text)
    except Exception as error:  # noqa: BLE001  (base64, zlib and numpy's format reader each raise their own)
        raise _Invalid(key, f"unreadable ({type(error).__name__})") from None


def _records(data: dict[str, object], version: int, requests: int) -> tuple[np.ndarray, np.ndarray]:
    records = _array(data, "records")
    events = _array(data, "events")
    if records is None:
        records = empty_records(0)
    elif version == 1:
        if records.dtype.names is None:
            raise _Invalid("records", "not a record array")
        records = _records_from_v1(records)
    elif version == 2:
        if records.dtype.names is None:
            raise _Invalid("records", "not a record array")
        records = _records_by_name(records)
    if records.dtype != RECORD_DTYPE or records.ndim != 1:
        raise _Invalid("records", "not this netbench's record layout")
    events = empty_events() if events is None else events
    if events.dtype != EVENT_DTYPE or events.ndim != 1:
        raise _Invalid("events", "not this netbench's event layout")
    if len(records) > requests:
        raise _Invalid("records", f"{len(records)} records of {requests} requests")
    kept = records["events_kept"]
    if (kept < 0).any() or len(events) != int(kept.sum()):
        raise _Invalid("events", f"{len(events)} events where the records keep {int(kept.sum())}")
    if not np.isin(records["error_class"], [int(o) for o in Outcome]).all():
        raise _Invalid("records", "an error_class that is no outcome")
    return records, events


def _workers(data: dict[str, object]) -> list[WorkerInfo]:
    workers = _list_of(data, "workers", dict)
    names = {f.name for f in dataclasses.fields(WorkerInfo)}
    required = {f.name for f in dataclasses.fields(WorkerInfo) if f.default is dataclasses.MISSING}
    out = []
    for i, worker in enumerate(workers):
        where = f"workers[{i}]"
        if not required <= worker.keys() <= names:
            raise _Invalid(where, f"the keys {sorted(worker)} are not {sorted(names)}")
        for key, value in worker.items():
            hint = _WORKER_TYPES[key]
            high = _LAST_TIMESTAMP_S if key == "started_at_s" else math.inf
            if not _matches(value, hint) or (hint in (int, float) and not 0 <= value <= high and key != "pid"):
                raise _Invalid(f"{where}.{key}", f"{value!r} is not of type {hint} (from 0 to {high:g})")
        out.append(WorkerInfo(**worker))
    return out


def _checked(data: dict[str, object]) -> RunResult:
    version = data.get("schema_version")
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        raise _Invalid("schema_version", f"{version!r} (this netbench reads {READABLE_VERSIONS})")
    counters = _counters(data)
    records, events = _records(data, version, counters.get("requests", 0))  # type: ignore[arg-type]
    interrupted = data.get("interrupted", False)
    if not isinstance(interrupted, bool):
        raise _Invalid("interrupted", "not true or false")
    context = _object(data.get("context", {}), "context")
    for key in ("url", "libcurl", "stop_signal", "method"):
        if key in context and not isinstance(context[key], str):
            raise _Invalid(f"context.{key}", "not a string")
    server_metrics = data.get("server_metrics")
    if server_metrics is not None:
        try:
            check_stored(server_metrics)
        except ValueError as error:
            raise _Invalid(str(error).partition(":")[0], str(error).partition(": ")[2]) from None
    return RunResult(
        spec=_spec(data),
        histograms=_histograms(data),
        counters=counters,
        records=records,
        workers=_workers(data),
        started_at_s=_number(data, "started_at_s", _LAST_TIMESTAMP_S),
        elapsed_s=_number(data, "elapsed_s"),
        interrupted=interrupted,
        notes=_list_of(data, "notes", str),
        context=context,
        server_metrics=server_metrics,  # type: ignore[arg-type]
        events=events,
    )


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
