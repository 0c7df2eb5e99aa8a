"""What each request asks: its prompt, built on demand from the request's index, every request
its own.

**Lengths in the server's tokenizer.** `--input-tokens N` prompts are words of `VOCABULARY`:
short, common English words that common tokenizers (GPT-2-style BPE, SentencePiece, the
built-in server's) encode as one token each after a space, since they split text into words
before merging pieces. `calibrate` checks that on the server itself, through a `count`
function (the server's /tokenize or the usage of probe requests, `server_probe.py`): a text
of the M words and one of the M words twice differ by exactly M tokens only if every word costs
one (each costs at least one). The prompt tokens the server adds beyond the text (BOS, the chat
template) are the `overhead`. A prompt of N tokens is then its first word (the same in every
prompt, so that its cost is in the overhead) and N - overhead - 1 words drawn at random.
Where the words do not all cost one token, those that do are kept (when counting is cheap), or
the prompt is sized by the measured tokens per word and its length is approximate.

**Unique prompts.** A request's words are drawn from a seed made of the run's nonce and the
request's index, so no two requests (nor two runs) share a 16-token block and a prefix cache
cannot shorten TTFT; `--shared-prefix-tokens K` makes the first K tokens of the text the same
in every request of the run, the cached case on purpose. A fixed prompt (`--prompt`, a data
set's) gets `UNIQUE_TAG_WORDS` random words in front unless the run turns that off.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

from pathlib import Path

from netbench.errors import InputError
from netbench.lengths import Lengths

VOCABULARY: tuple[str, ...] = tuple(
    """the of and to in is was he for it with as his on be at by had are but from or have an they one you were
    her all she we him been has when who will more no if out so said what up its into than them can only new some
    time two may then do any my now such like our over man me even most made also did many must see way well down
    each just how year work long good very make know back much life take come last use here day old same part give
    few own men went need four hand feel less find high next told city home keep real left end yet sure line side
    name best road head face room fact door week kind game book word open area free land half love late idea body
    food town team lot war five seen form big near king hard plan rest true wife hope full main care pay deal job
    mind air sea fire move show held cost far sat fine""".split()
)
#: random words put before a fixed prompt to make it unique (V^4 tags: 10^9)
UNIQUE_TAG_WORDS = 4
#: the fewest words that must cost one token each for prompts of exact length
MIN_WORDS = 16


def prompt_text(value: str) -> str:
    """--prompt as given, or for `@FILE` the file's text (UTF-8)."""
    if not value.startswith("@"):
        return value
    path = value[1:]
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError("prompt", value, f"cannot read the prompt file ({error})") from None
    if not text.strip():
        raise InputError("prompt", value, "the prompt file is empty")
    return text


@dataclass(frozen=True)
class Prompt:
    """One request's prompt: a text (a completions prompt, or a chat request's one user
    message), or a data set's chat messages."""

    text: str | None
    messages: tuple[tuple[str, str], ...] | None = None
    #: the prompt tokens it was built to have in the server's tokenizer (-1: not known)
    tokens: int = -1
    #: its own output length (a data set's); None: the run's
    output_tokens: int | None = None


class PromptSource(Protocol):
    """Every request's prompt, from the request's run-wide index (warm-up included)."""

    def prompt(self, index: int) -> Prompt: ...


def _draw(nonce: int, index: int) -> random.Random:
    # A string seed is hashed (SHA-512): the same words in every process, for every index.
    return random.Random(f"{nonce}:{index}")


