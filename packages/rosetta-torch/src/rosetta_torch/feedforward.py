"""Position-wise feed-forward network: d_model -> d_ff -> d_model, an MLP or a GLU (`act(up(x)) * gate(x)`)."""

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
    """x `[B, S, D]` -> `[B, S, D]`: up-projection, activation (times the gate projection, for a GLU), dropout,
    down-projection."""

    def __init__(
        self,
        config: EncoderConfig,
        *,
        dtype: torch.dtype | None = None,
        compute_dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        d, f, bias = config.d_model, config.d_ff, config.mlp_bias
        self.up = nn.Linear(d, f, bias=bias, dtype=dtype, device=device)
        self.gate = nn.Linear(d, f, bias=bias, dtype=dtype, device=device) if config.feed_forward == "glu" else None
        self.down = nn.Linear(f, d, bias=bias, dtype=dtype, device=device)
        self.activation = ACTIVATIONS[config.activation]
        self.dropout = nn.Dropout(config.dropout)
        self.compute = Compute(compute_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate is None:
            hidden = self.compute.activation(self.activation, self.compute.linear(self.up, x))
        else:
            up, gate = self.compute.linears((self.up, self.gate), x)
            hidden = self.compute.glu(self.activation, up, gate)
        return self.compute.linear(self.down, self.dropout(hidden))
