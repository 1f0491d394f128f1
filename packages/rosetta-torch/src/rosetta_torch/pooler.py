"""BERT's pooler: the first position's output through a dense layer and tanh."""

from __future__ import annotations

import torch
from torch import nn

from rosetta_common import EncoderConfig
from rosetta_torch.precision import Compute


class Pooler(nn.Module):
    """hidden `[B, S, D]` -> `tanh(dense(hidden[:, 0]))` `[B, D]` (dense: D -> D, with bias)."""

    def __init__(
        self,
        config: EncoderConfig,
        *,
        dtype: torch.dtype | None = None,
        compute_dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.dense = nn.Linear(config.d_model, config.d_model, dtype=dtype, device=device)
        self.compute = Compute(compute_dtype)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.compute.activation(torch.tanh, self.compute.linear(self.dense, hidden[:, 0]))
