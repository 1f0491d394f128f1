"""Multi-head self-attention with a padding mask (and, in a local layer, a window), rotary positions when the
config has them."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from rosetta_common import EncoderConfig
from rosetta_flax.precision import Compute
from rosetta_flax.rotary import Rotary, apply_rotary


def attention_bias(padding_mask: jax.Array, dtype: jnp.dtype) -> jax.Array:
    """bool `[B, S]` (True = padding) -> additive bias `[B, 1, 1, S]`: 0 for keys, the dtype's lowest for padding.

    A finite lowest value (not -inf) gives padded keys a weight of exactly 0 next to any real key, and a
    sequence that is all padding a uniform average instead of NaN.
    """
    return jnp.where(padding_mask, jnp.finfo(dtype).min, 0).astype(dtype)[:, None, None, :]


def window_bias(padding_mask: jax.Array, max_distance: int, dtype: jnp.dtype) -> jax.Array:
    """bool `[B, S]` (True = padding) -> additive bias `[B, 1, S, S]` of a local layer: the dtype's lowest for a
    padded key or one further than `max_distance` from the query, 0 otherwise."""
    positions = jnp.arange(padding_mask.shape[-1])
    far = jnp.abs(positions[:, None] - positions[None, :]) > max_distance  # [S, S]
    masked = padding_mask[:, None, None, :] | far[None, None]
    return jnp.where(masked, jnp.finfo(dtype).min, 0).astype(dtype)


def attention_biases(config: EncoderConfig, padding_mask: jax.Array, dtype: jnp.dtype) -> dict[int | None, jax.Array]:
    """The bias each kind of layer reads, by `LayerSpec.max_distance`: None (global) `[B, 1, 1, S]`, and each local
    window's `[B, 1, S, S]`."""
    biases: dict[int | None, jax.Array] = {None: attention_bias(padding_mask, dtype)}
    for spec in config.layers:
        if spec.max_distance is not None and spec.max_distance not in biases:
            biases[spec.max_distance] = window_bias(padding_mask, spec.max_distance, dtype)
    return biases


def uniform_where_all_padding(query: jax.Array, bias: jax.Array) -> tuple[jax.Array, jax.Array]:
    """query `[B, H, S, d_head]`, bias `[B, 1, 1 or S, S]` -> the same, with the queries and the bias of every query
    row that has no key to attend to (a sequence that is all padding; in a local layer, a padded position whose
    window holds only padding) set to 0: its scores are then exactly 0 and it attends uniformly, as the oracle
    defines.

    With every key at the dtype's lowest value the softmax is uniform only because q.k is absorbed into that
    value; `jax.grad` does not see the absorption and passes gradients to q and k through it (the oracle's scores
    there are a constant). Zero scores give the same uniform average and no such gradient (as rosetta_torch).
    """
    all_padding = (bias == jnp.finfo(bias.dtype).min).all(axis=-1, keepdims=True)  # [B, 1, 1 or S, 1]
    query = jnp.where(all_padding, jnp.zeros((), query.dtype), query)
    return query, jnp.where(all_padding, jnp.zeros((), bias.dtype), bias)


