"""The simulated inference engine: one asyncio batch scheduler per server.

Like vLLM's engine loop, it works in steps. At the start of a step, waiting requests are
admitted (FIFO) while fewer than `max_batch` run; the step then takes the prefill time of every
request admitted in it plus, when some request is already decoding, one decode step scaled by
the number running. At the end of the step every running request gets one token. So batching
effects are real: a prefill stalls everyone's next token, and more running requests make every
step slower. Steps are timed against absolute `loop.time()` deadlines so sleep overshoot does
not accumulate over a stream.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

from netbench.sim.config import SimConfig

# asyncio's epoll selector rounds every timeout up to a whole millisecond, so a sleep always
# lands up to 1 ms late; asking for half a millisecond less centres that rounding on the deadline.
_TIMER_ROUNDING_S = 0.0005


@dataclass(eq=False)
class SimRequest:
    """One request inside the engine. Timestamps are `time.monotonic()` seconds."""

    prompt_tokens: int
    output_tokens: int
    prefill_s: float
    arrival_s: float
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
    def queue_s(self) -> float:
        assert self.admitted_s is not None
        return self.admitted_s - self.arrival_s


class Engine:
    """The batch scheduler. `run()` is its single loop; handlers `submit()` and `release()`."""

    def __init__(self, config: SimConfig) -> None:
        self._config = config
        self._waiting: deque[SimRequest] = deque()
        self._running: list[SimRequest] = []
        self._has_work = asyncio.Event()

    @property
    def num_running(self) -> int:
        return len(self._running)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    def submit(self, prompt_tokens: int, output_tokens: int) -> SimRequest:
        """Queue a request that will produce `output_tokens` (>= 1) tokens."""
        request = SimRequest(
            prompt_tokens=prompt_tokens,
            output_tokens=output_tokens,
            prefill_s=self._config.prefill_s(prompt_tokens),
            arrival_s=time.monotonic(),
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
            batch, step_s = self._schedule_step()
            now = loop.time()
            # Waking up late by less than a step is sleep overshoot: start this step at the
            # previous deadline so the error does not add up over a stream. A longer stall (the
            # box was busy) is not replayed as a burst of tokens.
            step_start = step_end if now - step_end < step_s else now
            step_end = step_start + step_s
            await asyncio.sleep(max(0.0, step_end - now - _TIMER_ROUNDING_S))
            self._finish_step(batch)

    def _schedule_step(self) -> tuple[list[SimRequest], float]:
        admitted: list[SimRequest] = []
        while self._waiting and len(self._running) < self._config.max_batch:
            request = self._waiting.popleft()
            request.admitted_s = time.monotonic()
            self._running.append(request)
            admitted.append(request)
        batch = list(self._running)
        step_s = sum(request.prefill_s for request in admitted)
        if len(batch) > len(admitted):
            step_s += self._config.decode_step_s(len(batch))
        return batch, step_s

    def _finish_step(self, batch: list[SimRequest]) -> None:
        now = time.monotonic()
        for request in batch:
            if request.released:
                continue
            request.generated += 1
            if request.generated == 1:
                request.first_token_s = now
            if request.generated == request.output_tokens:
                request.finished_s = now
                self._running.remove(request)
            request.token_ready.put_nowait(None)
