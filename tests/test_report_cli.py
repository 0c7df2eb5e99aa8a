"""`netbench report`: run files in, Markdown / table / JSON / CSV and plots out; bad input is one
line and exit 2; and end to end against the built-in server, the verdict follows the data."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest

from netbench.phases import RECORD_DTYPE
from tests.cli import invoke, netbench
from tests.servers.sim import start_sim_server
from tests.synthetic_runs import make_run, sweep

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("runs")
    for result in sweep(levels=(1, 4)):
        result.save(folder / f"{result.spec.mode}-c{result.spec.concurrency}.json")
    return folder


def _invoke(*args: str) -> str:
    outcome = invoke(*args)
    assert outcome.code == 0, outcome.stderr
    return outcome.stdout


def test_markdown_goes_to_stdout_without_o(run_files):
    text = _invoke("report", *map(str, sorted(run_files.glob("*.json"))))
    assert text.startswith("# Network latency bench")
    assert "## TTFT vs HTTP latency" in text and "## Rule of thumb" in text
    assert "completions, TTFT: c=4 vs c=1" in text
    assert "## Plots" not in text


def test_o_and_plots_write_the_report_and_linked_pngs(run_files, tmp_path):
    out = tmp_path / "out"
    report = out / "network_latency_bench.md"
    _invoke("report", str(run_files), "-o", str(report), "--plots", str(out))
    text = report.read_text()
    links = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", text)
    assert links == ["network_latency_phases.png", "network_latency_ttft_cdf.png", "network_latency_wall_cdf.png"]
    for link in links:
        assert (out / link).read_bytes().startswith(PNG_MAGIC)
    # plots in another folder than the report: the links are relative to the report
    _invoke("report", str(run_files), "-o", str(tmp_path / "r.md"), "--plots", str(tmp_path / "png"))
    assert "](png/network_latency_phases.png)" in (tmp_path / "r.md").read_text()


def test_plots_fall_back_to_histograms_without_records(tmp_path):
    for result in sweep(keep_records=False, levels=(1,)):
        result.save(tmp_path / f"{result.spec.mode}.json")
    _invoke("report", str(tmp_path), "-o", str(tmp_path / "r.md"), "--plots", str(tmp_path / "png"))
    assert (tmp_path / "png" / "network_latency_ttft_cdf.png").read_bytes().startswith(PNG_MAGIC)
    assert "could not be tested" not in (tmp_path / "r.md").read_text()  # no c>1 run: nothing to test


def test_json_holds_every_run_and_the_analysis(run_files):
    data = json.loads(_invoke("report", str(run_files), "--format", "json", "--ttft-ref", "27ms"))
    assert [(r["mode"], r["concurrency"]) for r in data["runs"]] == [
        ("health", 1), ("health", 4), ("completions", 1), ("completions", 4)]  # fmt: skip
    assert all("split" in r for r in data["runs"])
    answer = data["analysis"]
    assert answer["ttft_vs_http"]["ttft_us"] == 27_000
    assert answer["ttft_vs_http"]["verdict"] == "negligible"
    assert answer["rule_of_thumb"]["text"].startswith("Measured from this client, the network and HTTP path takes")
    effects = {(e["mode"], e["phase"], e["concurrency"]): e for e in answer["concurrency"]["effects"]}
    assert effects["completions", "ttft", 4]["significant"] is True


def test_csv_puts_the_seed_columns_first(run_files):
    rows = list(csv.reader(io.StringIO(_invoke("report", str(run_files), "--format", "csv"))))
    assert rows[0][:6] == ["mode", "concurrency", "n", "median_wall_s", "p95_wall_s", "notes"]
    assert len(rows) == 5


def test_table_format_prints_the_breakdowns_and_the_answer(run_files, tmp_path):
    _invoke("report", str(run_files), "--format", "table", "-o", str(tmp_path / "t.txt"))
    text = (tmp_path / "t.txt").read_text()
    assert text.count("ttft_after_headers") == 4  # two rows in each of the two completions tables
    assert "Rule of thumb" in text and "Measured from this client" in text


def test_bad_input_is_one_line_and_exit_2(run_files, tmp_path):
    cases = [
        ("report", str(tmp_path / "missing.json")),
        ("report", str(run_files), "--ttft-ref", "soon"),
        ("report", str(run_files), "--ttft-ref", "27"),
        ("report", str(tmp_path)),  # a folder without run files
    ]
    (tmp_path / "junk.txt").write_text("not a run")
    cases.append(("report", str(tmp_path / "junk.txt")))
    for args in cases:
        result = invoke(*args)
        assert result.code == 2, (args, result.stderr)
        assert result.stderr.startswith("netbench: error:") and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr


def test_a_ttft_csv_reference_is_named_in_the_report(run_files, tmp_path):
    reference = tmp_path / "day007.csv"
    reference.write_text("ttft_ms\n26\n27\n28\n")
    text = _invoke("report", str(run_files), "--ttft-ref", str(reference))
    assert "| warm TTFT (reference) | 27.00 |" in text
    assert "median of 3 values of column ttft_ms (ms)" in text


# --- end to end against the built-in server ---------------------------------------------------


def _sweep_and_report(url: str, folder: Path, *extra: str) -> str:
    swept = netbench("sweep", "--url", url, "--mode", "health,completions", "--concurrency", "1", "--n", "12",
                     "--warmup", "2", "--max-tokens", "4", "--no-progress", "-o", f"{folder}/", *extra)  # fmt: skip
    assert swept.code == 0, swept.stderr
    reported = netbench("report", *sorted(str(p) for p in folder.glob("*.json")))
    assert reported.code == 0, reported.stderr
    return reported.stdout


def _rule(report: str) -> str:
    return report.split("## Rule of thumb", 1)[1].strip().splitlines()[0]


@pytest.mark.integration
def test_the_verdict_turns_when_http_overhead_dominates(tmp_path):
    with start_sim_server("--step-ms", "20", "--ignore-eos") as url:
        calm = _sweep_and_report(url, tmp_path / "calm")
    with start_sim_server("--step-ms", "1", "--http-delay-ms", "30", "--ignore-eos") as url:
        slow_http = _sweep_and_report(url, tmp_path / "slow")
    assert "negligible" in calm and "Most of it is the model (queue + prefill)" in _rule(calm)
    assert "the larger part" in _rule(slow_http), slow_http
    assert "Most of it is the server's HTTP framework and handler" in _rule(slow_http)
    # the server's own TTFT does not see the HTTP delay: client − server is the overhead
    gap = re.search(r"Client TTFT − server TTFT = \+([\d.]+) ms", slow_http)
    assert gap and float(gap.group(1)) >= 25, slow_http


@pytest.mark.integration
def test_raw_exports_every_record_with_every_mark(sim_url, tmp_path):
    path = tmp_path / "raw.csv"
    result = netbench("run", "--url", sim_url, "--mode", "completions", "--n", "7", "--max-tokens", "3",
                      "--raw", str(path), "--no-progress")  # fmt: skip
    assert result.code == 0, result.stderr
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 7
    assert list(rows[0])[:4] == ["mode", "concurrency", "rate", "outcome"]
    assert set(RECORD_DTYPE.names) <= set(rows[0])
    for row in rows:
        assert row["outcome"] == "ok" and row["mode"] == "completions"
        assert 0 <= int(row["starttransfer_mark_us"]) <= int(row["first_token_mark_us"]) <= int(row["total_mark_us"])
        assert int(row["tokens"]) == 3


def test_make_run_records_round_trip_through_raw_csv(tmp_path):
    from netbench.report.raw import write_raw_csv

    run = make_run("completions", 2, [5000, 6000], ttft_us=[2000, 2500])
    write_raw_csv([run], tmp_path / "raw.csv")
    rows = list(csv.DictReader((tmp_path / "raw.csv").open()))
    assert [int(r["first_token_mark_us"]) for r in rows] == [2000, 2500]
    assert [r["concurrency"] for r in rows] == ["2", "2"]
