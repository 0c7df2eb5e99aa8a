"""Secrets: the API key is sent as a bearer token and appears in no output or file; credentials
never follow a redirect to another host; --insecure is never the default."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from netbench.spec import RunSpec
from tests.cli import Completed, netbench
from tests.servers.faults import FaultServer

pytestmark = pytest.mark.integration

SECRET = "sk-netbench-test-9f8e7d6c5b4a"
HEADER_SECRET = "hdr-netbench-test-0a1b2c3d"


def env_with(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env.update(extra)
    return env


def assert_nowhere(secret: str, results: list[Completed], folder: Path) -> None:
    """Neither the processes' output nor any file they wrote holds the secret."""
    for result in results:
        assert secret not in result.stdout and secret not in result.stderr
    files = [path for path in folder.rglob("*") if path.is_file()]
    assert files  # the outputs below were really written
    for path in files:
        assert secret.encode() not in path.read_bytes(), path


def every_output(url: str, folder: Path, *args: str, env: dict[str, str]) -> list[Completed]:
    """A run with every output on (table, CSV, run file, raw records, .hgrm), the same as JSON,
    and the report of the run file (Markdown, JSON)."""
    run_file = folder / "run.json"
    outputs = ["--csv", str(folder / "rows.csv"), "-o", str(run_file), "--raw", str(folder / "raw.csv"),
               "--hgrm", "e2e", str(folder / "e2e.hgrm")]  # fmt: skip
    base = ["run", "--url", url, "--mode", "completions", "--n", "3", "--no-progress", *args]
    results = [netbench(*base, *outputs, env=env), netbench(*base, "--json", env=env)]
    for result in results:
        assert result.code == 0, result.stderr
    results += [netbench("report", str(run_file), "--format", fmt, env=env) for fmt in ("md", "json")]
    for result in results[2:]:
        assert result.code == 0, result.stderr
    return results


@pytest.mark.parametrize("source", ["flag", "env"])
def test_the_api_key_is_sent_and_never_written(fault_server: FaultServer, tmp_path: Path, source: str) -> None:
    """The key from --api-key or from $OPENAI_API_KEY, and a secret in a --header beside it."""
    header = ["--header", f"X-Api-Key: {HEADER_SECRET}"]
    if source == "flag":
        results = every_output(fault_server.openai_url(), tmp_path, "--api-key", SECRET, *header, env=env_with())
    else:
        results = every_output(fault_server.openai_url(), tmp_path, *header, env=env_with(OPENAI_API_KEY=SECRET))
    for path in ("/ok/v1/completions", "/ok/v1/models"):
        seen = fault_server.headers_seen(path)
        assert seen and all(h.get("authorization") == f"Bearer {SECRET}" for h in seen), path
        assert all(h.get("x-api-key") == HEADER_SECRET for h in seen), path
    assert_nowhere(SECRET, results, tmp_path)
    assert_nowhere(HEADER_SECRET, results, tmp_path)


def test_the_api_key_is_not_in_failures_or_errors(refused_url: str, tmp_path: Path) -> None:
    """A run where everything fails, and bad input rejected before any request, say nothing of it."""
    failed = netbench("run", "--url", refused_url, "--mode", "chat", "--n", "2", "--api-key", SECRET,
                      "--no-progress", "-o", str(tmp_path / "failed.json"), env=env_with())  # fmt: skip
    assert failed.code == 1
    rejected = netbench("run", "--url", refused_url, "--concurrency", "0", "--api-key", SECRET, env=env_with())
    assert rejected.code == 2 and "--concurrency" in rejected.stderr
    assert_nowhere(SECRET, [failed, rejected], tmp_path)


def test_insecure_is_never_the_default() -> None:
    assert RunSpec(url="https://127.0.0.1:1").insecure is False
    help_text = netbench("run", "--help").stdout
    assert "--insecure" in help_text


def run_redirect(fault_server: FaultServer, path: str, *args: str) -> Completed:
    return netbench("run", "--mode", "get", "--url", f"{fault_server.base_url}{path}", "--n", "2",
                    "--no-progress", "--api-key", SECRET, *args, env=env_with())  # fmt: skip


@pytest.mark.parametrize(("path", "sent_to_target"), [("/redirect-self", True), ("/redirect-localhost", False)])
def test_credentials_follow_a_redirect_only_to_the_same_host(
    fault_server: FaultServer, path: str, sent_to_target: bool
) -> None:
    """Both redirects lead to /echo on the same server: once as 127.0.0.1 (the host the key was
    given for), once as localhost (another host, where the key must not go)."""
    result = run_redirect(fault_server, path, "--follow-redirects")
    assert result.code == 0, result.stderr
    assert all(h.get("authorization") == f"Bearer {SECRET}" for h in fault_server.headers_seen(path))
    at_target = fault_server.headers_seen("/echo")
    assert len(at_target) == 2
    assert [h.get("authorization") for h in at_target] == [f"Bearer {SECRET}" if sent_to_target else None] * 2
    if not sent_to_target:
        assert {h["host"].split(":")[0] for h in at_target} == {"localhost"}


def test_redirects_are_not_followed_unless_asked(fault_server: FaultServer) -> None:
    result = run_redirect(fault_server, "/redirect-localhost")
    assert result.code == 0, result.stderr
    assert fault_server.request_count("/redirect-localhost") == 2
    assert fault_server.request_count("/echo") == 0
