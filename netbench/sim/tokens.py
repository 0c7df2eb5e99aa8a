"""The simulated model's tokenizer, chat template, output text and end of generation (EOS).

**Tokenizer** (deterministic, no vocabulary file, exactly invertible for normalised text). Text
is split into words at whitespace (`str.split()`); each word's UTF-8 bytes are cut into pieces
of at most `BYTES_PER_TOKEN` (4) bytes, one token a piece. The first piece of every word but
the text's first carries a leading space, as BPE's "Ġ" does, so decoding joins words with one
space. So a word of 1-4 ASCII characters is exactly one token: a client builds a prompt of N
tokens from N such words (N - 1 for a completion prompt, whose BOS token is the first), and
can check it with `POST /tokenize`. Token ids: a few special tokens below `TEXT_ID_BASE`, then
`TEXT_ID_BASE + 2 * int.from_bytes(b"\\x01" + piece) + leading_space`: every piece has its
own id (no collisions, ids below 2**42), and `decode` inverts `encode` up to whitespace.

**Prompts.** A completion prompt is BOS + its text (`add_special_tokens`, vLLM's default for
completions), or the token ids given. A chat prompt is ChatML-like: for every message
`<|im_start|>`, the role, a newline, the content's tokens, `<|im_end|>` (4 tokens besides the
content for the standard roles, each one token; another role costs its text's tokens), then
`<|im_start|>assistant\\n` (3 tokens) as the generation prompt.

**Output.** Token i of an answer is word i of `_OUTPUT_WORDS` (cycled; every word has at most
4 letters), with a leading space after the first, so the output re-tokenises to exactly as
many tokens as were generated.

**EOS.** Unless the request sets `ignore_eos` (or the server runs with `--ignore-eos`), the
model may end its answer with EOS: each token after the first `min_tokens` is EOS with
probability p = 1 / `eos_mean_tokens`, so the EOS token's position is `min_tokens` + G, G
geometric on {1, 2, ...} with mean `eos_mean_tokens`. The draw is deterministic: G is the
inverse CDF of a uniform number taken from a BLAKE2b hash of the server's `--seed`, the
request's `seed` if it sets one, else its prompt token ids. As in vLLM, the EOS token is
generated (it costs a step and counts in `completion_tokens`) but has no text; a request ends
with "length" when `max_tokens` comes first (also when the last allowed token is the EOS), and
stop strings only count once `min_tokens` tokens exist. A stop string ends the answer with
"stop" at the token that completes it; the answer is cut at the last token boundary before it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

BYTES_PER_TOKEN = 4
EOS_ID = 0
BOS_ID = 1
IM_START_ID = 2
IM_END_ID = 3
NEWLINE_ID = 4
ROLE_IDS = {"system": 5, "user": 6, "assistant": 7, "tool": 8, "function": 9, "developer": 10}
TEXT_ID_BASE = 16
SPECIAL_TEXT = {
    EOS_ID: "<|endoftext|>",
    BOS_ID: "<|begin_of_text|>",
    IM_START_ID: "<|im_start|>",
    IM_END_ID: "<|im_end|>",
    NEWLINE_ID: "\n",
    **{token_id: role for role, token_id in ROLE_IDS.items()},
}
#: tokens a chat message costs besides its content (standard roles) and the generation prompt
CHAT_TOKENS_PER_MESSAGE = 4
CHAT_GENERATION_PROMPT_TOKENS = 3

_OUTPUT_WORDS = (
    "the old fox ran to a calm sea and saw it glow as the sun set so all of us who came by the mill "
    "felt time slow down for one more hour of talk"
).split()
assert all(len(word) <= BYTES_PER_TOKEN for word in _OUTPUT_WORDS)


class TokenError(ValueError):
    """A token id that no text encodes to."""


def encode(text: str) -> list[int]:
    """The token ids of a piece of text (no special tokens)."""
    ids: list[int] = []
    for index, word in enumerate(text.split()):
        raw = word.encode("utf-8")
        for start in range(0, len(raw), BYTES_PER_TOKEN):
            space = 1 if start == 0 and index > 0 else 0
            value = int.from_bytes(b"\x01" + raw[start : start + BYTES_PER_TOKEN], "big")
            ids.append(TEXT_ID_BASE + 2 * value + space)
    return ids


def token_str(token_id: int) -> str:
    """The text of one token; raises `TokenError` for an id no text encodes to."""
    if token_id in SPECIAL_TEXT:
        return SPECIAL_TEXT[token_id]
    return _piece(token_id).decode("utf-8", errors="replace")


def decode(ids: Sequence[int]) -> str:
    """The text of a token sequence: special tokens as their text, pieces joined byte-wise."""
    parts: list[bytes] = []
    for token_id in ids:
        if token_id in SPECIAL_TEXT:
            parts.append(SPECIAL_TEXT[token_id].encode())
        else:
            parts.append(_piece(token_id))
    return b"".join(parts).decode("utf-8", errors="replace")


def _piece(token_id: int) -> bytes:
    """The bytes of a text token, leading space included."""
    if token_id < TEXT_ID_BASE:
        raise TokenError(f"Token id {token_id} is out of vocabulary")
    value, space = divmod(token_id - TEXT_ID_BASE, 2)
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    if not 2 <= len(raw) <= BYTES_PER_TOKEN + 1 or raw[0] != 1:
        raise TokenError(f"Token id {token_id} is out of vocabulary")
    return (b" " if space else b"") + raw[1:]


def completion_prompt_ids(prompt: str | Sequence[int], add_special_tokens: bool = True) -> list[int]:
    """Token ids of a completions prompt: text (BOS first, by default) or ids as given."""
    if isinstance(prompt, str):
        return ([BOS_ID] if add_special_tokens else []) + encode(prompt)
    return list(prompt)


def chat_prompt_ids(messages: Sequence[tuple[str, str]], add_generation_prompt: bool = True) -> list[int]:
    """Token ids of a chat prompt from (role, content text) pairs, through the chat template."""
    ids: list[int] = []
    for role, content in messages:
        role_ids = [ROLE_IDS[role]] if role in ROLE_IDS else encode(role)
        ids += [IM_START_ID, *role_ids, NEWLINE_ID, *encode(content), IM_END_ID]
    if add_generation_prompt:
        ids += [IM_START_ID, ROLE_IDS["assistant"], NEWLINE_ID]
    return ids


def output_token_text(index: int) -> str:
    """The text of output token `index`: a word, with a leading space after the first."""
    word = _OUTPUT_WORDS[index % len(_OUTPUT_WORDS)]
    return word if index == 0 else " " + word


def eos_position(seed_material: bytes, eos_mean_tokens: float, min_tokens: int) -> int:
    """The 1-based position of the EOS token: min_tokens + G, G geometric with mean eos_mean_tokens."""
    digest = int.from_bytes(hashlib.blake2b(seed_material, digest_size=8).digest(), "big")
    uniform = (digest + 0.5) / 2**64  # in (0, 1), never 0 or 1
    if eos_mean_tokens <= 1:
        return min_tokens + 1
    # Inverse CDF of the geometric distribution on {1, 2, ...} with p = 1 / mean.
    draw = math.floor(math.log(uniform) / math.log1p(-1.0 / eos_mean_tokens)) + 1
    return min_tokens + max(1, draw)


@dataclass(frozen=True)
class Generation:
    """What the simulated model answers: the text each generated token adds, and why it stops.

    `texts[i]` is the visible text of generated token i: "" for the EOS token and for the
    tokens a stop string hides, which are still generated (they cost a step and count).
    """

    texts: tuple[str, ...]
    finish_reason: str  # "length" or "stop", as in OpenAI's API
    stop_reason: str | None  # the stop string that ended it, as vLLM reports it

    @property
    def text(self) -> str:
        return "".join(self.texts)

    @property
    def completion_tokens(self) -> int:
        return len(self.texts)


def plan_generation(
    max_tokens: int, stop: Sequence[str] = (), eos_at: int | None = None, min_tokens: int = 0
) -> Generation:
    """The answer to a request: up to `max_tokens` tokens, ended early by EOS (at position
    `eos_at`, None: never) or by the first stop string completed after `min_tokens` tokens."""
    generated = max_tokens if eos_at is None else min(eos_at, max_tokens)
    words = [output_token_text(i) for i in range(generated)]
    if eos_at is not None and eos_at <= max_tokens:
        words[eos_at - 1] = ""  # the EOS token has no text
    stopped = _stop_at(words, stop, min_tokens)
    if stopped is not None:
        return stopped
    ended_by_eos = eos_at is not None and eos_at < max_tokens
    return Generation(tuple(words), "stop" if ended_by_eos else "length", None)


def _stop_at(words: list[str], stop: Sequence[str], min_tokens: int) -> Generation | None:
    """The answer cut by the earliest-completed stop string, or None when none applies."""
    text = "".join(words)
    ends = [0]
    for word in words:
        ends.append(ends[-1] + len(word))
    best: tuple[int, int, str] | None = None  # (completing token, start in text, stop string)
    for string in stop:
        if not string:
            continue
        start = text.find(string)
        while start != -1:
            # The token whose text reaches the stop string's last character completes it.
            completing = next(i for i in range(1, len(ends)) if ends[i] >= start + len(string))
            if completing > min_tokens:
                if best is None or (completing, start) < best[:2]:
                    best = (completing, start, string)
                break
            start = text.find(string, start + 1)
    if best is None:
        return None
    completing, start, string = best
    # Text is only cut at token boundaries: tokens that end before the stop string are kept.
    texts = tuple(word if ends[i + 1] <= start else "" for i, word in enumerate(words[:completing]))
    return Generation(texts, "stop", string)
