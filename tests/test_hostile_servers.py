"""Hostile servers and hostile use, against real servers on loopback: /metrics and /v1/models
bodies of any shape, Ctrl-C during a probe or a scrape, secret headers on a redirect to another
host, a full disk, markup in URLs and model ids, the client-bound verdict (silent on idle runs,
firing on a worker stopped for 200 ms), and every command with every form of secret, grepped
for in every stream and file. The unit half is tests/test_hostile_input.py."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from netbench.core import ExitStatus
from netbench.curl import fetch
from netbench.spec import RunSpec
from netbench.workloads import Request
from tests.cli import Completed, invoke, netbench
from tests.host_noise import remeasured, within
from tests.servers.faults import FaultServer
from tests.servers.sim import start_sim_server
from tests.servers.truth import TruthServer
from tests.synthetic_runs import exposition

pytestmark = pytest.mark.integration

#: what "stops within a second" allows the interpreter to exit, beyond the second itself
_EXIT_S = 1.0


def strict_json(text: str) -> dict:
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))


def server_side(summary: dict) -> dict:
    return summary["split"]["server_side"]


# --- /metrics and /v1/models: any body ---------------------------------------------------------

_HISTOGRAM = "vllm:time_to_first_token_seconds"
HOSTILE_METRICS = {
    "nan-samples": (f"# TYPE {_HISTOGRAM} histogram\n{_HISTOGRAM}_bucket{{le=\"0.1\"}} NaN\n"
                    f"{_HISTOGRAM}_bucket{{le=\"+Inf\"}} NaN\n{_HISTOGRAM}_count NaN\n{_HISTOGRAM}_sum NaN\n", "nan"),
    "bucket-without-le": (f"# TYPE {_HISTOGRAM} histogram\n{_HISTOGRAM}_bucket 3\n{_HISTOGRAM}_count 3\n", "le is None"),
    "infinite-counts": (f"# TYPE {_HISTOGRAM} histogram\n{_HISTOGRAM}_bucket{{le=\"+Inf\"}} +Inf\n", "inf"),
    "binary": ("\x00\xff\x7f garbage {{{ \n" * 50, "not Prometheus text"),
    "deeply-nested-json": ("[" * 50_000 + "]" * 50_000, "not Prometheus text"),
    "huge": ("# " + "x" * (17 * 1024 * 1024) + "\n", "larger than 16 MiB"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(HOSTILE_METRICS))
def test_a_hostile_metrics_body_is_not_available_with_its_reason(fault_server: FaultServer, case: str) -> None:
    body, reason = HOSTILE_METRICS[case]
    fault_server.answer("/ok/metrics", body=body.encode("utf-8", "surrogateescape"))
    result = invoke("run", "--url", fault_server.openai_url(), "--mode", "completions", "--n", "2", "--json", "--no-progress")
    assert result.code == ExitStatus.OK, result.stderr
    side = server_side(strict_json(result.stdout))
    assert side["available"] is False and reason in side["reason"], side
    table = invoke("run", "--url", fault_server.openai_url(), "--mode", "completions", "--n", "1", "--no-progress")
    assert table.code == 0 and "server-side metrics: not available (" in table.stdout


HOSTILE_MODELS = {
    "deeply-nested": b"[" * 100_000 + b"]" * 100_000,
    "id-not-a-string": json.dumps({"data": [{"id": {"nested": [1, 2]}}]}).encode(),
    "nan": b'{"data": NaN}',
    "binary": bytes(range(256)) * 10,
    "huge": b'{"data": [{"id": "' + b"m" * (17 * 1024 * 1024) + b'"}]}',
}


@pytest.mark.parametrize("case", sorted(HOSTILE_MODELS))
def test_a_hostile_models_body_is_a_note_and_the_run_goes_on(fault_server: FaultServer, case: str) -> None:
    fault_server.answer("/ok/v1/models", body=HOSTILE_MODELS[case], content_type="application/json")
    result = invoke("run", "--url", fault_server.openai_url(), "--mode", "completions", "--n", "2", "--json", "--no-progress")
    assert result.code == ExitStatus.OK, result.stderr
    summary = strict_json(result.stdout)
    assert summary["ok"] == 2 and summary["model"] is None
    assert any(note.startswith("could not list models (") and "pass --model" in note for note in summary["notes"]), summary["notes"]


# --- Ctrl-C during a probe or a scrape -----------------------------------------------------------


@contextlib.contextmanager
def started(*args: str, cwd: Path) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([sys.executable, "-m", "netbench", *args], cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def wait_for(condition, what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen"
        time.sleep(0.02)


def interrupt(proc: subprocess.Popen[str]) -> tuple[float, str, str]:
    """SIGINT; (seconds to exit, stdout, stderr)."""
    proc.send_signal(signal.SIGINT)
    sent_at = time.monotonic()
    stdout, stderr = proc.communicate(timeout=30)
    return time.monotonic() - sent_at, stdout, stderr


def test_ctrl_c_during_the_models_probe_stops_at_once_and_sends_no_load(fault_server: FaultServer, tmp_path: Path) -> None:
    fault_server.answer("/ok/v1/models", stall_after=0)
    args = ["run", "--url", fault_server.openai_url(), "--mode", "completions", "--n", "5", "--no-progress", "-o", "run.json"]
    with started(*args, cwd=tmp_path) as proc:
        wait_for(lambda: fault_server.request_count("/ok/v1/models") == 1, "the probe")
        took_s, stdout, stderr = interrupt(proc)
    assert took_s < _EXIT_S and proc.returncode == ExitStatus.INTERRUPTED, (took_s, stderr)
    assert "Traceback" not in stderr and "INTERRUPTED" in stdout
    assert fault_server.request_count("/ok/v1/completions") == 0
    saved = json.loads((tmp_path / "run.json").read_text())
    assert saved["interrupted"] is True and saved["counters"].get("requests", 0) == 0


def test_ctrl_c_during_the_first_scrape_stops_at_once(fault_server: FaultServer, tmp_path: Path) -> None:
    fault_server.answer("/ok/metrics", body=exposition({}).encode(), stall_after=0)
    args = ["run", "--url", fault_server.openai_url(), "--mode", "completions", "--n", "5", "--no-progress", "-o", "run.json"]
    with started(*args, cwd=tmp_path) as proc:
        wait_for(lambda: fault_server.request_count("/ok/metrics") == 1, "the first scrape")
        took_s, stdout, stderr = interrupt(proc)
    assert took_s < _EXIT_S and proc.returncode == ExitStatus.INTERRUPTED, (took_s, stderr)
    assert "Traceback" not in stderr and fault_server.request_count("/ok/v1/completions") == 0
    assert json.loads((tmp_path / "run.json").read_text())["interrupted"] is True


def test_ctrl_c_during_the_last_scrape_keeps_the_whole_run(fault_server: FaultServer, tmp_path: Path) -> None:
    fault_server.answer("/ok/metrics", body=exposition({}).encode(), stall_after=1)
    args = ["run", "--url", fault_server.openai_url(), "--mode", "completions", "--n", "12", "--no-progress",
            "-o", "run.json", "--csv", "rows.csv"]  # fmt: skip
    with started(*args, cwd=tmp_path) as proc:
        wait_for(lambda: fault_server.request_count("/ok/metrics") == 2, "the last scrape")
        took_s, stdout, stderr = interrupt(proc)
    assert took_s < _EXIT_S and proc.returncode == ExitStatus.INTERRUPTED, (took_s, stderr)
    assert "Traceback" not in stderr
    assert "requests: 12 ok, 0 failed" in stdout and "server-side metrics: not available (the scrape failed (stopped by SIGINT))" in stdout
    saved = json.loads((tmp_path / "run.json").read_text())
    assert saved["counters"]["ok"] == 12 and saved["server_metrics"]["available"] is False
    assert len((tmp_path / "rows.csv").read_text().splitlines()) == 2


def test_ctrl_c_in_the_second_runs_probe_keeps_the_first_run_of_a_sweep(fault_server: FaultServer, tmp_path: Path) -> None:
    fault_server.answer("/ok/v1/models", body=json.dumps({"data": [{"id": "m"}]}).encode(), stall_after=1)
    args = ["sweep", "--url", fault_server.openai_url(), "--mode", "completions", "--concurrency", "1,2", "--n", "4",
            "--no-progress", "-o", "runs/", "--csv", "rows.csv"]  # fmt: skip
    with started(*args, cwd=tmp_path) as proc:
        wait_for(lambda: fault_server.request_count("/ok/v1/models") == 2, "the second run's probe")
        took_s, stdout, stderr = interrupt(proc)
    assert took_s < _EXIT_S and proc.returncode == ExitStatus.INTERRUPTED, (took_s, stderr)
    assert "Traceback" not in stderr and "requests: 4 ok, 0 failed" in stdout
    first = json.loads((tmp_path / "runs" / "completions-c1.json").read_text())
    assert first["counters"]["ok"] == 4 and first["interrupted"] is False
    rows = (tmp_path / "rows.csv").read_text().splitlines()
    assert len(rows) == 3 and "interrupted" in rows[2] and "interrupted" not in rows[1]


# --- secret headers on a redirect -------------------------------------------------------------------

SECRET = "xk-hostile-51c0ffee"


def test_a_secret_header_never_follows_a_redirect_to_another_host(fault_server: FaultServer) -> None:
    base = ["run", "--mode", "get", "--n", "2", "--no-progress", "--follow-redirects", "--header", f"X-Api-Key: {SECRET}"]
    refused = invoke(*base, "--url", f"{fault_server.base_url}/redirect-localhost")
    assert refused.code == ExitStatus.FAILED_REQUESTS, refused.stderr
    assert fault_server.request_count("/echo") == 0  # the other host got nothing, the key least of all
    assert f"redirected to http://localhost:{fault_server.port}, another host" in refused.stdout
    assert "X-Api-Key" in refused.stdout and SECRET not in refused.stdout + refused.stderr
    followed = invoke(*base, "--url", f"{fault_server.base_url}/redirect-self")
    assert followed.code == ExitStatus.OK, followed.stderr
    assert [h.get("x-api-key") for h in fault_server.headers_seen("/echo")] == [SECRET, SECRET]


def test_a_probe_never_follows_a_redirect_to_another_host_with_a_secret_header(fault_server: FaultServer) -> None:
    spec = RunSpec(url=fault_server.base_url, mode="get", follow_redirects=True, headers=(("api-key", SECRET),))
    fetched = fetch(spec, Request(f"{fault_server.base_url}/redirect-localhost", "GET", (f"api-key: {SECRET}",), None, False))
    assert fetched.error is not None and "another host" in fetched.error
    assert fault_server.request_count("/echo") == 0


# --- a full disk ------------------------------------------------------------------------------------


def test_a_full_disk_loses_one_output_not_the_others_nor_exit_1(fault_server: FaultServer, refused_url: str, tmp_path: Path) -> None:
    outputs = ["-o", "/dev/full", "--csv", str(tmp_path / "rows.csv"), "--raw", str(tmp_path / "raw.csv"),
               "--hgrm", "e2e", str(tmp_path / "e2e.hgrm")]  # fmt: skip
    full = invoke("run", "--url", fault_server.openai_url(), "--mode", "completions", "--n", "3", "--no-progress", *outputs)
    assert full.code == ExitStatus.OUTPUT_FAILED
    assert full.stderr == "netbench: error: -o '/dev/full': could not be written: No space left on device\n"
    assert "requests: 3 ok" in full.stdout
    assert len((tmp_path / "rows.csv").read_text().splitlines()) == 2
    assert len((tmp_path / "raw.csv").read_text().splitlines()) == 4 and (tmp_path / "e2e.hgrm").stat().st_size
    failed = invoke("run", "--url", refused_url, "--n", "2", "--no-progress", "-o", "/dev/full")
    assert failed.code == ExitStatus.FAILED_REQUESTS and "-o '/dev/full': could not be written" in failed.stderr


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 KiB tmpfs (root only) with one page left: room for a CSV row, not a run file."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        (mount / "filler").write_bytes(b"x" * 12 * 1024)
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_run_file_on_a_full_disk_leaves_no_truncated_file(fault_server: FaultServer, tiny_disk: Path, tmp_path: Path) -> None:
    args = ["run", "--url", fault_server.openai_url(), "--mode", "completions", "--n", "60", "--no-progress",
            "-o", str(tiny_disk / "run.json"), "--csv", str(tiny_disk / "rows.csv"), "--raw", str(tmp_path / "raw.csv")]  # fmt: skip
    result = invoke(*args)
    assert result.code == ExitStatus.OUTPUT_FAILED, result.stderr
    assert result.stderr.startswith(f"netbench: error: -o '{tiny_disk / 'run.json'}': could not be written: No space left")
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["filler", "rows.csv"]  # neither the run file nor a piece of it
    assert len((tmp_path / "raw.csv").read_text().splitlines()) == 61


# --- markup in URLs and model ids ----------------------------------------------------------------------


def test_markup_in_the_url_path_and_the_model_id_is_printed_not_parsed(fault_server: FaultServer) -> None:
    url = fault_server.openai_url().replace("/ok/v1", "/ok[/]x[bold]/v1")
    path_run = invoke("run", "--url", url, "--mode", "completions", "--n", "2", "--no-progress", "--model", "m[/]")
    assert "Traceback" not in path_run.stderr and "/ok[/]x[bold]/v1/completions" in path_run.stdout
    fault_server.answer("/ok/v1/models", body=json.dumps({"data": [{"id": "[/]weird[red]"}]}).encode())
    model_run = invoke("run", "--url", fault_server.openai_url(), "--mode", "completions", "--n", "2", "--no-progress")
    assert model_run.code == ExitStatus.OK, model_run.stderr
    as_json = invoke("run", "--url", fault_server.openai_url(), "--mode", "completions", "--n", "2", "--no-progress", "--json")
    assert strict_json(as_json.stdout)["model"] == "[/]weird[red]"


# --- the client-bound verdict -------------------------------------------------------------------------


# A client-bound verdict is a measurement of the client's host: a busy one can be late for real,
# so a verdict where none is due is measured again (tests/host_noise.py); a false alarm the code
# raises (as a slow server once did) is raised every time and still fails.


@remeasured
def test_idle_and_instant_runs_are_not_client_bound(sim_url: str) -> None:
    for args in (["--mode", "completions", "--n", "1", "--concurrency", "1000"], ["--mode", "health", "--n", "2"]):
        result = invoke("run", "--url", sim_url, *args, "--json", "--no-progress")
        assert result.code == ExitStatus.OK, result.stderr
        summary = strict_json(result.stdout)
        assert summary["client_bound"] is bool(summary["client_bound_reasons"])
        within(summary["client_bound"] is False, summary["client_bound_reasons"])


@remeasured
def test_a_slow_server_is_no_late_client() -> None:
    """Responses 40 ms after each request, slower than the loop's 20 ms wait: the connections'
    last data is the previous response's, which the loop read on time."""
    with TruthServer() as truth:
        url = truth.openai_url("content", n=4, head_ms=40, first_ms=0, interval_ms=15)
        result = invoke("run", "--url", url, "--mode", "completions", "--concurrency", "8", "--n", "80", "--json", "--no-progress")
    assert result.code == ExitStatus.OK, result.stderr
    summary = strict_json(result.stdout)
    within(summary["client_bound"] is False, summary["client_bound_reasons"])


