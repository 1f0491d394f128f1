"""The synthetic task of the training run: reverse a sequence of random tokens (needs attention).

Input `[a1 .. an, PAD ..]`, target `[an .. a1, PAD ..]`, with n drawn per sequence, so the model must find
each sequence's length and attend to position n - 1 - i. Padding positions are not counted in the loss.
Batches come from NumPy, seeded per step, so every framework (and a resumed run) sees the same ones. Packed
(`pack=True`), the same sequences share rows of `max_len` (`rosetta_common.packing.pack`) and the batch carries
their segment ids: each sequence is reversed within its own segment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rosetta_common.packing import pack

Batch = tuple[np.ndarray, ...]
"""token ids int64 `[B, S]`, targets int64 `[B, S]`, loss mask bool `[B, S]`, and packed, segment ids int64."""


def batch_parts(batch: Batch) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """(token ids, targets, loss mask, segment ids or None) of a padded or packed batch."""
    token_ids, targets, loss_mask, *segments = batch
    return token_ids, targets, loss_mask, segments[0] if segments else None


@dataclass(frozen=True)
class ReversalTask:
    """Sequences of `min_len..max_len` tokens drawn from `1..vocab_size-1`; token `pad` (0) pads to `max_len`;
    `pack`: training batches packed into rows of `max_len` (the held-out batch stays one sequence per row), as
    many rows as a multiple of `row_multiple` (a mesh's `data` axis splits the rows evenly; the rows added hold
    only padding)."""

    vocab_size: int = 16
    min_len: int = 4
    max_len: int = 12
    batch_size: int = 64
    seed: int = 0
    pad: int = 0
    pack: bool = False
    row_multiple: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.min_len <= self.max_len:
            raise ValueError(f"ReversalTask needs 1 <= min_len <= max_len, got {self.min_len}, {self.max_len}")
        if self.vocab_size < 3 or self.pad != 0:
            raise ValueError("ReversalTask needs vocab_size >= 3 and pad == 0")
        if self.batch_size < 1:
            raise ValueError(f"ReversalTask.batch_size must be >= 1, got {self.batch_size}")
        if self.row_multiple < 1:
            raise ValueError(f"ReversalTask.row_multiple must be >= 1, got {self.row_multiple}")

    def _batch(self, rng: np.random.Generator, batch_size: int) -> Batch:
        lengths = rng.integers(self.min_len, self.max_len + 1, size=batch_size)
        tokens = rng.integers(1, self.vocab_size, size=(batch_size, self.max_len), dtype=np.int64)
        positions = np.arange(self.max_len)
        valid = positions[None, :] < lengths[:, None]
        token_ids = np.where(valid, tokens, self.pad)
        # target[i] = token[n - 1 - i] for i < n
        source = np.clip(lengths[:, None] - 1 - positions[None, :], 0, self.max_len - 1)
        targets = np.where(valid, np.take_along_axis(token_ids, source, axis=1), self.pad)
        return token_ids, targets, valid

    def batch(self, step: int) -> Batch:
        """The training batch of update `step` (the same for any framework, any restart); packed when `pack`."""
        padded = self._batch(np.random.default_rng((self.seed, 1, step)), self.batch_size)
        return self.packed(padded) if self.pack else padded

    def packed(self, batch: Batch) -> Batch:
        """The sequences of a padded batch packed into rows of `max_len` by first-fit decreasing, with their
        targets laid out the same way (the layout depends only on the lengths), and the segment ids. At least
        `packed_rows` rows, so that most batches have one shape (a jitted step compiles once per shape)."""
        token_ids, targets, valid = batch
        lengths = valid.sum(axis=1)
        sequences = [row[:length] for row, length in zip(token_ids, lengths, strict=True)]
        reversed_targets = [row[:length] for row, length in zip(targets, lengths, strict=True)]
        layout = pack(sequences, self.max_len, padding_id=self.pad, min_rows=self.packed_rows)
        rows = -(-layout.token_ids.shape[0] // self.row_multiple) * self.row_multiple
        if rows != layout.token_ids.shape[0]:  # more rows than the usual shape: packed again, to a whole multiple
            layout = pack(sequences, self.max_len, padding_id=self.pad, min_rows=rows)
        target_layout = pack(reversed_targets, self.max_len, padding_id=self.pad, min_rows=layout.token_ids.shape[0])
        return layout.token_ids, target_layout.token_ids, layout.segment_ids != 0, layout.segment_ids

    @property
    def packed_rows(self) -> int:
        """Rows a packed batch fills at the mean length, plus an eighth, rounded up to `row_multiple`: its usual
        shape."""
        mean = (self.min_len + self.max_len) / 2
        rows = int(np.ceil(self.batch_size * mean / self.max_len * 9 / 8))
        return -(-rows // self.row_multiple) * self.row_multiple

    def eval_batch(self, size: int = 512) -> Batch:
        """A fixed held-out batch for accuracy."""
        return self._batch(np.random.default_rng((self.seed, 2)), size)


def accuracy(predictions: np.ndarray, targets: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(token accuracy over counted positions, fraction of sequences reversed exactly)."""
    correct = (predictions == targets) | ~mask
    return float(((predictions == targets) & mask).sum() / mask.sum()), float(correct.all(axis=1).mean())
