"""The delay line's parameters: per-direction link behaviour, targeted drops, seed; JSON both ways.

The test process builds a `LineConfig` with `line_config(...)`, validates it there (so a bad
parameter fails in the test, not in the emulator) and sends it to the emulator as JSON.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

Direction = Literal["c2s", "s2c"]
DIRECTIONS: tuple[Direction, Direction] = ("c2s", "s2c")
# What a DropRule matches: TCP segments with the flag (syn also matches the SYN-ACK), TCP
# segments carrying payload, any TCP or UDP packet, or any packet at all.
MATCHES = ("syn", "fin", "rst", "data", "tcp", "udp", "any")


@dataclass(frozen=True)
class LinkParams:
    """One direction of the path.

    one_way_ms: fixed propagation delay. jitter_ms: a seeded random extra delay, uniform in
    [0, jitter_ms], per packet. loss: the seeded probability that a TCP or UDP packet is dropped.
    rate_mbps: a bandwidth limit (serialisation at the sender's end, before the delay); None
    means unlimited.
    """

    one_way_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    rate_mbps: float | None = None

    def __post_init__(self) -> None:
        for name in ("one_way_ms", "jitter_ms"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 <= value <= 10_000):
                raise ValueError(f"{name} must be within 0..10000 ms, got {value!r}")
        if not 0.0 <= self.loss <= 1.0:
            raise ValueError(f"loss must be a probability within 0..1, got {self.loss!r}")
        if self.rate_mbps is not None and not (math.isfinite(self.rate_mbps) and self.rate_mbps > 0):
            raise ValueError(f"rate_mbps must be positive, got {self.rate_mbps!r}")


@dataclass(frozen=True)
class DropRule:
    """Drop matching packets number nth .. nth+count-1 (1-based) in one direction.

    Matches are counted from the moment the rule is installed (start or configure); a
    retransmission is a new match, so `DropRule("c2s", "syn")` drops the first SYN only and
    lets its retransmission through. `port`, when set, must be the packet's source or
    destination port.
    """

    direction: Direction
    match: str
    nth: int = 1
    count: int = 1
    port: int | None = None

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {self.direction!r}")
        if self.match not in MATCHES:
            raise ValueError(f"match must be one of {MATCHES}, got {self.match!r}")
        if self.nth < 1 or self.count < 1:
            raise ValueError(f"nth and count start at 1, got nth={self.nth} count={self.count}")


@dataclass(frozen=True)
class LineConfig:
    """Everything the emulator applies to packets that arrive after it received this config.

    seed feeds four independent random streams (loss and jitter, per direction), re-seeded on
    every configure, so the same config over the same packet sequence drops and delays the same
    packets. reorder=False keeps each direction in order: a packet never departs before the one
    that arrived ahead of it (its departure is pushed back instead). spin_us: how long before a
    departure the emulator stops sleeping and polls; a select(2) wake-up here is ~0.1 ms late,
    so 0 trades that much precision for the CPU a busy line would otherwise burn.
    """

    c2s: LinkParams = LinkParams()
    s2c: LinkParams = LinkParams()
    seed: int = 0
    reorder: bool = False
    drops: tuple[DropRule, ...] = ()
    spin_us: int = 200

    def __post_init__(self) -> None:
        if not 0 <= self.spin_us <= 10_000:
            raise ValueError(f"spin_us must be within 0..10000, got {self.spin_us!r}")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LineConfig:
        return cls(
            c2s=LinkParams(**data["c2s"]),
            s2c=LinkParams(**data["s2c"]),
            seed=int(data["seed"]),
            reorder=bool(data["reorder"]),
            drops=tuple(DropRule(**rule) for rule in data["drops"]),
            spin_us=int(data["spin_us"]),
        )

    def link(self, direction: Direction) -> LinkParams:
        return self.c2s if direction == "c2s" else self.s2c


def line_config(
    one_way_ms: float = 0.0,
    jitter_ms: float = 0.0,
    loss: float = 0.0,
    rate_mbps: float | None = None,
    seed: int = 0,
    reorder: bool = False,
    drops: tuple[DropRule, ...] | list[DropRule] = (),
    c2s: LinkParams | None = None,
    s2c: LinkParams | None = None,
    spin_us: int = 200,
) -> LineConfig:
    """A symmetric path from the scalar parameters; `c2s`/`s2c` replace one direction whole."""
    both = LinkParams(one_way_ms=one_way_ms, jitter_ms=jitter_ms, loss=loss, rate_mbps=rate_mbps)
    return LineConfig(c2s=c2s or both, s2c=s2c or both, seed=seed, reorder=reorder, drops=tuple(drops),
                      spin_us=spin_us)
