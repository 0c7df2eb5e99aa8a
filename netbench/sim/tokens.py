"""The simulated model's deterministic "tokenizer" and output text.

Prompt tokens are counted without a vocabulary, so the count is reproducible and cheap:
every whitespace-separated word costs ceil(len(word) / 4) tokens (English BPE averages about
four characters a token), plus 1 for the BOS token of a completion prompt. A chat prompt is
counted as its message contents plus 4 template tokens a message (ChatML's
`<|im_start|>role\\n ... <|im_end|>\\n`) plus 3 for the assistant generation prompt.
A prompt given as token ids counts one token an id.

The output is the fixed word list below, cycled, one word a token; the model never emits EOS
(like vLLM with `ignore_eos`), so a generation ends at `max_tokens` ("length") or before the
first token that would complete a requested stop string ("stop").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

CHARS_PER_TOKEN = 4
CHAT_TOKENS_PER_MESSAGE = 4
CHAT_GENERATION_PROMPT_TOKENS = 3

_WORDS = (
    "the quick brown fox jumps over a lazy dog while small models answer short questions "
    "about networks latency tokens and time so every reply looks like plain English text "
    "that streams one word at a time until the budget runs out"
).split()


def count_text_tokens(text: str) -> int:
    """Tokens in a piece of text: ceil(len/4) per whitespace-separated word."""
    return sum(math.ceil(len(word) / CHARS_PER_TOKEN) for word in text.split())


def count_completion_prompt_tokens(prompt: str | Sequence[int]) -> int:
    """Tokens of a completions prompt: a string (plus BOS) or a list of token ids."""
    if isinstance(prompt, str):
        return 1 + count_text_tokens(prompt)
    return len(prompt)


def count_chat_prompt_tokens(contents: Sequence[str]) -> int:
    """Tokens of a chat prompt, given the text content of each message."""
    return (
        sum(CHAT_TOKENS_PER_MESSAGE + count_text_tokens(content) for content in contents)
        + CHAT_GENERATION_PROMPT_TOKENS
    )


def token_text(index: int) -> str:
    """The text of output token `index`: a word, with a leading space after the first."""
    word = _WORDS[index % len(_WORDS)]
    return word if index == 0 else " " + word


@dataclass(frozen=True)
class Generation:
    """What the simulated model will answer: its tokens and why it stops."""

    tokens: tuple[str, ...]
    finish_reason: str  # "length" or "stop", as in OpenAI's API
    stop_reason: str | None  # the stop string that ended it, as vLLM reports it

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    @property
    def completion_tokens(self) -> int:
        """Tokens the engine generates: a stop string's completing token is generated, then hidden."""
        return len(self.tokens) + (1 if self.finish_reason == "stop" else 0)


def plan_generation(max_tokens: int, stop: Sequence[str] = ()) -> Generation:
    """The answer to a request: `max_tokens` tokens, cut before the first stop string.

    Like vLLM, the stop string itself is not returned; text is only ever cut at token
    boundaries here, so the token that completes a stop string is generated (it costs a
    decode step and counts in usage, as in vLLM) but not sent.
    """
    tokens = [token_text(i) for i in range(max_tokens)]
    text = "".join(tokens)
    hits = [(text.find(s), s) for s in stop if s and s in text]
    if not hits:
        return Generation(tuple(tokens), "length", None)
    stop_at, stop_string = min(hits)
    kept: list[str] = []
    end = 0
    for token in tokens:
        end += len(token)
        if end > stop_at:
            break
        kept.append(token)
    return Generation(tuple(kept), "stop", stop_string)
