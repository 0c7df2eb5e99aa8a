"""End to end: the real console script against the real built-in server on loopback."""

import json

import pytest

from tests.cli import netbench

pytestmark = pytest.mark.integration  # the console script in a subprocess, real servers


def test_streaming_chat_run_reports_every_phase(sim_url):
    result = netbench("run", "--url", sim_url + "/v1", "--mode", "chat", "--concurrency", "4", "--n", "24",
                      "--warmup", "4", "--max-tokens", "6", "--json")
    assert result.code == 0, result.stderr
    summary = result.json()
    assert list(summary)[:5] == ["mode", "concurrency", "n", "median_wall_s", "p95_wall_s"]
    assert (summary["mode"], summary["concurrency"], summary["n"]) == ("chat", 4, 24)
    assert summary["requests"] == summary["ok"] == 24
    # the role-only first chunk is not a token: exactly max_tokens tokens per stream
    assert summary["tokens_per_request"] == 6
    # warm-up opened the connections; the measured requests reuse them
    assert summary["connections"] == {"new": 0, "reused": 24}
    phases = summary["phases"]
    for name in ("dns", "connect", "tls", "lag"):
        assert phases[name] is None, name
    for name in ("send", "wait", "ttfb", "ttft", "itl", "tpot", "e2e", "queue", "rtt", "server", "network"):
        assert phases[name] is not None and phases[name]["count"] > 0, name
    assert phases["itl"]["count"] == 24 * 5
    assert phases["ttft"]["p50_us"] > phases["ttfb"]["p50_us"]
    assert phases["e2e"]["p50_us"] >= phases["ttft"]["p50_us"]
    assert summary["median_wall_s"] == phases["e2e"]["p50_us"] / 1e6


def test_completions_table_shows_na_and_the_footer(sim_url):
    result = netbench("run", "--url", sim_url, "--mode", "completions", "--n", "5", "--max-tokens", "3")
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    tls_row = next(line for line in lines if line.strip("│ ").startswith("tls "))
    assert "n/a" in tls_row and " 0.000" not in tls_row
    ttft_row = next(line for line in lines if line.strip("│ ").startswith("ttft "))
    assert "n/a" not in ttft_row
    assert "requests: 5 ok, 0 failed (none)" in result.stdout
    assert "connections: 1 new, 4 reused" in result.stdout
    assert "tokens per request: 3.0" in result.stdout


def test_health_and_models_are_not_streams(sim_url):
    for mode in ("health", "models"):
        result = netbench("run", "--url", sim_url, "--mode", mode, "--concurrency", "2", "--n", "20", "--json")
        assert result.code == 0, result.stderr
        summary = result.json()
        assert summary["ok"] == 20 and summary["phases"]["ttft"] is None and summary["tokens_per_request"] is None
    assert netbench("run", "--url", sim_url + "/v1/models", "--mode", "get", "--n", "3", "--json").json()["ok"] == 3


def test_sweep_runs_each_level_and_writes_csv_and_run_files(sim_url, tmp_path):
    csv_path = tmp_path / "bench.csv"
    result = netbench("sweep", "--url", sim_url, "--mode", "health,completions", "--concurrency", "1,2", "--n", "6",
                      "--max-tokens", "2", "--csv", str(csv_path), "-o", str(tmp_path / "runs") + "/", "--json")
    assert result.code == 0, result.stderr
    runs = result.json()["runs"]
    assert [(r["mode"], r["concurrency"]) for r in runs] == [("health", 1), ("health", 2), ("completions", 1), ("completions", 2)]
    rows = csv_path.read_text().splitlines()
    assert rows[0].startswith("mode,concurrency,n,median_wall_s,p95_wall_s,notes,")
    assert len(rows) == 5
    saved = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert saved == ["completions-c1.json", "completions-c2.json", "health-c1.json", "health-c2.json"]
    assert json.loads((tmp_path / "runs" / "health-c2.json").read_text())["schema_version"] == 3


def test_a_target_that_refuses_everything_exits_1_and_says_so(refused_url):
    result = netbench("run", "--url", refused_url, "--mode", "health", "--n", "4")
    assert result.code == 1
    assert "requests: 0 ok, 4 failed (refused 4)" in result.stdout
    assert "every request failed" in result.stdout
    assert "Traceback" not in result.stderr
