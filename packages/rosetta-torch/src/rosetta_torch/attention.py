"""Multi-head self-attention with a padding mask, via scaled_dot_product_attention."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rosetta_common import EncoderConfig
from rosetta_torch.precision import Compute


def attention_bias(padding_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """bool `[B, S]` (True = padding) -> additive bias `[B, 1, 1, S]`: 0 for keys, the dtype's lowest for padding.

    A finite lowest value (not -inf) gives padded keys a weight of exactly 0 next to any real key, and a
    sequence that is all padding a uniform average instead of NaN.
    """
    bias = torch.zeros(padding_mask.shape, dtype=dtype, device=padding_mask.device)
    return bias.masked_fill(padding_mask, torch.finfo(dtype).min)[:, None, None, :]


def uniform_where_all_padding(query: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """query `[B, H, S, d_head]`, bias `[B, 1, 1, S]` -> the same, with the queries and the bias of every sequence
    that is all padding set to 0: its scores are then exactly 0 and it attends uniformly, as the oracle defines.

    With every key at the dtype's lowest value the softmax is uniform only because q.k is absorbed into that
    value. The backward does not see the absorption: autodiff passes gradients to q and k through it (the oracle's
    scores there are a constant), and torch's fused CPU kernel recomputes the probabilities from a log-sum-exp that
    absorbed log(S) as well, giving 1 instead of 1/S (value gradients S times too large). Zero scores have neither
    problem; the forward is the same uniform average.
    """
    all_padding = (bias == torch.finfo(bias.dtype).min).all(dim=-1, keepdim=True)  # [B, 1, 1, 1]
    return query.masked_fill(all_padding, 0.0), bias.masked_fill(all_padding, 0.0)


class MultiHeadSelfAttention(nn.Module):
    """x `[B, S, D]`, bias `[B, 1, 1, S]` -> `[B, S, D]`; heads are contiguous column blocks of d_head."""

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
        self.q, self.k, self.v, self.out = (nn.Linear(d, d, dtype=dtype, device=device) for _ in range(4))

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape

        def heads(projected: torch.Tensor) -> torch.Tensor:  # [B, S, H * d_head] -> [B, H, S, d_head]
            # H from the projection's width: under tensor parallelism a rank holds n_heads / model whole heads
            return projected.view(batch, seq, -1, self.d_head).transpose(1, 2)

        query, key, value = (heads(projected) for projected in self.compute.linears((self.q, self.k, self.v), x))
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