class MultiHeadSelfAttention(nnx.Module):
    """x `[B, S, D]`, bias `[B, 1, 1 or S, S]`, rotary (cos, sin) `[S, d_head]` when the layer has rotary positions
    -> `[B, S, D]`; heads are contiguous column blocks of d_head.

    `implementation=None` (the default) is `softmax_attention` below, exact in every dtype (float64 included).
    "cudnn" (GPU, bfloat16/float16) or "xla" hands the attention to `jax.nn.dot_product_attention` instead, which
    takes its softmax in float32 and has no dropout: the counterpart of the kernels torch's
    `F.scaled_dot_product_attention` picks for itself. It can be set on a built model (`attn.implementation`).
    """

    def __init__(
        self,
        config: EncoderConfig,
        *,
        dtype: jnp.dtype = jnp.float32,
        compute_dtype: jnp.dtype | None = None,
        rngs: nnx.Rngs,
        implementation: str | None = None,
    ) -> None:
        d = config.d_model
        self.n_heads, self.rotary = config.n_heads, config.positions == "rotary"
        self.q, self.k, self.v, self.out = (
            nnx.Linear(d, d, use_bias=config.attention_bias, param_dtype=dtype, rngs=rngs) for _ in range(4)
        )
        self.dropout = nnx.Dropout(config.dropout, rngs=rngs)
        self.implementation = implementation
        self.compute = Compute(compute_dtype)

    def __call__(self, x: jax.Array, bias: jax.Array, rotary: Rotary | None = None) -> jax.Array:
        batch, seq, d_model = x.shape
        tokens = x.reshape(batch * seq, d_model)  # 2-D projections: see FeedForward.__call__

        def heads(projected: jax.Array) -> jax.Array:  # [B*S, D] -> [B, H, S, d_head]
            return projected.reshape(batch, seq, self.n_heads, -1).swapaxes(1, 2)

        q, k, v = (heads(projected) for projected in self.compute.linears((self.q, self.k, self.v), tokens))
        if self.rotary:
            if rotary is None:
                raise ValueError("this attention has rotary positions: pass its (cos, sin) tables")
            q, k = (self.compute.rotary(apply_rotary, t, rotary) for t in (q, k))
        q, bias = uniform_where_all_padding(q, bias)
        if self.compute.active:
            context = self.policy_attention(q, k, v, bias)
        elif self.implementation is None:
            context = self.softmax_attention(q, k, v, bias)
        else:
            if self.dropout.rate and not self.dropout.deterministic:
                raise ValueError(f"attention dropout needs implementation=None, not {self.implementation!r}")
            # A bool mask (True = attend), at the full [B, 1, S, S] that cuDNN asks for; JAX turns it into its
            # own large negative bias, which cuDNN handles where the dtype's lowest value may not.
            keep = jnp.broadcast_to(bias == 0, (batch, 1, seq, seq))  # global [B, 1, 1, S] or local [B, 1, S, S]
            q, k, v = (t.swapaxes(1, 2) for t in (q, k, v))  # JAX's kernels take [B, S, H, d_head]
            context = jax.nn.dot_product_attention(q, k, v, mask=keep, implementation=self.implementation)
            context = context.swapaxes(1, 2)
        merged = context.swapaxes(1, 2).reshape(batch * seq, d_model)
        return self.compute.linear(self.out, merged).reshape(batch, seq, d_model)

    def softmax_attention(self, q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array) -> jax.Array:
        """q, k, v `[B, H, S, d_head]`, bias `[B, 1, 1, S]` -> context `[B, H, S, d_head]`.

        softmax(scores) @ v, with the softmax's division moved after the matmul: exp(scores - max) @ v / sum,
        the same maths (dropout scales entries, so it commutes with the division) on a [B, H, S, d_head] array
        instead of [B, H, S, S]. With heads leading, XLA on CPU runs this forward faster than `jax.nn.softmax`
        between two einsums (the README's performance section has the numbers). The max is only a shift that
        keeps exp finite; the result does not depend on it, so no gradient flows through it (as in
        `jax.nn.softmax`): its backward, a tie-breaking mask over [B, H, S, S], was a sizeable share of the
        attention's.
        """
        scores = q @ k.swapaxes(-1, -2) / math.sqrt(q.shape[-1]) + bias
        unnormalised = jnp.exp(scores - jax.lax.stop_gradient(scores.max(axis=-1, keepdims=True)))
        return self.dropout(unnormalised) @ v / unnormalised.sum(axis=-1, keepdims=True)

    def policy_attention(self, q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array) -> jax.Array:
        """Attention under a precision policy: q, k, v `[B, H, S, d_head]` (compute dtype), bias float32
        `[B, 1, 1, S]` -> context `[B, H, S, d_head]`. Scores from float32 operands (exact products of the
        bfloat16 values, float32 accumulation), softmax in float32, the probabilities rounded, then p @ v with one
        rounding (as `rosetta_torch.attention.MultiHeadSelfAttention.policy_attention`)."""
        widen = self.compute.widen
        scores = widen(q) @ widen(k).swapaxes(-1, -2) / math.sqrt(q.shape[-1]) + bias
        probabilities = self.dropout(jax.nn.softmax(scores, axis=-1))
        return self.compute.matmul(self.compute.round(probabilities), v)
