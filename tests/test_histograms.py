"""Per-phase histograms: bulk recording, overflow, merging equal to one histogram, unknown
phases refused, and the statistics equal to hdrh's own."""

import numpy as np
import pytest

from netbench.histograms import HIGHEST_US, PERCENTILES, BucketView, PhaseHistograms, UnknownPhaseError


def test_merged_worker_histograms_equal_one_histogram_of_all_values():
    rng = np.random.default_rng(3)
    parts = [rng.lognormal(8, 1.2, size=5000).astype(np.int64) for _ in range(4)]
    whole = PhaseHistograms()
    whole.record_many("e2e", np.concatenate(parts))
    merged = PhaseHistograms()
    for part in parts:
        worker = PhaseHistograms()
        worker.record_many("e2e", part)
        merged.add_encoded(worker.encode())  # what crosses the process boundary
    for q in (*PERCENTILES, 99.9, 100.0):
        assert merged.histograms["e2e"].get_value_at_percentile(q) == whole.histograms["e2e"].get_value_at_percentile(q)
    assert merged.stats("e2e") == whole.stats("e2e")
    assert merged.stats("e2e").count == 20000


def test_bulk_recording_matches_one_value_at_a_time():
    values = np.array([1, 5, 5, 5, 1000, 123456, 0], dtype=np.int64)
    bulk = PhaseHistograms()
    bulk.record_many("wait", values)
    single = PhaseHistograms()
    for v in values.tolist():
        single.histograms["wait"].record_value(v)
    assert bulk.stats("wait") == PhaseHistograms.decode(single.encode()).stats("wait")


def test_missing_values_are_skipped_and_too_large_ones_counted_as_overflow():
    histograms = PhaseHistograms()
    histograms.record_many("e2e", np.array([-1, -1, 10, HIGHEST_US * 2], dtype=np.int64))
    assert histograms.stats("e2e").count == 1
    assert histograms.overflow["e2e"] == 1
    roundtrip = PhaseHistograms.decode(histograms.encode())
    assert roundtrip.overflow["e2e"] == 1
    assert roundtrip.stats("ttft") is None


def test_stats_and_the_bucket_view_equal_hdrh():
    rng = np.random.default_rng(11)
    for values in (
        rng.lognormal(9, 2, size=20000).astype(np.int64),
        np.array([0, 1, 2, 2047, 2048, 2049, 4095, 10**9], dtype=np.int64),
        np.array([7], dtype=np.int64),
    ):
        histograms = PhaseHistograms()
        histograms.record_many("e2e", values)
        histogram = histograms.histograms["e2e"]
        stats = histograms.stats("e2e")
        assert (stats.p50_us, stats.p95_us, stats.p99_us) == tuple(histogram.get_value_at_percentile(q) for q in PERCENTILES)
        assert (stats.p90_us, stats.p999_us) == (histogram.get_value_at_percentile(90), histogram.get_value_at_percentile(99.9))
        assert stats.max_us == histogram.get_max_value() and stats.count == values.size
        assert stats.mean_us == pytest.approx(histogram.get_mean_value(), rel=1e-9)
        view = BucketView.of(histogram)
        assert view.total == values.size
        # each bucket as hdrh's recorded iterator walks it
        walked = [(i.value_iterated_to, i.count_at_value_iterated_to) for i in histogram.get_recorded_iterator()]
        assert list(zip(view.highest_us.tolist(), view.counts.tolist())) == walked
        xs, shares = view.cdf_ms()
        assert shares[-1] == 1.0 and np.all(np.diff(xs) > 0)


def test_unknown_phase_names_are_refused_not_dropped():
    histograms = PhaseHistograms()
    with pytest.raises(UnknownPhaseError, match="unknown phase 'e2e_typo'"):
        histograms.record_many("e2e_typo", np.array([1]))
    other = PhaseHistograms()
    other.record_many("e2e", np.array([5, 6]))
    encoded = other.encode()
    encoded["histograms"]["from_the_future"] = encoded["histograms"]["e2e"]
    with pytest.raises(UnknownPhaseError, match="from_the_future"):
        PhaseHistograms.decode(encoded)


def test_adding_histograms_equals_adding_their_encodings():
    rng = np.random.default_rng(4)
    parts = []
    for _ in range(3):
        part = PhaseHistograms()
        part.record_many("e2e", rng.lognormal(8, 1, 1000).astype(np.int64))
        part.record_many("ttft", np.array([HIGHEST_US * 2, 10]))
        parts.append(part)
    added, decoded = PhaseHistograms(), PhaseHistograms()
    for part in parts:
        added.add(part)
        decoded.add_encoded(part.encode())
    assert added.encode() == decoded.encode()
    assert added.stats("e2e") == decoded.stats("e2e") and added.overflow["ttft"] == 3


def test_a_samples_quantile_in_the_histograms_resolution_is_the_histograms_percentile():
    from netbench.histograms import equivalent_us, rank

    values = np.random.default_rng(8).lognormal(11, 1.5, 5001).astype(np.int64)
    histograms = PhaseHistograms()
    histograms.record_many("e2e", values)
    ordered = np.sort(equivalent_us(values))
    for percentile in (1.0, 25.0, 50.0, 90.0, 99.0, 99.9, 100.0):
        assert ordered[rank(values.size, percentile) - 1] == histograms.histograms["e2e"].get_value_at_percentile(percentile)
    assert equivalent_us(np.array([0, 1, 2047, 2048, 2049])).tolist() == [0, 1, 2047, 2049, 2049]
