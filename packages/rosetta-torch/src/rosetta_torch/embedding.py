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


def run_starts(segment_ids: torch.Tensor) -> torch.Tensor:
    """int64 `[B, S]`: the index where each token's run of equal segment ids begins (as
    `rosetta_common.positional.run_starts`)."""
    index = torch.arange(segment_ids.shape[1], device=segment_ids.device).expand(segment_ids.shape)
    first = torch.ones(segment_ids.shape, dtype=torch.bool, device=segment_ids.device)
    first[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
    return torch.cummax(torch.where(first, index, 0), dim=1).values


def sequence_positions(segment_ids: torch.Tensor) -> torch.Tensor:
    """int64 `[B, S]`: each packed token's offset from its segment's first token; at padding (segment 0), its index
    in the row (as `rosetta_common.positional.sequence_positions`)."""
    index = torch.arange(segment_ids.shape[1], device=segment_ids.device).expand(segment_ids.shape)
    return torch.where(segment_ids == 0, index, index - run_starts(segment_ids))


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

    x `[B, S, D]` -> same, rows 0, 1, ..., S-1, or packed (`segment_ids` `[B, S]`) each token's position in its
    own sequence; `token_ids` is not read (the call matches `LearnedPositionalEmbedding`'s).
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

    def forward(
        self, x: torch.Tensor, token_ids: torch.Tensor | None = None, segment_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        if segment_ids is None:
            return x + self.table[: x.shape[1]]
        return x + self.table[sequence_positions(segment_ids)]


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

    def position_ids(self, token_ids: torch.Tensor, segment_ids: torch.Tensor | None = None) -> torch.Tensor:
        """int64 `[B, S]`: 0, 1, ..., S-1; or, after padding, padding_idx + 1, + 2, ... over the non-padding tokens
        and padding_idx at padding tokens. Packed (`segment_ids`): counted from each segment's start, padding
        where the segment id is 0 (as `rosetta_common.positional.position_ids`)."""
        if self.padding_idx is None:
            if segment_ids is not None:
                return sequence_positions(segment_ids)
            return torch.arange(token_ids.shape[1], device=token_ids.device).expand(token_ids.shape)
        real = token_ids != self.padding_idx
        if segment_ids is not None:
            real = real & (segment_ids != 0)
        real = real.long()
        counted = torch.cumsum(real, dim=1)
        if segment_ids is not None:  # count from the segment's start: subtract what came before it
            counted = counted - torch.gather(counted - real, 1, run_starts(segment_ids))
        return counted * real + self.padding_idx

    def forward(
        self, x: torch.Tensor, token_ids: torch.Tensor, segment_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        weight = self.compute.widen(self.weight)
        return x + F.embedding(self.position_ids(token_ids, segment_ids), weight, padding_idx=self.padding_idx)


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
