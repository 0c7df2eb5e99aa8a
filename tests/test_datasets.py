"""`--dataset FILE`: the common JSONL forms, bad files refused with the record that is wrong,
sampling with --seed, and each request's prompt and output length from its record."""

from __future__ import annotations

import json

import pytest

from netbench.datasets import SAMPLE_MAX, DatasetPrompts, Entry, load_dataset, reference_tokens, sample
from netbench.errors import InputError

SHAREGPT = {"id": "a", "conversations": [
    {"from": "system", "value": "Be brief."},
    {"from": "human", "value": "Name a colour."},
    {"from": "gpt", "value": "Blue is a colour."},
    {"from": "human", "value": "Another?"},
]}  # fmt: skip
MESSAGES = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "image_url"}]},
                         {"role": "assistant", "content": "Hello there"}]}  # fmt: skip
PLAIN = {"prompt": "Once upon a time", "max_tokens": 12}


def write(tmp_path, lines, name="data.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return str(path)


def test_the_common_forms(tmp_path):
    entries = load_dataset(write(tmp_path, [SHAREGPT, "", MESSAGES, PLAIN]))
    assert entries == [
        Entry((("system", "Be brief."), ("user", "Name a colour.")), None, "Blue is a colour."),
        Entry((("user", "Hi"),), None, "Hello there"),
        Entry((("user", "Once upon a time"),), 12, None),
    ]
    assert entries[0].text == "Be brief.\n\nName a colour."


def test_a_json_array_is_read_too(tmp_path):
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps([SHAREGPT, PLAIN]))
    assert len(load_dataset(str(path))) == 2


def test_records_without_a_question_are_skipped(tmp_path):
    only_answer = {"conversations": [{"from": "gpt", "value": "hello"}]}
    entries = load_dataset(write(tmp_path, [only_answer, {"prompt": "  "}, PLAIN]))
    assert [e.output_tokens for e in entries] == [12]
    with pytest.raises(InputError, match="no record with a prompt"):
        load_dataset(write(tmp_path, [only_answer], "none.jsonl"))


@pytest.mark.parametrize(("line", "reason"), [
    ("{not json", "line 2 is not JSON"),
    ("[1, 2]", "record 2: expected a JSON object"),
    (json.dumps({"text": "hi"}), "record 2: no 'conversations', 'messages' or 'prompt'"),
    (json.dumps({"prompt": 5}), "'prompt' must be a string"),
    (json.dumps({"prompt": "hi", "max_tokens": 0}), "whole number >= 1"),
    (json.dumps({"prompt": "hi", "max_tokens": True}), "whole number >= 1"),
    (json.dumps({"messages": "hi"}), "a list of turns"),
    (json.dumps({"messages": [{"content": "x"}]}), "string 'role'"),
    (json.dumps({"conversations": [{"from": "human", "value": 3}]}), "'value' must be a string"),
])  # fmt: skip
def test_bad_records_are_bad_input_naming_the_record(tmp_path, line, reason):
    with pytest.raises(InputError, match=reason):
        load_dataset(write(tmp_path, [PLAIN, line]))


def test_an_unreadable_file_is_bad_input(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        load_dataset(str(tmp_path / "missing.jsonl"))


def test_sampling_is_seeded_without_replacement_and_bounded():
    entries = [Entry((("user", f"q{i}"),)) for i in range(50)]
    first = sample(entries, 20, seed=1)
    assert first == sample(entries, 20, seed=1) and first != sample(entries, 20, seed=2)
    assert len(set(first)) == 20
    assert sorted(sample(entries, 500, seed=1), key=lambda e: e.text) == sorted(entries, key=lambda e: e.text)
    assert len(sample(entries * 300, 10**9, seed=0)) == SAMPLE_MAX


def test_prompts_cycle_through_the_sample_each_with_its_own_tag():
    entries = (Entry((("system", "S"), ("user", "Q1"))), Entry((("user", "Q2"),), 7))
    chat = DatasetPrompts(entries, chat=True, nonce=1)
    first, second, third = (chat.prompt(i) for i in range(3))
    assert first.messages[0][1].endswith("\nS") and first.messages[1] == ("user", "Q1")
    assert second.output_tokens == 7 and third.messages[1] == ("user", "Q1")
    assert first.messages != third.messages  # the same record, another tag
    plain = DatasetPrompts(entries, chat=False, nonce=1, unique=False)
    assert plain.prompt(0).text == "S\n\nQ1" and plain.prompt(0).messages is None


def test_reference_answers_set_the_output_length_where_a_record_has_none():
    entries = (Entry((("user", "q"),), None, "one two three"), Entry((("user", "q"),), 4, "ignored"), Entry((("user", "q"),)))
    counted = reference_tokens(entries, lambda text: len(text.split()))
    assert [e.output_tokens for e in counted] == [3, 4, None]
