"""One encoder layer: attention and feed-forward sub-layers, each with dropout, residual and LayerNorm."""

from __future__ import annotations

import torch
from torch import nn

from rosetta_common import EncoderConfig
from rosetta_torch.attention import MultiHeadSelfAttention
from rosetta_torch.feedforward import FeedForward
from rosetta_torch.precision import Compute
from rosetta_torch.rotary import Rotary


def layer_norm(
    config: EncoderConfig,
    *,
    eps: float | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> nn.LayerNorm:
    """A LayerNorm of d_model with the config's eps (`eps` when given, e.g. the embedding norm's) and a bias
    when `norm_bias`."""
    eps = config.layer_norm_eps if eps is None else eps
    return nn.LayerNorm(config.d_model, eps=eps, bias=config.norm_bias, dtype=dtype, device=device)


class EncoderLayer(nn.Module):
    """x `[B, S, D]`, padding_mask bool `[B, S]` (True = padding), rotary tables when the config has rotary
    positions, segment_ids int `[B, S]` for packed rows -> `[B, S, D]`; post-norm, or pre-norm when `norm_first`.
    Layer `index`'s kind (`EncoderConfig.layer`): global or local, its rotary base, whether it has an attention
    norm."""

    def __init__(
        self,
        config: EncoderConfig,
        *,
        index: int = 0,
        dtype: torch.dtype | None = None,
        compute_dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.norm_first, self.spec = config.norm_first, config.layer(index)
        self.attn = MultiHeadSelfAttention(
            config, max_distance=self.spec.max_distance, dtype=dtype, compute_dtype=compute_dtype, device=device
        )
        self.norm1 = layer_norm(config, dtype=dtype, device=device) if self.spec.attention_norm else None
        self.ffn = FeedForward(config, dtype=dtype, compute_dtype=compute_dtype, device=device)
        self.norm2 = layer_norm(config, dtype=dtype, device=device)
        self.dropout1 = nn.Dropout(config.dropout)
        self.dropout2 = nn.Dropout(config.dropout)
        self.compute = Compute(compute_dtype)

    def attention_block(
        self,
        x: torch.Tensor,
        padding_mask: torch.Tensor,
        rotary: Rotary | None = None,
        segment_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        add = self.compute.add
        x = self.compute.fan_out(x)
        if self.norm_first:
            return add(x, self.dropout1(self.attn(self.attention_norm(x), padding_mask, rotary, segment_ids)))
        return self.attention_norm(add(x, self.dropout1(self.attn(x, padding_mask, rotary, segment_ids))))

    def attention_norm(self, x: torch.Tensor) -> torch.Tensor:
        """norm1, or x itself in a layer without one (ModernBERT's layer 0)."""
        return x if self.norm1 is None else self.compute.norm(self.norm1, x)

    def feed_forward_block(self, x: torch.Tensor) -> torch.Tensor:
        add, norm = self.compute.add, self.compute.norm
        x = self.compute.fan_out(x)
        if self.norm_first:
            return add(x, self.dropout2(self.ffn(norm(self.norm2, x))))
        return norm(self.norm2, add(x, self.dropout2(self.ffn(x))))

    def forward(
        self,
        x: torch.Tensor,
        padding_mask: torch.Tensor,
        rotary: Rotary | None = None,
        segment_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.feed_forward_block(self.attention_block(x, padding_mask, rotary, segment_ids))
