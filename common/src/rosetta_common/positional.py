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


def position_ids(config: EncoderConfig, token_ids: np.ndarray) -> np.ndarray:
    """The row of the position table each token reads, int64 `[B, S]`.

    "sequential": 0, 1, ..., S-1. "after_padding" (RoBERTa): padding_idx + 1, + 2, ... counting the tokens that are
    not padding_idx, and padding_idx itself at padding tokens (whose rows then do not depend on where they stand).
    """
    batch, seq = token_ids.shape
    if config.position_ids == "sequential":
        return np.broadcast_to(np.arange(seq, dtype=np.int64), (batch, seq))
    real = (token_ids != config.padding_idx).astype(np.int64)
    return np.cumsum(real, axis=1) * real + config.padding_idx


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


def window_allowed(seq: int, max_distance: int | None) -> np.ndarray:
    """bool `[S, S]`: whether query i may attend to key j, |i - j| <= max_distance (None: every pair)."""
    if max_distance is None:
        return np.ones((seq, seq), dtype=bool)
    positions = np.arange(seq)
    return np.abs(positions[:, None] - positions[None, :]) <= max_distance
