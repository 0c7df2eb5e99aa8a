"""One definition of each statistic: a phase's median is the HDR histogram's p50, computed once
in the run summary, and every output shows that number (the bootstrap on the records gives
intervals only). Before, the significance lines took np.quantile of the records and disagreed
with the tables of the same report."""

from __future__ import annotations

import json
import re

import numpy as np
from rich.console import Console

from netbench.analysis import analyse
from netbench.report import answer, jsonout, markdown
from netbench.report.csvout import csv_row
from netbench.report.table import print_report
from netbench.report.units import ms
from netbench.summary import Run
from tests.synthetic_runs import sweep


def test_a_phase_has_one_median_in_the_table_the_json_the_significance_lines_and_the_rule():
    runs = [Run.of(r) for r in sweep()]
    analysis = analyse(runs)
    by = {(s.mode, s.concurrency): s for s in analysis.runs}
    stream, stream8, health = by["completions", 1], by["completions", 8], by["health", 1]
    ttft, ttft8, wall = stream.phase("ttft").p50_us, stream8.phase("ttft").p50_us, health.phase("e2e").p50_us
    # the records' own median is another number, different even as shown: no output may show it
    records = next(r for r in runs if r.summary is stream)
    assert ms(np.quantile(records.values_us("ttft"), 0.5)) != ms(ttft)
    assert ms(np.quantile(next(r for r in runs if r.summary is health).values_us("e2e"), 0.5)) != ms(wall)

    # the terminal table
    console = Console(record=True, width=200)
    print_report(stream, console)
    row = next(line for line in console.export_text().splitlines() if line.startswith("│ ttft "))
    assert row.split("│")[3].strip() == ms(ttft)

    # --json of the run, and the report's JSON (its runs and its analysis)
    assert json.loads(jsonout.render_json([stream]))["phases"]["ttft"]["p50_us"] == ttft
    report = json.loads(answer.render_json(analysis))
    assert report["runs"][[r["mode"] for r in report["runs"]].index("completions")]["phases"]["ttft"]["p50_us"] == ttft
    effect = next(e for e in report["analysis"]["concurrency"]["effects"] if e["phase"] == "ttft" and e["concurrency"] == 8)
    assert (effect["median_a"], effect["median_b"], effect["diff"]) == (ttft, ttft8, ttft8 - ttft)
    assert report["analysis"]["ttft_vs_http"]["ttft_us"] == ttft and report["analysis"]["ttft_vs_http"]["overhead_us"] == wall
    assert csv_row(stream)["ttft_p50_ms"] == ttft / 1000
    # the throughput, as the JSON has it
    throughput = json.loads(jsonout.render_json([stream]))["throughput"]
    assert throughput["output_tokens_per_s"] > 0 and csv_row(stream)["output_tokens_per_s"] == throughput["output_tokens_per_s"]
    assert csv_row(health)["output_tokens_per_s"] == ""  # no tokens in a health check
    assert "goodput_rps" not in throughput and csv_row(stream)["goodput_rps"] == ""  # no --slo, no goodput

    # the Markdown report: the runs table, the significance line, the rule of thumb
    text = markdown.render_markdown(analysis)
    assert f"| {ms(ttft)} / {ms(stream.phase('ttft').p95_us)} |" in text
    line = next(line for line in text.splitlines() if line.startswith("- completions, TTFT: c=8 vs c=1"))
    assert f"medians {ms(ttft)} → {ms(ttft8)} ms" in line and f"c=8 vs c=1: +{ms(ttft8 - ttft)} ms (95 % CI" in line
    rule = text.split("## Rule of thumb", 1)[1]
    assert f"the network and HTTP path takes ~{ms(wall)} ms of a warm TTFT of {ms(ttft)} ms (" in rule
    assert re.search(rf"raises median TTFT by {re.escape(ms(ttft8 - ttft))} ms", rule)


def test_each_interval_holds_its_point_estimate():
    # records of every request: the interval is of the statistic the point estimate is (before,
    # "+98.18 ms (95 % CI +97.80 to +98.11 ms)": an HDR point beside an interval of exact values)
    analysis = analyse([Run.of(r) for r in sweep(n=2000)])
    tested = [e.diff for e in analysis.concurrency.effects if e.diff is not None]
    assert len(tested) == 6
    assert all(d.low <= d.diff <= d.high for d in tested), [(d.low, d.diff, d.high) for d in tested]
