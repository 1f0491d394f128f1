"""One encoder layer: attention and feed-forward sub-layers, each with dropout, residual and LayerNorm."""

from __future__ import annotations

import torch
from torch import nn

from rosetta_common import EncoderConfig
from rosetta_torch.attention import MultiHeadSelfAttention
from rosetta_torch.feedforward import FeedForward
from rosetta_torch.precision import Compute


class EncoderLayer(nn.Module):
    """x `[B, S, D]`, attention bias `[B, 1, 1, S]` -> `[B, S, D]`; post-norm, or pre-norm when `norm_first`."""

    def __init__(
        self,
        config: EncoderConfig,
        *,
        dtype: torch.dtype | None = None,
        compute_dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.norm_first = config.norm_first
        self.attn = MultiHeadSelfAttention(config, dtype=dtype, compute_dtype=compute_dtype, device=device)
        self.norm1 = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps, dtype=dtype, device=device)
        self.ffn = FeedForward(config, dtype=dtype, compute_dtype=compute_dtype, device=device)
        self.norm2 = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps, dtype=dtype, device=device)
        self.dropout1 = nn.Dropout(config.dropout)
        self.dropout2 = nn.Dropout(config.dropout)
        self.compute = Compute(compute_dtype)

    def attention_block(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        add, norm = self.compute.add, self.compute.norm
        x = self.compute.fan_out(x)
        if self.norm_first:
            return add(x, self.dropout1(self.attn(norm(self.norm1, x), bias)))
        return norm(self.norm1, add(x, self.dropout1(self.attn(x, bias))))

    def feed_forward_block(self, x: torch.Tensor) -> torch.Tensor:
        add, norm = self.compute.add, self.compute.norm
        x = self.compute.fan_out(x)
        if self.norm_first:
            return add(x, self.dropout2(self.ffn(norm(self.norm2, x))))
        return norm(self.norm2, add(x, self.dropout2(self.ffn(x))))

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.feed_forward_block(self.attention_block(x, bias))
