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
