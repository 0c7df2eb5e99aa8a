"""The simulated server's settings (`SimConfig`): plain, frozen, picklable; each field is a
`netbench serve` option of the same name (its help text and lower bound live in the field's
metadata, so a new knob is one line here).

The timing model (see `netbench.sim.engine` for the scheduler, `netbench.sim.capacity` for what
it sustains): the engine runs in steps, like vLLM V1's engine core, and a step that processes
`p` prompt (prefill) tokens and `d` decode tokens takes

    step_ms + prefill_token_ms * p + decode_token_ms * d

Defaults: Llama-3.2-1B-Instruct in bf16 under vLLM V1 on one NVIDIA L4 (24 GB, 300 GB/s,
121 TFLOPS dense bf16). Where each figure comes from:

- `step_ms` 10: a decode step reads all weights once, 2.47 GB (1.24 B parameters) at 300 GB/s
  = 8.2 ms, plus ~2 ms of per-step engine overhead (scheduling, sampling, launches). The
  overhead bound comes from vLLM on an A100 (tenstorrent/tt-inference-server#340): Qwen3-0.6B
  decodes at 4.2 ms a token at batch 1 although its weights read in under 1 ms there.
- `prefill_token_ms` 0.035 (28.6 k prompt tokens/s): a token costs 2 x 1.24 GFLOP, at ~58 %
  of the L4's 121 TFLOPS. The same A100 sweep implies ~55 % (Qwen3-1.7B: TTFT 11.4 ms at 128
  prompt tokens, 26.4 ms at 1024: 0.017 ms for 2.8 GFLOP a token, of 312 TFLOPS).
- `decode_token_ms` 0.06: at small batches a decode token's matrix work hides under the weight
  read, its attention does not: it reads its context's KV cache, 32 KiB a token for this model
  (16 layers x 8 KV heads x 64 x K,V x 2 bytes), 20 MB at ~600 tokens of context = 0.065 ms at
  300 GB/s. So TPOT is 10.06 ms at batch 1 and 11.9 ms at 32; the A100 sweep shows the same
  growth with context (Qwen3-1.7B TPOT 4.6 ms at 128 tokens, 5.0 ms at 2048).
- `max_num_batched_tokens` 2048 and `max_num_seqs` 256: vLLM's defaults for an API server on
  a GPU with under 70 GiB (vllm/engine/arg_utils.py); `block_size` 16: vLLM's CUDA default.
- `prefix_cache_tokens` 524288 (16 GiB of this model's KV cache, what an L4 has left at
  `gpu_memory_utilization` 0.9 after weights and activations).
- `eos_mean_tokens` 256: answers of a few paragraphs, near ShareGPT's mean output length.
- `default_max_tokens` 16: the OpenAI and vLLM default of the completions API.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

DEFAULT_MODEL_NAME = "netbench-sim-slm"


def _knob(default: Any, help: str, minimum: float | None = None) -> Any:
    """A SimConfig field: its default, its `netbench serve --help` text, its lower bound."""
    return field(default=default, metadata={"help": help, "min": minimum})


@dataclass(frozen=True)
class SimConfig:
    """How `netbench serve` behaves. Times in milliseconds, sizes in tokens."""

    model_name: str = _knob(DEFAULT_MODEL_NAME, "Model id served and accepted.")
    step_ms: float = _knob(10.0, "Fixed cost of every engine step (reading the weights, launches).", 0)
    prefill_token_ms: float = _knob(0.035, "Cost of each prompt token a step processes.", 0)
    decode_token_ms: float = _knob(0.06, "Cost of each decode token a step processes.", 0)
    max_num_seqs: int = _knob(256, "Requests running at once (vLLM's --max-num-seqs); others wait FIFO.", 1)
    max_num_batched_tokens: int = _knob(2048, "Token budget of one step; longer prefills are chunked.", 1)
    max_model_len: int = _knob(8192, "Longest prompt + output; longer requests get a 400.", 2)
    enable_prefix_caching: bool = _knob(True, "Skip the prefill of prompt blocks seen recently (vLLM's default).")
    block_size: int = _knob(16, "Tokens a KV-cache block holds; the prefix cache's unit.", 1)
    prefix_cache_tokens: int = _knob(524288, "Prompt tokens the prefix cache remembers (LRU of blocks).", 0)
    eos_mean_tokens: float = _knob(256.0, "Mean answer length until EOS (geometric); see ignore_eos.", 1)
    ignore_eos: bool = _knob(False, "Never emit EOS, as if every request set ignore_eos.")
    seed: int = _knob(0, "Seed of the EOS positions (with each request's seed or prompt).")
    default_max_tokens: int = _knob(16, "Tokens generated when a request sets no max_tokens.", 1)
    stream_interval: int = _knob(1, "Tokens per stream event (vLLM's --stream-interval); the first is sent alone.", 1)
    enable_prompt_tokens_details: bool = _knob(False, "Report prompt_tokens_details.cached_tokens in usage.")
    http_delay_ms: float = _knob(0.0, "Extra delay before response headers (simulated framework overhead).", 0)
    stamp_events: bool = _knob(False, 'Add "netbench_sent_ns" (monotonic clock) to every token chunk.')

    def __post_init__(self) -> None:
        if not self.model_name:
            raise ValueError("model_name must not be empty")
        for knob in fields(self):
            minimum = knob.metadata["min"]
            if minimum is not None and getattr(self, knob.name) < minimum:
                raise ValueError(f"{knob.name} must be >= {minimum}, got {getattr(self, knob.name)}")

    def step_s(self, prefill_tokens: int, decode_tokens: int) -> float:
        """Engine time of one step that processes these prompt and decode tokens."""
        return (self.step_ms + self.prefill_token_ms * prefill_tokens + self.decode_token_ms * decode_tokens) / 1000.0
