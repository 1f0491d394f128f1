"""Multi-head self-attention with a padding mask, via scaled_dot_product_attention."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rosetta_common import EncoderConfig


def attention_bias(padding_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """bool `[B, S]` (True = padding) -> additive bias `[B, 1, 1, S]`: 0 for keys, the dtype's lowest for padding.

    A finite lowest value (not -inf) gives padded keys a weight of exactly 0 next to any real key, and a
    sequence that is all padding a uniform average instead of NaN.
    """
    bias = torch.zeros(padding_mask.shape, dtype=dtype, device=padding_mask.device)
    return bias.masked_fill(padding_mask, torch.finfo(dtype).min)[:, None, None, :]


class MultiHeadSelfAttention(nn.Module):
    """x `[B, S, D]`, bias `[B, 1, 1, S]` -> `[B, S, D]`; heads are contiguous column blocks of d_head."""

    def __init__(
        self, config: EncoderConfig, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> None:
        super().__init__()
        d = config.d_model
        self.n_heads, self.dropout = config.n_heads, config.dropout
        self.q, self.k, self.v, self.out = (nn.Linear(d, d, dtype=dtype, device=device) for _ in range(4))

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        batch, seq, d_model = x.shape

        def heads(projection: nn.Linear) -> torch.Tensor:  # [B, S, D] -> [B, H, S, d_head]
            return projection(x).view(batch, seq, self.n_heads, -1).transpose(1, 2)

        context = F.scaled_dot_product_attention(
            heads(self.q),
            heads(self.k),
            heads(self.v),
            attn_mask=bias,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out(context.transpose(1, 2).reshape(batch, seq, d_model))
