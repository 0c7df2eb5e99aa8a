"""The lines a run's footer gets about what it delivered (`throughput.Throughput`) and the
prompt and output lengths the server counted against those asked for (`throughput.Tokens`)."""

from __future__ import annotations

from netbench.summary import RunSummary


def _tokens(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def throughput_lines(s: RunSummary) -> list[str]:
    t = s.throughput
    line = f"throughput: {t.requests_per_s:.2f} requests/s"
    if t.output_tokens_per_s is not None:
        line += f", {t.output_tokens_per_s:.1f} output tokens/s"
    if t.total_tokens_per_s is not None:
        line += f", {t.total_tokens_per_s:.1f} tokens/s in all (prompt {t.prompt_tokens_per_s:.1f})"
    if t.request_output_tokens_per_s_p50 is not None:
        slowest = "" if t.request_output_tokens_per_s_p5 is None else f", the slowest 5 % at most {t.request_output_tokens_per_s_p5:.1f}"
        line += f"; per request {t.request_output_tokens_per_s_p50:.1f} output tokens/s (p50{slowest})"
    lines = [line]
    if t.good is not None and t.goodput_share is not None and t.goodput_rps is not None:
        lines.append(
            f"goodput: {t.good} of {s.requests} requests ({100 * t.goodput_share:.1f} %) met every per-request "
            f"--slo gate: {t.goodput_rps:.2f} requests/s"
        )
    return lines


def token_lines(s: RunSummary) -> list[str]:
    k = s.tokens
    if k is None or s.ok == 0:
        return []
    prompt = f"prompt tokens per request: {_tokens(k.prompt_tokens_mean)} counted by the server"
    if k.requested_prompt_tokens_mean is not None:
        agreed = "all as built" if not k.prompt_mismatch else f"{k.prompt_mismatch} differ"
        prompt += f" ({k.prompts_counted} counted), {_tokens(k.requested_prompt_tokens_mean)} built ({agreed})"
    output = f"output tokens per request: {_tokens(k.output_tokens_mean)} received"
    if k.requested_output_tokens_mean is not None:
        output += f", max_tokens {_tokens(k.requested_output_tokens_mean)}"
        output += f"; {k.short_outputs} of {s.ok} ended before it" if k.short_outputs else "; every one reached it"
    return [prompt, output]
