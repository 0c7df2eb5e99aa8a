"""How durations and shares are written for people: µs in, milliseconds out; a share as a percentage."""

from __future__ import annotations


def ms(value_us: float | None, na: str = "n/a") -> str:
    """µs -> a millisecond string with precision that fits its size."""
    if value_us is None:
        return na
    value_ms = value_us / 1000
    if value_ms < 1:
        return f"{value_ms:.3f}"
    if value_ms < 100:
        return f"{value_ms:.2f}"
    return f"{value_ms:.1f}"


def ms_signed(value_us: float | None, na: str = "n/a") -> str:
    """Like `ms`, with an explicit sign: a difference."""
    if value_us is None:
        return na
    return ("-" if value_us < 0 else "+") + ms(abs(value_us))


def percent(share: float) -> str:
    """A share (0..1) as a percentage with precision that fits its size."""
    value = share * 100
    if value < 1:
        return f"{value:.2f} %"
    return f"{value:.1f} %" if value < 10 else f"{value:.0f} %"
