"""Token embedding (padding_idx, sqrt(d_model) scaling) and the sinusoidal positional encoding."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from rosetta_common import EncoderConfig, sinusoidal_table


class TokenEmbedding(nn.Module):
    """token_ids `[B, S]` -> `[B, S, D]`; the padding_idx row starts at zero and never receives gradient."""

    def __init__(
        self, config: EncoderConfig, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> None:
        super().__init__()
        self.padding_idx = config.padding_idx
        self.scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        weight = torch.randn(config.vocab_size, config.d_model, dtype=dtype, device=device) / math.sqrt(config.d_model)
        if self.padding_idx is not None:
            weight[self.padding_idx] = 0.0
        self.weight = nn.Parameter(weight)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(token_ids, self.weight, padding_idx=self.padding_idx) * self.scale


class PositionalEncoding(nn.Module):
    """Adds the sinusoidal table, a non-trainable, non-persistent buffer of `max_len` rows. `[B, S, D]` -> same."""

    def __init__(
        self, config: EncoderConfig, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> None:
        super().__init__()
        self.max_len, self.d_model = config.max_len, config.d_model
        self.register_buffer("table", self._table(dtype, device), persistent=False)

    def _table(self, dtype: torch.dtype | None, device: torch.device | str | None) -> torch.Tensor:
        table = torch.from_numpy(sinusoidal_table(self.max_len, self.d_model).copy())
        return table.to(dtype=dtype or torch.get_default_dtype(), device=device)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> PositionalEncoding:
        # Rebuild from float64 after .to() / .double(): a float32 -> float64 round trip must not lose digits.
        super()._apply(fn, recurse)
        self.table = self._table(self.table.dtype, self.table.device)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.table[: x.shape[1]]
