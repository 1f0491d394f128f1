"""rosetta_torch behind a NumPy face: canonical tensors and NumPy inputs in, NumPy arrays out.

The one way the command line, the tests and the tools run this framework on NumPy data. Mirrors
`rosetta_flax.runner`; the framework-specific option is `device`. Outputs are in the model's dtype (bfloat16 as
ml_dtypes' bfloat16).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from rosetta_common import EncoderConfig
from rosetta_common.precision import Precision
from rosetta_torch.convert import from_canonical, tensor_to_numpy


class Runner:
    """An eval-mode rosetta_torch.Encoder holding `tensors` (their dtype, or `precision.params`), on `device`."""

    framework = "torch"

    def __init__(
        self,
        config: EncoderConfig,
        tensors: Mapping[str, np.ndarray],
        *,
        precision: Precision | None = None,
        device: str = "cpu",
    ) -> None:
        self.config, self.device = config, torch.device(device)
        self.model = from_canonical(config, tensors, precision=precision, device=device).eval()

    def _tensor(self, array: np.ndarray | None) -> torch.Tensor | None:
        return None if array is None else torch.as_tensor(array, device=self.device)

    def _inputs(
        self,
        token_ids: np.ndarray,
        padding_mask: np.ndarray | None,
        token_type_ids: np.ndarray | None,
        attention_mask: np.ndarray | None,
    ) -> tuple[tuple[torch.Tensor, torch.Tensor | None], dict[str, torch.Tensor | None]]:
        keywords = {"token_type_ids": self._tensor(token_type_ids), "attention_mask": self._tensor(attention_mask)}
        return (self._tensor(token_ids), self._tensor(padding_mask)), keywords

    def output(
        self,
        token_ids: np.ndarray,
        padding_mask: np.ndarray | None = None,
        *,
        token_type_ids: np.ndarray | None = None,
        attention_mask: np.ndarray | None = None,
    ) -> np.ndarray:
        """The encoder output `[B, S, D]` for token ids int `[B, S]` and padding mask bool `[B, S]` (True = pad),
        or HF's `attention_mask` (1 = keep) instead; `token_type_ids` int `[B, S]` when the config has them."""
        args, keywords = self._inputs(token_ids, padding_mask, token_type_ids, attention_mask)
        with torch.no_grad():
            return tensor_to_numpy(self.model(*args, **keywords).cpu())

    def activations(
        self,
        token_ids: np.ndarray,
        padding_mask: np.ndarray | None = None,
        *,
        token_type_ids: np.ndarray | None = None,
        attention_mask: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """Every component boundary's output, in forward order (`Encoder.activations`)."""
        args, keywords = self._inputs(token_ids, padding_mask, token_type_ids, attention_mask)
        with torch.no_grad():
            activations = self.model.activations(*args, **keywords)
        return {name: tensor_to_numpy(value.cpu()) for name, value in activations.items()}
