"""How llama.cpp's /metrics counters (server_metrics.counter_summary) are worded in reports."""

from __future__ import annotations

from netbench.report.units import ms


def counters_line(c: dict[str, object]) -> str:
    """One sentence: what the server counted for the run's requests, and the means from it."""
    return (
        f"{c['server']} counters: {c['prompt_tokens']} prompt tokens evaluated (+{c['cached_prompt_tokens']} from "
        f"the cache) in {ms(float(c['prompt_s']) * 1e6)} ms ({ms(c['prompt_us_per_token'])} ms/token), "  # type: ignore[arg-type]
        f"{c['generated_tokens']} generated in {ms(float(c['generation_s']) * 1e6)} ms "  # type: ignore[arg-type]
        f"({ms(c['generation_us_per_step'])} ms per decode step); per request ({c['requests']}): prompt "  # type: ignore[arg-type]
        f"{ms(c['prompt_us_per_request'])} ms (batch wall time: a lower bound when prompts share batches), "  # type: ignore[arg-type]
        f"generation {ms(c['generation_us_per_request'])} ms; {c['decode_calls']} decode calls; after the run "  # type: ignore[arg-type]
        f"{_count(c['requests_processing_after'])} processing, {_count(c['requests_deferred_after'])} deferred"
    )


def _count(value: object) -> str:
    return "n/a" if value is None else f"{float(value):g}"  # type: ignore[arg-type]
