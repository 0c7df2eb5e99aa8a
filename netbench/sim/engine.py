"""The simulated inference engine: vLLM V1's scheduler, one step at a time, on an asyncio loop.

Each step (vllm/v1/core/sched/scheduler.py, and vLLM's "Optimization and Tuning" guide: with
chunked prefill, decodes are scheduled before prefills):

1. Running requests first, in the order they started, while the step's token budget
   (`max_num_batched_tokens`) lasts: a decoding request takes one token; a request still in
   prefill takes the rest of its prompt, or as much of it as the budget allows (chunked
   prefill), so a long prompt's prefill spans steps and shares them with others' decodes.
2. Then waiting requests, first come first served, while budget is left and fewer than
   `max_num_seqs` run: each is admitted, takes its cached prefix from the prefix cache
   (`netbench.sim.prefix_cache`) and as much of the rest of its prompt as the budget allows.

The step then takes `SimConfig.step_s(prefill tokens, decode tokens)`. When it ends, every
request whose prefill completed in it gets its first token, every decoding request its next
one, and the blocks it computed enter the prefix cache. A request that arrives while a step
runs waits for the next one, as in vLLM's engine core. Steps are timed against absolute
`loop.time()` deadlines so sleep overshoot does not accumulate; the KV cache of running
requests is never full (no preemption).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from netbench.sim.config import SimConfig
from netbench.sim.prefix_cache import PrefixCache, block_keys, cacheable_blocks

# asyncio's epoll selector rounds every timeout up to a whole millisecond, so a sleep always
# lands up to 1 ms late; asking for half a millisecond less centres that rounding on the deadline.
_TIMER_ROUNDING_S = 0.0005


class EngineStats(Protocol):
    """What the engine reports as it works (the server's metrics implement it)."""

    def on_step(self, scheduled_tokens: int) -> None: ...

    def on_prefix_lookup(self, query_tokens: int, hit_tokens: int) -> None: ...


@dataclass(eq=False)
class SimRequest:
    """One request inside the engine. Timestamps are the engine clock's seconds."""

    prompt_tokens: int
    output_tokens: int
    arrival_s: float
    block_keys: list[int]
    computed_tokens: int = 0  # prompt tokens whose KV exists: cached or computed
    cached_tokens: int = 0  # of which taken from the prefix cache
    admitted_s: float | None = None
    first_token_s: float | None = None
    finished_s: float | None = None
    generated: int = 0
    released: bool = False
    token_ready: asyncio.Queue[None] = field(default_factory=asyncio.Queue, repr=False)

    async def next_token(self) -> None:
        """Wait until the engine has produced this request's next token."""
        await self.token_ready.get()

    @property
    def prefilling(self) -> bool:
        return self.computed_tokens < self.prompt_tokens

    @property
    def queue_s(self) -> float:
        assert self.admitted_s is not None
        return self.admitted_s - self.arrival_s


@dataclass(frozen=True)
class Step:
    """What one engine step processes: (request, tokens) pairs, and how long it takes."""

    scheduled: tuple[tuple[SimRequest, int], ...]
    prefill_tokens: int
    decode_tokens: int
    duration_s: float


class Engine:
    """The scheduler. `run()` is its loop; handlers `submit()` and `release()`.

    `schedule_step()` and `finish_step()` are the two halves of a step, public so that tests
    can drive the engine on a virtual clock.
    """

    def __init__(
        self, config: SimConfig, stats: EngineStats | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._config = config
        self._stats = stats
        self._clock = clock
        self._cache = PrefixCache(config.prefix_cache_tokens // config.block_size)
        self._waiting: deque[SimRequest] = deque()
        self._running: list[SimRequest] = []
        self._has_work = asyncio.Event()

    @property
    def num_running(self) -> int:
        return len(self._running)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    def submit(self, prompt_ids: Sequence[int], output_tokens: int) -> SimRequest:
        """Queue a request that will generate `output_tokens` (>= 1) tokens after its prompt."""
        caching = self._config.enable_prefix_caching
        request = SimRequest(
            prompt_tokens=len(prompt_ids),
            output_tokens=output_tokens,
            arrival_s=self._clock(),
            block_keys=block_keys(prompt_ids, self._config.block_size) if caching else [],
        )
        self._waiting.append(request)
        self._has_work.set()
        return request

    def release(self, request: SimRequest) -> None:
        """Drop a request at once, wherever it is (its client went away). Idempotent."""
        if request.released or request.finished_s is not None:
            return
        request.released = True
        if request.admitted_s is None:
            self._waiting.remove(request)
        else:
            self._running.remove(request)

    async def run(self) -> None:
        """The engine loop; runs until cancelled."""
        loop = asyncio.get_running_loop()
        step_end = loop.time()
        while True:
            if not self._running and not self._waiting:
                self._has_work.clear()
                await self._has_work.wait()
                step_end = loop.time()  # idle time is not lateness
            step = self.schedule_step()
            now = loop.time()
            # Waking up late by less than a step is sleep overshoot: start this step at the
            # previous deadline so the error does not add up over a stream. A longer stall (the
            # box was busy) is not replayed as a burst of tokens.
            step_start = step_end if now - step_end < step.duration_s else now
            step_end = step_start + step.duration_s
            await asyncio.sleep(max(0.0, step_end - now - _TIMER_ROUNDING_S))
            self.finish_step(step)

    def schedule_step(self) -> Step:
        """Decide what the next step processes (running requests first, then waiting ones)."""
        config = self._config
        budget = config.max_num_batched_tokens
        scheduled: list[tuple[SimRequest, int]] = []
        prefill_tokens = decode_tokens = 0
        for request in self._running:
            if budget == 0:
                break
            if request.prefilling:
                tokens = min(request.prompt_tokens - request.computed_tokens, budget)
                prefill_tokens += tokens
            else:
                tokens = 1
                decode_tokens += 1
            scheduled.append((request, tokens))
            budget -= tokens
        while self._waiting and budget > 0 and len(self._running) < config.max_num_seqs:
            request = self._waiting.popleft()
            request.admitted_s = self._clock()
            self._take_cached_prefix(request)
            tokens = min(request.prompt_tokens - request.computed_tokens, budget)
            prefill_tokens += tokens
            budget -= tokens
            self._running.append(request)
            scheduled.append((request, tokens))
        return Step(tuple(scheduled), prefill_tokens, decode_tokens, config.step_s(prefill_tokens, decode_tokens))

    def finish_step(self, step: Step) -> None:
        """The step has run: hand out its tokens and cache the prompt blocks it computed."""
        now = self._clock()
        block_size = self._config.block_size
        for request, tokens in step.scheduled:
            if request.released:
                continue
            if request.prefilling:
                done_blocks = request.computed_tokens // block_size
                request.computed_tokens += tokens
                if self._config.enable_prefix_caching:
                    self._cache.add(request.block_keys[done_blocks : request.computed_tokens // block_size])
                if request.prefilling:
                    continue  # a chunk of a longer prefill: no token yet
            self._emit_token(request, now)
        if self._stats is not None:
            self._stats.on_step(step.prefill_tokens + step.decode_tokens)

    def _take_cached_prefix(self, request: SimRequest) -> None:
        if not self._config.enable_prefix_caching:
            return
        block_size = self._config.block_size
        limit = cacheable_blocks(request.prompt_tokens, block_size)
        request.cached_tokens = request.computed_tokens = self._cache.hit_blocks(request.block_keys, limit) * block_size
        if self._stats is not None:
            self._stats.on_prefix_lookup(request.prompt_tokens, request.cached_tokens)

    def _emit_token(self, request: SimRequest, now: float) -> None:
        request.generated += 1
        if request.generated == 1:
            request.first_token_s = now
        if request.generated == request.output_tokens:
            request.finished_s = now
            self._running.remove(request)
        request.token_ready.put_nowait(None)
