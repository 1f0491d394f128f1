"""Rotary position embeddings (HF's rotate-half convention): the cos / sin tables, computed in float64 and held as
non-persistent buffers, one pair per rotary base the config's layers use, and their application to q and k."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from rosetta_common import EncoderConfig
from rosetta_common.positional import rotary_tables
from rosetta_torch.precision import Compute

Rotary = tuple[torch.Tensor, torch.Tensor]
"""cos and sin `[S, d_head]` for one rotary base (packed: `[B, 1, S, d_head]`, at each token's position)."""


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """`[..., d]` -> `[-x2, x1]` with x1, x2 the two halves of the last axis."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(x: torch.Tensor, rotary: Rotary) -> torch.Tensor:
    """q or k `[B, H, S, d_head]` rotated by position: x cos + rotate_half(x) sin (tables in x's dtype)."""
    cos, sin = rotary
    return x * cos + rotate_half(x) * sin


class RotaryTables(nn.Module):
    """`tables(seq) -> {rope_theta: (cos, sin)}`, `[seq, d_head]` each, for every base the layers use (none when
    the config's positions are not rotary). Float64-derived constants of `max_len` rows, in the model's dtype
    (float32 under a precision policy: rotary is a float32 island)."""

    def __init__(
        self,
        config: EncoderConfig,
        *,
        dtype: torch.dtype | None = None,
        compute_dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.max_len, self.d_head = config.max_len, config.d_head
        self.compute = Compute(compute_dtype)
        self.thetas = tuple(sorted({spec.rope_theta for spec in config.layers if spec.rope_theta is not None}))
        for i, theta in enumerate(self.thetas):
            cos, sin = self._tables(theta, dtype, device)
            self.register_buffer(f"cos{i}", cos, persistent=False)
            self.register_buffer(f"sin{i}", sin, persistent=False)

    def _tables(self, theta: float, dtype: torch.dtype | None, device: torch.device | str | None) -> Rotary:
        cos, sin = rotary_tables(np.arange(self.max_len), self.d_head, theta)
        dtype = self.compute.island_dtype(dtype or torch.get_default_dtype())
        return torch.from_numpy(cos).to(dtype=dtype, device=device), torch.from_numpy(sin).to(
            dtype=dtype, device=device
        )

    def rebuild(self, dtype: torch.dtype, device: torch.device | str | None) -> None:
        """Recompute every table from float64 in `dtype` on `device` (after `.to()`, or from the meta device)."""
        for i, theta in enumerate(self.thetas):
            cos, sin = self._tables(theta, dtype, device)
            setattr(self, f"cos{i}", cos)
            setattr(self, f"sin{i}", sin)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> RotaryTables:
        # Rebuild from float64 after .to() / .double(): a float32 -> float64 round trip must not lose digits.
        super()._apply(fn, recurse)
        if self.thetas:
            self.rebuild(self.cos0.dtype, self.cos0.device)
        return self

    def tables(self, seq: int, positions: torch.Tensor | None = None) -> dict[float, Rotary]:
        """Rows 0, ..., seq-1 `[seq, d_head]`, or packed the rows of int `positions` `[B, S]` -> `[B, 1, S, d_head]`
        (each token's position in its own sequence)."""
        if positions is None:
            return {
                theta: (getattr(self, f"cos{i}")[:seq], getattr(self, f"sin{i}")[:seq])
                for i, theta in enumerate(self.thetas)
            }
        return {
            theta: (getattr(self, f"cos{i}")[positions][:, None], getattr(self, f"sin{i}")[positions][:, None])
            for i, theta in enumerate(self.thetas)
        }
