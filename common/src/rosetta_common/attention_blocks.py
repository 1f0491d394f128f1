"""How both frameworks cut attention into query blocks: the geometry only (NumPy-free, framework-free).

Attention is computed one block of `block` queries at a time against the keys that block may see: every key in
a global layer, only the band `[start - max_distance, start + block + max_distance)` in a local one. Each query
row is whole inside its block, so the softmax (and, under a precision policy, its one rounding of the
probabilities) is exactly the unblocked one; only the `[B, H, block, keys]` scores of one block exist at a time.
Memory then grows linearly with S, and a local layer's work with S * (block + 2 * max_distance), not S^2.
"""

from __future__ import annotations

from dataclasses import dataclass

QUERY_BLOCK = 256
"""Queries per block by default. One paper-base attention layer (d_model 512, 8 heads, batch 1), rosetta_flax
jitted on a 2-core AMD EPYC: forward at S = 2,048 in 84 ms with 256-query blocks, 152 ms with 512, 178 ms
unblocked; at 8,192, 1.9 s, 2.5 s and 2.9 s (the gradient 5.9 s, 7.5 s, 8.7 s). 64 and 128 were no faster."""


POLICY_QUERY_BLOCK = 128
"""Queries per block under a precision policy, whose float32 `[B, H, block, S]` scores are materialised whole and
pass through softmax and its rounding in memory: smaller blocks keep them nearer the cache. paper-base under the
bfloat16 policy, batch 1 x 2,048 tokens, forward, on a 2-core AMD EPYC: eager rosetta_torch 4,640 tokens/s with
128-query blocks against 3,700 with 256; rosetta_flax.jit 6,646 against 6,884 and compiled torch 5,941 against
5,713, both within the runs' spread."""


KEY_BLOCK = 512
"""Keys per step of rosetta_flax's online softmax (a global block against more keys than this). At S = 8,192, one
attention of paper-base's shape (8 heads of 64, batch 1), jitted on a 2-core AMD EPYC: 788 ms with 256 queries x
512 keys, 1,700 ms with 256-query blocks against all keys; at 2,048, 52 ms against 63 ms."""


@dataclass(frozen=True)
class QueryBlocks:
    """The blocks of one attention call over `seq` positions.

    block      queries per block (the whole sequence when it is shorter than the block size)
    count      number of blocks; the queries are padded to `count * block`
    keys       keys each block reads: `seq` (global), or `block + 2 * max_distance` (a local band)
    left       key positions padded in front (a band's first block starts `max_distance` before position 0)
    right      key positions padded behind, so that every band is a slice of the padded keys
    """

    seq: int
    block: int
    count: int
    max_distance: int | None
    keys: int
    left: int
    right: int

    @classmethod
    def plan(cls, seq: int, max_distance: int | None = None, block: int = QUERY_BLOCK) -> QueryBlocks:
        """Blocks of `block` queries (fewer when seq is shorter); a local band only where it is narrower than seq
        (otherwise the window is a mask over all keys, as in a global layer)."""
        if block < 1:
            raise ValueError(f"query block must be at least 1, got {block}")
        block = min(block, seq)
        count = -(-seq // block)
        if max_distance is not None and block + 2 * max_distance < seq:
            left, right = max_distance, count * block - seq + max_distance
            return cls(seq, block, count, max_distance, block + 2 * max_distance, left, right)
        return cls(seq, block, count, max_distance, seq, 0, 0)

    @property
    def banded(self) -> bool:
        """True when each block reads only its band of keys (a local layer longer than its band)."""
        return self.keys != self.seq

    @property
    def padded_queries(self) -> int:
        return self.count * self.block

    def key_start(self, block_index: int) -> int:
        """The first key position (in padded key coordinates) block `block_index` reads: its band starts
        `max_distance` before its first query, which is `left` positions into the padded keys."""
        return block_index * self.block if self.banded else 0
