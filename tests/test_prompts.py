"""Prompt and output lengths (lengths.py), prompts built in a tokenizer (prompts.py), and the
compact request source a worker builds each body from (workloads.RequestSource). The
built-in server's tokenizer (netbench.sim.tokens) stands in for a server's /tokenize."""

from __future__ import annotations

import dataclasses
import json
import pickle
from collections import Counter

import pytest

from netbench.errors import InputError
from netbench.lengths import Lengths, LengthsError, parse_lengths
from netbench.prompts import VOCABULARY, FixedPrompt, SyntheticPrompts, calibrate, prompt_text
from netbench.runner import _verified
from netbench.server_probe import TokenCounter
from netbench.sim import tokens as sim_tokens
from netbench.spec import RunSpec, SpecError
from netbench.workloads import EXACT_OUTPUT_FIELDS, Request, RequestSource, build_request

URL = "http://127.0.0.1:8000"


def completion_count(text: str) -> int:
    return len(sim_tokens.completion_prompt_ids(text))


def chat_count(text: str) -> int:
    return len(sim_tokens.chat_prompt_ids([("user", text)]))


# --- lengths ---------------------------------------------------------------------------------


def test_lengths_parse_each_form():
    assert parse_lengths("256", "--input-tokens") == Lengths("fixed", 256, 256, 256.0, 0.0, 0)
    uniform = parse_lengths("128:512", "--input-tokens", seed=3)
    assert (uniform.kind, uniform.low, uniform.high, uniform.seed) == ("uniform", 128, 512, 3)
    normal = parse_lengths("256,32", "--input-tokens")
    assert (normal.kind, normal.mean, normal.sd) == ("normal", 256.0, 32.0)
    assert parse_lengths("64:64", "--x").kind == parse_lengths("64,0", "--x").kind == "fixed"


@pytest.mark.parametrize("text", ["", "0", "-5", "1.5", "abc", "10:5", "5:", "100,200", "1e3", "20000000"])
def test_bad_lengths_are_refused_naming_the_flag(text):
    with pytest.raises(LengthsError, match="--input-tokens"):
        parse_lengths(text, "--input-tokens")


def test_lengths_are_drawn_per_index_deterministically_within_bounds():
    uniform = parse_lengths("10:20", "--x", seed=1)
    draws = [uniform.length(i) for i in range(2000)]
    assert draws == [uniform.length(i) for i in range(2000)]  # the same in every process
    assert set(draws) == set(range(10, 21))  # both ends included, every value drawn
    assert draws != [parse_lengths("10:20", "--x", seed=2).length(i) for i in range(2000)]
    normal = parse_lengths("300,30", "--x")
    values = [normal.length(i) for i in range(4000)]
    assert 295 < sum(values) / len(values) < 305 and min(values) >= 1
    assert all(parse_lengths("7", "--x").length(i) == 7 for i in range(10))


def test_spec_validates_the_workload():
    with pytest.raises(SpecError, match="--output-tokens"):
        RunSpec(url=URL, mode="completions", output_tokens="0")
    with pytest.raises(SpecError, match="--dataset and --input-tokens"):
        RunSpec(url=URL, mode="completions", input_tokens="8", dataset="x.jsonl")
    with pytest.raises(SpecError, match="needs --input-tokens"):
        RunSpec(url=URL, mode="completions", shared_prefix_tokens=8)
    with pytest.raises(SpecError, match="leaves no token"):
        RunSpec(url=URL, mode="completions", input_tokens="16:64", shared_prefix_tokens=16)
    assert RunSpec(url=URL, mode="completions", duration_s=2.0).duration_s == 2.0  # a closed loop for a time


# --- calibration and built prompts -------------------------------------------------------------


@pytest.mark.parametrize(("count", "overhead"), [(completion_count, 1), (chat_count, 7)])
def test_calibration_finds_the_servers_overhead(count, overhead):
    calibration = calibrate(count, cheap=True, method="test")
    assert calibration.exact and calibration.overhead == overhead
    assert calibration.words == VOCABULARY[1:]


@pytest.mark.parametrize("text", ["64", "20:300", "200,40"])
@pytest.mark.parametrize("count", [completion_count, chat_count])
def test_every_prompt_has_exactly_its_length_in_the_tokenizer(text, count):
    lengths = parse_lengths(text, "--input-tokens", seed=5)
    prompts = SyntheticPrompts(calibrate(count, cheap=True), lengths, nonce=11)
    for index in range(60):
        prompt = prompts.prompt(index)
        expected = max(lengths.length(index), prompts.minimum_tokens)
        assert prompt.tokens == expected and count(prompt.text) == expected


