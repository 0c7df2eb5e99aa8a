"""The Markdown report (`benchmarks_out/network_latency_bench.md`): the runs table (the headline
columns, then per-phase columns), server-side /metrics, "TTFT vs HTTP latency", the significance
lines and the rule of thumb, all worded here from an `analysis.Analysis` (nothing is computed here)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from netbench.analysis import (
    CONFIDENCE,
    DOMINANT_SHARE,
    NEGLIGIBLE_SHARE,
    Analysis,
    ConcurrencyEffect,
    ConcurrencyEffects,
    Cause,
    ConnectionCost,
    OverheadSource,
    RuleOfThumb,
    TtftOrigin,
    TtftParts,
    TtftVsHttp,
    Verdict,
)
from netbench.phases import PHASES
from netbench.prompt_lengths import PromptLengths
from netbench.report.lengths_section import lengths_rule_text, lengths_section
from netbench.report.server_counters import counters_line
from netbench.report.run_words import run_lines, server_timings_line
from netbench.report.units import ms, ms_signed, percent
from netbench.summary import HEADLINE_KEYS, RunSummary

TITLE = "Network latency bench"

#: how the parts of a baseline request are named in prose
COMPONENT_LABELS = {
    "connect": "connection setup (DNS + TCP + TLS, amortised over reused connections)",
    "send": "request send",
    "rtt": "network round trip",
    "server_wait": "server wait (HTTP framework + handler, no model work)",
    "response": "response transfer",
}
PHASE_WORDS = {"e2e": "wall time", "ttft": "TTFT"}


def _cell(text: object) -> str:
    """A table cell: pipes escaped, one line."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _label(s: RunSummary) -> str:
    spec = s.spec
    return f"{spec.mode} at rate {spec.rate:g}/s" if spec.open_loop else f"{spec.mode} c={spec.concurrency}"


# --- the runs table ------------------------------------------------------------------------


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


def run_notes(s: RunSummary) -> list[str]:
    notes = ["interrupted"] if s.interrupted else []
    if s.failed:
        detail = ", ".join(f"{outcome.key} {count}" for outcome, count in s.errors.items())
        notes.append(f"{s.failed} of {s.requests} failed ({detail})")
    if s.spec.open_loop:
        notes.append(f"open loop, {s.spec.rate:g}/s {s.spec.arrival}")
    return notes + run_lines(s) + list(s.notes)


