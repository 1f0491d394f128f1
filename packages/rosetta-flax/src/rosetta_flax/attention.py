"""Multi-head self-attention with a padding mask."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from rosetta_common import EncoderConfig


def attention_bias(padding_mask: jax.Array, dtype: jnp.dtype) -> jax.Array:
    """bool `[B, S]` (True = padding) -> additive bias `[B, 1, 1, S]`: 0 for keys, the dtype's lowest for padding.

    A finite lowest value (not -inf) gives padded keys a weight of exactly 0 next to any real key, and a
    sequence that is all padding a uniform average instead of NaN.
    """
    return jnp.where(padding_mask, jnp.finfo(dtype).min, 0).astype(dtype)[:, None, None, :]


class MultiHeadSelfAttention(nnx.Module):
    """x `[B, S, D]`, bias `[B, 1, 1, S]` -> `[B, S, D]`; heads are contiguous column blocks of d_head.

    `implementation=None` (the default) is the einsum + softmax below, exact in every dtype (float64 included).
    "cudnn" (GPU, bfloat16/float16) or "xla" hands the attention to `jax.nn.dot_product_attention` instead, which
    takes its softmax in float32 and has no dropout: the counterpart of the kernels torch's
    `F.scaled_dot_product_attention` picks for itself. It can be set on a built model (`attn.implementation`).
    """

    def __init__(
        self,
        config: EncoderConfig,
        *,
        dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
        implementation: str | None = None,
    ) -> None:
        d = config.d_model
        self.n_heads = config.n_heads
        self.q, self.k, self.v, self.out = (nnx.Linear(d, d, param_dtype=dtype, rngs=rngs) for _ in range(4))
        self.dropout = nnx.Dropout(config.dropout, rngs=rngs)
        self.implementation = implementation

    def __call__(self, x: jax.Array, bias: jax.Array) -> jax.Array:
        batch, seq, d_model = x.shape

        def heads(projection: nnx.Linear) -> jax.Array:  # [B, S, D] -> [B, S, H, d_head]
            return projection(x).reshape(batch, seq, self.n_heads, -1)

        q, k, v = heads(self.q), heads(self.k), heads(self.v)
        if self.implementation is None:
            scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1]) + bias
            weights = self.dropout(jax.nn.softmax(scores, axis=-1))
            context = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
        else:
            if self.dropout.rate and not self.dropout.deterministic:
                raise ValueError(f"attention dropout needs implementation=None, not {self.implementation!r}")
            # A bool mask (True = attend), at the full [B, 1, S, S] that cuDNN asks for; JAX turns it into its
            # own large negative bias, which cuDNN handles where the dtype's lowest value may not.
            keep = jnp.broadcast_to(bias == 0, (batch, 1, seq, seq))
            context = jax.nn.dot_product_attention(q, k, v, mask=keep, implementation=self.implementation)
        return self.out(context.reshape(batch, seq, d_model))
