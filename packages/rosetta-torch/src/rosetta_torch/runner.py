"""rosetta_torch behind a NumPy face: canonical tensors and NumPy inputs in, NumPy arrays out.

The one way the command line, the tests and the tools run this framework on NumPy data. Mirrors
`rosetta_flax.runner`; the framework-specific option is `device`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from rosetta_common import EncoderConfig
from rosetta_torch.convert import from_canonical


class Runner:
    """An eval-mode rosetta_torch.Encoder holding `tensors` (their dtype), on `device`."""

    framework = "torch"

    def __init__(self, config: EncoderConfig, tensors: Mapping[str, np.ndarray], *, device: str = "cpu") -> None:
        self.config, self.device = config, torch.device(device)
        self.model = from_canonical(config, tensors, device=device).eval()

    def _inputs(
        self, token_ids: np.ndarray, padding_mask: np.ndarray | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        mask = None if padding_mask is None else torch.as_tensor(padding_mask, device=self.device)
        return torch.as_tensor(token_ids, device=self.device), mask

    def output(self, token_ids: np.ndarray, padding_mask: np.ndarray | None = None) -> np.ndarray:
        """The encoder output `[B, S, D]` for token ids int `[B, S]` and padding mask bool `[B, S]` (True = pad)."""
        with torch.no_grad():
            return self.model(*self._inputs(token_ids, padding_mask)).cpu().numpy()

    def activations(self, token_ids: np.ndarray, padding_mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Every component boundary's output, in forward order (`Encoder.activations`)."""
        with torch.no_grad():
            activations = self.model.activations(*self._inputs(token_ids, padding_mask))
        return {name: value.cpu().numpy() for name, value in activations.items()}
