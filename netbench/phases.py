"""THE table of phases, and the one place where per-request marks become phase durations.

A worker fills a numpy record per request (`RECORD_DTYPE`) with libcurl's cumulative
``*_TIME_T`` marks and the SSE marks of the write callback, all integer microseconds on one
axis anchored at the transfer's start (DESIGN.md, "Clocks and marks"). ``derive`` turns a
batch of records into per-phase duration arrays, vectorised, once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: "not measured" for a mark or a duration (libcurl's marks are never negative).
MISSING = -1

RECORD_DTYPE = np.dtype(
    [
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
        # write-callback marks on the same axis
        ("first_byte_mark_us", np.int64),
        ("first_event_mark_us", np.int64),
        ("first_token_mark_us", np.int64),
        ("last_token_mark_us", np.int64),
        ("done_mark_us", np.int64),
        # kernel minimum RTT of the transfer's socket (TCP_INFO), µs
        ("tcp_rtt_us", np.int64),
        ("tokens", np.int32),
        ("usage_completion_tokens", np.int32),
        ("http_status", np.int16),
        ("curl_error", np.int16),
        ("error_class", np.int8),
        ("new_connection", np.bool_),
        ("worker", np.int16),
    ]
)


def empty_records(count: int) -> np.ndarray:
    """Records with every mark MISSING, ready to be filled."""
    records = np.zeros(count, dtype=RECORD_DTYPE)
    for name in RECORD_DTYPE.names:
        if name.endswith("_us"):
            records[name] = MISSING
    return records


@dataclass(frozen=True)
class Phase:
    """One row of the breakdown: a duration derived from a request's marks."""

    name: str  # the key in every output, e.g. "ttft"
    label: str  # what a person reads
    definition: str  # from-mark -> to-mark, as DESIGN.md states it
    new_connection_only: bool = False
    streaming_only: bool = False
    open_loop_only: bool = False


PHASES: tuple[Phase, ...] = (
    Phase("dns", "DNS lookup", "NAMELOOKUP", new_connection_only=True),
    Phase("connect", "TCP connect", "CONNECT - NAMELOOKUP", new_connection_only=True),
    Phase("tls", "TLS handshake", "APPCONNECT - CONNECT", new_connection_only=True),
    Phase("send", "request send", "POSTTRANSFER - PRETRANSFER"),
    Phase("wait", "server wait", "STARTTRANSFER - POSTTRANSFER"),
    Phase("ttfb", "time to first byte", "STARTTRANSFER"),
    Phase("ttft", "time to first token", "first token event", streaming_only=True),
    Phase("itl", "inter-token latency", "gap between token events", streaming_only=True),
    Phase("tpot", "time per output token", "(e2e - ttft) / (tokens - 1)", streaming_only=True),
    Phase("e2e", "end to end", "TOTAL"),
    Phase("queue", "libcurl queue", "QUEUE"),
    Phase("lag", "schedule lag", "actual start - intended start", open_loop_only=True),
    # open loop: ttfb/ttft/e2e count from the intended start; these count from the actual one
    Phase("ttfb_uncorrected", "TTFB from actual send", "STARTTRANSFER", open_loop_only=True),
    Phase("ttft_uncorrected", "TTFT from actual send", "first token event", streaming_only=True, open_loop_only=True),
    Phase("e2e_uncorrected", "e2e from actual send", "TOTAL", open_loop_only=True),
    # the network-vs-server split (DESIGN.md, "Network vs server split")
    Phase("rtt", "network RTT", "TCP handshake, or TCP_INFO srtt on reused connections"),
    Phase("network", "network + HTTP", "dns + connect + tls + send + rtt"),
    Phase("server", "server time", "wait - rtt"),
    Phase("ttft_after_headers", "TTFT after headers", "ttft - ttfb", streaming_only=True),
    # measuring the measurer: only servers that stamp their events (`netbench serve --stamp-events`)
    Phase("token_lag", "token arrival lag", "client saw event - server stamped it", streaming_only=True),
)

