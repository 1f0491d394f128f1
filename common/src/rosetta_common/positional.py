"""Sinusoidal positional encoding (Vaswani et al. 2017, section 3.5), computed in float64."""

from __future__ import annotations

import functools

import numpy as np


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
