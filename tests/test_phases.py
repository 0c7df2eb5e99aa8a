"""Phase derivation from libcurl-style marks: new and reused connections, clamps, open loop."""

import numpy as np

from netbench.phases import MISSING, PHASE_NAMES, derive, empty_records


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
        tcp_rtt_us=[40],
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
    assert set(values) | {"itl", "token_lag"} == set(PHASE_NAMES)
    assert all(isinstance(v, np.ndarray) and len(v) == 1 for v in values.values())