PHASE_NAMES: tuple[str, ...] = tuple(p.name for p in PHASES)
#: open loop measures these from the intended start; `<name>_uncorrected` from the actual one
_CORRECTED = ("ttfb", "ttft", "e2e")
PHASE_BY_NAME: dict[str, Phase] = {p.name: p for p in PHASES}


@dataclass(frozen=True)
class Derived:
    """Per-phase durations of a batch of successful records; MISSING where a phase does not apply."""

    values_us: dict[str, np.ndarray]
    #: requests where libcurl's marks ran backwards (CPU starvation) and were clamped
    clamped: int


def _gap(later: np.ndarray, earlier: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """later - earlier where both exist, clamped at 0; returns (durations, clamped mask)."""
    present = (later >= 0) & (earlier >= 0)
    raw = later - earlier
    clamped = present & (raw < 0)
    return np.where(present, np.maximum(raw, 0), MISSING), clamped


def derive(records: np.ndarray, open_loop: bool = False) -> Derived:
    """Turn marks into phase durations (µs). Call it with successful records only."""
    r = records
    new = r["new_connection"]
    posttransfer = np.where(r["posttransfer_mark_us"] >= 0, r["posttransfer_mark_us"], r["pretransfer_mark_us"])
    values: dict[str, np.ndarray] = {}

    # NAMELOOKUP/CONNECT/APPCONNECT are 0 on a reused connection: reuse decides, never the zero.
    values["dns"] = np.where(new, r["namelookup_mark_us"], MISSING)
    connect, clamp_connect = _gap(r["connect_mark_us"], r["namelookup_mark_us"])
    values["connect"] = np.where(new, connect, MISSING)
    # APPCONNECT stays 0 over plain http: a TLS phase exists only when it is after CONNECT.
    has_tls = new & (r["appconnect_mark_us"] > 0)
    tls, clamp_tls = _gap(r["appconnect_mark_us"], r["connect_mark_us"])
    values["tls"] = np.where(has_tls, tls, MISSING)
    values["send"], clamp_send = _gap(posttransfer, r["pretransfer_mark_us"])
    values["wait"], clamp_wait = _gap(r["starttransfer_mark_us"], posttransfer)
    values["ttfb"] = r["starttransfer_mark_us"].copy()
    values["ttft"] = r["first_token_mark_us"].copy()
    values["e2e"] = r["total_mark_us"].copy()
    values["queue"] = r["queue_mark_us"].copy()

    tokens = r["tokens"].astype(np.int64)
    decode_us = r["total_mark_us"] - r["first_token_mark_us"]
    has_tpot = (tokens > 1) & (r["first_token_mark_us"] >= 0)
    values["tpot"] = np.where(has_tpot, np.maximum(decode_us, 0) // np.maximum(tokens - 1, 1), MISSING)

    lag = r["start_us"] - r["intended_start_us"]
    values["lag"] = np.full(len(r), MISSING, dtype=np.int64) if not open_loop else np.maximum(lag, 0)
    for name in _CORRECTED:
        # Kept beside the corrected value, as wrk2 does, so the cost of the wait can be read off.
        values[f"{name}_uncorrected"] = values[name] if open_loop else np.full(len(r), MISSING, dtype=np.int64)
        if open_loop:
            # Measured from the intended send time: the wait the schedule imposed counts (no coordinated omission).
            values[name] = np.where(values[name] >= 0, values[name] + values["lag"], MISSING)

    rtt = np.where(new, values["connect"], r["tcp_rtt_us"])
    values["rtt"] = rtt
    has_split = (rtt >= 0) & (values["wait"] >= 0)
    values["server"] = np.where(has_split, np.maximum(values["wait"] - rtt, 0), MISSING)
    parts = [np.maximum(values[k], 0) for k in ("dns", "connect", "tls", "send")]
    values["network"] = np.where(has_split, sum(parts) + np.maximum(rtt, 0), MISSING)
    after_headers, _ = _gap(r["first_token_mark_us"], r["starttransfer_mark_us"])
    values["ttft_after_headers"] = after_headers

    clamped = (clamp_connect & new) | (clamp_tls & has_tls) | clamp_send | clamp_wait
    return Derived(values_us=values, clamped=int(np.count_nonzero(clamped)))