@dataclass(frozen=True)
class Calibration:
    """What the server's tokenizer makes of VOCABULARY's words."""

    #: words that cost one token each after a space (all of them, when `exact`)
    words: tuple[str, ...]
    #: every prompt's first word
    first: str
    #: prompt tokens of a text of k words minus k: what the server adds (BOS, the chat template)
    overhead: int
    #: True: a prompt of k words is exactly overhead + k tokens
    exact: bool
    #: tokens per word (1 when exact)
    tokens_per_word: float = 1.0
    #: how the tokens were counted (server_probe's method)
    method: str = ""

    def words_for(self, tokens: int) -> int:
        """Words of a prompt of `tokens` tokens (its first word included), at least one."""
        content = tokens - self.overhead
        if self.exact:
            return max(content, 1)
        return max(1 + round((content - 1) / self.tokens_per_word), 1)

    def shifted(self, tokens: int) -> Calibration:
        """The same with `tokens` more overhead (a verification found every prompt off by that)."""
        return Calibration(self.words, self.first, self.overhead + tokens, self.exact, self.tokens_per_word, self.method)


class CalibrationError(ValueError):
    """The server's counts make no sense (no token for a text of words)."""


def calibrate(count: Callable[[str], int], cheap: bool, method: str = "", vocabulary: tuple[str, ...] = VOCABULARY) -> Calibration:
    """Ask `count` (prompt tokens of a text, as the run sends it) about the vocabulary; `cheap`:
    one count per word is affordable (a /tokenize, not a completion)."""
    first, rest = vocabulary[0], vocabulary[1:]
    once = f"{first} {' '.join(rest)}"
    single = count(once)
    double = count(f"{once} {' '.join(rest)}")
    if double - single == len(rest):
        return Calibration(rest, first, single - len(rest) - 1, True, 1.0, method)
    if cheap:
        alone = count(first)
        kept = tuple(w for w in rest if count(f"{first} {w}") - alone == 1)
        if len(kept) >= MIN_WORDS:
            return Calibration(kept, first, alone - 1, True, 1.0, method)
    per_word = (double - single) / len(rest)
    if per_word <= 0:
        raise CalibrationError(f"the server counted {single} and {double} tokens for texts of {len(rest) + 1} and {2 * len(rest) + 1} words")
    overhead = round(single - per_word * len(rest) - 1)
    return Calibration(rest, first, overhead, False, per_word, method)


@dataclass(frozen=True)
class SyntheticPrompts:
    """Prompts of `lengths` tokens (`--input-tokens`), each request's words its own beyond the
    first `shared_prefix_tokens` tokens of the text."""

    calibration: Calibration
    lengths: Lengths
    nonce: int
    shared_prefix_tokens: int = 0

    @property
    def minimum_tokens(self) -> int:
        """The shortest prompt possible: the overhead, the shared words, one word of its own."""
        shared_words = max(self.shared_prefix_tokens, 1)
        return self.calibration.overhead + shared_words + (1 if self.shared_prefix_tokens else 0)

    @cached_property
    def _shared(self) -> list[str]:
        """The words every prompt of the run starts with: the first word, then the shared ones."""
        c = self.calibration
        count = c.words_for(c.overhead + self.shared_prefix_tokens) if self.shared_prefix_tokens else 1
        return [c.first, *_draw(self.nonce, -1).choices(c.words, k=count - 1)]

    def prompt(self, index: int) -> Prompt:
        c = self.calibration
        target = max(self.lengths.length(index), self.minimum_tokens)
        shared = self._shared
        own = _draw(self.nonce, index).choices(c.words, k=max(c.words_for(target) - len(shared), 0))
        return Prompt(" ".join(shared + own), tokens=target if c.exact else -1)


def unique_tag(nonce: int, index: int) -> str:
    """A few random words that make a fixed prompt the request's own."""
    return " ".join(_draw(nonce, index).choices(VOCABULARY, k=UNIQUE_TAG_WORDS))


@dataclass(frozen=True)
class FixedPrompt:
    """`--prompt` (or its default) for every request, behind a unique tag unless `unique` is off."""

    text: str
    nonce: int
    unique: bool = True

    def prompt(self, index: int) -> Prompt:
        return Prompt(f"{unique_tag(self.nonce, index)}\n{self.text}" if self.unique else self.text)
