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
from netbench.phases import RECORD_DTYPE
from netbench.spec import RunSpec

SCHEMA_VERSION = 1


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
        """A short name unique within a sweep, for file names: `completions-c4`, `chat-c1-r20`."""
        spec = self.spec
        return f"{spec.mode}-c{spec.concurrency}" + (f"-r{spec.rate:g}" if spec.open_loop else "")

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
            "records": _encode_records(self.records) if include_records else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> RunResult:
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise RunFileError(f"unsupported run file schema_version {version!r} (this netbench reads {SCHEMA_VERSION})")
        records = data.get("records")
        return cls(
            spec=RunSpec.from_public_dict(data["spec"]),  # type: ignore[arg-type]
            histograms=PhaseHistograms.decode(data["histograms"]),  # type: ignore[arg-type]
            counters=Counter(data["counters"]),  # type: ignore[arg-type]
            records=_decode_records(records) if records else np.zeros(0, dtype=RECORD_DTYPE),  # type: ignore[arg-type]
            workers=[WorkerInfo(**w) for w in data.get("workers", [])],  # type: ignore[union-attr,arg-type]
            started_at_s=float(data.get("started_at_s", 0.0)),  # type: ignore[arg-type]
            elapsed_s=float(data.get("elapsed_s", 0.0)),  # type: ignore[arg-type]
            interrupted=bool(data.get("interrupted", False)),
            notes=list(data.get("notes", [])),  # type: ignore[call-overload]
            context=dict(data.get("context", {})),  # type: ignore[call-overload]
            server_metrics=data.get("server_metrics"),  # type: ignore[arg-type]
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


def _encode_records(records: np.ndarray) -> str:
    buffer = io.BytesIO()
    np.save(buffer, records, allow_pickle=False)
    return base64.b64encode(zlib.compress(buffer.getvalue())).decode("ascii")


def _decode_records(text: str) -> np.ndarray:
    raw = zlib.decompress(base64.b64decode(text))
    return np.load(io.BytesIO(raw), allow_pickle=False)
