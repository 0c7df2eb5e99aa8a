"""Truth tests of the workloads against the built-in server: what it counted in its /metrics
(vLLM's prompt and generation token totals, the per-request token histograms, prefix-cache
hits) is exactly what netbench was asked to send, request by request; and `netbench
capacity` finds the knee of a slow server within one step of its configured capacity
(`netbench.sim.capacity`)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from netbench.sim import tokens as sim_tokens
from netbench.sim.capacity import capacity as sim_capacity
from netbench.sim.config import SimConfig
from tests.cli import netbench
from tests.host_noise import remeasured, within
from tests.servers.sim import start_sim_server

pytestmark = pytest.mark.integration

#: the one-token probe netbench sends before a run with --output-tokens ("hello": two pieces)
PROBE_OUTPUT_TOKENS = 1


def probe_prompt_tokens(mode: str) -> int:
    return len(sim_tokens.chat_prompt_ids([("user", "hello")]) if mode == "chat" else sim_tokens.completion_prompt_ids("hello"))


@pytest.fixture(scope="module")
def eos_url() -> Iterator[str]:
    """A fast server whose model ends its answers early (3 tokens on average) unless asked not to."""
    with start_sim_server("--step-ms", "1", "--prefill-token-ms", "0.002", "--eos-mean-tokens", "3") as url:
        yield url


def scrape(url: str) -> dict[str, float]:
    """Every sample of /metrics by name and labels, parsed with prometheus_client's parser."""
    text = httpx.get(f"{url}/metrics").text
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            bucket = sample.labels.get("le")
            out[sample.name + (f"[{bucket}]" if bucket is not None else "")] = sample.value
    return out


def delta(before: dict[str, float], after: dict[str, float], name: str) -> float:
    return after[name] - before.get(name, 0.0)


