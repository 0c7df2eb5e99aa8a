"""Faults, against the raw-socket fault server: every way a server misbehaves lands in its error
class, the successes around it are still measured, no traceback is printed, the report is
printed and written, and the exit code says whether anything failed (--max-error-rate decides).

The mixed runs use the fault server's `every3-<fault>` prefix: the 3rd and 6th request of a run
of 6 meet the fault, the other 4 get a normal 4-token stream, so every count below is exact.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.cli import Completed, netbench
from tests.servers.faults import TOKENS, FaultServer

pytestmark = pytest.mark.integration

N = 6
EVERY = 3
FAILED = N // EVERY
TIMEOUT_S = "1"

#: fault -> the error class netbench must count it in
FAULT_CLASSES = {
    "reset-before-headers": "reset",
    "reset-mid-stream": "reset",
    "stall": "timeout",
    "http429": "http_4xx",
    "http500": "http_5xx",
    "bad-json": "malformed",
    "no-done": "malformed",
    "truncated-chunked": "reset",
}
#: fault -> what the failure note must say (the server's own words where it gave some)
FAULT_NOTES = {
    "http429": "http_4xx: HTTP 429: Rate limit reached for requests",
    "http500": "http_5xx: HTTP 500: The server had an error while processing your request.",
    "bad-json": "malformed: not JSON",
    "no-done": "malformed: the stream ended without [DONE]",
    "stall": "timeout: curl error 28",
}


def run_completions(url: str, tmp_path: Path, *args: str) -> tuple[Completed, dict, list[dict]]:
    """Run completions with every output on; return (process, run file, CSV rows)."""
    run_file, csv_file = tmp_path / "run.json", tmp_path / "rows.csv"
    result = netbench(
        "run", "--url", url, "--mode", "completions", "--timeout", TIMEOUT_S, "--no-progress",
        "-o", str(run_file), "--csv", str(csv_file), *args,
    )  # fmt: skip
    assert "Traceback" not in result.stdout + result.stderr
    with open(csv_file, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return result, json.loads(run_file.read_text()), rows


def failures(run: dict) -> dict[str, int]:
    from netbench.results import RunResult

    return RunResult.from_dict(run).failures


def successes_measured(run: dict, ok: int) -> None:
    """Every success, and only the successes, reached the phase histograms."""
    from netbench.results import RunResult

    result = RunResult.from_dict(run)
    assert result.ok == ok
    for phase in ("ttfb", "ttft", "e2e", "tpot"):
        stats = result.histograms.stats(phase)
        assert stats is not None and stats.count == ok, phase
    itl = result.histograms.stats("itl")
    assert itl is not None and itl.count == ok * (len(TOKENS) - 1)
    assert result.counters["tokens"] == ok * len(TOKENS)


@pytest.mark.parametrize("fault", sorted(FAULT_CLASSES))
def test_a_fault_among_successes(fault_server: FaultServer, tmp_path: Path, fault: str) -> None:
    error_class = FAULT_CLASSES[fault]
    result, run, rows = run_completions(fault_server.openai_url(fault, every=EVERY), tmp_path, "--n", str(N))

    assert result.code == 1, result.stderr  # any failure fails the run by default ...
    ok = N - FAILED  # ... after the report is printed
    assert f"requests: {ok} ok, {FAILED} failed ({error_class} {FAILED})" in result.stdout
    assert run["counters"]["requests"] == N
    assert failures(run) == {error_class: FAILED}
    successes_measured(run, ok)
    [row] = rows
    assert (row["requests"], row["ok"], row["failed"], row["errors"]) == (str(N), str(ok), str(FAILED), f"{error_class}={FAILED}")

    if fault in FAULT_NOTES:
        assert any(note.startswith(FAULT_NOTES[fault]) for note in run["notes"]), run["notes"]
    completions = fault_server.request_count(f"/every{EVERY}-{fault}/v1/completions")
    if fault == "reset-before-headers":
        # Each reset came on a reused connection: libcurl sent the request again on a new one,
        # which the server (request 4, 7) served. netbench counts the reset all the same.
        assert completions == N + FAILED
        assert any("libcurl sent the request again" in note for note in run["notes"])
    else:
        assert completions == N


def test_reset_before_headers_on_fresh_connections(fault_server: FaultServer, tmp_path: Path) -> None:
    """Every request resets: each runs on a new connection, so libcurl reports the reset itself."""
    result, run, _ = run_completions(fault_server.openai_url("reset-before-headers"), tmp_path, "--n", "3")
    assert result.code == 1
    assert failures(run) == {"reset": 3} and run["counters"]["requests"] == 3
    assert "every request failed" in result.stdout
    assert any(note.startswith("reset: curl error") for note in run["notes"])
    assert fault_server.request_count("/reset-before-headers/v1/completions") == 3


def test_connection_refused(refused_url: str, tmp_path: Path) -> None:
    result, run, rows = run_completions(refused_url, tmp_path, "--n", "3", "--model", "m")
    assert result.code == 1
    assert failures(run) == {"refused": 3} and run["counters"]["requests"] == 3
    assert "requests: 0 ok, 3 failed (refused 3)" in result.stdout
    assert any(note.startswith("refused: curl error 7:") for note in run["notes"])
    assert rows[0]["errors"] == "refused=3"


def test_stall_past_the_timeout_is_a_timeout(fault_server: FaultServer, tmp_path: Path) -> None:
    result, run, _ = run_completions(fault_server.openai_url("stall"), tmp_path, "--n", "2")
    assert result.code == 1
    assert failures(run) == {"timeout": 2}
    [note] = [note for note in run["notes"] if note.startswith("timeout: curl error 28:")]
    assert "--timeout" in note
    # Each request waited out the timeout, not the server's 30 s stall.
    assert run["elapsed_s"] < 2 * float(TIMEOUT_S) + 5


def test_faults_at_concurrency_leave_the_other_streams_alone(fault_server: FaultServer, tmp_path: Path) -> None:
    """Three streams in flight; the 3rd, 6th and 9th request the server sees are reset mid-stream."""
    result, run, _ = run_completions(
        fault_server.openai_url("reset-mid-stream", every=EVERY), tmp_path, "--n", "9", "--concurrency", "3"
    )
    assert result.code == 1
    assert failures(run) == {"reset": 3}
    successes_measured(run, 6)


def test_a_slow_trickle_is_measured_not_failed(fault_server: FaultServer, tmp_path: Path) -> None:
    """Every byte of the stream arrives on its own, milliseconds apart: slow, but a success."""
    result, run, _ = run_completions(fault_server.openai_url("trickle"), tmp_path, "--n", "1", "--timeout", "30")
    assert result.code == 0, result.stdout
    successes_measured(run, 1)
    from netbench.results import RunResult

    measured = RunResult.from_dict(run)
    ttfb, ttft, itl = measured.histograms.stats("ttfb"), measured.histograms.stats("ttft"), measured.histograms.stats("itl")
    assert ttfb is not None and ttft is not None and itl is not None
    # Headers come at once; each token event is dozens of bytes, each byte a few ms later.
    assert ttft.p50_us > ttfb.p50_us + 20_000
    assert itl.p50_us > 20_000


def test_a_trickle_past_the_timeout_is_a_timeout(fault_server: FaultServer, tmp_path: Path) -> None:
    result, run, _ = run_completions(fault_server.openai_url("trickle"), tmp_path, "--n", "2", "--timeout", "0.3")
    assert result.code == 1
    assert failures(run) == {"timeout": 2}


@pytest.mark.parametrize(("max_error_rate", "code"), [("0.34", 0), ("0.33", 1)])
def test_max_error_rate_decides_the_exit_code(
    fault_server: FaultServer, tmp_path: Path, max_error_rate: str, code: int
) -> None:
    """2 of 6 requests fail (0.333): a tolerance above that passes, one below fails; the JSON
    summary is printed either way."""
    result = netbench(
        "run", "--url", fault_server.openai_url("http500", every=EVERY), "--mode", "completions",
        "--n", str(N), "--json", "--no-progress", "--max-error-rate", max_error_rate,
    )  # fmt: skip
    assert result.code == code, result.stderr
    summary = result.json()
    assert (summary["ok"], summary["failed"], summary["errors"]) == (4, 2, {"http_5xx": 2})
    assert summary["phases"]["e2e"]["count"] == 4


def test_chat_faults_are_classified_too(fault_server: FaultServer, tmp_path: Path) -> None:
    """The chat stream opens with a role-only chunk; malformed JSON after it is still caught."""
    result = netbench(
        "run", "--url", fault_server.openai_url("bad-json", every=EVERY), "--mode", "chat",
        "--n", str(N), "--json", "--no-progress",
    )  # fmt: skip
    assert result.code == 1
    summary = result.json()
    assert (summary["ok"], summary["errors"]) == (4, {"malformed": 2})
    assert summary["tokens_per_request"] == len(TOKENS)
