"""One encoder layer: attention and feed-forward sub-layers, each with dropout, residual and LayerNorm."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from rosetta_common import EncoderConfig
from rosetta_flax.attention import MultiHeadSelfAttention
from rosetta_flax.feedforward import FeedForward


def layer_norm(
    config: EncoderConfig, dtype: jnp.dtype, rngs: nnx.Rngs, *, epsilon: float | None = None
) -> nnx.LayerNorm:
    """A LayerNorm with torch's maths: the config's epsilon (flax: 1e-6; `epsilon` when given, e.g. the embedding
    norm's) and the two-pass variance."""
    epsilon = config.layer_norm_eps if epsilon is None else epsilon
    return nnx.LayerNorm(config.d_model, epsilon=epsilon, use_fast_variance=False, param_dtype=dtype, rngs=rngs)


class EncoderLayer(nnx.Module):
    """x `[B, S, D]`, attention bias `[B, 1, 1, S]` -> `[B, S, D]`; post-norm, or pre-norm when `norm_first`."""

    def __init__(self, config: EncoderConfig, *, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs) -> None:
        self.norm_first = config.norm_first
        self.attn = MultiHeadSelfAttention(config, dtype=dtype, rngs=rngs)
        self.norm1 = layer_norm(config, dtype, rngs)
        self.ffn = FeedForward(config, dtype=dtype, rngs=rngs)
        self.norm2 = layer_norm(config, dtype, rngs)
        self.dropout1 = nnx.Dropout(config.dropout, rngs=rngs)
        self.dropout2 = nnx.Dropout(config.dropout, rngs=rngs)

    def attention_block(self, x: jax.Array, bias: jax.Array) -> jax.Array:
        if self.norm_first:
            return x + self.dropout1(self.attn(self.norm1(x), bias))
        return self.norm1(x + self.dropout1(self.attn(x, bias)))

    def feed_forward_block(self, x: jax.Array) -> jax.Array:
        if self.norm_first:
            return x + self.dropout2(self.ffn(self.norm2(x)))
        return self.norm2(x + self.dropout2(self.ffn(x)))

    def __call__(self, x: jax.Array, bias: jax.Array) -> jax.Array:
        return self.feed_forward_block(self.attention_block(x, bias))
