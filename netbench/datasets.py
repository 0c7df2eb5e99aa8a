"""`--dataset FILE`: prompts replayed from a data set, sampled with `--seed`.

The file is JSON Lines (one object a line) or one JSON array of objects, each in one of the
common forms:

- ShareGPT: `{"conversations": [{"from": "human", "value": "..."}, {"from": "gpt", "value": "..."}]}`
- OpenAI messages: `{"messages": [{"role": "system", "content": "..."}, {"role": "user", ...}, ...]}`
- plain: `{"prompt": "...", "max_tokens": 128}` (`output_tokens` or `max_completion_tokens` too)

A conversation's prompt is its turns up to its first user turn (system turns before it kept);
the assistant turn right after it, if any, is the reference answer, whose length sets the
request's `max_tokens` (`reference_tokens`), as vLLM's benchmark replays ShareGPT. A record's
own `max_tokens` comes first, `--output-tokens` before both. Chat requests send the messages,
completions requests their texts joined by blank lines.

The run holds a sample, not the file: up to `SAMPLE_MAX` records drawn without replacement in
the seed's order, cycled when the run sends more requests than that. Every problem with the
file is bad input, reported before any load is sent.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from netbench.errors import InputError
from netbench.prompts import Prompt, unique_tag

#: records a run holds at most (its workers each get a copy)
SAMPLE_MAX = 10_000
_ROLES = {
    "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
    "bard": "assistant", "model": "assistant", "system": "system", "developer": "system",
}  # fmt: skip
_OUTPUT_KEYS = ("max_tokens", "output_tokens", "max_completion_tokens")


@dataclass(frozen=True)
class Entry:
    """One record: its prompt as chat messages, and what sets its output length."""

    messages: tuple[tuple[str, str], ...]
    output_tokens: int | None = None
    reference: str | None = None

    @property
    def text(self) -> str:
        """The prompt of a completions request."""
        return "\n\n".join(content for _, content in self.messages)


def load_dataset(path: str) -> list[Entry]:
    """Every usable record of the file, in file order."""
    try:
        raw = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError("dataset", path, f"cannot read it ({error})") from None
    records = _records(raw, path)
    entries = [entry for number, record in records if (entry := _entry(record, path, number)) is not None]
    if not entries:
        raise InputError("dataset", path, "no record with a prompt (a user turn, messages or a prompt)")
    return entries


def _records(raw: str, path: str) -> list[tuple[int, Any]]:
    """(line or position, record) pairs of a JSONL file or a JSON array."""
    if raw.lstrip().startswith("["):
        try:
            items = json.loads(raw)
        except (ValueError, RecursionError) as error:
            raise InputError("dataset", path, f"not valid JSON ({error})") from None
        return list(enumerate(items, 1))
    records = []
    for number, line in enumerate(raw.splitlines(), 1):
        if line.strip():
            try:
                records.append((number, json.loads(line)))
            except (ValueError, RecursionError) as error:
                raise InputError("dataset", path, f"line {number} is not JSON ({error})") from None
    return records


def _entry(record: Any, path: str, number: int) -> Entry | None:
    def bad(reason: str) -> InputError:
        return InputError("dataset", path, f"record {number}: {reason}")

    if not isinstance(record, dict):
        raise bad("expected a JSON object")
    output_tokens = next((record[k] for k in _OUTPUT_KEYS if record.get(k) is not None), None)
    if output_tokens is not None and (isinstance(output_tokens, bool) or not isinstance(output_tokens, int) or output_tokens < 1):
        raise bad(f"the output length must be a whole number >= 1, got {output_tokens!r}")
    if "conversations" in record:
        turns = _turns(record["conversations"], "from", "value", bad)
    elif "messages" in record:
        turns = _turns(record["messages"], "role", "content", bad)
    elif "prompt" in record:
        if not isinstance(record["prompt"], str):
            raise bad("'prompt' must be a string")
        return Entry((("user", record["prompt"]),), output_tokens) if record["prompt"].strip() else None
    else:
        raise bad("no 'conversations', 'messages' or 'prompt'")
    first_user = next((i for i, (role, _) in enumerate(turns) if role == "user"), None)
    if first_user is None or not turns[first_user][1].strip():
        return None  # nothing to ask (vLLM's benchmark skips these too)
    after = turns[first_user + 1] if first_user + 1 < len(turns) else None
    reference = after[1] if after is not None and after[0] == "assistant" else None
    return Entry(tuple(turns[: first_user + 1]), output_tokens, reference)


def _turns(turns: Any, role_key: str, text_key: str, bad: Callable[[str], InputError]) -> list[tuple[str, str]]:
    if not isinstance(turns, list):
        raise bad("expected a list of turns")
    out = []
    for turn in turns:
        if not isinstance(turn, dict) or not isinstance(turn.get(role_key), str):
            raise bad(f"each turn must be an object with a string {role_key!r}")
        text = turn.get(text_key)
        if isinstance(text, list):  # OpenAI's content parts: the text parts
            text = "\n".join(p["text"] for p in text if isinstance(p, dict) and isinstance(p.get("text"), str))
        if text is None:
            text = ""
        if not isinstance(text, str):
            raise bad(f"{text_key!r} must be a string")
        out.append((_ROLES.get(turn[role_key].lower(), turn[role_key]), text))
    return out


def sample(entries: Sequence[Entry], needed: int, seed: int) -> tuple[Entry, ...]:
    """The records a run sends, in order: `needed` of them (at most SAMPLE_MAX) without
    replacement, all of them shuffled when there are fewer."""
    draw = random.Random(seed)
    size = min(max(needed, 1), SAMPLE_MAX, len(entries))
    return tuple(entries[i] for i in draw.sample(range(len(entries)), size))


def reference_tokens(entries: Sequence[Entry], count: Callable[[str], int]) -> tuple[Entry, ...]:
    """The entries with their reference answers' lengths (tokens, `count`) as output lengths,
    where they set none themselves."""
    return tuple(
        replace(e, output_tokens=max(count(e.reference), 1)) if e.output_tokens is None and e.reference else e
        for e in entries
    )


@dataclass(frozen=True)
class DatasetPrompts:
    """The sampled records, cycled by request index; each behind a unique tag unless `unique` is off."""

    entries: tuple[Entry, ...]
    chat: bool
    nonce: int
    unique: bool = True

    def prompt(self, index: int) -> Prompt:
        entry = self.entries[index % len(self.entries)]
        tag = f"{unique_tag(self.nonce, index)}\n" if self.unique else ""
        if not self.chat:
            return Prompt(tag + entry.text, output_tokens=entry.output_tokens)
        (role, content), *rest = entry.messages
        return Prompt(None, ((role, tag + content), *rest), output_tokens=entry.output_tokens)
