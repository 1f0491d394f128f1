"""One encoder layer: attention and feed-forward sub-layers, each with dropout, residual and LayerNorm."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from rosetta_common import EncoderConfig
from rosetta_flax.attention import MultiHeadSelfAttention
from rosetta_flax.feedforward import FeedForward
from rosetta_flax.precision import Compute
from rosetta_flax.rotary import Rotary


def layer_norm(
    config: EncoderConfig, dtype: jnp.dtype, rngs: nnx.Rngs, *, epsilon: float | None = None
) -> nnx.LayerNorm:
    """A LayerNorm's parameters and epsilon (the config's, flax's default being 1e-6; `epsilon` when given, e.g. the
    embedding norm's); a bias when `norm_bias`. Applied by `Compute.norm` / `norm32` with torch's maths
    (`precision.layer_norm_maths`: two-pass variance, torch's residuals for the backward), not by its own call."""
    epsilon = config.layer_norm_eps if epsilon is None else epsilon
    return nnx.LayerNorm(
        config.d_model,
        epsilon=epsilon,
        use_fast_variance=False,
        use_bias=config.norm_bias,
        param_dtype=dtype,
        rngs=rngs,
    )


class EncoderLayer(nnx.Module):
    """x `[B, S, D]`, padding_mask bool `[B, S]` (True = padding), rotary tables when the config has rotary
    positions, segment_ids int `[B, S]` for packed rows -> `[B, S, D]`; post-norm, or pre-norm when `norm_first`.
    Layer `index`'s kind (`EncoderConfig.layer`): global or local, its rotary base, whether it has an attention
    norm."""

    def __init__(
        self,
        config: EncoderConfig,
        *,
        index: int = 0,
        dtype: jnp.dtype = jnp.float32,
        compute_dtype: jnp.dtype | None = None,
        rngs: nnx.Rngs,
    ) -> None:
        self.norm_first, self.spec = config.norm_first, config.layer(index)
        self.attn = MultiHeadSelfAttention(
            config, max_distance=self.spec.max_distance, dtype=dtype, compute_dtype=compute_dtype, rngs=rngs
        )
        self.norm1 = layer_norm(config, dtype, rngs) if self.spec.attention_norm else None
        self.ffn = FeedForward(config, dtype=dtype, compute_dtype=compute_dtype, rngs=rngs)
        self.norm2 = layer_norm(config, dtype, rngs)
        self.dropout1 = nnx.Dropout(config.dropout, rngs=rngs)
        self.dropout2 = nnx.Dropout(config.dropout, rngs=rngs)
        self.compute = Compute(compute_dtype)

    def attention_block(
        self,
        x: jax.Array,
        padding_mask: jax.Array,
        rotary: Rotary | None = None,
        segment_ids: jax.Array | None = None,
    ) -> jax.Array:
        add = self.compute.add
        x = self.compute.fan_out(x)
        if self.norm_first:
            return add(x, self.dropout1(self.attn(self.attention_norm(x), padding_mask, rotary, segment_ids)))
        return self.attention_norm(add(x, self.dropout1(self.attn(x, padding_mask, rotary, segment_ids))))

    def attention_norm(self, x: jax.Array) -> jax.Array:
        """norm1, or x itself in a layer without one (ModernBERT's layer 0)."""
        return x if self.norm1 is None else self.compute.norm(self.norm1, x)

    def feed_forward_block(self, x: jax.Array) -> jax.Array:
        add, norm = self.compute.add, self.compute.norm
        x = self.compute.fan_out(x)
        if self.norm_first:
            return add(x, self.dropout2(self.ffn(norm(self.norm2, x))))
        return norm(self.norm2, add(x, self.dropout2(self.ffn(x))))

    def __call__(
        self,
        x: jax.Array,
        padding_mask: jax.Array,
        rotary: Rotary | None = None,
        segment_ids: jax.Array | None = None,
    ) -> jax.Array:
        return self.feed_forward_block(self.attention_block(x, padding_mask, rotary, segment_ids))
