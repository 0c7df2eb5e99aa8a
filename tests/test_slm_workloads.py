"""Workloads against llama.cpp's own server with SmolLM2 (a real BPE tokenizer): prompts built to
--input-tokens are exactly that long in the server's usage, request by request (completions sized
through llama.cpp's /tokenize, chat through the usage of probe requests, its chat template
included), --output-tokens answers are exactly that long (ignore_eos), and the server's /metrics
counters moved by exactly that."""

from __future__ import annotations

import csv
import json
import urllib.request
from pathlib import Path

import pytest

from tests.cli import netbench
from tests.servers.slm import SlmServer
from tests.test_slm import scrape_counters

pytestmark = [pytest.mark.integration, pytest.mark.slm]

N = 8


def tokenize(base_url: str, text: str) -> int:
    """The server's own count of a completions prompt (BOS and specials as completions add them)."""
    body = json.dumps({"content": text, "add_special": True}).encode()
    request = urllib.request.Request(f"{base_url}/tokenize", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return len(json.load(response)["tokens"])


@pytest.mark.parametrize(("mode", "prompt_tokens", "method"), [("completions", 64, "llama.cpp /tokenize"),
                                                               ("chat", 96, "usage.prompt_tokens of probe requests")])  # fmt: skip
def test_prompt_and_output_lengths_as_the_llama_server_counts_them(slm_server: SlmServer, tmp_path: Path, mode, prompt_tokens, method):
    output_tokens = 24
    before = scrape_counters(slm_server.base_url)
    raw = tmp_path / "raw.csv"
    result = netbench("run", "--url", slm_server.openai_url, "--mode", mode, "-c", "2", "-n", str(N),
                      "--input-tokens", str(prompt_tokens), "--output-tokens", str(output_tokens),
                      "--json", "--no-progress", "--raw", str(raw))  # fmt: skip
    after = scrape_counters(slm_server.base_url)
    assert result.code == 0, result.stdout + result.stderr
    summary = result.json()
    assert summary["ok"] == N and any(method in note for note in summary["notes"]), summary["notes"]
    with open(raw, newline="") as handle:
        records = list(csv.DictReader(handle))
    assert [int(r["usage_prompt_tokens"]) for r in records] == [prompt_tokens] * N
    assert [int(r["tokens"]) for r in records] == [output_tokens] * N
    assert summary["tokens"]["prompt_mismatch"] == summary["tokens"]["short_outputs"] == 0
    moved = {name: after[name] - before.get(name, 0.0) for name in after}
    probes = moved["llamacpp:tokens_predicted_total"] - N * output_tokens  # one-token probe completions
    if mode == "completions":
        # exactly the N answers and the probe of ignore_eos (the prompts were sized through /tokenize) ...
        assert probes == 1
        # ... which processed (or took from a slot's cache) exactly the prompts and the probe's ("hello")
        seen = moved["llamacpp:prompt_tokens_total"] + moved["llamacpp:prompt_tokens_cached_total"]
        assert seen == N * prompt_tokens + tokenize(slm_server.base_url, "hello")
    else:
        # sized by the usage of probe completions: a few, each of one token, besides the answers
        assert 3 <= probes <= 8