def _workers_of(pid: int) -> list[int]:
    children = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError):
            children += [int(p) for p in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    return [c for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


def run_with_a_stopped_worker(url: str, served, after: int, *args: str, stops: int = 1) -> dict:
    """A one-worker run whose worker is stopped (SIGSTOP) for 200 ms, `stops` times 100 ms
    apart, once the server has served `after` requests: the client, nothing else, is late."""
    command = ["run", "--url", url, "--workers", "1", "--json", "--no-progress", *args]
    with started(*command, cwd=Path.cwd()) as proc:
        wait_for(lambda: served() >= after, "the run")
        [worker] = _workers_of(proc.pid)
        for _ in range(stops):
            os.kill(worker, signal.SIGSTOP)
            time.sleep(0.2)
            os.kill(worker, signal.SIGCONT)
            time.sleep(0.1)
        stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    return strict_json(stdout)


@remeasured
def test_a_stopped_worker_reads_its_input_late_and_the_run_is_client_bound() -> None:
    """Responses that arrive while the worker is stopped wait in the kernel: their wait is
    seen (TCP_INFO), whatever the server, which stamps nothing here. (A stop that falls inside
    a perform lets that perform read what came meanwhile unseen: the worker is stopped twice.)"""
    with TruthServer() as truth:
        url = truth.openai_url("content", n=1, head_ms=40, first_ms=0)
        summary = run_with_a_stopped_worker(url, lambda: len(truth.log()), 16, "--mode", "completions",
                                            "--concurrency", "8", "--n", "400", stops=2)  # fmt: skip
    assert summary["client_bound"] is True, summary["client_bound_reasons"]
    [reason] = [r for r in summary["client_bound_reasons"] if "read input late" in r]
    late = int(reason.split(": ")[1].split(" of ")[0])
    assert late >= 4, reason  # the 8 in flight at each stop, give or take a batch
    within(late <= 32, reason)  # and no more, unless the host stalled the worker besides
    assert int(reason.rsplit("up to ", 1)[1].split(" ms")[0]) >= 100


def test_a_stamping_server_sees_the_stopped_worker_in_token_lag() -> None:
    with start_sim_server("--step-ms", "5", "--ignore-eos", "--stamp-events") as url:
        served = _served_counter(url)
        summary = run_with_a_stopped_worker(url, served, 2, "--mode", "completions", "--concurrency", "4",
                                            "--n", "16", "--max-tokens", "64")  # fmt: skip
    assert summary["client_bound"] is True
    assert any(r.startswith("token arrival lag p99") for r in summary["client_bound_reasons"]), summary["client_bound_reasons"]
    assert summary["phases"]["token_lag"]["max_us"] >= 150_000


def _served_counter(url: str):
    import urllib.request

    def served() -> int:
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
            text = response.read().decode()
        return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith("vllm:time_to_first_token_seconds_count")))  # fmt: skip

    return served


