"""The harness's training loss in torch, for the torch rows and the float64 reference alike."""

from __future__ import annotations

import torch


def masked_mean_square(output: torch.Tensor, padding_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Mean of output^2 over the real positions and every feature, accumulated in `dtype`."""
    valid = (~padding_mask).to(dtype)[..., None]
    return (output.to(dtype).square() * valid).sum() / (valid.sum() * output.shape[-1])
