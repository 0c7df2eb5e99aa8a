"""nginx (a server that is not Python) over http, https and HTTP/2: the connection phases exist
on new connections only, certificates are verified unless --insecure says otherwise, and
redirects are measured, not followed, unless --follow-redirects asks.

nginx writes one access-log line per request to /logged (the tag, the connection's serial
number, the protocol), an account of connections and protocols independent of netbench's.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tests.cli import netbench
from tests.servers.nginx import NginxServer

pytestmark = pytest.mark.integration

N = 8
CONCURRENCY = 2


def logged(nginx: NginxServer, tag: str) -> list[list[str]]:
    """The access-log lines of the requests tagged `tag`: [connection, requests on it, protocol,
    tls, "r" when the TLS session was resumed]."""
    lines = nginx.access_log_path.read_text().splitlines() if nginx.access_log_path.exists() else []
    return [line.split()[1:] for line in lines if line.split()[0] == tag]


def measure(url: str, tmp_path: Path, *args: str) -> tuple[int, dict, str]:
    """GET url N times at concurrency 2; return (exit code, run file, stdout)."""
    run_file = tmp_path / f"{uuid.uuid4().hex}.json"
    result = netbench(
        "run", "--mode", "get", "--url", url, "--n", str(N), "--concurrency", str(CONCURRENCY),
        "--no-progress", "-o", str(run_file), *args,
    )  # fmt: skip
    assert "Traceback" not in result.stdout + result.stderr
    return result.code, json.loads(run_file.read_text()), result.stdout


def phase_count(run: dict, phase: str) -> int | None:
    from netbench.results import RunResult

    stats = RunResult.from_dict(run).histograms.stats(phase)
    return None if stats is None else stats.count


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_connection_phases_on_new_connections_only(nginx_server: NginxServer, tmp_path: Path, scheme: str) -> None:
    tag = uuid.uuid4().hex
    base = nginx_server.http_url if scheme == "http" else nginx_server.https_url
    code, run, _ = measure(f"{base}/logged?tag={tag}", tmp_path, "--cacert", str(nginx_server.cacert_path))
    assert code == 0
    counters = run["counters"]
    assert counters["ok"] == counters["requests"] == N

    lines = logged(nginx_server, tag)
    assert len(lines) == N
    connections = {line[0] for line in lines}
    # One keep-alive connection per in-flight slot, as nginx saw it and as netbench counted it.
    assert len(connections) == CONCURRENCY
    assert counters["connections_new"] == CONCURRENCY
    assert counters["connections_reused"] == N - CONCURRENCY
    assert {line[2] for line in lines} == {"HTTP/1.1"}
    # dns/connect/tls exist for the requests that opened a connection, and for no other.
    assert phase_count(run, "dns") == phase_count(run, "connect") == CONCURRENCY
    if scheme == "https":
        assert phase_count(run, "tls") == CONCURRENCY
        assert {line[3] for line in lines} <= {"TLSv1.2", "TLSv1.3"}
    else:
        assert phase_count(run, "tls") is None
        assert {line[3] for line in lines} == {"-"}
    for phase in ("send", "wait", "ttfb", "e2e"):
        assert phase_count(run, phase) == N, phase


def test_tls_resumption_is_told_from_a_full_handshake(nginx_server: NginxServer, tmp_path: Path) -> None:
    # A new connection per request: each slot's first is a full handshake, its later ones offer
    # the session, and nginx says which it resumed.
    tag = uuid.uuid4().hex
    code, run, _ = measure(f"{nginx_server.https_url}/logged?tag={tag}", tmp_path, "--cacert", str(nginx_server.cacert_path),
                           "--header", "Connection: close")  # fmt: skip
    assert code == 0
    from netbench.results import RunResult

    result = RunResult.from_dict(run)
    resumed_by_server = sum(1 for line in logged(nginx_server, tag) if line[4] == "r")
    records = result.records
    assert records["new_connection"].all() and (records["tls_handshake_bytes"] > 0).all()
    # no warm-up: each slot's first measured connection was its first handshake, a full one
    full, resumed = result.histograms.stats("tls_full"), result.histograms.stats("tls_resumed")
    assert resumed_by_server == N - CONCURRENCY
    assert full is not None and resumed is not None and (full.count, resumed.count) == (CONCURRENCY, resumed_by_server)
    # the report says what a new connection costs, TLS full and resumed apart
    from netbench.analysis import analyse
    from netbench.report.markdown import render_markdown
    from netbench.report.units import ms
    from netbench.summary import Run

    text = render_markdown(analyse([Run.of(result)]))
    tls = result.histograms.stats("tls")
    assert f"for TLS ({ms(full.p50_us)} ms full, {ms(resumed.p50_us)} ms resumed)" in text and tls is not None
    assert f"{ms(tls.p50_us)} ms for TLS" in text


def test_an_unknown_certificate_is_a_clear_tls_error(nginx_server: NginxServer, tmp_path: Path) -> None:
    """nginx's certificate comes from a CA made for this test: without --cacert it is unknown."""
    tag = uuid.uuid4().hex
    code, run, stdout = measure(f"{nginx_server.https_url}/logged?tag={tag}", tmp_path)
    assert code == 1
    assert run["counters"]["tls"] == N and run["counters"].get("ok", 0) == 0
    assert f"requests: 0 ok, {N} failed (tls {N})" in stdout
    [note] = [note for note in run["notes"] if note.startswith("tls: curl error 60:")]
    assert "certificate" in note and "--cacert" in note and "--insecure" in note
    assert logged(nginx_server, tag) == []  # no request got past the handshake


