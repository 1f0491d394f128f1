"""Multi-head self-attention with a padding mask (and, in a local layer, a window), rotary positions when the
config has them; scaled_dot_product_attention without a precision policy, explicit float32 scores under one."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rosetta_common import EncoderConfig
from rosetta_torch.precision import Compute
from rosetta_torch.rotary import Rotary, apply_rotary


def attention_bias(padding_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """bool `[B, S]` (True = padding) -> additive bias `[B, 1, 1, S]`: 0 for keys, the dtype's lowest for padding.

    A finite lowest value (not -inf) gives padded keys a weight of exactly 0 next to any real key, and a
    sequence that is all padding a uniform average instead of NaN.
    """
    bias = torch.zeros(padding_mask.shape, dtype=dtype, device=padding_mask.device)
    return bias.masked_fill(padding_mask, torch.finfo(dtype).min)[:, None, None, :]


def window_bias(padding_mask: torch.Tensor, max_distance: int, dtype: torch.dtype) -> torch.Tensor:
    """bool `[B, S]` (True = padding) -> additive bias `[B, 1, S, S]` of a local layer: the dtype's lowest for a
    padded key or one further than `max_distance` from the query, 0 otherwise."""
    positions = torch.arange(padding_mask.shape[-1], device=padding_mask.device)
    far = (positions[:, None] - positions[None, :]).abs() > max_distance  # [S, S]
    masked = padding_mask[:, None, None, :] | far[None, None]
    return torch.zeros(masked.shape, dtype=dtype, device=padding_mask.device).masked_fill(
        masked, torch.finfo(dtype).min
    )


def attention_biases(
    config: EncoderConfig, padding_mask: torch.Tensor, dtype: torch.dtype
) -> dict[int | None, torch.Tensor]:
    """The bias each kind of layer reads, by `LayerSpec.max_distance`: None (global) `[B, 1, 1, S]`, and each local
    window's `[B, 1, S, S]`."""
    biases: dict[int | None, torch.Tensor] = {None: attention_bias(padding_mask, dtype)}
    for spec in config.layers:
        if spec.max_distance is not None and spec.max_distance not in biases:
            biases[spec.max_distance] = window_bias(padding_mask, spec.max_distance, dtype)
    return biases


def uniform_where_all_padding(query: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """query `[B, H, S, d_head]`, bias `[B, 1, 1 or S, S]` -> the same, with the queries and the bias of every query
    row that has no key to attend to (a sequence that is all padding; in a local layer, a padded position whose
    window holds only padding) set to 0: its scores are then exactly 0 and it attends uniformly, as the oracle
    defines.

    With every key at the dtype's lowest value the softmax is uniform only because q.k is absorbed into that
    value. The backward does not see the absorption: autodiff passes gradients to q and k through it (the oracle's
    scores there are a constant), and torch's fused CPU kernel recomputes the probabilities from a log-sum-exp that
    absorbed log(S) as well, giving 1 instead of 1/S (value gradients S times too large). Zero scores have neither
    problem; the forward is the same uniform average.
    """
    all_padding = (bias == torch.finfo(bias.dtype).min).all(dim=-1, keepdim=True)  # [B, 1, 1 or S, 1]
    return query.masked_fill(all_padding, 0.0), bias.masked_fill(all_padding, 0.0)


class MultiHeadSelfAttention(nn.Module):
    """x `[B, S, D]`, bias `[B, 1, 1 or S, S]`, rotary (cos, sin) `[S, d_head]` when the layer has rotary positions
    -> `[B, S, D]`; heads are contiguous column blocks of d_head."""

    def __init__(
        self,
        config: EncoderConfig,
        *,
        dtype: torch.dtype | None = None,
        compute_dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        d = config.d_model
        self.d_head, self.dropout = config.d_head, config.dropout
        self.compute = Compute(compute_dtype)
        self.rotary = config.positions == "rotary"
        bias = config.attention_bias
        self.q, self.k, self.v, self.out = (nn.Linear(d, d, bias=bias, dtype=dtype, device=device) for _ in range(4))

    def forward(self, x: torch.Tensor, bias: torch.Tensor, rotary: Rotary | None = None) -> torch.Tensor:
        batch, seq, _ = x.shape

        def heads(projected: torch.Tensor) -> torch.Tensor:  # [B, S, H * d_head] -> [B, H, S, d_head]
            # H from the projection's width: under tensor parallelism a rank holds n_heads / model whole heads
            return projected.view(batch, seq, -1, self.d_head).transpose(1, 2)

        query, key, value = (heads(projected) for projected in self.compute.linears((self.q, self.k, self.v), x))
        if self.rotary:
            if rotary is None:
                raise ValueError("this attention has rotary positions: pass its (cos, sin) tables")
            query, key = (self.compute.rotary(apply_rotary, t, rotary) for t in (query, key))
        query, bias = uniform_where_all_padding(query, bias)
        dropout = self.dropout if self.training else 0.0
        if self.compute.active:
            context = self.policy_attention(query, key, value, bias)
        else:
            context = F.scaled_dot_product_attention(query, key, value, attn_mask=bias, dropout_p=dropout)
        return self.compute.linear(self.out, context.transpose(1, 2).reshape(batch, seq, -1))

    def policy_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Attention under a precision policy: q, k, v `[B, H, S, d_head]` (compute dtype), bias float32
        `[B, 1, 1, S]` -> context `[B, H, S, d_head]`. Scores from float32 operands (exact products of the
        bfloat16 values, float32 accumulation), softmax in float32, the probabilities rounded, then p @ v with one
        rounding (as `rosetta_flax.attention.MultiHeadSelfAttention.policy_attention`)."""
        widen = self.compute.widen
        scores = widen(q) @ widen(k).transpose(-1, -2) / math.sqrt(q.shape[-1]) + bias
        probabilities = F.dropout(torch.softmax(scores, dim=-1), self.dropout, self.training)
        return self.compute.matmul(self.compute.round(probabilities), v)
