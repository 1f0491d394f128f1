"""Token embedding (padding_idx, sqrt(d_model) scaling) and the sinusoidal positional encoding."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from rosetta_common import EncoderConfig, sinusoidal_table


class TokenEmbedding(nnx.Module):
    """token_ids `[B, S]` -> `[B, S, D]`; the padding_idx row starts at zero and never receives gradient.

    Flax's `nnx.Embed` has no padding_idx: the gradient is stopped at padding positions here, which leaves
    the padding row's gradient exactly zero, as torch's `padding_idx` does.
    """

    def __init__(self, config: EncoderConfig, *, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs) -> None:
        self.padding_idx = config.padding_idx
        self.scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        weight = jax.random.normal(rngs.params(), (config.vocab_size, config.d_model), dtype)
        weight = weight / math.sqrt(config.d_model)
        if self.padding_idx is not None:
            weight = weight.at[self.padding_idx].set(0.0)
        self.weight = nnx.Param(weight)

    def __call__(self, token_ids: jax.Array) -> jax.Array:
        x = jnp.take(self.weight[...], token_ids, axis=0)
        if self.padding_idx is not None:
            x = jnp.where((token_ids == self.padding_idx)[..., None], jax.lax.stop_gradient(x), x)
        return x * self.scale


class PositionalEncoding(nnx.Module):
    """Adds the sinusoidal table, a constant of `max_len` rows (not a Param, not state). `[B, S, D]` -> same."""

    def __init__(self, config: EncoderConfig) -> None:
        self.max_len, self.d_model = config.max_len, config.d_model

    def __call__(self, x: jax.Array) -> jax.Array:
        return x + jnp.asarray(sinusoidal_table(self.max_len, self.d_model)[: x.shape[1]], dtype=x.dtype)