# --- every command, every secret --------------------------------------------------------------------

KEY, HEADER_KEY, PASSWORD, QUERY_KEY = "sk-flag-0a1b2c3d4e", "xh-header-5f6a7b8c", "pw-url-9d0e1f2a", "qk-query-3b4c5d6e"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    return {**env, **extra}


def test_every_command_with_every_secret_form_writes_none_of_them(fault_server: FaultServer, refused_url: str,
                                                                  tmp_path: Path) -> None:  # fmt: skip
    """--api-key and $OPENAI_API_KEY, a secret header, user:pass@ and ?api-key= in the URL; a
    server that quotes the key back in its error; every output of run and sweep, report in
    every format, merge, compare, serve --help; a failed run and bad input."""
    host = fault_server.openai_url().split("//", 1)[1]
    url = f"http://bob:{PASSWORD}@{host}?api-key={QUERY_KEY}"
    secrets = ["--header", f"X-Api-Key: {HEADER_KEY}"]
    out = tmp_path / "out"
    out.mkdir()
    runs: list[Completed] = []

    def run(*args: str, env: dict[str, str] | None = None, code: int = 0) -> None:
        done = netbench(*args, env=env or _env())
        assert done.code == code, (args, done.stderr)
        runs.append(done)

    every = ["--csv", str(out / "rows.csv"), "--raw", str(out / "raw.csv"), "--hgrm", "e2e", str(out / "e2e.hgrm")]
    load = ["--mode", "completions", "--n", "3", "--no-progress", *secrets]
    run("run", "--url", url, *load, "--api-key", KEY, "-o", str(out / "a.json"), *every)
    run("run", "--url", url, *load, "-o", str(out / "b.json"), "--json", env=_env(OPENAI_API_KEY=KEY))
    run("sweep", "--url", url, *load, "--concurrency", "1,2", "--api-key", KEY, "-o", str(out / "sweep") + "/",
        "--csv", str(out / "sweep.csv"), "--hgrm", "ttft", str(out / "ttft.hgrm"))  # fmt: skip
    for fmt in ("md", "json", "table", "csv"):
        run("report", str(out / "a.json"), str(out / "sweep"), "--format", fmt, "-o", str(out / f"report.{fmt}"),
            env=_env(OPENAI_API_KEY=KEY))  # fmt: skip
    run("report", str(out / "a.json"), "--plots", str(out / "png"))
    run("merge", str(out / "a.json"), str(out / "b.json"), "-o", str(out / "merged.json"))
    run("compare", str(out / "a.json"), str(out / "b.json"))
    run("compare", str(out / "a.json"), str(out / "merged.json"), "--json")
    run("serve", "--help", env=_env(OPENAI_API_KEY=KEY))
    # the server quotes the key back; a target that refuses; bad input; a click error
    quoted = json.dumps({"error": {"message": f"Incorrect API key {KEY} or {HEADER_KEY} for {PASSWORD}"}}).encode()
    fault_server.answer("/ok/v1/completions", status=401, body=quoted, content_type="application/json")
    run("run", "--url", url, *load, "--api-key", KEY, "-o", str(out / "c.json"), code=1)
    refused = f"http://bob:{PASSWORD}@{refused_url.split('//', 1)[1]}/v1?api-key={QUERY_KEY}"
    run("run", "--url", refused, *load, "--api-key", KEY, "-o", str(out / "d.json"), code=1)
    run("run", "--url", url, *load, "--api-key", KEY, "--concurrency", "0", code=2)
    run("run", "--url", url, *load, "--api-key", KEY, KEY, code=2)

    # the secrets were really sent
    seen = fault_server.headers_seen("/ok/v1/completions")
    assert seen and all(h.get("x-api-key") == HEADER_KEY and h.get("authorization") == f"Bearer {KEY}" for h in seen)
    assert any("401" in r.stdout and "Incorrect API key <redacted>" in r.stdout for r in runs)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) >= 20, files
    for secret in (KEY, HEADER_KEY, PASSWORD, QUERY_KEY):
        for done in runs:
            assert secret not in done.stdout + done.stderr, (secret, done)
        for path in files:
            assert secret.encode() not in path.read_bytes(), (secret, path)
