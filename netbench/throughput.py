"""What a run delivered: requests, tokens and goodput per second, and the prompt and output
lengths the server counted against those the requests asked for.

From the run's counters (exact, every request, summed over workers and merged runs) over its
measured span (`RunResult.elapsed_s`: the first measured send to the last completion, as
vLLM's benchmark times its duration):

- request throughput: successful requests per second (`achieved_rps` counts failures too);
- output tokens per second: every successful request's output tokens (usage, else the events'
  counts); per request, the decode speed a reader sees, 1 / TPOT (its p50 is 1 / TPOT's p50,
  and the slowest 5 % read at most 1 / TPOT's p95);
- prompt tokens per second from usage (or, where the server sent none, from what the requests
  were built to have), and their sum, total tokens per second;
- goodput (`--slo`): the requests that met every per-request gate on their own values
  (`slo.meets_gates`, counted in the workers), their share of all requests and their rate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from netbench.histograms import PhaseStats
from netbench.serial import OMIT_NONE, rounded


@dataclass(frozen=True)
class Tokens:
    """Prompt and output lengths: what the server counted and what the requests asked for."""

    #: mean prompt tokens per request as the server counted them (usage), over the requests it counted
    prompt_tokens_mean: float | None = field(metadata=rounded(2))
    #: requests whose prompt the server counted (usage.prompt_tokens)
    prompts_counted: int
    #: mean prompt tokens the requests were built to have (--input-tokens), over those built to a length
    requested_prompt_tokens_mean: float | None = field(metadata=rounded(2))
    #: requests whose counted prompt differs from what it was built to have
    prompt_mismatch: int
    #: mean output tokens received per successful stream
    output_tokens_mean: float | None = field(metadata=rounded(2))
    #: mean max_tokens the requests asked for
    requested_output_tokens_mean: float | None = field(metadata=rounded(2))
    #: successful requests that received fewer output tokens than they asked for
    short_outputs: int


@dataclass(frozen=True)
class Throughput:
    requests_per_s: float = field(metadata=rounded(3))
    output_tokens_per_s: float | None = field(metadata=rounded(2))
    prompt_tokens_per_s: float | None = field(metadata=rounded(2))
    total_tokens_per_s: float | None = field(metadata=rounded(2))
    #: per request: output tokens per second after the first token (1 / TPOT), p50 and the slowest 5 %'s bound
    request_output_tokens_per_s_p50: float | None = field(metadata=rounded(2))
    request_output_tokens_per_s_p5: float | None = field(metadata=rounded(2))
    #: requests that met every per-request --slo gate (None: no such gate)
    good: int | None = field(default=None, metadata=OMIT_NONE)
    goodput_share: float | None = field(default=None, metadata={**OMIT_NONE, **rounded(6)})
    goodput_rps: float | None = field(default=None, metadata={**OMIT_NONE, **rounded(3)})


def _mean(total: int, count: int) -> float | None:
    return total / count if count else None


def tokens(counters: Mapping[str, int], ok: int, streaming: bool) -> Tokens | None:
    """None for runs that are no streams."""
    if not streaming:
        return None
    c = counters.get
    return Tokens(
        prompt_tokens_mean=_mean(c("prompt_tokens", 0), c("prompts_counted", 0)),
        prompts_counted=c("prompts_counted", 0),
        requested_prompt_tokens_mean=_mean(c("requested_prompt_tokens", 0), c("prompts_sized", 0)),
        prompt_mismatch=c("prompt_mismatch", 0),
        output_tokens_mean=_mean(c("tokens", 0), ok),
        requested_output_tokens_mean=_mean(c("requested_output_tokens", 0), c("outputs_capped", 0)),
        short_outputs=c("short_outputs", 0),
    )


def throughput(counters: Mapping[str, int], ok: int, requests: int, elapsed_s: float, streaming: bool,
               tpot: PhaseStats | None) -> Throughput:  # fmt: skip
    c = counters.get
    per_s = 1 / elapsed_s if elapsed_s > 0 else 0.0
    output = prompt = None
    if streaming:
        output = c("tokens", 0) * per_s
        # usage where the server counted; the built lengths of requests it did not count
        uncounted = c("requested_prompt_tokens", 0) if not c("prompts_counted", 0) and c("prompts_sized", 0) else 0
        prompt = (c("prompt_tokens", 0) + uncounted) * per_s if c("prompts_counted", 0) or uncounted else None
    good = c("good")
    return Throughput(
        requests_per_s=ok * per_s,
        output_tokens_per_s=output,
        prompt_tokens_per_s=prompt,
        total_tokens_per_s=None if output is None or prompt is None else output + prompt,
        request_output_tokens_per_s_p50=1e6 / tpot.p50_us if tpot is not None and tpot.p50_us > 0 else None,
        request_output_tokens_per_s_p5=1e6 / tpot.p95_us if tpot is not None and tpot.p95_us > 0 else None,
        good=good,
        goodput_share=None if good is None or not requests else good / requests,
        goodput_rps=None if good is None else good * per_s,
    )
