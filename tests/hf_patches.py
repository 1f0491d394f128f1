"""What the proofs against transformers patch, once for every test that needs it (tests/test_modern_encoders.py says
why): ModernBERT's rotary cos / sin computed in the model's dtype (float64) instead of float32."""

from __future__ import annotations

import pytest
import torch
from transformers.models.modernbert import modeling_modernbert


def exact_rotary_forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`ModernBertRotaryEmbedding.forward` with the frequencies and angles in float64."""
    dim = 2 * self.inv_freq.shape[0]
    inv_freq = 1.0 / (self.config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    angles = position_ids[:, :, None].double() * inv_freq.to(position_ids.device)
    doubled = torch.cat((angles, angles), dim=-1)
    return doubled.cos().to(x.dtype), doubled.sin().to(x.dtype)


def patch_exact_rotary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(modeling_modernbert.ModernBertRotaryEmbedding, "forward", exact_rotary_forward)
