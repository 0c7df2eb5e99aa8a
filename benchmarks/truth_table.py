"""netbench beside the truth server's log, one row per stream shape (`make truth`).

Each case runs `netbench run` against the truth server (tests/servers/truth.py), which stamps
every write with the clock netbench anchors its marks to, and joins each record to the server's
log of that request (tests/truth_join.py). For the streams that succeed it tabulates, per case:
TTFT as netbench measured it beside the instant the server began writing the first token (on the
same axis: from the client's transfer start), the tokens and token events each side counted, and
the median per-token ITL each side saw; for the shapes that must fail, the class netbench gave
beside what the server sent. Writes benchmarks_out/truth.md and truth.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from netbench.outcomes import Outcome
from netbench.phases import derive, select
from tests.servers.truth import TruthServer
from tests.truth_join import Joined, join, measure, server_itl_ns


@dataclass(frozen=True)
class Case:
    shape: str
    mode: str
    concurrency: int
    params: dict[str, object]
    args: tuple[str, ...] = ()
    #: every K-th request gets the shape (failing shapes), the others a normal stream
    every: int = 1

    @property
    def label(self) -> str:
        params = ";".join(f"{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in self.params.items())
        return self.shape + (f" ({params})" if params else "") + (" " + " ".join(self.args) if self.args else "")


STREAMS = (
    *(Case("content", mode, c, {"n": 12}) for mode in ("completions", "chat") for c in (1, 8)),
    *(Case("multi", "chat", c, {"n": 20, "pattern": (1, 3, 2, 4)}) for c in (1, 8)),
    Case("multi", "completions", 1, {"n": 20, "pattern": (1, 3), "usage": "none"}),
    Case("reasoning_content", "chat", 1, {"n": 10, "reasoning_tokens": 4}),
    Case("reasoning", "chat", 1, {"n": 10, "reasoning_tokens": 4}),
    Case("tool_calls", "chat", 1, {"n": 10}),
    *(Case(shape, "completions", 1, {"n": 6, "head_ms": 3}) for shape in ("bom", "split", "keep-open", "interim-100", "interim-103")),
    Case("idle-close", "completions", 1, {"n": 4, "idle_ms": 0}),
)
FAILING = (
    *(Case(shape, "chat", 1, {"n": 6}, every=3) for shape in ("error", "error-object", "error-event")),
    *(Case(shape, "completions", 2, {"n": 6}, every=3) for shape in ("malformed-choices", "malformed-usage-str", "malformed-usage-big",
                                                                      "malformed-deep-list", "malformed-json", "malformed-number")),
    Case("malformed-huge", "completions", 2, {"n": 6, "size": 17 * 1024 * 1024}, every=3),
    *(Case(shape, "completions", 1, {}, every=2) for shape in ("http404", "http500")),
)  # fmt: skip


Row = TypeVar("Row")


@dataclass(frozen=True)
class StreamRow:
    case: str
    mode: str
    concurrency: int
    requests: int
    ttft_ms: float  # netbench's median TTFT
    server_first_token_ms: float  # the median instant the server began writing the first token
    ttft_error_p50_ms: float  # per request: netbench's TTFT minus the server's instant
    ttft_error_max_ms: float
    tokens: int
    server_tokens: int
    events: int
    server_events: int
    itl_p50_ms: float
    server_itl_p50_ms: float


@dataclass(frozen=True)
class FailingRow:
    case: str
    mode: str
    requests: int
    sent_shape: int  # requests the server answered with the failing shape
    failures: dict[str, int]
    ok: int
    note: str


def _first_token_ns(j: Joined) -> int:
    return j.server_token_events[0].parts[-1].before_ns - int(j.record["transfer_start_ns"])


def stream_row(case: Case, server: TruthServer, folder: Path, n: int) -> StreamRow:
    url = server.openai_url(case.shape, **case.params)
    run, code = measure(url, case.mode, folder, *case.args, n=n, concurrency=case.concurrency)
    if code != 0:
        raise RuntimeError(f"{case.label}: netbench exited {code}: {run.notes}")
    joined = join(run, server.log(wait_for=0 if case.shape == "keep-open" else n + 1))
    ttft_us = np.array([int(j.record["first_token_mark_us"]) for j in joined])
    server_us = np.array([_first_token_ns(j) / 1000 for j in joined])
    ok, events = select(run.records, run.events, run.records["error_class"] == Outcome.OK)
    itl_us = derive(ok, events).values_us["itl"]
    server_itl = [g for j in joined for g in server_itl_ns(j)]
    return StreamRow(
        case.label, case.mode, case.concurrency, len(joined),
        float(np.median(ttft_us)) / 1000, float(np.median(server_us)) / 1000,
        float(np.median(ttft_us - server_us)) / 1000, float(np.max(ttft_us - server_us)) / 1000,
        int(sum(int(j.record["tokens"]) for j in joined)), sum(e.tokens for j in joined for e in j.server_token_events),
        int(sum(int(j.record["events"]) for j in joined)), sum(len(j.server_token_events) for j in joined),
        float(np.median(itl_us)) / 1000, statistics.median(server_itl) / 1e6,
    )  # fmt: skip


def failing_row(case: Case, server: TruthServer, folder: Path, n: int) -> FailingRow:
    run, _ = measure(server.openai_url(case.shape, every=case.every, **case.params), case.mode, folder, n=n, concurrency=case.concurrency)
    logs = server.log(wait_for=n + 1)
    sent = sum(1 for log in logs if log.shape == case.shape and log.route.endswith("completions"))
    note = next((note for note in run.notes if note.split(":", 1)[0] in run.failures), "")
    return FailingRow(case.label, case.mode, int(run.counters["requests"]), sent, dict(run.failures), run.ok, note[:90])


def _ms(value: float) -> str:
    return f"{value:.3f}"


def markdown(streams: list[StreamRow], failing: list[FailingRow]) -> str:
    lines = [
        "# netbench beside the truth server's log",
        "",
        "Every figure per request, joined to the server's log of that request; the server's instants are when it began",
        "the write (time.monotonic_ns(), the clock netbench anchors to), from the client's transfer start. TTFT error:",
        "netbench's TTFT minus the server's first-token instant (the time the bytes took to reach netbench and be stamped).",
        "",
        "| stream | mode | c | requests | TTFT p50 ms | server first token p50 ms | error p50 ms | error max ms "
        "| tokens (server) | events (server) | ITL p50 ms (server) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in streams:
        lines.append(
            f"| {r.case} | {r.mode} | {r.concurrency} | {r.requests} | {_ms(r.ttft_ms)} | {_ms(r.server_first_token_ms)} "
            f"| {_ms(r.ttft_error_p50_ms)} | {_ms(r.ttft_error_max_ms)} | {r.tokens} ({r.server_tokens}) "
            f"| {r.events} ({r.server_events}) | {_ms(r.itl_p50_ms)} ({_ms(r.server_itl_p50_ms)}) |"
        )
    lines += [
        "",
        "Without usage (`usage=none`) a client can count only events: tokens equal events there, whatever the server packed.",
        "",
        "| failing shape | mode | requests | server sent the shape | netbench failures | ok | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in failing:
        failures = ", ".join(f"{name} {count}" for name, count in sorted(f.failures.items())) or "none"
        lines.append(f"| {f.case} | {f.mode} | {f.requests} | {f.sent_shape} | {failures} | {f.ok} | {f.note.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def _run_case(folder: Path, case: Case, row: Callable[[Case, TruthServer, Path, int], Row], n: int) -> Row:
    """One case against a fresh truth server (ids and per-path counters start at 1), in its own folder."""
    folder.mkdir()
    with TruthServer() as server:
        result = row(case, server, folder, n)
    print(f"truth: {case.label} {case.mode} c={case.concurrency}", file=sys.stderr)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks_out"))
    parser.add_argument("--n", type=int, default=16, help="requests per stream case")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        streams = [_run_case(Path(tmp) / f"stream-{i}", case, stream_row, args.n) for i, case in enumerate(STREAMS)]
        failing = [_run_case(Path(tmp) / f"failing-{i}", case, failing_row, 6) for i, case in enumerate(FAILING)]
    args.out.mkdir(parents=True, exist_ok=True)
    text = markdown(streams, failing)
    (args.out / "truth.md").write_text(text)
    (args.out / "truth.json").write_text(json.dumps({"streams": [asdict(r) for r in streams], "failing": [asdict(f) for f in failing]}, indent=2))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
