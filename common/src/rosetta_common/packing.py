"""Variable-length sequences as `[B, S]` rows: packed with segment ids, or padded to each batch's longest.

`pack` places sequences into rows of `row_length` by **first-fit decreasing** (FFD): sequences sorted longest
first (ties by input index, so the result is deterministic), each placed in the first row with room for it, a new
row opened when none has. FFD never uses more than 11/9 OPT + 6/9 rows, and on sentence-length data it fills rows
almost completely. What the peers do: MaxText's TF pipeline (`sequence_packing.py`, from T5) packs greedily in
arrival order, and its Grain pipeline first-fits into a fixed number of open bins, also in arrival order (both
stream, so neither sorts); torchtitan concatenates documents into one token stream and cuts it into rows, so a
document may cross a row boundary and no segment ids are kept. Here the whole list is known up front, so sorting
costs nothing and packs tighter; a sequence is never split across rows.

`pad` is what padded pipelines do: one sequence per row, each row padded to the longest (optionally rounded up
to a multiple). Both give a `PackedBatch`, so one mapping (`rows`, `starts`, `lengths`) and one `unpack` serve
both layouts. Sequences are 1-D integer arrays; an empty sequence is a ValueError (a segment has >= 1 token).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class PackedBatch:
    """Sequences laid out in rows, and where each one went.

    token_ids      int64 [B, S]: the tokens, `padding_id` where no sequence is.
    segment_ids    int64 [B, S]: 0 = padding, k >= 1 = the k-th sequence placed in that row (contiguous runs).
    token_type_ids int64 [B, S] or None: the sequences' token types, 0 at padding.
    rows, starts, lengths  int64 [N]: sequence n is `token_ids[rows[n], starts[n] : starts[n] + lengths[n]]`.
    indices        int64 [N]: which input sequence the n-th one is (0, 1, ..., N-1 for `pack` and `pad`).
    padding_id     the token id at padding positions.
    """

    token_ids: np.ndarray
    segment_ids: np.ndarray
    token_type_ids: np.ndarray | None
    rows: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray
    indices: np.ndarray
    padding_id: int = 0

    @property
    def padding_mask(self) -> np.ndarray:
        """bool [B, S], True = padding (no sequence there)."""
        return self.segment_ids == 0

    @property
    def real_tokens(self) -> int:
        """How many positions hold a sequence's token."""
        return int(self.lengths.sum())

    @property
    def fill(self) -> float:
        """The fraction of the B * S positions that hold a token."""
        return self.real_tokens / max(self.token_ids.size, 1)

    def unpack(self, array: np.ndarray) -> list[np.ndarray]:
        """`array [B, S, ...]` (an output over these rows) -> one `[length_n, ...]` array per sequence held, in the
        order of `indices` (input order)."""
        if array.shape[:2] != self.token_ids.shape:
            raise ValueError(
                f"unpack: array of shape {array.shape} does not start with the rows' {self.token_ids.shape}"
            )
        return [
            array[row, start : start + length]
            for row, start, length in zip(self.rows.tolist(), self.starts.tolist(), self.lengths.tolist(), strict=True)
        ]

    def split(self, rows_per_batch: int) -> list[PackedBatch]:
        """Consecutive batches of `rows_per_batch` rows, the last filled up with all-padding rows (one shape for
        all); each holds the sequences placed in its rows, `indices` naming them in the input."""
        if rows_per_batch < 1:
            raise ValueError(f"rows_per_batch must be >= 1, got {rows_per_batch}")
        count = -(-self.token_ids.shape[0] // rows_per_batch)
        batches = []
        for batch in range(count):
            low, high = batch * rows_per_batch, (batch + 1) * rows_per_batch
            held = np.flatnonzero((self.rows >= low) & (self.rows < high))
            batches.append(
                PackedBatch(
                    token_ids=_rows(self.token_ids, low, high, self.padding_id),
                    segment_ids=_rows(self.segment_ids, low, high, 0),
                    token_type_ids=None if self.token_type_ids is None else _rows(self.token_type_ids, low, high, 0),
                    rows=self.rows[held] - low,
                    starts=self.starts[held],
                    lengths=self.lengths[held],
                    indices=self.indices[held],
                    padding_id=self.padding_id,
                )
            )
        return batches


def _rows(array: np.ndarray, low: int, high: int, fill: int) -> np.ndarray:
    """Rows low..high-1 of `array [B, S]`, rows past its end filled with `fill`."""
    part = array[low:high]
    return np.concatenate([part, np.full((high - low - part.shape[0], array.shape[1]), fill, array.dtype)])


def _as_sequences(
    sequences: Sequence[Sequence[int] | np.ndarray], token_type_ids: Sequence[Sequence[int] | np.ndarray] | None
) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """The sequences (and their token types) as 1-D int64 arrays; ValueError naming the first bad one."""
    arrays = []
    for index, sequence in enumerate(sequences):
        array = np.asarray(sequence)
        if array.ndim != 1 or not (array.size == 0 or np.issubdtype(array.dtype, np.integer)):
            raise ValueError(f"sequence {index}: need a 1-D integer array, got shape {array.shape} {array.dtype}")
        if array.size == 0:
            raise ValueError(f"sequence {index} is empty: every packed sequence needs at least one token")
        arrays.append(array.astype(np.int64))
    if token_type_ids is None:
        return arrays, None
    if len(token_type_ids) != len(arrays):
        raise ValueError(f"token_type_ids: {len(token_type_ids)} sequences for {len(arrays)} token sequences")
    types = []
    for index, (sequence, array) in enumerate(zip(token_type_ids, arrays, strict=True)):
        kinds = np.asarray(sequence)
        if kinds.shape != array.shape or not np.issubdtype(kinds.dtype, np.integer):
            raise ValueError(
                f"token_type_ids {index}: need integers of the sequence's shape {array.shape}, got {kinds.shape} "
                f"{kinds.dtype}"
            )
        types.append(kinds.astype(np.int64))
    return arrays, types


def first_fit_decreasing(lengths: Sequence[int], row_length: int) -> list[int]:
    """The row of each length under first-fit decreasing (ties by index): a list as long as `lengths`.

    ValueError for a length < 1 or > row_length, naming the sequence and both lengths.
    """
    if row_length < 1:
        raise ValueError(f"row_length must be >= 1, got {row_length}")
    lengths = [int(length) for length in lengths]
    for index, length in enumerate(lengths):
        if length < 1:
            raise ValueError(f"sequence {index} is empty: every packed sequence needs at least one token")
        if length > row_length:
            raise ValueError(
                f"sequence {index} has {length} tokens, longer than a row of {row_length}: it cannot be packed "
                "(packing never truncates; truncate it first or use longer rows)"
            )
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    room = np.empty(len(lengths), dtype=np.int64)  # the free positions of each open row
    opened = 0
    row_of = [0] * len(lengths)
    for index in order:
        fits = np.flatnonzero(room[:opened] >= lengths[index])
        row = int(fits[0]) if fits.size else opened
        if row == opened:
            room[opened] = row_length
            opened += 1
        room[row] -= lengths[index]
        row_of[index] = row
    return row_of


def _lay_out(
    arrays: list[np.ndarray],
    types: list[np.ndarray] | None,
    rows: list[int],
    starts: list[int],
    shape: tuple[int, int],
    padding_id: int,
) -> PackedBatch:
    token_ids = np.full(shape, padding_id, dtype=np.int64)
    segment_ids = np.zeros(shape, dtype=np.int64)
    token_type_ids = None if types is None else np.zeros(shape, dtype=np.int64)
    segments_in_row = np.zeros(shape[0], dtype=np.int64)
    for index in sorted(range(len(arrays)), key=lambda i: (rows[i], starts[i])):
        row, start, array = rows[index], starts[index], arrays[index]
        segments_in_row[row] += 1
        token_ids[row, start : start + array.size] = array
        segment_ids[row, start : start + array.size] = segments_in_row[row]
        if token_type_ids is not None and types is not None:
            token_type_ids[row, start : start + array.size] = types[index]
    return PackedBatch(
        token_ids=token_ids,
        segment_ids=segment_ids,
        token_type_ids=token_type_ids,
        rows=np.asarray(rows, dtype=np.int64),
        starts=np.asarray(starts, dtype=np.int64),
        lengths=np.asarray([array.size for array in arrays], dtype=np.int64),
        indices=np.arange(len(arrays), dtype=np.int64),
        padding_id=padding_id,
    )


def pack(
    sequences: Sequence[Sequence[int] | np.ndarray],
    row_length: int,
    *,
    token_type_ids: Sequence[Sequence[int] | np.ndarray] | None = None,
    padding_id: int | None = 0,
    min_rows: int = 0,
) -> PackedBatch:
    """Sequences packed into rows of `row_length` by first-fit decreasing (see the module docstring).

    Within a row, sequences sit in the order they were placed (longest first), segment ids 1, 2, ... from the
    left; the rest of the row is padding (`padding_id`: the encoder's padding_idx; None means 0). `min_rows`
    appends all-padding rows up to that count (a fixed batch shape). A sequence longer than `row_length` or an
    empty one is a ValueError naming it.
    """
    arrays, types = _as_sequences(sequences, token_type_ids)
    rows = first_fit_decreasing([array.size for array in arrays], row_length)
    starts, used = [0] * len(arrays), {}
    for index in sorted(range(len(arrays)), key=lambda i: (-arrays[i].size, i)):  # placement order
        starts[index] = used.get(rows[index], 0)
        used[rows[index]] = starts[index] + arrays[index].size
    count = max(max(rows, default=-1) + 1, min_rows)
    return _lay_out(arrays, types, rows, starts, (count, row_length), 0 if padding_id is None else padding_id)


def pad(
    sequences: Sequence[Sequence[int] | np.ndarray],
    *,
    token_type_ids: Sequence[Sequence[int] | np.ndarray] | None = None,
    padding_id: int | None = 0,
    multiple_of: int = 1,
    max_length: int | None = None,
) -> PackedBatch:
    """One sequence per row, every row padded to the longest, rounded up to a multiple of `multiple_of` (capped at
    `max_length` when given; a sequence longer than `max_length` is a ValueError): what padded pipelines do."""
    if multiple_of < 1:
        raise ValueError(f"multiple_of must be >= 1, got {multiple_of}")
    arrays, types = _as_sequences(sequences, token_type_ids)
    if not arrays:
        raise ValueError("pad: no sequences")
    longest = max(array.size for array in arrays)
    if max_length is not None and longest > max_length:
        index = next(i for i, array in enumerate(arrays) if array.size > max_length)
        raise ValueError(
            f"sequence {index} has {arrays[index].size} tokens, longer than max_length {max_length} (never truncated)"
        )
    length = -(-longest // multiple_of) * multiple_of
    if max_length is not None:
        length = min(length, max_length)
    shape = (len(arrays), length)
    return _lay_out(
        arrays, types, list(range(len(arrays))), [0] * len(arrays), shape, 0 if padding_id is None else padding_id
    )


def padded_batches(
    sequences: Sequence[Sequence[int] | np.ndarray],
    batch_size: int,
    *,
    token_type_ids: Sequence[Sequence[int] | np.ndarray] | None = None,
    padding_id: int | None = 0,
    multiple_of: int = 1,
    max_length: int | None = None,
) -> list[PackedBatch]:
    """Batches of `batch_size` consecutive sequences (the last may hold fewer), each `pad`ded on its own; each
    batch's `indices` name its sequences in the whole list."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return [
        _offset(
            pad(
                sequences[start : start + batch_size],
                token_type_ids=None if token_type_ids is None else token_type_ids[start : start + batch_size],
                padding_id=padding_id,
                multiple_of=multiple_of,
                max_length=max_length,
            ),
            start,
        )
        for start in range(0, len(sequences), batch_size)
    ]


def _offset(batch: PackedBatch, start: int) -> PackedBatch:
    return replace(batch, indices=batch.indices + start)
