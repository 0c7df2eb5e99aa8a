"""Phase derivation from libcurl-style marks: new and reused connections, clamps, open loop."""

import numpy as np

from netbench.phases import MISSING, PHASE_NAMES, PHASES, derive, empty_events, empty_records, event_owner, select


def _records(**columns):
    count = len(next(iter(columns.values())))
    records = empty_records(count)
    for name, values in columns.items():
        records[name] = values
    return records


def test_new_connection_over_https_gives_every_network_phase():
    records = _records(
        new_connection=[True],
        queue_mark_us=[5],
        namelookup_mark_us=[20],
        connect_mark_us=[120],
        appconnect_mark_us=[900],
        pretransfer_mark_us=[950],
        posttransfer_mark_us=[980],
        starttransfer_mark_us=[5980],
        total_mark_us=[7000],
        first_token_mark_us=[6100],
        tokens=[5],
    )
    values = derive(records).values_us
    assert values["dns"][0] == 20
    assert values["connect"][0] == 100
    assert values["tls"][0] == 780
    assert values["send"][0] == 30
    assert values["wait"][0] == 5000
    assert values["ttfb"][0] == 5980
    assert values["ttft"][0] == 6100
    assert values["e2e"][0] == 7000
    assert values["queue"][0] == 5
    assert values["tpot"][0] == (7000 - 6100) // 4
    # the split: rtt from the handshake of the new connection
    assert values["rtt"][0] == 100
    assert values["server"][0] == 5000 - 100
    assert values["network"][0] == 20 + 100 + 780 + 30 + 100
    assert values["ttft_after_headers"][0] == 120


def test_reused_connection_has_no_dns_connect_tls_and_uses_the_kernel_rtt():
    records = _records(
        new_connection=[False],
        namelookup_mark_us=[0],
        connect_mark_us=[0],
        appconnect_mark_us=[0],
        pretransfer_mark_us=[10],
        posttransfer_mark_us=[12],
        starttransfer_mark_us=[412],
        total_mark_us=[500],
        tcp_min_rtt_us=[40],
    )
    values = derive(records).values_us
    for name in ("dns", "connect", "tls"):
        assert values[name][0] == MISSING, name
    assert values["rtt"][0] == 40
    assert values["server"][0] == 400 - 40
    assert values["network"][0] == 2 + 40


def test_plain_http_has_no_tls_phase_and_nothing_is_clamped():
    records = _records(
        new_connection=[True],
        namelookup_mark_us=[10],
        connect_mark_us=[60],
        appconnect_mark_us=[0],
        pretransfer_mark_us=[70],
        posttransfer_mark_us=[70],
        starttransfer_mark_us=[170],
        total_mark_us=[180],
    )
    derived = derive(records)
    assert derived.values_us["tls"][0] == MISSING
    assert derived.values_us["connect"][0] == 50
    assert derived.clamped == 0


def test_pretransfer_after_starttransfer_is_clamped_and_counted():
    # Under CPU starvation libcurl can report PRETRANSFER/POSTTRANSFER after STARTTRANSFER.
    records = _records(
        new_connection=[False, False],
        pretransfer_mark_us=[300, 10],
        posttransfer_mark_us=[320, 12],
        starttransfer_mark_us=[250, 100],
        total_mark_us=[400, 150],
    )
    derived = derive(records)
    assert derived.values_us["wait"].tolist() == [0, 88]
    assert derived.clamped == 1


def test_without_posttransfer_send_is_zero_and_wait_starts_at_pretransfer():
    records = _records(
        new_connection=[False],
        pretransfer_mark_us=[10],
        posttransfer_mark_us=[MISSING],
        starttransfer_mark_us=[110],
        total_mark_us=[120],
    )
    values = derive(records).values_us
    assert values["send"][0] == 0
    assert values["wait"][0] == 100


