"""The prefix cache: which full prompt blocks the engine has computed recently (vLLM V1's rule).

A prompt is cut into blocks of `block_size` tokens; block i's key hashes block i's token ids
together with block i-1's key, so a block matches only when everything before it matches too
(vLLM's chained block hashes). A lookup counts the leading blocks that are cached, and never
more than `(prompt_tokens - 1) // block_size` of them: the last prompt token is always
computed, since its logits give the first output token (vLLM's `max_cache_hit_length =
num_tokens - 1`). So the hit is a whole number of blocks. Blocks enter the cache when the step
that computed them ends and are evicted least recently used (a hit refreshes them) beyond
`capacity_blocks`. Only prompt blocks are cached, not generated ones.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence


def block_keys(token_ids: Sequence[int], block_size: int) -> list[int]:
    """The chained key of every full block of a prompt."""
    keys: list[int] = []
    parent = 0
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        # Python hashes ints and tuples of ints deterministically (no per-process salt).
        parent = hash((parent, *token_ids[start : start + block_size]))
        keys.append(parent)
    return keys


def cacheable_blocks(prompt_tokens: int, block_size: int) -> int:
    """The most leading blocks a prompt of this length can take from the cache."""
    return (prompt_tokens - 1) // block_size


class PrefixCache:
    """An LRU set of block keys with a capacity in blocks."""

    def __init__(self, capacity_blocks: int) -> None:
        self._capacity = capacity_blocks
        self._blocks: OrderedDict[int, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._blocks)

    def hit_blocks(self, keys: Sequence[int], max_blocks: int) -> int:
        """How many leading blocks of `keys` (at most `max_blocks`) are cached; refreshes them."""
        hits = 0
        for key in keys[:max_blocks]:
            if key not in self._blocks:
                break
            self._blocks.move_to_end(key)
            hits += 1
        return hits

    def add(self, keys: Sequence[int]) -> None:
        """Blocks just computed: cache them (most recent last), evicting the oldest beyond capacity."""
        for key in keys:
            self._blocks[key] = None
            self._blocks.move_to_end(key)
        while len(self._blocks) > self._capacity:
            self._blocks.popitem(last=False)
