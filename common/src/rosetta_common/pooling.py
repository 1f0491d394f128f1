"""The sentence-embedding head in float64 NumPy (the oracle of `rosetta_torch.sentence_head` and
`rosetta_flax.sentence_head`): sentence-transformers' Pooling, Dense and Normalize, operation for operation.

Pooling reads the encoder output `hidden [B, S, D]` and `keep [B, S]` (1 = a real token, HF's attention_mask):
  cls                    the first kept position's row (argmax of keep: position 0 with right padding)
  max                    the per-feature maximum over kept positions (the others set to -inf first)
  mean                   sum(hidden * keep) / max(count, 1e-9)
  mean_sqrt_len_tokens   sum(hidden * keep) / sqrt(max(count, 1e-9))
  weightedmean           positions weighted 1, 2, ..., S: sum(hidden * keep * w) / max(sum(keep * w), 1e-9)
  lasttoken              the last kept position's row of hidden * keep (position 0's zeros for a row kept nowhere)
Several modes are concatenated in order. `include_prompt=False` with a `prompt_length` P first drops the P
positions from each row's first kept one (sentence-transformers' `_exclude_prompt_from_mask`). Then each dense
layer `act(x @ kernel + bias)`, then Normalize: `x / max(||x||_2, 1e-12)` (torch.nn.functional.normalize).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from rosetta_common.sentence_head import PREFIX, HeadConfig

CLAMP, NORM_EPS = 1e-9, 1e-12

_erf = np.vectorize(math.erf, otypes=[np.float64])


def pooling_mask(head: HeadConfig, keep: np.ndarray, prompt_length: int | None = None) -> np.ndarray:
    """`keep [B, S]` with the prompt's positions cleared when the head excludes the prompt."""
    keep = np.asarray(keep).astype(np.int64)
    if head.include_prompt or prompt_length is None:
        return keep
    first = keep.argmax(axis=1)  # each row's first kept position (left padding moves it)
    positions = np.arange(keep.shape[1])[None, :]
    return np.where(positions < (first + prompt_length)[:, None], 0, keep)


def pool(mode: str, hidden: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """One pooling mode: `hidden [B, S, D]`, `keep [B, S]` -> `[B, D]`."""
    mask = keep[:, :, None].astype(hidden.dtype)
    rows = np.arange(hidden.shape[0])
    if mode == "cls":
        return hidden[rows, keep.argmax(axis=1)]
    if mode == "max":
        return np.where(mask == 0, -np.inf, hidden).max(axis=1)
    if mode in ("mean", "mean_sqrt_len_tokens"):
        total, count = (hidden * mask).sum(axis=1), np.maximum(mask.sum(axis=1), CLAMP)
        return total / count if mode == "mean" else total / np.sqrt(count)
    if mode == "weightedmean":
        weighted = mask * np.arange(1, hidden.shape[1] + 1, dtype=hidden.dtype)[None, :, None]
        return (hidden * weighted).sum(axis=1) / np.maximum(weighted.sum(axis=1), CLAMP)
    if mode == "lasttoken":
        flipped = keep[:, ::-1]
        index = np.where(flipped.max(axis=1) == 0, keep.shape[1] - 1, flipped.argmax(axis=1))
        return (hidden * mask)[rows, keep.shape[1] - index - 1]
    raise ValueError(f"unknown pooling mode {mode!r}")


def dense_activation(name: str, x: np.ndarray) -> np.ndarray:
    """identity, tanh, relu, exact gelu (erf; torch.nn.GELU's default) or sigmoid."""
    functions = {
        "identity": lambda v: v,
        "tanh": np.tanh,
        "relu": lambda v: np.maximum(v, 0.0),
        "gelu": lambda v: 0.5 * v * (1.0 + _erf(v / math.sqrt(2.0))),
        "sigmoid": lambda v: 1.0 / (1.0 + np.exp(-v)),
    }
    return functions[name](x)


def sentence_embedding(
    head: HeadConfig,
    tensors: Mapping[str, np.ndarray],
    hidden: np.ndarray,
    keep: np.ndarray,
    prompt_length: int | None = None,
) -> np.ndarray:
    """The head in float64: encoder output `hidden [B, S, D]`, `keep [B, S]` (1 = real token) -> `[B, D_out]`."""
    hidden = np.asarray(hidden, dtype=np.float64)
    mask = pooling_mask(head, keep, prompt_length)
    x = np.concatenate([pool(mode, hidden, mask) for mode in head.pooling], axis=-1)
    for i, dense in enumerate(head.dense):
        x = x @ np.asarray(tensors[f"{PREFIX}dense.{i}.kernel"], dtype=np.float64)
        if dense.bias:
            x = x + np.asarray(tensors[f"{PREFIX}dense.{i}.bias"], dtype=np.float64)
        x = dense_activation(dense.activation, x)
    if head.normalize:
        x = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), NORM_EPS)
    return x
