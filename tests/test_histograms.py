"""Per-phase histograms: bulk recording, overflow, and merging equal to one histogram."""

import numpy as np

from netbench.histograms import HIGHEST_US, PERCENTILES, PhaseHistograms


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


def test_vectorised_percentiles_and_mean_equal_hdrh():
    from netbench.histograms import mean_us, percentiles_us

    rng = np.random.default_rng(11)
    for values in (
        rng.lognormal(9, 2, size=20000).astype(np.int64),
        np.array([0, 1, 2, 2047, 2048, 2049, 4095, 10**9], dtype=np.int64),
        np.array([7], dtype=np.int64),
    ):
        histograms = PhaseHistograms()
        histograms.record_many("e2e", values)
        histogram = histograms.histograms["e2e"]
        quantiles = (0.0, 1.0, 50.0, 90.0, 95.0, 99.0, 99.9, 100.0)
        assert percentiles_us(histogram, quantiles) == [histogram.get_value_at_percentile(q) for q in quantiles]
        assert abs(mean_us(histogram) - histogram.get_mean_value()) < 1e-6 * max(histogram.get_mean_value(), 1)