def test_prompts_are_unique_from_their_first_block_and_across_runs():
    calibration = calibrate(completion_count, cheap=True)
    prompts = SyntheticPrompts(calibration, parse_lengths("64", "--x"), nonce=1)
    blocks = [tuple(sim_tokens.completion_prompt_ids(prompts.prompt(i).text)[:16]) for i in range(500)]
    assert len(set(blocks)) == 500  # no two requests share the prefix cache's first block
    other_run = dataclasses.replace(prompts, nonce=2)
    assert not set(blocks) & {tuple(sim_tokens.completion_prompt_ids(other_run.prompt(i).text)[:16]) for i in range(500)}


def test_a_shared_prefix_is_the_same_k_tokens_then_each_its_own():
    calibration = calibrate(completion_count, cheap=True)
    prompts = SyntheticPrompts(calibration, parse_lengths("100", "--x"), nonce=9, shared_prefix_tokens=40)
    ids = [sim_tokens.completion_prompt_ids(prompts.prompt(i).text) for i in range(50)]
    assert len({tuple(t[: 1 + 40]) for t in ids}) == 1  # BOS + the 40 shared tokens of the text
    assert len({tuple(t[: 1 + 40 + 3]) for t in ids}) == 50
    assert prompts.minimum_tokens == 1 + 40 + 1


def test_words_that_cost_two_tokens_are_left_out_or_the_length_is_approximate():
    def count(text: str) -> int:  # a tokenizer where every word of four letters costs two tokens
        return 1 + sum(2 if len(word) == 4 else 1 for word in text.split())

    cheap = calibrate(count, cheap=True)
    assert cheap.exact and cheap.words and all(len(w) < 4 for w in cheap.words)
    prompt = SyntheticPrompts(cheap, parse_lengths("90", "--x"), nonce=3).prompt(0)
    assert count(prompt.text) == 90 == prompt.tokens
    costly = calibrate(count, cheap=False)  # one count per word would be a completion each
    assert not costly.exact and costly.tokens_per_word > 1
    approximate = SyntheticPrompts(costly, parse_lengths("400", "--x"), nonce=3).prompt(0)
    assert approximate.tokens == -1 and abs(count(approximate.text) - 400) < 40


def test_verification_corrects_a_misjudged_overhead_once():
    calibration = calibrate(completion_count, cheap=True)
    wrong = SyntheticPrompts(calibration.shifted(-2), parse_lengths("30:80", "--x"), nonce=4)
    counter = TokenCounter("test", completion_count, None, cheap=True)
    fixed, off = _verified(wrong, counter)
    assert off is None and fixed.calibration.overhead == 1
    assert completion_count(fixed.prompt(7).text) == fixed.prompt(7).tokens


def test_a_fixed_prompt_gets_a_unique_tag_unless_turned_off():
    tagged = FixedPrompt("Tell me a story.", nonce=5)
    texts = {tagged.prompt(i).text for i in range(200)}
    assert len(texts) == 200 and all(t.endswith("\nTell me a story.") for t in texts)
    assert FixedPrompt("Tell me a story.", 5, unique=False).prompt(3).text == "Tell me a story."


def test_prompt_text_reads_a_file(tmp_path):
    path = tmp_path / "prompt.txt"
    path.write_text("Summarise this.\nLine two.")
    assert prompt_text(f"@{path}") == "Summarise this.\nLine two."
    assert prompt_text("plain text") == "plain text"
    with pytest.raises(InputError, match="cannot read"):
        prompt_text(f"@{tmp_path / 'missing.txt'}")
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(InputError, match="empty"):
        prompt_text(f"@{tmp_path / 'empty.txt'}")


# --- the request source ------------------------------------------------------------------------


def _source(mode: str = "completions", **spec_fields: object) -> RequestSource:
    spec = RunSpec(url=URL, mode=mode, model="m", **spec_fields)  # type: ignore[arg-type]
    prompts = SyntheticPrompts(calibrate(completion_count, cheap=True), parse_lengths("20:40", "--x"), nonce=1)
    outputs = parse_lengths(spec.output_tokens, "--output-tokens", 1) if spec.output_tokens else None
    return RequestSource(build_request(spec), spec, prompts, outputs, EXACT_OUTPUT_FIELDS if outputs else ())


