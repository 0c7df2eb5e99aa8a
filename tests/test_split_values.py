"""The network-vs-server split of `phases.derive`, value by value: which RTT each connection's
evidence gives, when a batch's path counts as jittering and what that costs in uncertainty,
retransmission waits, the clamps, and what has no split. Every input is distinct, so a field
read in place of another shows; the truth against a real delay is tests/test_split_truth.py."""

from __future__ import annotations

import numpy as np
import pytest

from netbench.phases import JITTER_MIN_US, MISSING, derive, empty_records

SEND_US = 10
PRETRANSFER_US = 1_000
SPLIT = ("rtt", "retransmit_wait", "server", "network", "split_uncertainty")


def _requests(*requests: dict) -> dict[str, list[int]]:
    """The split of each request: a reused connection unless `new_connection`, `wait` µs between
    the request sent and the first byte, the response 300 µs long (`total` overrides), and the
    TCP_INFO columns given; libcurl's marks written as a successful transfer has them."""
    records = empty_records(len(requests))
    for i, given in enumerate(requests):
        fields = dict(given)
        wait = fields.pop("wait", 5_000)
        new = fields.pop("new_connection", False)
        connect_us = fields.pop("connect", 100)
        posttransfer = PRETRANSFER_US + SEND_US
        records[i]["new_connection"] = new
        records[i]["namelookup_mark_us"] = 20 if new else 0
        records[i]["connect_mark_us"] = 20 + connect_us if new else 0
        records[i]["appconnect_mark_us"] = 0
        records[i]["pretransfer_mark_us"] = PRETRANSFER_US
        records[i]["posttransfer_mark_us"] = posttransfer
        records[i]["starttransfer_mark_us"] = posttransfer + wait
        records[i]["total_mark_us"] = fields.pop("total", posttransfer + wait + 300)
        for name, value in fields.items():
            records[i][name] = value
    values = derive(records).values_us
    return {name: values[name].tolist() for name in SPLIT}


def _one(**request: int) -> dict[str, int]:
    return {name: column[0] for name, column in _requests(request).items()}


def test_a_reused_connection_takes_its_floor_and_the_rest_of_wait_is_server():
    assert _one(tcp_min_rtt_us=40, tcp_srtt_before_us=90) == {
        "rtt": 40, "retransmit_wait": MISSING, "server": 5_000 - 40, "network": SEND_US + 40, "split_uncertainty": 0,
    }  # fmt: skip


def test_a_new_connection_takes_its_handshake_and_counts_every_network_phase():
    split = _one(new_connection=True, handshake_rtt_us=130, tcp_min_rtt_us=60, connect=170)
    assert split == {"rtt": 130, "retransmit_wait": MISSING, "server": 5_000 - 130,
                     "network": 20 + 170 + SEND_US + 130, "split_uncertainty": 0}  # fmt: skip


def test_without_a_handshake_sample_a_new_connection_takes_its_connect_time():
    assert _one(new_connection=True, handshake_rtt_us=-1, tcp_min_rtt_us=60, connect=170)["rtt"] == 170


def test_after_a_retransmitted_syn_the_floor_replaces_the_millisecond_handshake_sample():
    retried = {"new_connection": True, "handshake_rtt_us": 3_000, "tcp_min_rtt_us": 1_234, "connect": 1_003_100}
    assert _one(**retried, syn_retries=1)["rtt"] == 1_234
    assert _one(**retried, syn_retries=0)["rtt"] == 3_000
    assert _one(**{**retried, "tcp_min_rtt_us": -1}, syn_retries=2)["rtt"] == 3_000  # no floor: the sample is all there is


def test_zero_is_a_measured_value_and_only_missing_is_unknown():
    """MISSING (-1) marks what was not measured; a 0 is a reading like any other."""
    assert _one(tcp_min_rtt_us=0, handshake_rtt_us=300) == {
        "rtt": 0, "retransmit_wait": MISSING, "server": 5_000, "network": SEND_US, "split_uncertainty": 0,
    }  # fmt: skip
    assert _one(new_connection=True, handshake_rtt_us=0, connect=170)["rtt"] == 0
    assert _one(new_connection=True, handshake_rtt_us=3_000, tcp_min_rtt_us=0, syn_retries=1)["rtt"] == 0
    # nothing to wait for: the whole wait is the round trip, none of it server (and what the
    # clamp took is uncertain)
    assert _one(tcp_min_rtt_us=40, wait=0) == {
        "rtt": 40, "retransmit_wait": MISSING, "server": 0, "network": SEND_US + 40, "split_uncertainty": 40,
    }  # fmt: skip


