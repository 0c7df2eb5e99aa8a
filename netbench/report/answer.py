"""`netbench report`: reads run files, and renders the analysis in the formats other than Markdown
(json: every run's summary plus the analysis; table: the breakdown tables plus the answer in
words; csv: one row per run, the seed's columns first)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from rich.console import Console

from netbench.analysis import (
    BOOTSTRAP_RESAMPLES,
    CONFIDENCE,
    TtftReference,
    concurrency_effects,
    rule_of_thumb,
    sorted_runs,
    ttft_vs_http,
)
from netbench.report import csvout
from netbench.report.markdown import rule_of_thumb_text, significance_section, ttft_section
from netbench.report.table import print_report
from netbench.results import RunFileError, RunResult
from netbench.summary import summarize

FORMATS = ("md", "table", "json", "csv")


def load_runs(paths: Sequence[str]) -> list[RunResult]:
    """Run files, in report order; a folder stands for the *.json files in it."""
    files: list[Path] = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            found = sorted(path.glob("*.json"))
            if not found:
                raise RunFileError(f"{path} holds no run files (*.json)")
            files += found
        else:
            files.append(path)
    return sorted_runs([RunResult.load(f) for f in files])


def analysis_dict(
    results: Sequence[RunResult], ttft_ref: TtftReference | None, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> dict[str, object]:
    """The answer as JSON-able numbers (µs), with the rule of thumb's sentence."""
    comparison = ttft_vs_http(results, ttft_ref)
    effects = concurrency_effects(results, resamples, seed)
    rule = rule_of_thumb(comparison, effects)
    return {
        "ttft_vs_http": {
            "ttft_us": comparison.ttft_us,
            "ttft_source": comparison.ttft_source,
            "baseline_mode": None if comparison.baseline is None else comparison.baseline.spec.mode,
            "baseline_p50_us": comparison.baseline_p50_us,
            "baseline_p95_us": comparison.baseline_p95_us,
            "overhead_us": comparison.overhead_us,
            "overhead_source": comparison.overhead_source,
            "overhead_share_of_ttft": comparison.share,
            "verdict": None if comparison.verdict is None else comparison.verdict.value,
            "baseline_components_us": {c.key: c.us for c in comparison.components},
            "carrier": None if comparison.carrier is None else comparison.carrier.key,
            "server_ttft_mean_us": None if comparison.server_ttft is None else comparison.server_ttft.mean_us,
            "client_minus_server_ttft_mean_us": comparison.server_gap_us,
            "missing": list(comparison.missing),
        },
        "concurrency": {
            "method": f"bootstrap {CONFIDENCE * 100:.0f} % CI of median(c) - median(c=1), {resamples} resamples, seed {seed}",
            "effects": [
                {
                    "mode": e.mode,
                    "phase": e.phase,
                    "concurrency": e.concurrency,
                    "base_concurrency": e.base_concurrency,
                    **({"reason": e.reason} if e.diff is None else {**asdict(e.diff), "significant": e.diff.significant}),
                }
                for e in effects
            ],
        },
        "rule_of_thumb": {
            "verdict": None if rule.verdict is None else rule.verdict.value,
            "text": rule_of_thumb_text(rule),
        },
    }


def render_json(results: Sequence[RunResult], ttft_ref: TtftReference | None, seed: int = 0) -> str:
    import json

    return json.dumps(
        {"runs": [summarize(r) for r in results], "analysis": analysis_dict(results, ttft_ref, seed=seed)}, indent=2
    )


def render_text(results: Sequence[RunResult], ttft_ref: TtftReference | None, console: Console, seed: int = 0) -> None:
    """The breakdown table of every run, then the answer in words."""
    for result in results:
        print_report(result, console)
        console.print()
    effects = concurrency_effects(results, BOOTSTRAP_RESAMPLES, seed)
    comparison = ttft_vs_http(results, ttft_ref)
    lines = [
        *ttft_section(comparison),
        *significance_section(effects, BOOTSTRAP_RESAMPLES, seed),
        "## Rule of thumb",
        "",
        rule_of_thumb_text(rule_of_thumb(comparison, effects)),
    ]
    for line in lines:
        console.print(line, highlight=False, markup=False, soft_wrap=True)


def render_csv(results: Sequence[RunResult]) -> str:
    """One row per run with csvout's columns (the seed's first), header included."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=csvout.COLUMNS, lineterminator="\n")
    writer.writeheader()
    for result in results:
        writer.writerow(csvout.csv_row(result))
    return buffer.getvalue()
