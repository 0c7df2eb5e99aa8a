"""THE table of phases, the per-request record, and the one place where marks become durations.

A worker fills one record per request (`RECORD_DTYPE`, built by field name through `Record`)
with libcurl's cumulative ``*_TIME_T`` marks and the marks of the write and header callbacks,
all integer microseconds on one axis anchored at the transfer's start (docs/architecture.md,
"Clocks and marks"). Beside the records lies one array of token events (`EVENT_DTYPE`): each
record's kept events, in record order (`events_kept` of them per record). `derive` turns a batch
of records and their events into every phase, vectorised, once: per-request phases one value a
record, per-token phases (`itl`, `token_lag`) one value a token gap or a stamped event.
"""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass

import numpy as np

#: "not measured" for a mark or a duration (libcurl's marks are never negative).
MISSING = -1

RECORD_DTYPE = np.dtype(
    [
        # the transfer's start on the machine's monotonic clock (ns): the anchor of every mark,
        # comparable with any process's time.monotonic_ns() on this host (server logs, tests)
        ("transfer_start_ns", np.int64),
        # schedule (µs since the run's start); intended == actual in closed loop
        ("intended_start_us", np.int64),
        ("start_us", np.int64),
        # libcurl cumulative marks, µs since the transfer's start
        ("queue_mark_us", np.int64),
        ("namelookup_mark_us", np.int64),
        ("connect_mark_us", np.int64),
        ("appconnect_mark_us", np.int64),
        ("pretransfer_mark_us", np.int64),
        ("posttransfer_mark_us", np.int64),
        ("starttransfer_mark_us", np.int64),
        ("total_mark_us", np.int64),
        # header-callback mark: the final response's status line, when a 1xx interim response
        # (100 Continue, 103 Early Hints) came first; STARTTRANSFER is then the 1xx's first byte
        ("final_status_mark_us", np.int64),
        # write-callback marks on the same axis
        ("first_byte_mark_us", np.int64),
        ("first_event_mark_us", np.int64),
        ("first_token_mark_us", np.int64),  # any generated token: content, reasoning, tool call
        ("first_content_mark_us", np.int64),  # the first visible content token
        ("last_token_mark_us", np.int64),
        ("done_mark_us", np.int64),
        # the kernel's view of the transfer's connection (TCP_INFO), µs: after the request its
        # minimum, smoothed RTT and RTT variance; just before the request was sent its smoothed
        # RTT and retransmission timeout; its handshake's RTT and SYN retransmissions; and what
        # happened in between: segments netbench retransmitted, segments received out of order
        # (a response segment lost or late) (-1: not known)
        ("tcp_min_rtt_us", np.int64),
        ("tcp_srtt_us", np.int64),
        ("tcp_rttvar_us", np.int64),
        ("tcp_srtt_before_us", np.int64),
        ("tcp_rto_us", np.int64),
        ("handshake_rtt_us", np.int64),
        ("syn_retries", np.int16),
        ("retransmits", np.int32),
        ("ooo_packets", np.int32),
        # token-carrying SSE events, and how many of them lie in the events array
        ("events", np.int32),
        ("events_kept", np.int32),
        # tokens the events carried by the stream's own counts (continuous usage, else 1 each)
        ("event_tokens", np.int32),
        # output tokens: the server's usage when it sent one, else event_tokens
        ("tokens", np.int32),
        ("usage_completion_tokens", np.int32),
        ("usage_prompt_tokens", np.int32),
        # what the request asked for: the prompt tokens it was built to have (--input-tokens; -1:
        # not known) and its max_tokens (-1: none sent)
        ("requested_prompt_tokens", np.int32),
        ("requested_output_tokens", np.int32),
        ("request_bytes", np.int64),
        # what the server said it spent (llama.cpp's `timings`, TGI's headers, Server-Timing), µs,
        # and the prompt tokens it took from its cache; timing_source: TIMING_SOURCES (0: none)
        ("server_queue_us", np.int64),
        ("server_prompt_us", np.int64),
        ("server_decode_us", np.int64),
        ("server_total_us", np.int64),
        ("server_cached_tokens", np.int32),
        ("timing_source", np.int8),
        ("http_status", np.int16),
        ("curl_error", np.int16),
        ("error_class", np.int8),
        ("new_connection", np.bool_),
        # a new TLS connection: the bytes the server sent in its handshake (TCP_INFO, before the
        # request was sent); -1 without one
        ("tls_handshake_bytes", np.int32),
        ("local_port", np.int32),
        ("worker", np.int16),
    ]
)