def test_no_rtt_no_split():
    assert _one(tcp_min_rtt_us=-1, handshake_rtt_us=-1) == dict.fromkeys(SPLIT, MISSING)


def test_a_steady_path_keeps_the_floor_even_when_one_handshake_was_slow():
    steady = _requests(
        {"handshake_rtt_us": 1_100, "tcp_min_rtt_us": 1_000, "tcp_srtt_before_us": 1_050},  # within the threshold
        {"handshake_rtt_us": 1_300, "tcp_min_rtt_us": 1_000, "tcp_srtt_before_us": -1},  # srtt unknown, gap small
        # a handshake slowed by a busy host: the smoothed RTT settled back near the floor
        {"handshake_rtt_us": 3_000, "tcp_min_rtt_us": 1_000, "tcp_srtt_before_us": 1_000 + JITTER_MIN_US},
        # exactly at the threshold is not above it
        {"handshake_rtt_us": 1_000 + JITTER_MIN_US, "tcp_min_rtt_us": 1_000, "tcp_srtt_before_us": 9_000},
    )
    assert steady["rtt"] == [1_000] * 4 and steady["split_uncertainty"] == [0] * 4
    assert steady["server"] == [5_000 - 1_000] * 4


def test_the_threshold_grows_with_a_long_path():
    """On a 20 ms path 5 % of the floor (1 ms) is the threshold, not JITTER_MIN_US."""
    long_path = {"tcp_min_rtt_us": 20_000, "tcp_srtt_before_us": 30_000, "wait": 50_000}
    assert _one(**long_path, handshake_rtt_us=20_800)["split_uncertainty"] == 0
    assert _one(**long_path, handshake_rtt_us=21_100)["split_uncertainty"] == 2 * 1_100


def test_a_jittering_path_uses_each_handshake_within_its_floor_and_srtt_and_says_how_uncertain():
    jittering = _requests(
        # the evidence: a handshake 2 ms above the floor, the smoothed RTT settled above it too
        {"handshake_rtt_us": 3_000, "tcp_min_rtt_us": 1_000, "tcp_srtt_before_us": 2_500},
        # the handshake within [floor, srtt]: taken as it is
        {"handshake_rtt_us": 1_400, "tcp_min_rtt_us": 1_000, "tcp_srtt_before_us": 1_600},
        # srtt at the floor: the handshake is held to it
        {"handshake_rtt_us": 1_700, "tcp_min_rtt_us": 1_000, "tcp_srtt_before_us": 1_000},
        # srtt below the floor (a stale reading): not a bound; the handshake is kept
        {"handshake_rtt_us": 1_800, "tcp_min_rtt_us": 1_000, "tcp_srtt_before_us": 900},
        # srtt unknown: the handshake
        {"handshake_rtt_us": 1_900, "tcp_min_rtt_us": 1_000, "tcp_srtt_before_us": -1},
        # no handshake sample: the floor, and no jitter of its own to doubt
        {"handshake_rtt_us": -1, "tcp_min_rtt_us": 1_100, "tcp_srtt_before_us": 2_000},
        # a new connection measures its own handshake: nothing to doubt either
        {"new_connection": True, "handshake_rtt_us": 2_200, "tcp_min_rtt_us": 1_000, "connect": 2_300},
        # a zero srtt and floor bound the handshake to 0
        {"handshake_rtt_us": 700, "tcp_min_rtt_us": 0, "tcp_srtt_before_us": 0},
        # a zero handshake is a sample: the path's jitter is doubted here too
        {"handshake_rtt_us": 0, "tcp_min_rtt_us": 0, "tcp_srtt_before_us": -1},
    )
    assert jittering["rtt"] == [2_500, 1_400, 1_000, 1_800, 1_900, 1_100, 2_200, 0, 0]
    path_jitter_us = 3_000 - 1_000
    assert jittering["split_uncertainty"] == [2 * path_jitter_us] * 5 + [0, 0] + [2 * path_jitter_us] * 2
    assert jittering["server"] == [5_000 - rtt for rtt in jittering["rtt"]]


def test_a_handshake_far_above_a_zero_floor_with_srtt_at_zero_is_no_jitter():
    """srtt 0 is a reading (not unknown): at the floor, so the path has not settled above it."""
    assert _one(handshake_rtt_us=3_000, tcp_min_rtt_us=0, tcp_srtt_before_us=0)["split_uncertainty"] == 0
    assert _one(handshake_rtt_us=3_000, tcp_min_rtt_us=0, tcp_srtt_before_us=-1)["split_uncertainty"] == 2 * 3_000


