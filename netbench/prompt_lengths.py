"""TTFT vs HTTP latency as a function of prompt length: the question netbench grew from ("is HTTP overhead
negligible next to TTFT?") answered per prompt length, from a sweep's runs at several
`--input-tokens` (`netbench sweep --input-tokens 16,256,2048`).

Per length, from the streaming runs at concurrency 1 of one mode: the prompt tokens the server
counted, the request's size, send, TTFB, TTFT and TTFT after the headers (the histograms' p50s),
and the HTTP overhead of a request of that size: the HTTP baseline's wall time (the baseline
mode at concurrency 1: no model work, no body) plus the upload the baseline does not carry (the
run's send p50). Where there is no baseline run, the overhead is the run's client − server TTFT
(means, from /metrics). Its share of TTFT gets the verdict `analysis.verdict_for` gives, and
`crossings` says at what prompt length the share crosses the verdicts' bounds (interpolated
between the lengths measured, linearly in log tokens and log share).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from netbench.analysis import DOMINANT_SHARE, NEGLIGIBLE_SHARE, OverheadSource, TtftVsHttp, Verdict, verdict_for
from netbench.outcomes import Outcome
from netbench.serial import NOT_SERIALISED, rounded
from netbench.spec import STREAMING_MODES
from netbench.summary import Run, RunSummary


@dataclass(frozen=True)
class LengthRow:
    #: the --input-tokens the run asked for
    input_tokens: str
    #: the mean prompt tokens the server counted (usage), else those the prompts were built to
    prompt_tokens: float | None = field(metadata=rounded(1))
    #: the median request's size as libcurl sent it (headers and body), bytes
    request_bytes: int | None
    send_p50_us: float | None
    ttfb_p50_us: float | None
    ttft_p50_us: float | None
    ttft_after_headers_p50_us: float | None
    overhead_us: float | None
    share: float | None = field(metadata=rounded(6))
    verdict: Verdict | None
    requests: int


@dataclass(frozen=True)
class Crossing:
    """The prompt length at which the overhead's share of TTFT crosses `share`."""

    share: float
    prompt_tokens: float = field(metadata=rounded(0))
    #: the verdicts below and above it
    below: Verdict
    above: Verdict


@dataclass(frozen=True)
class PromptLengths:
    mode: str
    overhead_source: OverheadSource | None
    baseline_mode: str | None
    baseline_p50_us: float | None
    rows: tuple[LengthRow, ...]
    crossings: tuple[Crossing, ...]
    runs: tuple[RunSummary, ...] = field(metadata=NOT_SERIALISED)


def _p50(s: RunSummary, phase: str) -> float | None:
    stats = s.phase(phase)
    return None if stats is None else float(stats.p50_us)


def _prompt_tokens(s: RunSummary) -> float | None:
    tokens = s.tokens
    if tokens is None:
        return None
    return tokens.prompt_tokens_mean if tokens.prompt_tokens_mean is not None else tokens.requested_prompt_tokens_mean


def _request_bytes(run: Run) -> int | None:
    records = run.result.records
    sizes = records["request_bytes"][(records["error_class"] == Outcome.OK) & (records["request_bytes"] > 0)]
    return int(np.median(sizes)) if sizes.size else None


def _row(run: Run, baseline_p50_us: float | None) -> LengthRow:
    s = run.summary
    send, ttft = _p50(s, "send"), _p50(s, "ttft")
    overhead: float | None = None
    if baseline_p50_us is not None:
        overhead = baseline_p50_us + (send or 0.0)
    else:
        side = None if s.split is None else s.split.server_side
        entry = None if side is None else side.metrics.get("ttft")
        if entry is not None and entry.client is not None:
            overhead = max(entry.client.gap_mean_us, 0.0)
    share = None if overhead is None or not ttft else overhead / ttft
    assert s.spec.input_tokens is not None
    return LengthRow(
        input_tokens=s.spec.input_tokens,
        prompt_tokens=_prompt_tokens(s),
        request_bytes=_request_bytes(run),
        send_p50_us=send,
        ttfb_p50_us=_p50(s, "ttfb"),
        ttft_p50_us=ttft,
        ttft_after_headers_p50_us=_p50(s, "ttft_after_headers"),
        overhead_us=overhead,
        share=share,
        verdict=None if share is None else verdict_for(share),
        requests=s.ok,
    )


def crossings(rows: Sequence[LengthRow]) -> tuple[Crossing, ...]:
    """Where the share crosses NEGLIGIBLE_SHARE or DOMINANT_SHARE between two measured lengths."""
    known = [r for r in rows if r.share and r.prompt_tokens and r.verdict is not None]
    found = []
    for a, b in zip(known, known[1:]):
        assert a.share and b.share and a.prompt_tokens and b.prompt_tokens and a.verdict and b.verdict
        for bound in (NEGLIGIBLE_SHARE, DOMINANT_SHARE):
            if (a.share - bound) * (b.share - bound) < 0 and a.prompt_tokens != b.prompt_tokens:
                slope = (math.log(b.prompt_tokens) - math.log(a.prompt_tokens)) / (math.log(b.share) - math.log(a.share))
                tokens = math.exp(math.log(a.prompt_tokens) + (math.log(bound) - math.log(a.share)) * slope)
                found.append(Crossing(bound, tokens, a.verdict, b.verdict))
    return tuple(sorted(found, key=lambda c: c.prompt_tokens))


def prompt_lengths(runs: Sequence[Run], comparison: TtftVsHttp) -> PromptLengths | None:
    """The per-length answer for the first streaming mode with closed-loop runs at concurrency 1
    at two or more --input-tokens; None when no mode has them."""
    for mode in STREAMING_MODES:
        mine = [
            r for r in runs
            if r.spec.mode == mode and not r.spec.open_loop and r.spec.concurrency == 1 and r.spec.input_tokens and r.summary.ok
        ]  # fmt: skip
        by_length = {r.spec.input_tokens: r for r in mine}
        if len(by_length) < 2:
            continue
        baseline = comparison.baseline_p50_us
        ordered = sorted(by_length.values(), key=lambda r: _prompt_tokens(r.summary) or 0.0)
        rows = tuple(_row(r, baseline) for r in ordered)
        return PromptLengths(
            mode=mode,
            overhead_source=None if not any(r.overhead_us is not None for r in rows)
            else OverheadSource.BASELINE if baseline is not None else OverheadSource.SERVER_GAP,
            baseline_mode=comparison.baseline_mode,
            baseline_p50_us=baseline,
            rows=rows,
            crossings=crossings(rows),
            runs=tuple(r.summary for r in ordered),
        )
    return None
