"""Each measured request beside the truth server's log of it (tests/servers/truth.py): the join
the truth tests assert on and benchmarks/truth_table.py tabulates."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from netbench.results import RunResult
from tests.cli import netbench
from tests.servers.truth import RequestLog

TOKEN_KINDS = ("token", "content", "reasoning", "tool_call")


@dataclass(frozen=True)
class Joined:
    record: np.void
    events: np.ndarray
    log: RequestLog

    def client_ns(self, mark_us: int) -> int:
        return int(self.record["transfer_start_ns"]) + int(mark_us) * 1000

    @property
    def server_token_events(self):
        return [e for e in self.log.events if e.kind in TOKEN_KINDS and e.tokens > 0]


def measure(url: str, mode: str, tmp_path: Path, *args: str, n: int = 8, concurrency: int = 1) -> tuple[RunResult, int]:
    """`netbench run` of the URL in a subprocess: the run file it wrote, and its exit code."""
    run_file = tmp_path / f"{mode}-c{concurrency}.json"
    result = netbench(
        "run", "--url", url, "--mode", mode, "--n", str(n), "--concurrency", str(concurrency),
        "--max-tokens", "64", "--timeout", "20", "--no-progress", "-o", str(run_file), *args,
    )  # fmt: skip
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    return RunResult.load(run_file), result.code


def join(run: RunResult, logs: list[RequestLog]) -> list[Joined]:
    """Each measured record with the server's log of the same request (warm-up requests and
    the model probe have logs but no records)."""
    owner = np.repeat(np.arange(len(run.records)), run.records["events_kept"])
    joined = []
    used: set[int] = set()
    for index, record in enumerate(run.records):
        # the server read the request's first byte before any response byte reached the client,
        # and after the previous response on the connection: the latest such read on its port
        # (an anchor a stalled client stamped late moves `end` later, never earlier)
        end = int(record["transfer_start_ns"]) + max(int(record["starttransfer_mark_us"]), 0) * 1000
        reads = [log for log in logs if log.peer_port == record["local_port"] and log.first_byte_ns is not None and log.first_byte_ns <= end]
        assert reads, (index, record["local_port"])
        match = max(reads, key=lambda log: log.first_byte_ns)
        assert match.request_id not in used, (index, record["local_port"], match.request_id)
        used.add(match.request_id)
        joined.append(Joined(record, run.events[owner == index], match))
    return joined


def server_itl_ns(j: Joined) -> list[float]:
    """The server's per-token gaps: an event of k tokens after a gap g is k tokens of g / k."""
    events = j.server_token_events
    return [
        (later.parts[-1].before_ns - earlier.parts[-1].before_ns) / later.tokens
        for earlier, later in zip(events, events[1:]) for _ in range(later.tokens)
    ]  # fmt: skip