def raw_records(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("mode", ["completions", "chat"])
def test_the_server_counts_exactly_the_lengths_asked_for(eos_url, tmp_path, mode):
    n, warmup, prompt, output = 16, 2, 100, 20
    before = scrape(eos_url)
    result = netbench("run", "--url", eos_url, "--mode", mode, "-c", "2", "-n", str(n), "--warmup", str(warmup),
                      "--input-tokens", str(prompt), "--output-tokens", str(output), "--json", "--no-progress",
                      "--raw", str(tmp_path / "raw.csv"))  # fmt: skip
    after = scrape(eos_url)
    assert result.code == 0, result.stderr
    sent = n + warmup
    assert delta(before, after, "vllm:prompt_tokens_total") == sent * prompt + probe_prompt_tokens(mode)
    assert delta(before, after, "vllm:generation_tokens_total") == sent * output + PROBE_OUTPUT_TOKENS
    # every request in the (50, 100] prompt bucket and the (10, 20] generation bucket: exactly 100 and 20
    for histogram, low, high in (("vllm:request_prompt_tokens", "50.0", "100.0"), ("vllm:request_generation_tokens", "10.0", "20.0")):
        in_bucket = delta(before, after, f"{histogram}_bucket[{high}]") - delta(before, after, f"{histogram}_bucket[{low}]")
        assert in_bucket == sent, histogram
    records = raw_records(tmp_path / "raw.csv")
    assert len(records) == n
    for r in records:
        assert int(r["usage_prompt_tokens"]) == int(r["requested_prompt_tokens"]) == prompt
        assert int(r["tokens"]) == int(r["requested_output_tokens"]) == output
    summary = result.json()
    assert summary["tokens"]["prompt_mismatch"] == summary["tokens"]["short_outputs"] == 0
    assert summary["tokens"]["prompt_tokens_mean"] == prompt and summary["tokens"]["output_tokens_mean"] == output
    assert summary["throughput"]["output_tokens_per_s"] == pytest.approx(n * output / summary["elapsed_s"], rel=1e-3)


def test_without_output_tokens_the_model_stops_early_and_that_is_reported(eos_url):
    """The control of the test above: this server ends answers after ~3 tokens unless told not to."""
    result = netbench("run", "--url", eos_url, "--mode", "completions", "-n", "16", "--max-tokens", "20", "--json", "--no-progress")
    assert result.code == 0, result.stderr
    tokens = result.json()["tokens"]
    assert tokens["short_outputs"] > 8 and tokens["output_tokens_mean"] < 15 and tokens["requested_output_tokens_mean"] == 20


def test_lengths_drawn_per_request_are_what_the_server_counted(eos_url, tmp_path):
    before = scrape(eos_url)
    result = netbench("run", "--url", eos_url, "--mode", "completions", "-c", "3", "-n", "30", "--input-tokens", "20:300",
                      "--output-tokens", "5:15", "--seed", "7", "--no-progress", "--raw", str(tmp_path / "raw.csv"))  # fmt: skip
    after = scrape(eos_url)
    assert result.code == 0, result.stderr
    records = raw_records(tmp_path / "raw.csv")
    asked_prompt = [int(r["requested_prompt_tokens"]) for r in records]
    asked_output = [int(r["requested_output_tokens"]) for r in records]
    assert len(set(asked_prompt)) > 20 and min(asked_prompt) >= 20 and max(asked_prompt) <= 300
    assert [int(r["usage_prompt_tokens"]) for r in records] == asked_prompt
    assert [int(r["tokens"]) for r in records] == asked_output
    assert delta(before, after, "vllm:prompt_tokens_total") == sum(asked_prompt) + probe_prompt_tokens("completions")
    assert delta(before, after, "vllm:generation_tokens_total") == sum(asked_output) + PROBE_OUTPUT_TOKENS
    assert delta(before, after, "vllm:request_prompt_tokens_count") == 30 + 1


def test_unique_prompts_miss_the_prefix_cache_and_shared_prefixes_hit_it(eos_url):
    hits = "vllm:prefix_cache_hits_total"

    def run_hits(*args: str) -> float:
        before = scrape(eos_url)
        result = netbench("run", "--url", eos_url, "--mode", "completions", "-n", "10", "--max-tokens", "2", "--no-progress", *args)
        assert result.code == 0, result.stderr
        return delta(before, scrape(eos_url), hits)

    assert run_hits("--input-tokens", "128") == 0
    # BOS and 64 shared tokens: 4 whole blocks of 16, hit by every request after the first
    assert run_hits("--input-tokens", "128", "--shared-prefix-tokens", "64") == 9 * 64
    words = " ".join(["the"] * 40)  # 41 tokens with BOS: two whole blocks before the last token
    assert run_hits("--prompt", words, "--no-unique-prefix") == 9 * 32
    assert run_hits("--prompt", words) == 0  # the unique tag in front: no block is shared


def test_a_prompt_file_is_sent_as_it_is(eos_url, tmp_path):
    text = "Summarise the text below.\n\nIt was a calm day on the sea and the fox ran home."
    (tmp_path / "prompt.txt").write_text(text)
    before = scrape(eos_url)
    result = netbench("run", "--url", eos_url, "--mode", "completions", "-n", "4", "--max-tokens", "1",
                      "--prompt", f"@{tmp_path / 'prompt.txt'}", "--no-unique-prefix", "--no-progress")  # fmt: skip
    assert result.code == 0, result.stderr
    assert delta(before, scrape(eos_url), "vllm:prompt_tokens_total") == 4 * len(sim_tokens.completion_prompt_ids(text))


def test_a_dataset_is_replayed_record_by_record(sim_url, tmp_path):
    records = [
        {"conversations": [{"from": "human", "value": "Name a colour."}, {"from": "gpt", "value": "Blue is one of them."}]},
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]},
        {"prompt": "Once upon a time", "max_tokens": 3},
    ]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records))
    prompts = [[("user", "Name a colour.")], [("system", "Be brief."), ("user", "Hi there")], [("user", "Once upon a time")]]
    # the tag: four words of at most four letters before the first message, four tokens
    expected_prompt = sum(len(sim_tokens.chat_prompt_ids(p)) + 4 for p in prompts)
    expected_output = len(sim_tokens.encode("Blue is one of them.")) + 9 + 3  # the reference, --max-tokens 9, the record's
    before = scrape(sim_url)
    result = netbench("run", "--url", sim_url, "--mode", "chat", "-n", "6", "--max-tokens", "9", "--dataset", str(path),
                      "--json", "--no-progress")  # fmt: skip
    after = scrape(sim_url)
    assert result.code == 0, result.stderr
    assert delta(before, after, "vllm:prompt_tokens_total") == 2 * expected_prompt  # each record twice
    assert delta(before, after, "vllm:generation_tokens_total") == 2 * expected_output
    assert result.json()["tokens"]["requested_output_tokens_mean"] == pytest.approx(2 * expected_output / 6)


