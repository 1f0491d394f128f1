"""Rotary position embeddings (HF's rotate-half convention): the cos / sin tables, computed in float64 as
constants (not Params, not state: a jitted call folds them in), one pair per rotary base the config's layers use,
and their application to q and k."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rosetta_common import EncoderConfig
from rosetta_common.positional import rotary_tables
from rosetta_flax.precision import Compute

Rotary = tuple[jax.Array, jax.Array]
"""cos and sin `[S, d_head]` for one rotary base (packed: `[B, 1, S, d_head]`, at each token's position)."""


def rotate_half(x: jax.Array) -> jax.Array:
    """`[..., d]` -> `[-x2, x1]` with x1, x2 the two halves of the last axis."""
    half = x.shape[-1] // 2
    return jnp.concatenate((-x[..., half:], x[..., :half]), axis=-1)


def apply_rotary(x: jax.Array, rotary: Rotary) -> jax.Array:
    """q or k `[B, H, S, d_head]` rotated by position: x cos + rotate_half(x) sin (tables in x's dtype)."""
    cos, sin = rotary
    return x * cos + rotate_half(x) * sin


@functools.lru_cache(maxsize=16)
def _float64_tables(seq: int, d_head: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    return rotary_tables(np.arange(seq), d_head, theta)


class RotaryTables(nnx.Module):
    """`tables(seq, dtype) -> {rope_theta: (cos, sin)}`, `[seq, d_head]` each, for every base the layers use (none
    when the config's positions are not rotary), in `dtype` (float32 under a precision policy: rotary is a
    float32 island)."""

    def __init__(self, config: EncoderConfig, *, compute_dtype: jnp.dtype | None = None) -> None:
        self.d_head = config.d_head
        self.compute = Compute(compute_dtype)
        self.thetas = tuple(sorted({spec.rope_theta for spec in config.layers if spec.rope_theta is not None}))

    def tables(self, seq: int, dtype: jnp.dtype, positions: jax.Array | None = None) -> dict[float, Rotary]:
        """Rows 0, ..., seq-1 `[seq, d_head]`, or packed the rows of int `positions` `[B, S]` (each < seq) ->
        `[B, 1, S, d_head]` (each token's position in its own sequence)."""
        dtype = self.compute.island_dtype(dtype)
        tables = {
            theta: tuple(jnp.asarray(table, dtype=dtype) for table in _float64_tables(seq, self.d_head, theta))
            for theta in self.thetas
        }
        if positions is None:
            return tables
        return {theta: tuple(jnp.take(t, positions, axis=0)[:, None] for t in pair) for theta, pair in tables.items()}
