"""Run files: version 2 keeps the records and their token events; version 1 files still read."""

from __future__ import annotations

import json

import numpy as np

from netbench.phases import RECORD_DTYPE, derive, select
from netbench.results import RunResult, _encode_array
from tests.synthetic_runs import make_run

#: the version-1 record layout, frozen here as it was written
V1_RECORD_DTYPE = np.dtype(
    [(name, np.int64) for name in (
        "intended_start_us", "start_us", "queue_mark_us", "namelookup_mark_us", "connect_mark_us",
        "appconnect_mark_us", "pretransfer_mark_us", "posttransfer_mark_us", "starttransfer_mark_us",
        "total_mark_us", "first_byte_mark_us", "first_event_mark_us", "first_token_mark_us",
        "last_token_mark_us", "done_mark_us", "tcp_rtt_us")]
    + [("tokens", np.int32), ("usage_completion_tokens", np.int32), ("http_status", np.int16),
       ("curl_error", np.int16), ("error_class", np.int8), ("new_connection", np.bool_), ("worker", np.int16)]
)  # fmt: skip


#: version-1 fields that carry another name now
RENAMED = {"tcp_rtt_us": "tcp_min_rtt_us"}


def test_version_2_round_trips_records_and_their_events(tmp_path):
    run = make_run("completions", 1, [20_000, 21_000, 22_000], ttft_us=[5_000, 6_000, 7_000])
    run.records["events_kept"] = [2, 0, 1]
    run.events = np.array([(5_000, 1, -1), (6_000, 2, -1), (7_000, 1, 123)], dtype=run.events.dtype)
    run.save(tmp_path / "run.json")
    loaded = RunResult.load(tmp_path / "run.json")
    assert json.loads((tmp_path / "run.json").read_text())["schema_version"] == 3
    assert loaded.records.dtype == RECORD_DTYPE and np.array_equal(loaded.records, run.records)
    assert np.array_equal(loaded.events, run.events)
    ok, events = select(loaded.records, loaded.events, np.array([True, False, True]))
    assert events["mark_us"].tolist() == [5_000, 6_000, 7_000]


def test_version_1_records_are_read_field_by_field(tmp_path):
    run = make_run("completions", 1, [20_000, 30_000], ttft_us=[5_000, 6_000], tokens=4)
    old = np.zeros(2, dtype=V1_RECORD_DTYPE)
    for name in V1_RECORD_DTYPE.names:
        old[name] = run.records[RENAMED.get(name, name)]
    data = run.to_dict()
    data["schema_version"] = 1
    data["records"] = _encode_array(old)
    del data["events"]
    (tmp_path / "v1.json").write_text(json.dumps(data))
    loaded = RunResult.load(tmp_path / "v1.json")
    assert loaded.records.dtype == RECORD_DTYPE
    for name in V1_RECORD_DTYPE.names:
        assert loaded.records[RENAMED.get(name, name)].tolist() == run.records[RENAMED.get(name, name)].tolist(), name
    # version 1 counted token events as tokens; it kept no events and knew no interim responses
    assert loaded.records["events"].tolist() == [4, 4] and loaded.records["events_kept"].tolist() == [0, 0]
    assert loaded.records["final_status_mark_us"].tolist() == [-1, -1]
    assert len(loaded.events) == 0
    assert derive(loaded.records).values_us["ttft"].tolist() == [5_000, 6_000]
