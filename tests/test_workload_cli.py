"""The workload and capacity flags on the command line, in process: short flags, bad lengths,
files and combinations fail before any load with one line naming the flag (exit 2)."""

from __future__ import annotations

import pytest

from netbench.cli import run, sweep
from tests.cli import invoke

# Nothing listens here: these command lines must fail before they send anything.
URL = "http://127.0.0.1:9"


def _flags(command) -> dict[str, tuple[str, ...]]:
    return {p.name: tuple(p.opts) for p in command.params}


def test_the_short_flags_users_expect():
    for command in (run, sweep):
        flags = _flags(command)
        assert flags["n"] == ("-n", "--n") and flags["model"] == ("-m", "--model") and flags["output_path"] == ("-o", "--output")
    assert _flags(run)["concurrency"] == ("-c", "--concurrency") and _flags(sweep)["levels"] == ("-c", "--concurrency")


@pytest.mark.parametrize(("args", "line"), [
    (("-c", "0"), "--concurrency must be an integer >= 1"),
    (("-n", "0"), "--n must be an integer >= 1"),
    (("--input-tokens", "12:4"), "--input-tokens '12:4': the range's low end is above its high end"),
    (("--output-tokens", "many"), "--output-tokens 'many': expected N, A:B"),
    (("--input-tokens", "64", "--dataset", "x.jsonl"), "--dataset and --input-tokens both choose the prompts"),
    (("--shared-prefix-tokens", "8"), "--shared-prefix-tokens needs --input-tokens"),
    (("--input-tokens", "32", "--shared-prefix-tokens", "32"), "leaves no token of its own"),
    (("--prompt", "@/nonexistent/prompt.txt"), "--prompt '@/nonexistent/prompt.txt': cannot read the prompt file"),
    (("--dataset", "/nonexistent/data.jsonl"), "--dataset '/nonexistent/data.jsonl': cannot read it"),
])  # fmt: skip
def test_bad_workloads_fail_before_the_load(args, line):
    result = invoke("run", "--url", URL, "--mode", "completions", *args)
    assert result.code == 2 and line in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_a_bad_dataset_fails_a_sweep_before_its_first_run(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"oops": 1}\n')
    result = invoke("sweep", "--url", URL, "--mode", "health,completions", "--dataset", str(bad))
    assert result.code == 2 and "record 2: no 'conversations', 'messages' or 'prompt'" in result.stderr
    assert result.stdout == ""  # not even the health runs ran


def test_capacity_needs_a_gate_and_chooses_its_own_rates():
    no_gate = invoke("capacity", "--url", URL)
    assert no_gate.code == 2 and "capacity needs at least one gate" in no_gate.stderr
    with_rate = invoke("capacity", "--url", URL, "--slo", "ttft.p95<1s", "--rate", "5")
    assert with_rate.code == 2 and "capacity chooses the rates itself" in with_rate.stderr
    bad_gate = invoke("capacity", "--url", URL, "--slo", "ttft<1s")
    assert bad_gate.code == 2 and "--slo" in bad_gate.stderr


def test_an_empty_sweep_of_lengths_is_refused():
    result = invoke("sweep", "--url", URL, "--input-tokens", " , ")
    assert result.code == 2 and "--input-tokens" in result.stderr