def runs_table(summaries: Sequence[RunSummary]) -> list[str]:
    phases = [p for p in PHASES if any(s.phase(p.name) is not None for s in summaries)]
    header = [*HEADLINE_KEYS, "notes", *(f"{p.name} p50 / p95 ms" for p in phases)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for s in summaries:
        row: list[object] = [s.mode, s.concurrency, s.n, _seconds(s.median_wall_s), _seconds(s.p95_wall_s)]
        row.append("; ".join(run_notes(s)))
        for phase in phases:
            stats = s.phase(phase.name)
            row.append("" if stats is None else f"{ms(stats.p50_us)} / {ms(stats.p95_us)}")
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return lines


# --- server-side /metrics -----------------------------------------------------------------


def _bucket(bounds: list[float | None]) -> str:
    low, high = bounds
    return f"{ms(low)}–{'∞' if high is None else ms(high)}"


def server_section(summaries: Sequence[RunSummary]) -> list[str]:
    sides = [(s, None if s.split is None else s.split.server_side) for s in summaries]
    if all(side is None for _, side in sides):
        return []
    lines = [
        "## Server-side metrics (/metrics)",
        "",
        "Where the server exposes Prometheus `/metrics` (vLLM's histograms), netbench scrapes it before and after "
        "the measured requests; the difference is the server's own view of the same requests. Server p50/p95 are "
        "interpolated linearly within the histogram buckets (the bucket is shown: it is the resolution; \"all in\" "
        "means every request fell in one bucket, so nothing finer is known); the mean comes from `_sum / _count` and "
        "is exact. Client − server is the network + HTTP + framework overhead.",
        "",
    ]
    rows = []
    said: dict[str, list[str]] = {}  # one line per message, naming every run it is about
    for s, side in sides:
        if side is None:
            continue
        if not side.available:
            said.setdefault(f"not available ({side.reason})", []).append(_label(s))
            continue
        if side.note is not None:
            said.setdefault(side.note, []).append(_label(s))
        if side.counters is not None:
            said.setdefault(counters_line(side.counters), []).append(_label(s))
        for key in ("ttft", "e2e", "queue"):
            entry = side.metrics.get(key)
            if entry is None:
                continue
            if entry.server_single_bucket:
                p50 = p95 = f"all in {_bucket(entry.server_p50_bucket_us)}"
            else:
                p50 = f"{ms(entry.server_p50_us)} ({_bucket(entry.server_p50_bucket_us)})"
                open_p95 = "≥ " if entry.server_p95_is_lower_bound else ""
                p95 = f"{open_p95}{ms(entry.server_p95_us)} ({_bucket(entry.server_p95_bucket_us)})"
            client = entry.client
            rows.append([
                _label(s),
                entry.metric,
                entry.count,
                p50,
                p95,
                ms(entry.server_mean_us),
                "" if client is None else ms(client.client_p50_us),
                "" if client is None else ms(client.client_mean_us),
                "" if client is None else ms_signed(client.gap_mean_us),
            ])  # fmt: skip
    lines += [f"- {', '.join(labels)}: {message}." for message, labels in said.items()]
    if rows:
        if lines[-1] != "":
            lines.append("")
        header = ["run", "metric", "counted", "server p50 ms (bucket)", "server p95 ms (bucket)", "server mean ms",
                  "client p50 ms", "client mean ms", "client − server (mean) ms"]  # fmt: skip
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines + [""]


# --- TTFT vs HTTP latency -----------------------------------------------------------------


def _verdict_words(verdict: Verdict) -> str:
    return {
        Verdict.NEGLIGIBLE: "negligible",
        Verdict.NON_TRIVIAL: "a non-trivial part",
        Verdict.DOMINANT: "the larger part",
    }[verdict]


#: how the network and HTTP path's time was measured
OVERHEAD_WORDS = {
    OverheadSource.BASELINE: "the baseline's wall time",
    OverheadSource.SERVER_GAP: "client − server-side TTFT, means",
    OverheadSource.SERVER_TIMINGS: "client TTFT beyond the server's own prompt time, per request",
}

#: what each cause of TTFT is, and what shortens it
CAUSE_WORDS = {
    Cause.NETWORK: ("the network round trip", "propagation no serving stack can shorten: run the client closer to the "
                    "server, and keep connections alive"),
    Cause.HTTP: ("the server's HTTP framework and handler", "time before any model work: the serving stack "
                 "(framework, proxies) is where to start"),
    Cause.MODEL: ("the model (queue + prefill)", "latency work pays off in the model and its runtime, not in the "
                  "network or the HTTP stack"),
}  # fmt: skip


def _http_words(parts: TtftParts) -> str:
    if parts.timed_by_server:
        return "HTTP framework, tokenization and queue (what the server did not time)"
    return "HTTP framework and handler"


def _model_words(parts: TtftParts) -> str:
    return "the model (the server's prompt time)" if parts.timed_by_server else "the model (queue + prefill)"


def _parts_sentence(parts: TtftParts) -> str:
    name, advice = CAUSE_WORDS[parts.cause]
    return (
        f"Warm TTFT by cause (medians): network round trip {ms(parts.network_us)} ms, {_http_words(parts)} "
        f"{ms(parts.http_us)} ms, {_model_words(parts)} {ms(parts.model_us)} ms. The largest is {name}: {advice}."
    )


def _tls_words(cost: ConnectionCost) -> str:
    if cost.tls_us is None:
        return ""
    kinds = [f"{ms(us)} ms {kind}" for kind, us in (("full", cost.tls_full_us), ("resumed", cost.tls_resumed_us)) if us is not None]
    return f" and {ms(cost.tls_us)} ms for TLS" + (f" ({', '.join(kinds)})" if len(kinds) > 1 else "")


def _connection_sentence(cost: ConnectionCost) -> str:
    source = "measured on this run's new connections" if cost.measured else "one round trip, estimated: every request here reused its connection"
    protocol = " over HTTP/2" if cost.http2 else ""
    return (
        f"A new connection{protocol} costs {ms(cost.tcp_us)} ms for the TCP handshake{_tls_words(cost)} ({source}): what "
        "a client without keep-alive pays on every request."
    )


def ttft_section(c: TtftVsHttp) -> list[str]:
    lines = ["## TTFT vs HTTP latency", ""]
    rows = []
    measured = c.measured
    measured_ttft = None if measured is None else measured.phase("ttft")
    measured_row = None
    if measured is not None and measured_ttft is not None:
        measured_row = [ms(measured_ttft.p50_us), ms(measured_ttft.p95_us),
                        f"{measured.mode} at concurrency 1, {measured_ttft.count} requests"]  # fmt: skip
    if c.ttft_us is not None:
        if c.ttft_origin is TtftOrigin.MEASURED and measured_row is not None:
            rows.append(["warm TTFT", *measured_row])
        else:
            rows.append(["warm TTFT (reference)", ms(c.ttft_us), "", c.ttft_source])
            if measured_row is not None:
                rows.append(["TTFT measured here", *measured_row])
    if c.baseline is not None:
        e2e = c.baseline.phase("e2e")
        count = 0 if e2e is None else e2e.count
        rows.append(["HTTP wall time, baseline", ms(c.baseline_p50_us), ms(c.baseline_p95_us),
                     f"{c.baseline.mode} at concurrency 1 (no model work), {count} requests"])  # fmt: skip
    if rows:
        lines += ["| | p50 ms | p95 ms | from |", "|---|---|---|---|"]
        lines += ["| " + " | ".join(_cell(x) for x in row) + " |" for row in rows]
        lines.append("")
    for reason in c.missing:
        lines.append(f"- Missing: {reason}.")
    share = c.overhead_share_of_ttft
    if c.overhead_us is not None and c.ttft_us is not None and share is not None and c.verdict is not None:
        what = OVERHEAD_WORDS[c.overhead_source] if c.overhead_source is not None else ""
        lines.append(
            f"- **The network and HTTP path: {ms(c.overhead_us)} ms ({what}) of a warm TTFT of {ms(c.ttft_us)} ms, "
            f"{percent(share)} of it: {_verdict_words(c.verdict)}.** (Under {percent(NEGLIGIBLE_SHARE)} is "
            f"negligible; {percent(DOMINANT_SHARE)} or more means the path to the model, not the model, dominates.)"
        )
    if c.parts is not None:
        lines.append(f"- {_parts_sentence(c.parts)}")
    if c.new_connection is not None:
        lines.append(f"- {_connection_sentence(c.new_connection)}")
    elif c.overhead_us is None:
        lines.append("- Overhead: not measured (it needs a baseline run, or server-side TTFT from /metrics).")
    if c.baseline_components_us and c.carrier is not None:
        ordered = sorted(c.baseline_components_us.items(), key=lambda item: -item[1])
        parts = ", ".join(f"{COMPONENT_LABELS[key]} {ms(us)} ms" for key, us in ordered)
        lines.append(
            f"- Where the baseline's time goes (p50 of each part): {parts}. "
            f"The largest part is the {COMPONENT_LABELS[c.carrier]}."
        )
    if measured is not None:
        stream = None if measured.split is None else measured.split.stream
        if stream is not None and None not in (stream.ttfb_p50_us, stream.ttft_after_headers_p50_us, stream.ttft_p50_us):
            lines.append(
                f"- In the {measured.mode} run at concurrency 1 the response headers came after "
                f"{ms(stream.ttfb_p50_us)} ms (TTFB p50) and the first token {ms(stream.ttft_after_headers_p50_us)} ms after them "
                f"(TTFT after headers p50): of a TTFT of {ms(stream.ttft_p50_us)} ms, "
                f"{percent(stream.after_headers_share_of_ttft or 0)} is spent after the server has answered (queue + prefill)."
            )
        lines.append(_server_ttft_line(c, measured))
        join = None if measured.split is None else measured.split.server_timings
        if join is not None:
            lines.append(f"- Per request, the {server_timings_line(join)}.")
    return lines + [""]


def _server_ttft_line(c: TtftVsHttp, measured: RunSummary) -> str:
    side = None if measured.split is None else measured.split.server_side
    if side is None:
        return "- Server-side TTFT: the run file holds no /metrics scrape."
    if not side.available:
        return f"- Server-side TTFT: not available ({side.reason})."
    s, gap = c.server_ttft, c.client_minus_server_ttft_mean_us
    if s is None or gap is None:
        return "- Server-side TTFT: /metrics has no TTFT histogram with this run's requests."
    bucket = f"{_bucket(s.server_p50_bucket_us)} ms bucket"
    p50 = f"all in the {bucket}" if s.server_single_bucket else f"p50 {ms(s.server_p50_us)} ms (interpolated within the {bucket})"
    return (
        f"- Server-side TTFT ({s.metric}, {s.count} requests): mean {ms(s.server_mean_us)} ms (exact), {p50}. Client TTFT − "
        f"server TTFT = {ms_signed(gap)} ms (means): the network + HTTP + framework overhead of a stream."
    )


# --- significance -------------------------------------------------------------------------


def effect_line(effect: ConcurrencyEffect) -> str:
    head = f"{effect.mode}, {PHASE_WORDS.get(effect.phase, effect.phase)}: c={effect.concurrency} vs c={effect.base_concurrency}"
    d = effect.diff
    if d is None:
        return f"- {head}: could not be tested ({effect.reason})."
    verdict = "**significant**" if d.significant else "not significant"
    return (
        f"- {head}: {ms_signed(d.diff)} ms (95 % CI {ms_signed(d.low)} to {ms_signed(d.high)} ms; "
        f"medians {ms(d.median_a)} → {ms(d.median_b)} ms, n {d.n_a} / {d.n_b}): {verdict}."
    )


def significance_section(effects: ConcurrencyEffects, resamples: int, seed: int) -> list[str]:
    lines = ["## Does concurrency change latency?", ""]
    if not effects.effects:
        return lines + ["No run at a concurrency above 1: nothing to compare.", ""]
    lines += [
        "Median at concurrency C minus median at concurrency 1 (the p50s of the runs table), with a bootstrap "
        f"{CONFIDENCE * 100:.0f} % confidence interval ({resamples} resamples, seed {seed}) from the per-request "
        "records; significant when the interval excludes 0.",
        "",
    ]
    return lines + [effect_line(e) for e in effects.effects] + [""]


# --- the rule of thumb --------------------------------------------------------------------


def rule_of_thumb_text(rule: RuleOfThumb) -> str:
    """One to three sentences with the measured numbers in them: how much of TTFT the network
    and HTTP path takes, which cause dominates and what shortens it, what a new connection
    costs, and what concurrency does. Every claim is a number of these runs."""
    if rule.verdict is None or rule.overhead_us is None or rule.ttft_us is None or rule.share is None:
        return "No rule of thumb from these runs: " + "; ".join(rule.missing or ("the numbers are missing",)) + "."
    x, t, s = ms(rule.overhead_us), ms(rule.ttft_us), percent(rule.share)
    what = "the network and HTTP path" + ("" if rule.overhead_source is OverheadSource.BASELINE else f" ({OVERHEAD_WORDS[rule.overhead_source]})")
    text = f"Measured from this client, {what} takes ~{x} ms of a warm TTFT of {t} ms ({s}, {_verdict_words(rule.verdict)})"
    parts = rule.parts
    if parts is None:
        text += "."
    else:
        name, advice = CAUSE_WORDS[parts.cause]
        text += (
            f": {ms(parts.network_us)} ms of network round trip, {ms(parts.http_us)} ms of {_http_words(parts)} and "
            f"{ms(parts.model_us)} ms of {_model_words(parts)}. Most of it is {name}, so {advice}."
        )
    if rule.new_connection is not None:
        cost = rule.new_connection
        text += f" Without keep-alive each request would pay ~{ms(cost.tcp_us)} ms more for the TCP handshake{_tls_words(cost)}."
    effect = rule.concurrency
    if effect is not None and effect.diff is not None:
        d, what = effect.diff, PHASE_WORDS.get(effect.phase, effect.phase)
        interval = f"95 % CI {ms_signed(d.low)} to {ms_signed(d.high)} ms"
        if d.significant:
            direction = "raises" if d.diff > 0 else "lowers"
            text += (
                f" Concurrency {effect.concurrency} {direction} median {what} by {ms(abs(d.diff))} ms against "
                f"concurrency 1 ({interval})."
            )
        else:
            text += (
                f" Concurrency {effect.concurrency} does not change median {what} significantly against concurrency 1 "
                f"({ms_signed(d.diff)} ms, {interval})."
            )
    return text


# --- the whole report ---------------------------------------------------------------------


def render_markdown(analysis: Analysis, plots: Sequence[tuple[str, str]] = (), lengths: PromptLengths | None = None) -> str:
    """The report; `plots` are (caption, link relative to the report) pairs; `lengths` the
    answer per prompt length (a sweep over --input-tokens)."""
    runs = analysis.runs
    urls = ", ".join(dict.fromkeys(s.url for s in runs))
    started = min((s.started_at_s for s in runs), default=0.0)
    when = datetime.fromtimestamp(started, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    # pycurl's version string: "PycURL/7.45 libcurl/8.5 ..." (the second word), whatever a run file holds
    libcurl = ", ".join(dict.fromkeys((s.libcurl.split() + [""])[1] or s.libcurl for s in runs if s.libcurl and s.libcurl.strip()))
    lines = [
        f"# {TITLE}",
        "",
        f"{len(runs)} run{'' if len(runs) == 1 else 's'} against {urls or 'no target'}, the first started {when}"
        + (f"; client {libcurl}." if libcurl else "."),
        "",
        "## Runs",
        "",
        *runs_table(runs),
        "",
        "Phases are p50 / p95 in ms over the successful requests. rtt: the TCP handshake of new connections, the "
        "kernel's minimum RTT (TCP_INFO) on reused ones; network = dns + connect + tls + send + rtt; "
        "server = wait − rtt; ttft_after_headers = ttft − ttfb.",
        "",
        *server_section(runs),
        *ttft_section(analysis.ttft_vs_http),
        *lengths_section(lengths),
        *significance_section(analysis.concurrency, analysis.resamples, analysis.seed),
        "## Rule of thumb",
        "",
        f"> {rule_of_thumb_text(analysis.rule_of_thumb)}",
        "",
    ]
    per_length = lengths_rule_text(lengths)
    if per_length is not None:
        lines += [f"> {per_length}", ""]
    if plots:
        lines += ["## Plots", ""]
        for caption, link in plots:
            lines += [f"![{caption}]({link})", ""]
    return "\n".join(lines)