def test_each_request_has_its_own_body_lengths_and_exact_output_fields():
    source = _source(output_tokens="5:9")
    requests = [source.request(i) for i in range(40)]
    bodies = [json.loads(r.body) for r in requests]
    assert len({r.body for r in requests}) == 40
    for request, body in zip(requests, bodies):
        assert completion_count(body["prompt"]) == request.prompt_tokens
        assert body["max_tokens"] == body["min_tokens"] == request.output_tokens and body["ignore_eos"] is True
        assert 5 <= request.output_tokens <= 9
    assert Counter(r.output_tokens for r in requests).keys() == set(range(5, 10))
    plain = json.loads(_source(max_tokens=7).request(0).body)
    assert plain["max_tokens"] == 7 and "ignore_eos" not in plain and "min_tokens" not in plain


def test_chat_requests_send_the_prompt_as_a_user_message():
    body = json.loads(_source("chat").request(3).body)
    assert [m["role"] for m in body["messages"]] == ["user"] and "prompt" not in body


def test_the_source_is_compact_whatever_n_is():
    """A worker gets the source, not its bodies: its size does not grow with n."""
    small, large = (pickle.dumps(_source(n=n)) for n in (10, 10_000_000))
    assert abs(len(small) - len(large)) < 16 and len(large) < 8_000


def test_a_request_without_a_body_is_the_same_every_time():
    request = build_request(RunSpec(url=URL, mode="health"))
    source = RequestSource(request)
    assert source.request(0) is source.request(99) is request
    assert isinstance(request, Request) and request.prompt_tokens == request.output_tokens == -1


# --- what the server takes (server_probe) ----------------------------------------------------------


class FakeServer:
    """Answers server_probe's POSTs the way one kind of server would."""

    def __init__(self, kind: str, refuses: tuple[str, ...] = ()) -> None:
        self.kind, self.refuses, self.bodies = kind, refuses, []

    def __call__(self, spec, url: str, body):
        self.bodies.append((url, body))
        if url.endswith("/tokenize"):
            if self.kind == "vllm" and "model" in body:
                return 200, {"count": completion_count(body.get("prompt", "")), "tokens": []}
            if self.kind == "llama.cpp":
                return 200, {"tokens": [1] * len(body.get("content", "").split())} if "content" in body else {"tokens": []}
            return 404, {"detail": "Not Found"}
        if any(name in body for name in self.refuses):
            return 400, {"error": {"message": "unknown field"}}
        return 200, {"usage": {"prompt_tokens": completion_count(body.get("prompt", ""))}}


@pytest.mark.parametrize(("kind", "method", "cheap"), [("vllm", "vLLM /tokenize", True), ("llama.cpp", "llama.cpp /tokenize", True),
                                                       ("openai", "usage.prompt_tokens of probe requests", False)])  # fmt: skip
def test_the_cheapest_counter_the_server_answers(monkeypatch, kind, method, cheap):
    from netbench import server_probe

    monkeypatch.setattr(server_probe, "_post", FakeServer(kind))
    counter = server_probe.find_counter(RunSpec(url=URL, mode="completions", model="m"))
    assert counter is not None and (counter.method, counter.cheap) == (method, cheap)
    assert counter.count("a b c") == (3 if kind == "llama.cpp" else 4)


def test_fields_a_server_refuses_are_left_out_and_said(monkeypatch):
    from netbench import server_probe

    spec = RunSpec(url=URL, mode="completions", model="m")
    monkeypatch.setattr(server_probe, "_post", FakeServer("vllm"))
    assert server_probe.exact_output_fields(spec) == (EXACT_OUTPUT_FIELDS, None)
    monkeypatch.setattr(server_probe, "_post", FakeServer("llama.cpp", refuses=("min_tokens",)))
    fields, note = server_probe.exact_output_fields(spec)
    assert fields == ("ignore_eos",) and "refused min_tokens" in (note or "")
    strict = FakeServer("openai", refuses=EXACT_OUTPUT_FIELDS)
    monkeypatch.setattr(server_probe, "_post", strict)
    fields, note = server_probe.exact_output_fields(spec)
    assert fields == () and "refused ignore_eos and min_tokens" in (note or "")
    assert all(body["max_tokens"] == 1 and body["stream"] is False for _, body in strict.bodies)


@pytest.mark.parametrize("body", [b"<html><body>404 Not Found</body></html>", b"", b"[" * 100_000])
def test_a_probe_answer_that_is_not_json_reads_as_no_answer(monkeypatch, body):
    """A proxy's HTML 404 on /tokenize (or garbage, or JSON too deep to parse) is the status and no answer."""
    from netbench import server_probe
    from netbench.curl import Fetched

    monkeypatch.setattr(server_probe, "fetch", lambda spec, request: Fetched(404, body))
    assert server_probe._post(RunSpec(url=URL, mode="completions", model="m"), URL + "/tokenize", {"prompt": "x"}) == (404, None)
