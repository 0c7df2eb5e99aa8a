"""Token lengths a run asks for (`--input-tokens`, `--output-tokens`): one number, a uniform
range or a normal distribution, parsed once and drawn per request, deterministically.

    256        every request 256 tokens
    128:512    uniform on 128..512 (both ends included)
    256,32     normal, mean 256 and standard deviation 32, rounded, at least 1

A request's length depends only on the run's seed and the request's index (`length(index)`), so
every worker draws its own requests' lengths without a list of n numbers, and a run repeated
with the same --seed asks for the same lengths.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass


class LengthsError(ValueError):
    """An unreadable length: `spec` reports it as bad input naming the flag."""


#: more tokens than any model's context: a typo, not a request
MAX_TOKENS = 10_000_000
_NUMBER = r"\s*(\d+(?:\.\d*)?)\s*"
_FIXED = re.compile(rf"^{_NUMBER}$")
_UNIFORM = re.compile(rf"^{_NUMBER}:{_NUMBER}$")
_NORMAL = re.compile(rf"^{_NUMBER},{_NUMBER}$")


@dataclass(frozen=True)
class Lengths:
    """A distribution of token counts: `kind` "fixed" (low == high), "uniform" (low..high) or
    "normal" (mean, sd)."""

    kind: str
    low: int = 0
    high: int = 0
    mean: float = 0.0
    sd: float = 0.0
    seed: int = 0

    @property
    def minimum(self) -> int:
        """The fewest tokens a request can be given."""
        return 1 if self.kind == "normal" else self.low

    @property
    def maximum(self) -> int:
        """The most tokens a request can be given (a normal draw is cut at 6 sd)."""
        return math.ceil(self.mean + 6 * self.sd) if self.kind == "normal" else self.high

    @property
    def expected(self) -> float:
        return self.mean if self.kind == "normal" else (self.low + self.high) / 2

    def length(self, index: int) -> int:
        """The token count of request `index` (the run-wide index: warm-up and measured alike)."""
        if self.kind == "fixed":
            return self.low
        draw = random.Random(self.seed * 0x1_0000_0000 + index)
        if self.kind == "uniform":
            return draw.randint(self.low, self.high)
        value = draw.gauss(self.mean, self.sd)
        return max(1, min(round(value), self.maximum))

    def describe(self) -> str:
        if self.kind == "fixed":
            return str(self.low)
        if self.kind == "uniform":
            return f"{self.low}-{self.high} (uniform)"
        return f"{self.mean:g} ± {self.sd:g} (normal)"


def parse_lengths(text: str, flag: str, seed: int = 0) -> Lengths:
    """`N`, `A:B` or `mean,sd` -> Lengths; bad input raises LengthsError naming `flag`."""
    raw = str(text)
    if match := _FIXED.match(raw):
        value = _count(match.group(1), flag, raw)
        return Lengths("fixed", value, value, float(value), 0.0, seed)
    if match := _UNIFORM.match(raw):
        low, high = (_count(g, flag, raw) for g in match.groups())
        if low > high:
            raise LengthsError(f"{flag} {raw!r}: the range's low end is above its high end")
        return Lengths("uniform" if low < high else "fixed", low, high, (low + high) / 2, 0.0, seed)
    if match := _NORMAL.match(raw):
        mean, sd = (float(g) for g in match.groups())
        if not 1 <= mean <= MAX_TOKENS or sd > mean:
            raise LengthsError(f"{flag} {raw!r}: the mean must be 1 to {MAX_TOKENS} tokens and the sd at most the mean")
        if sd == 0:
            return Lengths("fixed", round(mean), round(mean), float(round(mean)), 0.0, seed)
        return Lengths("normal", 1, math.ceil(mean + 6 * sd), mean, sd, seed)
    raise LengthsError(f"{flag} {raw!r}: expected N, A:B (uniform) or MEAN,SD (normal), e.g. 256, 128:512 or 256,32")


def _count(text: str, flag: str, raw: str) -> int:
    value = float(text)
    if value != int(value) or not 1 <= value <= MAX_TOKENS:
        raise LengthsError(f"{flag} {raw!r}: token counts are whole numbers from 1 to {MAX_TOKENS}")
    return int(value)