#: one token-carrying event of a stream: its arrival mark (µs on its record's axis), the tokens
#: it carried, and the server's monotonic send stamp when the server stamps events (else -1)
EVENT_DTYPE = np.dtype([("mark_us", np.int64), ("tokens", np.int32), ("server_sent_ns", np.int64)])

#: where a record's server timings came from (server_timing's source names)
TIMING_SOURCES = {"llama.cpp": 1, "tgi": 2, "server-timing": 3}

#: a record as a tuple in RECORD_DTYPE's order, built by field name: `Record(tokens=3, ...)`
Record = namedtuple("Record", RECORD_DTYPE.names)  # type: ignore[misc]


def empty_records(count: int) -> np.ndarray:
    """Records with every mark MISSING, ready to be filled."""
    records = np.zeros(count, dtype=RECORD_DTYPE)
    for name in RECORD_DTYPE.names:
        if name.endswith(("_us", "_tokens")) and name != "event_tokens":
            records[name] = MISSING
    for name in ("local_port", "syn_retries", "retransmits", "ooo_packets", "tls_handshake_bytes"):
        records[name] = MISSING
    return records


def empty_events(count: int = 0) -> np.ndarray:
    events = np.zeros(count, dtype=EVENT_DTYPE)
    events["server_sent_ns"] = MISSING
    return events


def event_owner(records: np.ndarray) -> np.ndarray:
    """For each event of the events array beside `records`, the index of its record."""
    return np.repeat(np.arange(len(records)), records["events_kept"])


