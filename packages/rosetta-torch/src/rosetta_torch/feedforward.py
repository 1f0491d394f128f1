"""Position-wise feed-forward network: d_model -> d_ff -> d_model."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rosetta_common import EncoderConfig
from rosetta_torch.precision import Compute

ACTIVATIONS = {
    "relu": F.relu,
    "gelu": lambda x: F.gelu(x, approximate="none"),
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
}


class FeedForward(nn.Module):
    """x `[B, S, D]` -> `[B, S, D]`: up-projection, activation, dropout, down-projection."""

    def __init__(
        self,
        config: EncoderConfig,
        *,
        dtype: torch.dtype | None = None,
        compute_dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.up = nn.Linear(config.d_model, config.d_ff, dtype=dtype, device=device)
        self.down = nn.Linear(config.d_ff, config.d_model, dtype=dtype, device=device)
        self.activation = ACTIVATIONS[config.activation]
        self.dropout = nn.Dropout(config.dropout)
        self.compute = Compute(compute_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.compute.activation(self.activation, self.compute.linear(self.up, x))
        return self.compute.linear(self.down, self.dropout(hidden))