def test_open_loop_measures_from_the_intended_start():
    records = _records(
        new_connection=[False],
        intended_start_us=[1000],
        start_us=[1700],
        pretransfer_mark_us=[10],
        posttransfer_mark_us=[10],
        starttransfer_mark_us=[200],
        total_mark_us=[300],
    )
    closed = derive(records).values_us
    opened = derive(records, open_loop=True).values_us
    assert closed["lag"][0] == MISSING
    assert opened["lag"][0] == 700
    assert opened["e2e"][0] == 300 + 700
    assert opened["ttfb"][0] == 200 + 700


def test_one_token_has_no_tpot_and_every_phase_is_derived():
    records = _records(new_connection=[False], total_mark_us=[100], first_token_mark_us=[50], tokens=[1])
    values = derive(records).values_us
    assert values["tpot"][0] == MISSING
    assert set(values) == set(PHASE_NAMES)
    per_request = [p.name for p in PHASES if not p.per_token]
    assert all(isinstance(values[name], np.ndarray) and len(values[name]) == 1 for name in per_request)
    assert values["itl"].size == 0 and values["token_lag"].size == 0


def test_an_interim_response_moves_ttfb_and_wait_to_the_final_status_line():
    # STARTTRANSFER is the 103's first byte; the 200's status line came 50 ms later
    records = _records(
        new_connection=[False],
        pretransfer_mark_us=[10],
        posttransfer_mark_us=[12],
        starttransfer_mark_us=[400],
        final_status_mark_us=[50_400],
        first_token_mark_us=[60_000],
        total_mark_us=[70_000],
        tcp_min_rtt_us=[40],
    )
    values = derive(records).values_us
    assert values["ttfb"][0] == 50_400
    assert values["wait"][0] == 50_400 - 12
    assert values["server"][0] == 50_400 - 12 - 40
    assert values["ttft_after_headers"][0] == 60_000 - 50_400


def test_ttft_content_is_the_first_visible_token_and_follows_the_open_loop_correction():
    records = _records(
        new_connection=[False], intended_start_us=[0], start_us=[300], pretransfer_mark_us=[1],
        starttransfer_mark_us=[10], first_token_mark_us=[100], first_content_mark_us=[2100], total_mark_us=[3000],
    )  # fmt: skip
    assert derive(records).values_us["ttft_content"][0] == 2100
    opened = derive(records, open_loop=True).values_us
    assert (opened["ttft"][0], opened["ttft_content"][0]) == (400, 2400)


def test_tpot_counts_the_servers_tokens_not_the_events():
    # 4 events carried 10 tokens (usage): TPOT is per token
    records = _records(new_connection=[False], first_token_mark_us=[1000], total_mark_us=[10_000], tokens=[10],
                       events=[4], event_tokens=[10])  # fmt: skip
    assert derive(records).values_us["tpot"][0] == 9000 // 9


def _events(rows):
    events = empty_events(len(rows))
    for i, (mark, tokens, sent) in enumerate(rows):
        events[i] = (mark, tokens, sent)
    return events


def test_itl_is_per_token_each_gap_counted_once():
    # request 0: events of 1, 3, 2 tokens (continuous usage agrees with the total of 6);
    # request 1: 1 token per event. The first event of each request has no gap before it.
    records = _records(
        new_connection=[False, False], events=[3, 3], events_kept=[3, 3], event_tokens=[6, 3], tokens=[6, 3],
        transfer_start_ns=[0, 0],
    )  # fmt: skip
    events = _events([(1000, 1, -1), (1900, 3, -1), (2500, 2, -1), (500, 1, -1), (700, 1, -1), (1000, 1, -1)])
    itl = sorted(derive(records, events).values_us["itl"].tolist())
    assert itl == sorted([300, 300, 300, 300, 300, 200, 300])
    assert sum(itl) == (2500 - 1000) + (1000 - 500)