def select(records: np.ndarray, events: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The records where `mask` holds, and their events."""
    return records[mask], events[mask[event_owner(records)]]


@dataclass(frozen=True)
class Phase:
    """One row of the breakdown: a duration derived from a request's marks."""

    name: str  # the key in every output, e.g. "ttft"
    label: str  # what a person reads
    definition: str  # from-mark -> to-mark, as docs/architecture.md states it
    new_connection_only: bool = False
    streaming_only: bool = False
    open_loop_only: bool = False
    #: one value per token gap or stamped event, not one per request
    per_token: bool = False


PHASES: tuple[Phase, ...] = (
    Phase("dns", "DNS lookup", "NAMELOOKUP", new_connection_only=True),
    Phase("connect", "TCP connect", "CONNECT - NAMELOOKUP", new_connection_only=True),
    Phase("tls", "TLS handshake", "APPCONNECT - CONNECT", new_connection_only=True),
    Phase("tls_full", "TLS, full handshake", "tls of a handshake that carried the certificate", new_connection_only=True),
    Phase("tls_resumed", "TLS, resumed", "tls of a handshake without it (session resumption)", new_connection_only=True),
    Phase("send", "request send", "POSTTRANSFER - PRETRANSFER"),
    Phase("wait", "server wait", "first byte of the final response - POSTTRANSFER"),
    Phase("ttfb", "time to first byte", "first byte of the final response (STARTTRANSFER unless a 1xx came first)"),
    Phase("ttft", "time to first token", "first event carrying a generated token", streaming_only=True),
    Phase("ttft_content", "time to first content token", "first event carrying visible content", streaming_only=True),
    Phase("itl", "inter-token latency", "gap between token events, per token", streaming_only=True, per_token=True),
    Phase("tpot", "time per output token", "(e2e - ttft) / (tokens - 1)", streaming_only=True),
    Phase("e2e", "end to end", "TOTAL, or [DONE] when the server held the response open"),
    Phase("queue", "libcurl queue", "QUEUE"),
    Phase("lag", "schedule lag", "actual start - intended start", open_loop_only=True),
    # open loop: ttfb/ttft/e2e count from the intended start; these count from the actual one
    Phase("ttfb_uncorrected", "TTFB from actual send", "first byte of the final response", open_loop_only=True),
    Phase("ttft_uncorrected", "TTFT from actual send", "first token event", streaming_only=True, open_loop_only=True),
    Phase("e2e_uncorrected", "e2e from actual send", "TOTAL", open_loop_only=True),
    # the network-vs-server split (docs/architecture.md, "Network vs server split")
    Phase("rtt", "network RTT", "the connection's handshake RTT, within [min RTT, smoothed RTT] (TCP_INFO)"),
    Phase("retransmit_wait", "retransmission wait", "retransmitted segments x retransmission timeout, within wait"),
    Phase("network", "network + HTTP", "dns + connect + tls + send + rtt + retransmit_wait, within e2e"),
    Phase("server", "server time", "wait - rtt - retransmit_wait"),
    Phase("split_uncertainty", "split uncertainty", "what of wait could be network or server (jitter, loss)"),
    Phase("ttft_after_headers", "TTFT after headers", "ttft - ttfb", streaming_only=True),
    # the server's own account of the request, joined per request (server_timing)
    Phase("server_prompt", "server's prompt time", "what the server reports for the prompt (prefill)"),
    Phase("ttft_beyond_server", "TTFT beyond the server's prompt time", "ttft - server_prompt: network + HTTP + queue", streaming_only=True),
    Phase("server_total", "server's total", "what the server reports for the whole request"),
    Phase("e2e_beyond_server", "e2e beyond the server's total", "e2e - server_total: network + HTTP + what the server did not time"),
    # measuring the measurer: only servers that stamp their events (`netbench serve --stamp-events`)
    Phase("token_lag", "token arrival lag", "client saw event - server stamped it", streaming_only=True, per_token=True),
)

PHASE_NAMES: tuple[str, ...] = tuple(p.name for p in PHASES)
PHASE_BY_NAME: dict[str, Phase] = {p.name: p for p in PHASES}
#: open loop measures these from the intended start; `<name>_uncorrected` from the actual one
_CORRECTED = ("ttfb", "ttft", "e2e")


@dataclass(frozen=True)
class Derived:
    """Every phase of a batch of successful records: per-request phases one value a record
    (MISSING where the phase does not apply), per-token phases one value a sample."""

    values_us: dict[str, np.ndarray]
    #: requests where libcurl's marks ran backwards (CPU starvation) and were clamped
    clamped: int


def _gap(later: np.ndarray, earlier: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """later - earlier where both exist, clamped at 0; returns (durations, clamped mask)."""
    present = (later >= 0) & (earlier >= 0)
    raw = later - earlier
    clamped = present & (raw < 0)
    return np.where(present, np.maximum(raw, 0), MISSING), clamped


def _missing(count: int) -> np.ndarray:
    return np.full(count, MISSING, dtype=np.int64)


def derive(records: np.ndarray, events: np.ndarray | None = None, *, open_loop: bool = False) -> Derived:
    """Turn marks into phase durations (µs). Call it with successful records only, and the
    events array that lies beside them (None: no per-token phases)."""
    r = records
    new = r["new_connection"]
    posttransfer = np.where(r["posttransfer_mark_us"] >= 0, r["posttransfer_mark_us"], r["pretransfer_mark_us"])
    first_byte = np.where(r["final_status_mark_us"] >= 0, r["final_status_mark_us"], r["starttransfer_mark_us"])
    values: dict[str, np.ndarray] = {}

    # NAMELOOKUP/CONNECT/APPCONNECT are 0 on a reused connection: reuse decides, never the zero.
    values["dns"] = np.where(new, r["namelookup_mark_us"], MISSING)
    connect, clamp_connect = _gap(r["connect_mark_us"], r["namelookup_mark_us"])
    values["connect"] = np.where(new, connect, MISSING)
    # APPCONNECT stays 0 over plain http: a TLS phase exists only when it is after CONNECT.
    has_tls = new & (r["appconnect_mark_us"] > 0)
    tls, clamp_tls = _gap(r["appconnect_mark_us"], r["connect_mark_us"])
    values["tls"] = np.where(has_tls, tls, MISSING)
    resumed = _resumed(r["tls_handshake_bytes"])
    values["tls_full"] = np.where(has_tls & (r["tls_handshake_bytes"] >= 0) & ~resumed, tls, MISSING)
    values["tls_resumed"] = np.where(has_tls & resumed, tls, MISSING)
    values["send"], clamp_send = _gap(posttransfer, r["pretransfer_mark_us"])
    values["wait"], clamp_wait = _gap(first_byte, posttransfer)
    values["ttfb"] = first_byte.copy()
    values["ttft"] = r["first_token_mark_us"].copy()
    values["ttft_content"] = r["first_content_mark_us"].copy()
    values["e2e"] = r["total_mark_us"].copy()
    values["queue"] = r["queue_mark_us"].copy()

    tokens = r["tokens"].astype(np.int64)
    decode_us = r["total_mark_us"] - r["first_token_mark_us"]
    has_tpot = (tokens > 1) & (r["first_token_mark_us"] >= 0)
    values["tpot"] = np.where(has_tpot, np.maximum(decode_us, 0) // np.maximum(tokens - 1, 1), MISSING)

    # The server's own timings, against the client's from the actual send: the server never saw
    # the time a request waited for its schedule.
    values["server_prompt"] = r["server_prompt_us"].copy()
    values["server_total"] = r["server_total_us"].copy()
    values["ttft_beyond_server"], _ = _gap(values["ttft"], r["server_prompt_us"])
    values["e2e_beyond_server"], _ = _gap(values["e2e"], r["server_total_us"])

    lag = r["start_us"] - r["intended_start_us"]
    values["lag"] = np.maximum(lag, 0) if open_loop else _missing(len(r))
    for name in _CORRECTED:
        # Kept beside the corrected value, as wrk2 does, so the cost of the wait can be read off.
        values[f"{name}_uncorrected"] = values[name] if open_loop else _missing(len(r))
    if open_loop:
        # Measured from the intended send time: the wait the schedule imposed counts (no coordinated omission).
        for name in (*_CORRECTED, "ttft_content"):
            values[name] = np.where(values[name] >= 0, values[name] + values["lag"], MISSING)

    _split(r, values, new)
    values["ttft_after_headers"], _ = _gap(r["first_token_mark_us"], first_byte)

    values["itl"], values["token_lag"] = _per_token(r, events)
    clamped = (clamp_connect & new) | (clamp_tls & has_tls) | clamp_send | clamp_wait
    return Derived(values_us=values, clamped=int(np.count_nonzero(clamped)))


#: a path varies when a connection's handshake RTT lies above its minimum RTT by more than
#: JITTER_MIN_US and JITTER_MIN_SHARE of it: the server's SYN processing and a busy host's
#: scheduling put a handshake up to some 400 µs above the floor of a steady path, and a
#: timestamp-resolution sample (ms) can put the floor 0.1-0.5 ms low. Jitter below this is
#: not seen: the split's error bound on a path that jitters less. (The kernel's RTT variance is no evidence: its samples hold the
#: server's time to answer, whose variation on a busy host reaches milliseconds.)
JITTER_MIN_US = 500
JITTER_MIN_SHARE = 0.05


#: a TLS handshake with less than this share of the batch's largest server flight carried no
#: certificate: a resumed session (a certificate chain is a kilobyte or more, a resumed
#: handshake's server flight a few hundred bytes)
RESUMED_SHARE = 0.6


def _resumed(handshake_bytes: np.ndarray) -> np.ndarray:
    """Which handshakes were resumptions, against the largest of the batch (a full one, when
    the batch holds one; a batch of resumptions alone reads as full: the largest is the floor)."""
    known = handshake_bytes >= 0
    if not known.any():
        return np.zeros(len(handshake_bytes), dtype=bool)
    return known & (handshake_bytes < RESUMED_SHARE * handshake_bytes[known].max())


def _split(r: np.ndarray, values: dict[str, np.ndarray], new: np.ndarray) -> None:
    """The network-vs-server split of each request, from its own connection's evidence.

    rtt: on a new connection the handshake's RTT (the kernel's sample of SYN to SYN-ACK: no
    server application time in it; SYN retries are in `connect`, counted once; after one, the
    connection's minimum RTT, since that handshake's sample has a timestamp's ms resolution). On a reused one
    the kernel's minimum RTT (the path's floor) while the path is steady; where the connection's
    handshake lay well above that floor (JITTER_MIN_US, JITTER_MIN_SHARE) the path jitters, the
    floor understates it by the jitter, and the handshake RTT, an unbiased draw of the path, is
    used instead, kept at most at the smoothed RTT before the request (an upper estimate: a
    request's ACK rides on the response, so the kernel's samples hold server time).
    retransmit_wait: the segments netbench retransmitted during the request waited a
    retransmission timeout each (doubling), at most what wait leaves after the RTT; it is network
    time. server = wait - rtt - retransmit_wait, never below 0, and network never above e2e.
    split_uncertainty: how much of wait could be either side: on a varying path twice the largest
    gap between a handshake and its floor among the batch's connections, the retransmission
    estimate, what the clamps took, and
    the whole server part when a response segment was lost (out-of-order arrivals: the server's
    retransmission then looks like server time).
    """
    handshake, floor, upper = r["handshake_rtt_us"], r["tcp_min_rtt_us"], r["tcp_srtt_before_us"]
    # After a retransmitted SYN the kernel's only handshake sample comes from TCP timestamps, in
    # whole milliseconds: the connection's floor (its minimum RTT) says more.
    handshake = np.where(r["syn_retries"] > 0, np.where(floor >= 0, floor, handshake), handshake)
    new_rtt = np.where(handshake >= 0, handshake, values["connect"])
    known = (handshake >= 0) & (floor >= 0)
    gap = np.where(known, handshake - floor, 0)
    threshold = np.maximum(JITTER_MIN_US, JITTER_MIN_SHARE * floor)
    # A varying path also keeps its smoothed RTT above the floor: one handshake slowed by a busy
    # host, on a steady path, does not.
    settled_above = (upper < 0) | (upper - floor > threshold)
    varying = known & (gap > threshold) & settled_above
    path_jitter_us = int(gap[varying].max()) if varying.any() else 0
    jitters = known & bool(path_jitter_us)
    jittered_rtt = np.where((upper >= 0) & (upper >= floor), np.minimum(handshake, upper), handshake)
    reused_rtt = np.where(jitters, np.maximum(jittered_rtt, floor), np.where(floor >= 0, floor, handshake))
    rtt = np.where(new, new_rtt, reused_rtt)
    wait = values["wait"]
    has_split = (rtt >= 0) & (wait >= 0)
    retransmits = np.clip(r["retransmits"], 0, 16).astype(np.int64)
    room = np.maximum(wait - np.maximum(rtt, 0), 0)
    timed_out = np.where(r["tcp_rto_us"] >= 0, r["tcp_rto_us"] * ((1 << retransmits) - 1), room)
    retransmit_wait = np.where(retransmits > 0, np.minimum(timed_out, room), 0)
    server_raw = wait - np.maximum(rtt, 0) - retransmit_wait
    server = np.maximum(server_raw, 0)
    parts = sum(np.maximum(values[k], 0) for k in ("dns", "connect", "tls", "send"))
    network = np.minimum(parts + np.maximum(rtt, 0) + retransmit_wait, np.maximum(values["e2e"], 0))
    spread = np.where(~new & jitters, 2 * path_jitter_us, 0)
    uncertainty = spread + retransmit_wait + np.maximum(-server_raw, 0)
    uncertainty = np.where(r["ooo_packets"] > 0, np.maximum(uncertainty, server), uncertainty)
    values["rtt"] = np.where(has_split, rtt, MISSING)
    values["retransmit_wait"] = np.where(has_split & (retransmits > 0), retransmit_wait, MISSING)
    values["server"] = np.where(has_split, server, MISSING)
    values["network"] = np.where(has_split, network, MISSING)
    values["split_uncertainty"] = np.where(has_split, uncertainty, MISSING)


def _per_token(records: np.ndarray, events: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(ITL samples, token lag samples), µs.

    ITL is per token: an event that arrived a gap g after the previous token event and carried
    k tokens contributes k samples of g / k (the gap counted once in all, spread over the
    tokens it delivered; the first event's tokens have no gap before them). Where the stream's
    own per-event counts disagree with the server's usage total (usage only at the end, k
    unknown), each later event is taken to carry the mean (tokens - 1) / (events - 1) and
    contributes one sample of g divided by that mean.
    """
    if events is None or len(events) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    kept = records["events_kept"].astype(np.int64)
    owner = event_owner(records)
    starts = np.concatenate(([0], np.cumsum(kept)[:-1]))
    later = np.ones(len(events), dtype=bool)
    later[starts[kept > 0]] = False  # each record's first kept event has no gap before it
    marks = events["mark_us"]
    gaps = np.zeros(len(events), dtype=np.int64)
    gaps[1:] = marks[1:] - marks[:-1]
    gaps = np.maximum(gaps, 0)
    per_event = events["tokens"].astype(np.int64)
    agrees = (records["tokens"] == records["event_tokens"])[owner]
    counted = later & agrees & (per_event > 0)
    itl_counted = np.repeat(gaps[counted] // per_event[counted], per_event[counted])
    spread = later & ~agrees
    tokens, event_count = records["tokens"].astype(np.float64), records["events"].astype(np.float64)
    mean_tokens = np.where(event_count > 1, (tokens - 1) / np.maximum(event_count - 1, 1), 1.0)[owner]
    itl_spread = (gaps[spread] / np.maximum(mean_tokens[spread], 1e-9)).astype(np.int64)
    stamped = events["server_sent_ns"] >= 0
    arrival_ns = records["transfer_start_ns"][owner[stamped]] + marks[stamped] * 1000
    lag = (arrival_ns - events["server_sent_ns"][stamped]) // 1000
    return np.concatenate((itl_counted, itl_spread)), np.maximum(lag, 0)
