"""The simulated server's settings and its timing model (`SimConfig`): plain, frozen, picklable."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MODEL_NAME = "netbench-sim-slm"


@dataclass(frozen=True)
class SimConfig:
    """How `netbench serve` behaves; every field is a command-line option of the same name.

    Timing model, one engine step at a time (see `netbench.sim.engine`):
    a request's first token costs `prefill_ms + prefill_per_token_ms * prompt_tokens`;
    each further token costs one decode step of
    `decode_ms * (1 + batch_slowdown * (running - 1))`, shared by all `running` requests.
    At most `max_batch` requests run; later ones wait in a FIFO queue.
    """

    model_name: str = DEFAULT_MODEL_NAME
    prefill_ms: float = 20.0
    prefill_per_token_ms: float = 0.02
    decode_ms: float = 12.0
    max_batch: int = 8
    batch_slowdown: float = 0.05
    http_delay_ms: float = 0.0
    default_max_tokens: int = 16
    stamp_events: bool = False

    def __post_init__(self) -> None:
        if not self.model_name:
            raise ValueError("model_name must not be empty")
        for name in ("prefill_ms", "prefill_per_token_ms", "decode_ms", "batch_slowdown", "http_delay_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("max_batch", "default_max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def prefill_s(self, prompt_tokens: int) -> float:
        """Engine time to prefill one prompt and produce its first token."""
        return (self.prefill_ms + self.prefill_per_token_ms * prompt_tokens) / 1000.0

    def decode_step_s(self, running: int) -> float:
        """Engine time of one decode step that advances `running` requests by one token each."""
        return self.decode_ms * (1.0 + self.batch_slowdown * (running - 1)) / 1000.0