@pytest.mark.parametrize(
    ("retransmits", "rto_us", "retransmit_wait"),
    [
        (1, 1_000, 1_000),
        (2, 1_000, 1_000 + 2_000),  # each timeout twice the one before
        (3, 600, 600 * 7),
        (3, 2_000, 5_000 - 100),  # at most what wait leaves after the RTT
        (2, -1, 5_000 - 100),  # timeout unknown: all that is left
        (2, 0, 0),
    ],
)
def test_retransmissions_wait_a_timeout_each_and_that_is_network(retransmits, rto_us, retransmit_wait):
    split = _one(tcp_min_rtt_us=100, retransmits=retransmits, tcp_rto_us=rto_us)
    assert split == {
        "rtt": 100, "retransmit_wait": retransmit_wait, "server": 5_000 - 100 - retransmit_wait,
        "network": SEND_US + 100 + retransmit_wait, "split_uncertainty": retransmit_wait,
    }  # fmt: skip


def test_a_retransmission_wait_is_bounded_by_what_the_round_trip_leaves():
    assert _one(tcp_min_rtt_us=0, retransmits=1, tcp_rto_us=-1)["retransmit_wait"] == 5_000  # all of wait
    assert _one(tcp_min_rtt_us=6_000, retransmits=1, tcp_rto_us=200)["retransmit_wait"] == 0  # nothing left


def test_retransmissions_count_sixteen_doublings_at_most():
    long_wait = {"tcp_min_rtt_us": 100, "tcp_rto_us": 1, "wait": 10_000_000}
    assert _one(**long_wait, retransmits=16)["retransmit_wait"] == (1 << 16) - 1
    assert _one(**long_wait, retransmits=40)["retransmit_wait"] == (1 << 16) - 1
    assert _one(**long_wait, retransmits=-1)["retransmit_wait"] == MISSING  # unknown: none counted
    assert _one(**long_wait, retransmits=0)["retransmit_wait"] == MISSING


def test_jitter_and_retransmissions_both_count_in_the_uncertainty():
    both = _requests(
        {"handshake_rtt_us": 3_000, "tcp_min_rtt_us": 1_000, "tcp_srtt_before_us": 2_500, "retransmits": 1, "tcp_rto_us": 400},
    )
    assert both["rtt"] == [2_500] and both["retransmit_wait"] == [400]
    assert both["split_uncertainty"] == [2 * 2_000 + 400] and both["server"] == [5_000 - 2_500 - 400]


def test_a_round_trip_longer_than_the_wait_clamps_the_server_at_zero_and_the_network_at_e2e():
    split = _one(tcp_min_rtt_us=8_000, wait=5_000, total=PRETRANSFER_US + SEND_US + 5_000)
    e2e = PRETRANSFER_US + SEND_US + 5_000
    assert split == {"rtt": 8_000, "retransmit_wait": MISSING, "server": 0, "network": e2e, "split_uncertainty": 3_000}
    jittering = _requests(
        {"handshake_rtt_us": 3_000, "tcp_min_rtt_us": 1_000, "tcp_srtt_before_us": 2_500, "wait": 2_000},
    )
    assert jittering["server"] == [0] and jittering["split_uncertainty"] == [2 * 2_000 + 500]
    assert _one(tcp_min_rtt_us=50, wait=0, total=0)["network"] == 0  # never above e2e, even at 0


def test_a_lost_response_segment_makes_the_whole_server_part_uncertain():
    assert _one(tcp_min_rtt_us=100, ooo_packets=1)["split_uncertainty"] == 5_000 - 100
    assert _one(tcp_min_rtt_us=100, ooo_packets=0)["split_uncertainty"] == 0
    lost_and_retransmitted = _one(tcp_min_rtt_us=100, ooo_packets=2, retransmits=1, tcp_rto_us=1_000)
    assert lost_and_retransmitted["server"] == lost_and_retransmitted["split_uncertainty"] == 5_000 - 100 - 1_000


def test_the_split_columns_are_integers_with_missing_where_no_split():
    records = empty_records(2)
    records["pretransfer_mark_us"], records["starttransfer_mark_us"], records["total_mark_us"] = 10, 500, 800
    records["tcp_min_rtt_us"] = [40, -1]
    values = derive(records).values_us
    for name in SPLIT:
        assert values[name].dtype == np.int64, name
        assert values[name][1] == MISSING, name
