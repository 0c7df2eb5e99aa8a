"""`netbench report` in the formats other than Markdown: json (every run's summary plus the
analysis, their plain serialisation, with the rule of thumb's sentence) and table (the breakdown
tables plus the answer in words)."""

from __future__ import annotations

from rich.console import Console

from netbench.analysis import Analysis
from netbench.prompt_lengths import PromptLengths
from netbench.report.lengths_section import lengths_rule_text
from netbench.report.markdown import rule_of_thumb_text, significance_section, ttft_section
from netbench.report.table import print_report
from netbench.serial import dumps, plain


def render_json(analysis: Analysis, lengths: PromptLengths | None = None) -> str:
    answer = plain(analysis)
    answer["rule_of_thumb"]["text"] = rule_of_thumb_text(analysis.rule_of_thumb)
    if lengths is not None:
        answer["prompt_lengths"] = {**plain(lengths), "text": lengths_rule_text(lengths)}
    return dumps({"runs": list(analysis.runs), "analysis": answer})


def render_text(analysis: Analysis, console: Console) -> None:
    """The breakdown table of every run, then the answer in words."""
    for summary in analysis.runs:
        print_report(summary, console)
        console.print()
    lines = [
        *ttft_section(analysis.ttft_vs_http),
        *significance_section(analysis.concurrency, analysis.resamples, analysis.seed),
        "## Rule of thumb",
        "",
        rule_of_thumb_text(analysis.rule_of_thumb),
    ]
    for line in lines:
        console.print(line, highlight=False, markup=False, soft_wrap=True)
