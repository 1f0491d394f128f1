"""Sinusoidal positional encoding (Vaswani et al. 2017, section 3.5), computed in float64."""

from __future__ import annotations

import functools

import numpy as np

from rosetta_common.config import EncoderConfig


@functools.lru_cache(maxsize=16)
def _table(length: int, d_model: int) -> np.ndarray:
    position = np.arange(length, dtype=np.float64)[:, None]
    two_i = np.arange(0, d_model, 2, dtype=np.float64)
    angle = position / np.power(10000.0, two_i / d_model)
    table = np.zeros((length, d_model), dtype=np.float64)
    table[:, 0::2] = np.sin(angle)
    table[:, 1::2] = np.cos(angle[:, : d_model // 2])
    table.setflags(write=False)
    return table


def sinusoidal_table(length: int, d_model: int) -> np.ndarray:
    """PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(pos / 10000^(2i/d)); float64 `[length, d_model]`.

    The returned array is read-only and cached; copy it before changing it.
    """
    return _table(int(length), int(d_model))


def run_firsts(segment_ids: np.ndarray) -> np.ndarray:
    """bool `[B, S]`: True where a run of equal segment ids begins (position 0, or a change of id)."""
    first = np.ones(segment_ids.shape, dtype=bool)
    first[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
    return first


def run_starts(segment_ids: np.ndarray) -> np.ndarray:
    """int64 `[B, S]`: the index where each token's run of equal segment ids begins (a packed sequence's first
    token, or the first of a run of padding)."""
    seq = segment_ids.shape[-1]
    index = np.arange(seq, dtype=np.int64)
    return np.maximum.accumulate(np.where(run_firsts(segment_ids), index, 0), axis=1)


def sequence_positions(segment_ids: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """int64 `[B, S]`: each token's position in its own sequence. Without segment ids 0, 1, ..., S-1; packed
    (`segment_ids`, 0 = padding), the offset from its segment's first token, and at padding its index in the row
    (as unpacked padding)."""
    batch, seq = shape
    index = np.broadcast_to(np.arange(seq, dtype=np.int64), (batch, seq))
    if segment_ids is None:
        return index
    return np.where(segment_ids == 0, index, index - run_starts(segment_ids))


def position_ids(config: EncoderConfig, token_ids: np.ndarray, segment_ids: np.ndarray | None = None) -> np.ndarray:
    """The row of the position table each token reads, int64 `[B, S]`.

    "sequential": 0, 1, ..., S-1 (`sequence_positions`: packed, restarting at each segment). "after_padding"
    (RoBERTa): padding_idx + 1, + 2, ... counting the tokens that are not padding_idx (packed: from the start of the
    token's segment, and padding is where the segment id is 0), and padding_idx itself at padding tokens (whose
    rows then do not depend on where they stand).
    """
    if config.position_ids == "sequential":
        return sequence_positions(segment_ids, token_ids.shape)
    real = token_ids != config.padding_idx
    if segment_ids is not None:
        real &= segment_ids != 0
    counted = np.cumsum(real.astype(np.int64), axis=1)
    if segment_ids is not None:  # count from the segment's start: subtract what came before it
        starts = run_starts(segment_ids)
        before = np.take_along_axis(counted - real, starts, axis=1)
        counted = counted - before
    return counted * real + config.padding_idx


def rotary_tables(positions: np.ndarray, d_head: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of the rotary angles, float64 `[..., d_head]` for int positions `[...]` (HF's rotate-half
    convention, as GPT-NeoX and ModernBERT): frequency i = theta^(-2i / d_head) for i < d_head / 2, the angles
    `position * frequency` repeated for the two halves of the head."""
    frequencies = np.power(float(theta), -np.arange(0, d_head, 2, dtype=np.float64) / d_head)
    angles = np.asarray(positions, dtype=np.float64)[..., None] * frequencies
    doubled = np.concatenate([angles, angles], axis=-1)
    return np.cos(doubled), np.sin(doubled)


def rotate_half(x: np.ndarray) -> np.ndarray:
    """`[..., d]` -> `[-x2, x1]` with x1, x2 the two halves of the last axis."""
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def segment_spans(segment_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The packed sequences of `segment_ids` `[B, S]` (checked: contiguous runs numbered 1, 2, ... per row), in row
    order then segment order: int64 `(rows, starts, lengths)` `[N]` each."""
    segment_ids = np.asarray(segment_ids)
    rows, starts = np.nonzero(run_firsts(segment_ids) & (segment_ids != 0))  # row order, then left to right
    _, ends = np.nonzero(run_firsts(segment_ids[:, ::-1])[:, ::-1] & (segment_ids != 0))  # a run's last token
    return rows.astype(np.int64), starts.astype(np.int64), (ends - starts + 1).astype(np.int64)


def sequences_of(segment_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where to gather each packed sequence of `segment_ids` `[B, S]` from, as one right-padded row each: int64
    `rows [N, 1]`, `positions [N, L]` (L the longest; past a sequence's end its first position again) and bool
    `keep [N, L]` (True = the sequence's token). `hidden[rows, positions]` is then `[N, L, D]`."""
    rows, starts, lengths = segment_spans(segment_ids)
    offsets = np.arange(max(int(lengths.max(initial=0)), 1))[None, :]
    keep = offsets < lengths[:, None]
    return rows[:, None], np.where(keep, starts[:, None] + offsets, starts[:, None]), keep


def segment_allowed(segment_ids: np.ndarray) -> np.ndarray:
    """bool `[B, S, S]`: whether query i may attend to key j as packing allows: a key of the query's own segment,
    or, for a padding query (segment 0), every key that is not padding (as in an unpacked row)."""
    queries, keys = segment_ids[:, :, None], segment_ids[:, None, :]
    return (keys != 0) & ((queries == keys) | (queries == 0))


def window_allowed(seq: int, max_distance: int | None) -> np.ndarray:
    """bool `[S, S]`: whether query i may attend to key j, |i - j| <= max_distance (None: every pair)."""
    if max_distance is None:
        return np.ones((seq, seq), dtype=bool)
    positions = np.arange(seq)
    return np.abs(positions[:, None] - positions[None, :]) <= max_distance
