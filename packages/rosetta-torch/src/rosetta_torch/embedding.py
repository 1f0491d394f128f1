"""The embedding front: token embedding (padding_idx, sqrt(d_model) scaling), positions (the sinusoidal table or a
learned one, as BERT and RoBERTa) and token-type (segment) embeddings. The embedding LayerNorm after them is a
plain `nn.LayerNorm` (`Encoder.embedding_norm`)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from rosetta_common import EncoderConfig, sinusoidal_table
from rosetta_torch.precision import Compute

BERT_INIT_STD = 0.02
"""The standard deviation BERT initialises its position and token-type tables with."""


class TokenEmbedding(nn.Module):
    """token_ids `[B, S]` -> `[B, S, D]`; the padding_idx row starts at zero and never receives gradient."""

    def __init__(
        self,
        config: EncoderConfig,
        *,
        dtype: torch.dtype | None = None,
        compute_dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.padding_idx = config.padding_idx
        self.scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        self.compute = Compute(compute_dtype)
        weight = torch.randn(config.vocab_size, config.d_model, dtype=dtype, device=device) / math.sqrt(config.d_model)
        if self.padding_idx is not None:
            weight[self.padding_idx] = 0.0
        self.weight = nn.Parameter(weight)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        rows = F.embedding(token_ids, self.compute.widen(self.weight), padding_idx=self.padding_idx)
        return rows * self.scale


class PositionalEncoding(nn.Module):
    """Adds the sinusoidal table, a non-trainable, non-persistent buffer of `max_len` rows.

    x `[B, S, D]` -> same; `token_ids` is not read (the call matches `LearnedPositionalEmbedding`'s).
    """

    def __init__(
        self,
        config: EncoderConfig,
        *,
        dtype: torch.dtype | None = None,
        compute_dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.max_len, self.d_model = config.max_len, config.d_model
        self.compute = Compute(compute_dtype)
        self.register_buffer("table", self._table(dtype, device), persistent=False)

    def _table(self, dtype: torch.dtype | None, device: torch.device | str | None) -> torch.Tensor:
        """`[max_len, D]` in `dtype` (float32 under a precision policy: the embedding front is a float32 island)."""
        table = torch.from_numpy(sinusoidal_table(self.max_len, self.d_model).copy())
        return table.to(dtype=self.compute.island_dtype(dtype or torch.get_default_dtype()), device=device)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> PositionalEncoding:
        # Rebuild from float64 after .to() / .double(): a float32 -> float64 round trip must not lose digits.
        super()._apply(fn, recurse)
        self.table = self._table(self.table.dtype, self.table.device)
        return self

    def forward(self, x: torch.Tensor, token_ids: torch.Tensor | None = None) -> torch.Tensor:
        return x + self.table[: x.shape[1]]


class LearnedPositionalEmbedding(nn.Module):
    """Adds rows of a trained `[position_table_size, D]` table (BERT, RoBERTa): x `[B, S, D]`, token_ids `[B, S]`
    -> `[B, S, D]`.

    The rows read are `position_ids(token_ids)` (see `rosetta_common.positional.position_ids`). With
    `position_ids="after_padding"` (RoBERTa) padding tokens read the padding_idx row, which starts at zero and
    never receives gradient, as the token embedding's padding row. Initialised N(0, 0.02), as BERT.
    """

    def __init__(
        self,
        config: EncoderConfig,
        *,
        dtype: torch.dtype | None = None,
        compute_dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.padding_idx = config.padding_idx if config.position_ids == "after_padding" else None
        self.compute = Compute(compute_dtype)
        shape = (config.position_table_size, config.d_model)
        weight = torch.randn(shape, dtype=dtype, device=device) * BERT_INIT_STD
        if self.padding_idx is not None:
            weight[self.padding_idx] = 0.0
        self.weight = nn.Parameter(weight)

    def position_ids(self, token_ids: torch.Tensor) -> torch.Tensor:
        """int64 `[B, S]`: 0, 1, ..., S-1; or, after padding, padding_idx + 1, + 2, ... over the non-padding tokens
        and padding_idx at padding tokens."""
        if self.padding_idx is None:
            return torch.arange(token_ids.shape[1], device=token_ids.device).expand(token_ids.shape)
        real = (token_ids != self.padding_idx).long()
        return torch.cumsum(real, dim=1) * real + self.padding_idx

    def forward(self, x: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        weight = self.compute.widen(self.weight)
        return x + F.embedding(self.position_ids(token_ids), weight, padding_idx=self.padding_idx)


class TokenTypeEmbedding(nn.Module):
    """token_type_ids int `[B, S]` in `[0, type_vocab_size)` -> `[B, S, D]`; initialised N(0, 0.02), as BERT."""

    def __init__(
        self,
        config: EncoderConfig,
        *,
        dtype: torch.dtype | None = None,
        compute_dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.compute = Compute(compute_dtype)
        shape = (config.type_vocab_size, config.d_model)
        self.weight = nn.Parameter(torch.randn(shape, dtype=dtype, device=device) * BERT_INIT_STD)

    def forward(self, token_type_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(token_type_ids, self.compute.widen(self.weight))
