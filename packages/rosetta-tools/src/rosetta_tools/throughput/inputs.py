"""Benchmark inputs: random token ids whose sequences end in padding, about `padding` of all positions."""

from __future__ import annotations

import numpy as np

from rosetta_common import EncoderConfig
from rosetta_common.vectors import random_inputs


def pad_lengths(batch: int, seq: int, padding: float) -> tuple[int, ...]:
    """Per-sequence pad counts spread evenly from 0 up, averaging `padding * seq`, each leaving one real token."""
    if padding <= 0:
        return (0,) * batch
    if batch == 1:
        return (min(seq - 1, round(padding * seq)),)
    top = 2 * padding * seq
    return tuple(min(seq - 1, round(top * b / (batch - 1))) for b in range(batch))


def make_inputs(config: EncoderConfig, batch: int, seq: int, padding: float, seed: int) -> tuple[np.ndarray, ...]:
    """(token_ids int64 [B, S], padding_mask bool [B, S], True = padding)."""
    return random_inputs(config, seq, pad_lengths(batch, seq, padding), seed)