def test_a_closed_loop_runs_for_its_duration(eos_url):
    before = scrape(eos_url)
    result = netbench("run", "--url", eos_url, "--mode", "completions", "-c", "2", "--duration", "1s", "--max-tokens", "4",
                      "--json", "--no-progress")  # fmt: skip
    after = scrape(eos_url)
    assert result.code == 0, result.stderr
    summary = result.json()
    assert summary["n"] == summary["ok"] == delta(before, after, "vllm:request_prompt_tokens_count") > 10
    assert summary["elapsed_s"] >= 1.0


def test_a_sweep_over_prompt_lengths_answers_per_length(eos_url, tmp_path):
    runs = tmp_path / "runs"
    result = netbench("sweep", "--url", eos_url, "--mode", "health,completions", "-c", "1", "-n", "8",
                      "--input-tokens", "16,256", "--output-tokens", "4", "-o", f"{runs}/", "--no-progress")  # fmt: skip
    assert result.code == 0, result.stderr
    assert sorted(p.name for p in runs.iterdir()) == ["completions-c1-in16.json", "completions-c1-in256.json", "health-c1.json"]
    report = tmp_path / "report.md"
    assert netbench("report", str(runs), "-o", str(report)).code == 0
    text = report.read_text()
    assert "### By prompt length" in text and "By prompt length, HTTP overhead next to TTFT" in text
    rows = [line for line in text.splitlines() if line.startswith(("| 16 | 16 |", "| 256 | 256 |"))]
    assert len(rows) == 2  # asked for and counted by the server: the same


@remeasured
def test_capacity_finds_the_knee_within_one_step(tmp_path):
    """A slow server (20 ms steps, 4 seats): 17.7 requests/s of 20 prompt and 10 output tokens.
    Constant arrivals: below capacity no request waits for a seat, above it the queue (and TTFT
    from the intended send time) grows 10 % of the step's length for every 10 % over."""
    config = SimConfig(step_ms=20, prefill_token_ms=0.1, decode_token_ms=0.5, max_num_seqs=4)
    configured = sim_capacity(config, 20, 10).requests_per_s
    resolution = 0.1
    args = ("--step-ms", "20", "--prefill-token-ms", "0.1", "--decode-token-ms", "0.5", "--max-num-seqs", "4")
    plot = tmp_path / "capacity.png"
    with start_sim_server(*args) as url:
        result = netbench("capacity", "--url", url, "--input-tokens", "20", "--output-tokens", "10", "--slo", "ttft.p95<200ms",
                          "--duration", "4s", "--arrival", "constant", "--max-concurrency", "16", "--resolution", str(resolution),
                          "--max-steps", "8", "--json", "--no-progress", "--plot", str(plot), timeout_s=400)  # fmt: skip
    assert result.code == 0, result.stderr
    found = result.json()
    # a client-bound step is netbench saying its own host fell behind (CI: a busy box): measure again
    within(found["limit"] != "client", found.get("note"))
    assert found["limit"] == "resolved"
    step = resolution * configured
    assert configured - step <= found["rate_rps"] <= configured + step
    assert found["failed_rps"] > configured - step and found["failed_rps"] - found["rate_rps"] <= resolution * found["failed_rps"] + 1e-9
    assert abs(found["saturated_rps"] - configured) <= step  # the throughput step: the server's own capacity
    kinds = [s["kind"] for s in found["steps"]]
    assert kinds[:2] == ["synchronous", "throughput"] and set(kinds[2:]) == {"rate"}
    assert plot.stat().st_size > 10_000