def test_itl_spreads_tokens_evenly_when_only_the_usage_total_is_known():
    # 3 events, 1 token each by the stream's counts, but usage says 5 tokens: the 4 later tokens
    # are taken to be spread over the 2 later events
    records = _records(new_connection=[False], events=[3], events_kept=[3], event_tokens=[3], tokens=[5],
                       transfer_start_ns=[0])  # fmt: skip
    events = _events([(100, 1, -1), (500, 1, -1), (1300, 1, -1)])
    assert derive(records, events).values_us["itl"].tolist() == [200, 400]


def test_token_lag_uses_the_absolute_anchor_and_skips_unstamped_events():
    records = _records(new_connection=[False], events=[3], events_kept=[3], event_tokens=[3], tokens=[3],
                       transfer_start_ns=[5_000_000_000])  # fmt: skip
    events = _events([(100, 1, 5_000_090_000), (200, 1, -1), (300, 1, 5_000_100_000)])
    assert derive(records, events).values_us["token_lag"].tolist() == [10, 200]


def test_select_keeps_each_records_events_with_it():
    records = _records(events_kept=[2, 0, 1, 3], worker=[0, 1, 2, 3])
    events = _events([(i, 1, -1) for i in range(6)])
    chosen, their_events = select(records, events, np.array([False, True, True, True]))
    assert chosen["worker"].tolist() == [1, 2, 3]
    assert their_events["mark_us"].tolist() == [2, 3, 4, 5]
    assert event_owner(chosen).tolist() == [1, 2, 2, 2]


def test_empty_records_mark_every_measurement_missing_and_count_nothing():
    records = empty_records(1)
    for name in records.dtype.names:
        measured = name.endswith(("_us", "_tokens")) and name != "event_tokens"
        unknown = measured or name in ("local_port", "syn_retries", "retransmits", "ooo_packets", "tls_handshake_bytes")
        assert records[name][0] == (MISSING if unknown else 0), name
    assert records["event_tokens"][0] == 0 and records["usage_prompt_tokens"][0] == MISSING
    assert len(empty_events()) == 0 and empty_events(2)["server_sent_ns"].tolist() == [MISSING, MISSING]


