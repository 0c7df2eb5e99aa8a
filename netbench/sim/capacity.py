"""What a `SimConfig` sustains, from its timing model alone (pure functions, no server).

**Capacity.** A workload of identical requests (P prompt tokens of which C come from the
prefix cache, O output tokens) keeps the engine busy when requests always wait; then every
second is spent on steps, and with c = `step_ms`, a = `prefill_token_ms`, b = `decode_token_ms`:

    1 = steps/s * c + rate * (a * (P - C) + b * (O - 1))

A request is running for k = ceil((P - C) / M) + O - 1 steps (M = `max_num_batched_tokens`;
its last prefill step also yields its first token), so at most S = `max_num_seqs` running
requests take `rate * k / S` steps a second; its P - C + O - 1 tokens take at least
`rate * (P - C + O - 1) / M`. The engine runs as few steps as those two bounds allow, so

    rate = 1 / (a * (P - C) + b * (O - 1) + c * max(k / S, (P - C + O - 1) / M))

and the binding bound is named in `Capacity.bound`. `concurrency` (the most requests in
flight) takes S's place when smaller. The rate is exact for a backlogged engine (the tests
check it against the scheduler); a closed loop of C <= S clients gets about k / (k + 1) of it,
since a request sent after its predecessor's last token arrives while a step runs and joins
the next one. `netbench serve` itself is a Python process: on a small box its CPU limits it
below the model's capacity when that is thousands of stream events a second.

**Idle latency.** One request on an idle engine: TTFT = ceil((P - C) / M) steps, each c plus
its chunk's prefill cost; then one decode step per token, TPOT = c + b.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from netbench.sim.config import SimConfig
from netbench.sim.prefix_cache import cacheable_blocks


@dataclass(frozen=True)
class Capacity:
    """The saturated throughput of a workload, and the engine's state while it runs."""

    requests_per_s: float
    prompt_tokens_per_s: float
    output_tokens_per_s: float
    step_s: float  # mean duration of a step
    running: float  # mean requests running
    bound: str  # "max_num_seqs" (seats) or "max_num_batched_tokens" (the token budget)


@dataclass(frozen=True)
class IdleLatency:
    """What one request sees on an idle engine, without any HTTP time."""

    ttft_s: float
    tpot_s: float
    e2e_s: float


def cached_prompt_tokens(config: SimConfig, prompt_tokens: int, shared_prefix_tokens: int) -> int:
    """Prompt tokens the prefix cache serves when the first `shared_prefix_tokens` were seen before."""
    if not config.enable_prefix_caching:
        return 0
    blocks = min(shared_prefix_tokens // config.block_size, cacheable_blocks(prompt_tokens, config.block_size))
    return max(0, blocks) * config.block_size


def capacity(
    config: SimConfig,
    prompt_tokens: int,
    output_tokens: int,
    *,
    shared_prefix_tokens: int = 0,
    concurrency: int | None = None,
) -> Capacity:
    """The request rate (and token rates) the engine sustains for this workload."""
    _check_workload(prompt_tokens, output_tokens)
    computed = prompt_tokens - cached_prompt_tokens(config, prompt_tokens, shared_prefix_tokens)
    decoded = output_tokens - 1
    seats = config.max_num_seqs if concurrency is None else min(config.max_num_seqs, concurrency)
    budget = config.max_num_batched_tokens
    running_steps = math.ceil(computed / budget) + decoded
    seat_steps = running_steps / seats
    token_steps = (computed + decoded) / budget
    steps_per_request = max(seat_steps, token_steps)
    work_ms = config.prefill_token_ms * computed + config.decode_token_ms * decoded
    request_s = (work_ms + config.step_ms * steps_per_request) / 1000.0
    rate = 1.0 / request_s
    step_s = request_s / steps_per_request
    return Capacity(
        requests_per_s=rate,
        prompt_tokens_per_s=rate * prompt_tokens,
        output_tokens_per_s=rate * output_tokens,
        step_s=step_s,
        running=rate * running_steps * step_s,
        bound="max_num_seqs" if seat_steps >= token_steps else "max_num_batched_tokens",
    )


def idle_latency(
    config: SimConfig, prompt_tokens: int, output_tokens: int, *, shared_prefix_tokens: int = 0
) -> IdleLatency:
    """TTFT, TPOT and end-to-end time of one request alone on the engine."""
    _check_workload(prompt_tokens, output_tokens)
    computed = prompt_tokens - cached_prompt_tokens(config, prompt_tokens, shared_prefix_tokens)
    prefill_steps = math.ceil(computed / config.max_num_batched_tokens)
    ttft_s = (config.step_ms * prefill_steps + config.prefill_token_ms * computed) / 1000.0
    tpot_s = config.step_s(0, 1)
    return IdleLatency(ttft_s, tpot_s, ttft_s + (output_tokens - 1) * tpot_s)


def _check_workload(prompt_tokens: int, output_tokens: int) -> None:
    if prompt_tokens < 1 or output_tokens < 1:
        raise ValueError(f"need at least one prompt and one output token, got {prompt_tokens} and {output_tokens}")
