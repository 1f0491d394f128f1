"""The embedding front: token embedding (padding_idx, sqrt(d_model) scaling), positions (the sinusoidal table or a
learned one, as BERT and RoBERTa) and token-type (segment) embeddings. The embedding LayerNorm after them is an
`nnx.LayerNorm` with torch's maths (`Encoder.embedding_norm`)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from rosetta_common import EncoderConfig, sinusoidal_table
from rosetta_flax.precision import Compute

BERT_INIT_STD = 0.02
"""The standard deviation BERT initialises its position and token-type tables with."""


def _rows_without_gradient_at(weight: jax.Array, ids: jax.Array, frozen: int | None) -> jax.Array:
    """`weight[ids]` `[B, S, D]`; the rows read at `ids == frozen` pass no gradient back to the table, which leaves
    that row's gradient exactly zero, as torch's `padding_idx` does (flax's `nnx.Embed` has no such thing)."""
    rows = jnp.take(weight, ids, axis=0)
    if frozen is None:
        return rows
    return jnp.where((ids == frozen)[..., None], jax.lax.stop_gradient(rows), rows)


def run_starts(segment_ids: jax.Array) -> jax.Array:
    """int `[B, S]`: the index where each token's run of equal segment ids begins (as
    `rosetta_common.positional.run_starts`)."""
    index = jnp.broadcast_to(jnp.arange(segment_ids.shape[1]), segment_ids.shape)
    first = jnp.ones(segment_ids.shape, dtype=bool).at[:, 1:].set(segment_ids[:, 1:] != segment_ids[:, :-1])
    return jax.lax.cummax(jnp.where(first, index, 0), axis=1)


def sequence_positions(segment_ids: jax.Array) -> jax.Array:
    """int `[B, S]`: each packed token's offset from its segment's first token; at padding (segment 0), its index
    in the row (as `rosetta_common.positional.sequence_positions`)."""
    index = jnp.broadcast_to(jnp.arange(segment_ids.shape[1]), segment_ids.shape)
    return jnp.where(segment_ids == 0, index, index - run_starts(segment_ids))


class TokenEmbedding(nnx.Module):
    """token_ids `[B, S]` -> `[B, S, D]`; the padding_idx row starts at zero and never receives gradient.

    Flax's `nnx.Embed` has no padding_idx: the gradient is stopped at padding positions here, which leaves
    the padding row's gradient exactly zero, as torch's `padding_idx` does.
    """

    def __init__(
        self,
        config: EncoderConfig,
        *,
        dtype: jnp.dtype = jnp.float32,
        compute_dtype: jnp.dtype | None = None,
        rngs: nnx.Rngs,
    ) -> None:
        self.padding_idx = config.padding_idx
        self.scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        self.compute = Compute(compute_dtype)
        weight = jax.random.normal(rngs.params(), (config.vocab_size, config.d_model), dtype)
        weight = weight / math.sqrt(config.d_model)
        if self.padding_idx is not None:
            weight = weight.at[self.padding_idx].set(0.0)
        self.weight = nnx.Param(weight)

    def __call__(self, token_ids: jax.Array) -> jax.Array:
        return _rows_without_gradient_at(self.compute.widen(self.weight[...]), token_ids, self.padding_idx) * self.scale


class PositionalEncoding(nnx.Module):
    """Adds the sinusoidal table, a constant of `max_len` rows (not a Param, not state).

    x `[B, S, D]` -> same, rows 0, 1, ..., S-1, or packed (`segment_ids` `[B, S]`) each token's position in its
    own sequence; `token_ids` is not read (the call matches `LearnedPositionalEmbedding`'s).
    """

    def __init__(self, config: EncoderConfig) -> None:
        self.max_len, self.d_model = config.max_len, config.d_model

    def __call__(
        self, x: jax.Array, token_ids: jax.Array | None = None, segment_ids: jax.Array | None = None
    ) -> jax.Array:
        table = sinusoidal_table(self.max_len, self.d_model)
        if segment_ids is None:
            return x + jnp.asarray(table[: x.shape[1]], dtype=x.dtype)
        return x + jnp.take(jnp.asarray(table, dtype=x.dtype), sequence_positions(segment_ids), axis=0)


class LearnedPositionalEmbedding(nnx.Module):
    """Adds rows of a trained `[position_table_size, D]` table (BERT, RoBERTa): x `[B, S, D]`, token_ids `[B, S]`
    -> `[B, S, D]`.

    The rows read are `position_ids(token_ids)` (see `rosetta_common.positional.position_ids`). With
    `position_ids="after_padding"` (RoBERTa) padding tokens read the padding_idx row, which starts at zero and
    never receives gradient (stopped as in `TokenEmbedding`). Initialised N(0, 0.02), as BERT.
    """

    def __init__(
        self,
        config: EncoderConfig,
        *,
        dtype: jnp.dtype = jnp.float32,
        compute_dtype: jnp.dtype | None = None,
        rngs: nnx.Rngs,
    ) -> None:
        self.padding_idx = config.padding_idx if config.position_ids == "after_padding" else None
        self.compute = Compute(compute_dtype)
        weight = jax.random.normal(rngs.params(), (config.position_table_size, config.d_model), dtype) * BERT_INIT_STD
        if self.padding_idx is not None:
            weight = weight.at[self.padding_idx].set(0.0)
        self.weight = nnx.Param(weight)

    def position_ids(self, token_ids: jax.Array, segment_ids: jax.Array | None = None) -> jax.Array:
        """int `[B, S]`: 0, 1, ..., S-1; or, after padding, padding_idx + 1, + 2, ... over the non-padding tokens
        and padding_idx at padding tokens. Packed (`segment_ids`): counted from each segment's start, padding
        where the segment id is 0 (as `rosetta_common.positional.position_ids`)."""
        if self.padding_idx is None:
            if segment_ids is not None:
                return sequence_positions(segment_ids)
            return jnp.broadcast_to(jnp.arange(token_ids.shape[1]), token_ids.shape)
        real = token_ids != self.padding_idx
        if segment_ids is not None:
            real = real & (segment_ids != 0)
        real = real.astype(token_ids.dtype)
        counted = jnp.cumsum(real, axis=1)
        if segment_ids is not None:  # count from the segment's start: subtract what came before it
            counted = counted - jnp.take_along_axis(counted - real, run_starts(segment_ids), axis=1)
        return counted * real + self.padding_idx

    def __call__(self, x: jax.Array, token_ids: jax.Array, segment_ids: jax.Array | None = None) -> jax.Array:
        weight = self.compute.widen(self.weight[...])
        return x + _rows_without_gradient_at(weight, self.position_ids(token_ids, segment_ids), self.padding_idx)


class TokenTypeEmbedding(nnx.Module):
    """token_type_ids int `[B, S]` in `[0, type_vocab_size)` -> `[B, S, D]`; initialised N(0, 0.02), as BERT."""

    def __init__(
        self,
        config: EncoderConfig,
        *,
        dtype: jnp.dtype = jnp.float32,
        compute_dtype: jnp.dtype | None = None,
        rngs: nnx.Rngs,
    ) -> None:
        weight = jax.random.normal(rngs.params(), (config.type_vocab_size, config.d_model), dtype) * BERT_INIT_STD
        self.weight = nnx.Param(weight)
        self.compute = Compute(compute_dtype)

    def __call__(self, token_type_ids: jax.Array) -> jax.Array:
        return jnp.take(self.compute.widen(self.weight[...]), token_type_ids, axis=0)