def test_every_phase_is_integer_microseconds():
    records = _records(new_connection=[True, False], namelookup_mark_us=[3, 0], connect_mark_us=[50, 0],
                       appconnect_mark_us=[0, 0], pretransfer_mark_us=[60, 5], posttransfer_mark_us=[61, 7],
                       starttransfer_mark_us=[500, 400], first_token_mark_us=[700, 600], total_mark_us=[1_001, 1_001],
                       tokens=[3, 3], events=[2, 1], events_kept=[2, 1], event_tokens=[3, 3], transfer_start_ns=[0, 0],
                       tcp_min_rtt_us=[30, 20], handshake_rtt_us=[40, -1])  # fmt: skip
    events = _events([(700, 1, 900_000), (1_001, 2, -1), (600, 3, 7)])
    values = derive(records, events, open_loop=True).values_us
    for name, column in values.items():
        assert column.dtype == np.int64, name
    without_events = derive(records, None).values_us
    assert without_events["itl"].dtype == without_events["token_lag"].dtype == np.int64
    assert values["tpot"].tolist() == [301 // 2, 401 // 2]  # floor division: whole µs
    assert values["itl"].tolist() == [301 // 2, 301 // 2]
    assert values["token_lag"].tolist() == [0, (600_000 - 7) // 1000]  # a stamp after the arrival is no negative lag


def test_zero_marks_are_values_and_missing_marks_are_not():
    """MISSING (-1) is what libcurl did not report; a 0 is a mark like any other (an IP address
    resolves in 0 µs; a zero posttransfer or final status line before the one it follows ran
    backwards and is clamped)."""
    records = _records(
        new_connection=[True, False, True],
        namelookup_mark_us=[0, 0, 0],
        connect_mark_us=[0, 0, 0],
        appconnect_mark_us=[1, 0, 0],
        pretransfer_mark_us=[5, 5, 5],
        posttransfer_mark_us=[0, 7, 8],
        starttransfer_mark_us=[300, 400, 500],
        final_status_mark_us=[MISSING, MISSING, 0],
        first_token_mark_us=[0, 450, MISSING],
        first_content_mark_us=[MISSING, 0, MISSING],
        total_mark_us=[900, 1_000, 1_100],
        tokens=[2, 1, 0],
        server_prompt_us=[MISSING, 0, 200],
        tls_handshake_bytes=[0, MISSING, MISSING],
        intended_start_us=[100, 10, 50],
        start_us=[100, 20, 60],
    )
    values = derive(records, open_loop=True).values_us
    assert values["dns"].tolist() == [0, MISSING, 0] and values["connect"].tolist() == [0, MISSING, 0]
    assert values["tls"].tolist() == [1, MISSING, MISSING]
    # a batch of one handshake reads as full, whatever its size
    assert values["tls_full"].tolist() == [1, MISSING, MISSING] and values["tls_resumed"].tolist() == [MISSING] * 3
    assert values["send"].tolist() == [0, 2, 3]
    assert values["ttfb_uncorrected"].tolist() == [300, 400, 0] and values["wait"].tolist() == [300, 393, 0]
    assert values["tpot"].tolist() == [900, MISSING, MISSING]
    assert values["lag"].tolist() == [0, 10, 10]
    assert values["ttft"].tolist() == [0, 460, MISSING] and values["ttft_content"].tolist() == [MISSING, 10, MISSING]
    assert values["ttft_beyond_server"].tolist() == [MISSING, 450, MISSING]  # from the actual send, both known
    assert derive(records).clamped == 2  # the posttransfer before pretransfer, the status line before posttransfer


def test_each_kind_of_clamp_counts_once():
    records = _records(
        new_connection=[True, True, False, False, True],
        namelookup_mark_us=[50, 10, 0, 0, 10],
        connect_mark_us=[40, 60, 0, 0, 60],  # connect before DNS
        appconnect_mark_us=[0, 55, 0, 0, 0],  # TLS before connect
        pretransfer_mark_us=[70, 80, 30, 5, 70],
        posttransfer_mark_us=[75, 85, 20, 6, 71],  # send backwards
        starttransfer_mark_us=[100, 120, 90, 4, 100],  # wait backwards
        total_mark_us=[200, 200, 200, 200, 200],
    )
    assert derive(records).clamped == 4
    assert derive(records[[1]]).clamped == 1 and derive(records[[0]]).clamped == 1


def test_tls_handshakes_are_told_apart_by_the_servers_flight():
    records = _records(
        new_connection=[True] * 6,
        namelookup_mark_us=[1] * 6,
        connect_mark_us=[10] * 6,
        appconnect_mark_us=[900, 400, 500, 600, 0, 300],
        pretransfer_mark_us=[1_000] * 6,
        starttransfer_mark_us=[2_000] * 6,
        total_mark_us=[3_000] * 6,
        # a certificate chain; a resumption (below 60 % of it); exactly 60 % is no resumption;
        # unknown; a small flight over plain HTTP, which has no TLS phase at all; a flight of 0 bytes
        tls_handshake_bytes=[4_000, 500, 2_400, MISSING, 100, 0],
    )
    values = derive(records).values_us
    assert values["tls"].tolist() == [890, 390, 490, 590, MISSING, 290]
    assert values["tls_full"].tolist() == [890, MISSING, 490, MISSING, MISSING, MISSING]
    assert values["tls_resumed"].tolist() == [MISSING, 390, MISSING, MISSING, MISSING, 290]


def test_tpot_needs_two_tokens_and_divides_by_the_gaps_between_them():
    records = _records(new_connection=[False] * 3, first_token_mark_us=[100, 100, 500], total_mark_us=[1_100, 100, 499],
                       tokens=[2, 2, 3])  # fmt: skip
    assert derive(records).values_us["tpot"].tolist() == [1_000, 0, 0]  # backwards marks: no negative TPOT


def test_closed_loop_has_no_uncorrected_phases():
    records = _records(new_connection=[False], pretransfer_mark_us=[1], starttransfer_mark_us=[10], total_mark_us=[20],
                       first_token_mark_us=[15], intended_start_us=[0], start_us=[5])  # fmt: skip
    closed = derive(records).values_us
    assert [closed[f"{name}_uncorrected"][0] for name in ("ttfb", "ttft", "e2e")] == [MISSING] * 3
    opened = derive(records, open_loop=True).values_us
    assert [opened[f"{name}_uncorrected"][0] for name in ("ttfb", "ttft", "e2e")] == [10, 15, 20]


def test_itl_starts_afresh_with_each_request_whatever_its_events():
    # request 0 kept 3 events, request 1 one, request 2 none (the last): no gap crosses a request
    records = _records(new_connection=[False] * 3, events=[3, 1, 0], events_kept=[3, 1, 0], event_tokens=[3, 1, 0],
                       tokens=[3, 1, 0], transfer_start_ns=[0, 0, 0])  # fmt: skip
    events = _events([(100, 1, -1), (100, 1, -1), (350, 1, -1), (9_000, 1, -1)])
    assert derive(records, events).values_us["itl"].tolist() == [0, 250]  # two events in one µs: a gap of 0


def test_one_event_still_gives_its_token_lag():
    records = _records(new_connection=[False], events=[1], events_kept=[1], event_tokens=[1], tokens=[1],
                       transfer_start_ns=[2_000_000])  # fmt: skip
    values = derive(records, _events([(1_234, 1, 2_500_000)])).values_us
    assert values["itl"].size == 0 and values["token_lag"].tolist() == [(2_000_000 + 1_234_000 - 2_500_000) // 1000]


def test_itl_spread_over_two_events_divides_by_the_tokens_after_the_first():
    # usage says 5 tokens over 2 events: the later event carried 4; by the stream's own counts 2
    records = _records(new_connection=[False, False], events=[2, 3], events_kept=[2, 3], event_tokens=[2, 3],
                       tokens=[5, 3], transfer_start_ns=[0, 0])  # fmt: skip
    events = _events([(0, 1, -1), (1_000, 1, -1), (0, 1, -1), (1_000, 1, -1), (3_000, 1, -1)])
    assert sorted(derive(records, events).values_us["itl"].tolist()) == [250, 1_000, 2_000]


def test_itl_spread_at_one_token_an_event_is_the_gap_itself():
    # usage 3, the stream's counts 2 (a token-less event counted as one): 1 token per later event
    records = _records(new_connection=[False], events=[3], events_kept=[3], event_tokens=[2], tokens=[3], transfer_start_ns=[0])
    events = _events([(0, 1, -1), (1_000, 1, -1), (3_001, 0, -1)])
    assert derive(records, events).values_us["itl"].tolist() == [1_000, 2_001]


def test_a_stamp_of_zero_is_a_stamp():
    records = _records(new_connection=[False], events=[1], events_kept=[1], event_tokens=[1], tokens=[1], transfer_start_ns=[0])
    assert derive(records, _events([(3, 1, 0)])).values_us["token_lag"].tolist() == [3]


def test_an_event_that_carried_no_token_is_never_divided_by():
    # continuous usage that did not grow: the event carried 0 tokens and gives no ITL sample
    records = _records(new_connection=[False], events=[3], events_kept=[3], event_tokens=[2], tokens=[2], transfer_start_ns=[0])
    events = _events([(0, 1, -1), (400, 0, -1), (1_000, 1, -1)])
    with np.errstate(all="raise"):
        assert derive(records, events).values_us["itl"].tolist() == [600]