def test_insecure_skips_verification_only_when_asked(nginx_server: NginxServer, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    code, run, _ = measure(f"{nginx_server.https_url}/logged?tag={tag}", tmp_path, "--insecure")
    assert code == 0
    assert run["counters"]["ok"] == N
    assert run["spec"]["insecure"] is True
    assert phase_count(run, "tls") == CONCURRENCY
    assert len(logged(nginx_server, tag)) == N


@pytest.mark.parametrize("http2", [True, False])
def test_http2_when_asked(nginx_server: NginxServer, tmp_path: Path, http2: bool) -> None:
    tag = uuid.uuid4().hex
    args = ["--cacert", str(nginx_server.cacert_path)] + (["--http2"] if http2 else [])
    code, run, _ = measure(f"{nginx_server.h2_url}/logged?tag={tag}", tmp_path, *args)
    assert code == 0
    assert run["counters"]["ok"] == N
    lines = logged(nginx_server, tag)
    assert len(lines) == N
    assert {line[2] for line in lines} == {"HTTP/2.0" if http2 else "HTTP/1.1"}
    # Whatever libcurl multiplexes, netbench's count of new connections is nginx's.
    assert run["counters"]["connections_new"] == len({line[0] for line in lines})
    assert phase_count(run, "tls") == run["counters"]["connections_new"]


def test_redirects_are_measured_not_followed_by_default(nginx_server: NginxServer, tmp_path: Path) -> None:
    code, run, _ = measure(f"{nginx_server.http_url}/redirect", tmp_path)
    assert code == 0
    assert run["counters"]["status_302"] == N and "status_200" not in run["counters"]
    assert run["spec"]["follow_redirects"] is False
    assert any("--follow-redirects" in note for note in run["notes"])


def test_redirects_are_followed_when_asked(nginx_server: NginxServer, tmp_path: Path) -> None:
    code, run, _ = measure(f"{nginx_server.http_url}/redirect", tmp_path, "--follow-redirects")
    assert code == 0
    # The status of the last response: the redirect's target answered every request.
    assert run["counters"]["status_200"] == N and "status_302" not in run["counters"]
    assert not any("--follow-redirects" in note for note in run["notes"])
