"""Sentences about one run that the terminal table and the Markdown report both print: tokens
per event, usage that disagrees with the stream, splits that cannot be known, and the
server's own per-request timings beside the client's."""

from __future__ import annotations

from netbench.report.units import ms, percent
from netbench.split import ServerTimingJoin
from netbench.summary import RunSummary


def events_line(s: RunSummary) -> str | None:
    """Said only where events carried several tokens each (SGLang's stream interval, speculative
    decoding, a proxy that coalesces)."""
    events, tokens = s.events_per_request, s.tokens_per_request
    if events is None or not events or tokens is None or abs(events - tokens) < 0.05:
        return None
    return f"token events per request: {events:.1f}, {tokens / events:.2f} tokens an event (ITL is per token)"


def usage_line(s: RunSummary) -> str | None:
    if not s.usage_mismatches:
        return None
    return (
        f"usage disagrees with the stream in {s.usage_mismatches} requests: the server's token count differs from "
        "what its events carried by their own counts (no per-chunk usage), so ITL spreads each request's tokens "
        "evenly over its events"
    )


def uncertain_line(s: RunSummary) -> str | None:
    if not s.split_uncertain or not s.ok:
        return None
    return (
        f"split uncertain for {s.split_uncertain} of {s.ok} requests ({percent(s.split_uncertain / s.ok)}): the path's "
        "jitter or a retransmission could hide as much as their server part (see split_uncertainty)"
    )


def server_timings_line(join: ServerTimingJoin) -> str:
    parts = [f"server's own timings: {join.joined} requests joined ({percent(join.join_rate)})"]
    if join.server_prompt_p50_us is not None and join.ttft_beyond_server_p50_us is not None:
        parts.append(
            f"prompt time p50 {ms(join.server_prompt_p50_us)} ms, client TTFT beyond it p50 "
            f"{ms(join.ttft_beyond_server_p50_us)} ms (p95 {ms(join.ttft_beyond_server_p95_us)}): network + HTTP + queue"
        )
    if join.server_share_of_ttft is not None:
        parts.append(f"the server's prompt time is {percent(join.server_share_of_ttft)} of TTFT")
    if join.e2e_beyond_server_p50_us is not None:
        parts.append(
            f"e2e beyond the server's total p50 {ms(join.e2e_beyond_server_p50_us)} ms "
            f"(p95 {ms(join.e2e_beyond_server_p95_us)})"
        )
    return "; ".join(parts)


def run_lines(s: RunSummary) -> list[str]:
    """Every sentence above that applies to the run, in order."""
    join = None if s.split is None else s.split.server_timings
    lines = [events_line(s), usage_line(s), uncertain_line(s), None if join is None else server_timings_line(join)]
    return [line for line in lines if line is not None]
