"""The report's "TTFT vs HTTP latency by prompt length" rows and the rule of thumb per length,
worded from a `prompt_lengths.PromptLengths` (nothing is computed here)."""

from __future__ import annotations

from netbench.analysis import OverheadSource, Verdict
from netbench.prompt_lengths import LengthRow, PromptLengths
from netbench.report.units import ms, percent

_VERDICT = {Verdict.NEGLIGIBLE: "negligible", Verdict.NON_TRIVIAL: "non-trivial", Verdict.DOMINANT: "dominant"}


def _tokens(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def _cell(row: LengthRow) -> list[str]:
    return [
        row.input_tokens,
        _tokens(row.prompt_tokens),
        "n/a" if row.request_bytes is None else f"{row.request_bytes / 1024:.1f}",
        ms(row.send_p50_us),
        ms(row.ttfb_p50_us),
        ms(row.ttft_after_headers_p50_us),
        ms(row.ttft_p50_us),
        ms(row.overhead_us),
        "n/a" if row.share is None else percent(row.share),
        "n/a" if row.verdict is None else _VERDICT[row.verdict],
    ]


def lengths_section(p: PromptLengths | None) -> list[str]:
    if p is None:
        return []
    if p.overhead_source is OverheadSource.BASELINE:
        overhead = f"the {p.baseline_mode} baseline's wall time ({ms(p.baseline_p50_us)} ms p50) plus the run's send p50"
    elif p.overhead_source is OverheadSource.SERVER_GAP:
        overhead = "client − server-side TTFT (means, /metrics): there is no baseline run"
    else:
        overhead = "not measured (no baseline run and no server-side TTFT)"
    header = ["--input-tokens", "prompt tokens (server)", "request KiB", "send", "TTFB", "TTFT after headers", "TTFT",
              "HTTP overhead", "of TTFT", "verdict"]  # fmt: skip
    lines = [
        "### By prompt length",
        "",
        f"{p.mode} at concurrency 1, one run per prompt length (p50s, ms). HTTP overhead: {overhead}. "
        "Prompt tokens are the server's own count (usage).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(_cell(row)) + " |" for row in p.rows]
    rule = lengths_rule_text(p)
    return lines + ([""] if rule is None else ["", f"- **{rule}**"]) + [""]


def _at(row: LengthRow) -> str:
    assert row.share is not None
    return f"{percent(row.share)} at {_tokens(row.prompt_tokens)} tokens"


def lengths_rule_text(p: PromptLengths | None) -> str | None:
    """The rule of thumb per prompt length: "Below ~N prompt tokens HTTP overhead is X % of
    TTFT (...); above ~N it is ..."; None without the shares."""
    if p is None:
        return None
    rows = [r for r in p.rows if r.share is not None and r.verdict is not None]
    if len(rows) < 2:
        return None
    if not p.crossings:
        verdict = rows[0].verdict
        assert verdict is not None
        return (
            f"By prompt length, HTTP overhead next to TTFT: at every length measured ({_tokens(rows[0].prompt_tokens)} to "
            f"{_tokens(rows[-1].prompt_tokens)} prompt tokens) it is {_VERDICT[verdict]} ({_at(rows[0])}, {_at(rows[-1])})."
        )
    parts = []
    bounds = [c.prompt_tokens for c in p.crossings]
    for index in range(len(bounds) + 1):
        low = bounds[index - 1] if index else 0.0
        high = bounds[index] if index < len(bounds) else float("inf")
        mine = [r for r in rows if r.prompt_tokens is not None and low <= r.prompt_tokens < high]
        verdict = p.crossings[index - 1].above if index else p.crossings[0].below
        where = (f"below ~{bounds[0]:.0f} prompt tokens" if index == 0
                 else f"above ~{low:.0f}" if index == len(bounds) else f"from ~{low:.0f} to ~{high:.0f}")  # fmt: skip
        measured = f" ({', '.join(_at(r) for r in mine)})" if mine else ""
        parts.append(f"{where} it is {_VERDICT[verdict]}{measured}")
    text = "; ".join(parts)
    return f"By prompt length, HTTP overhead next to TTFT: {text}."
