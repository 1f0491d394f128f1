"""rosetta_flax behind a NumPy face: canonical tensors and NumPy inputs in, NumPy arrays out.

The one way the command line, the tests and the tools run this framework on NumPy data. Mirrors
`rosetta_torch.runner`; the framework-specific option is `jit`: the whole call compiled as one XLA graph
(inputs are checked on the concrete arrays first: under jit JAX's gather would clamp a bad token id).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from rosetta_common import EncoderConfig
from rosetta_flax.convert import from_canonical
from rosetta_flax.encoder import Encoder


@nnx.jit
def _output(model: Encoder, token_ids: jnp.ndarray, padding_mask: jnp.ndarray | None) -> jnp.ndarray:
    return model(token_ids, padding_mask)


@nnx.jit
def _activations(model: Encoder, token_ids: jnp.ndarray, padding_mask: jnp.ndarray | None) -> dict:
    return model.activations(token_ids, padding_mask)


class Runner:
    """An eval-mode rosetta_flax.Encoder holding `tensors` (their dtype; float64 needs JAX x64)."""

    framework = "flax"

    def __init__(self, config: EncoderConfig, tensors: Mapping[str, np.ndarray], *, jit: bool = False) -> None:
        self.config, self.jit = config, jit
        self.model = from_canonical(config, tensors)
        self.model.eval()

    def _inputs(self, token_ids: np.ndarray, padding_mask: np.ndarray | None) -> tuple[jnp.ndarray, jnp.ndarray | None]:
        if self.jit:
            self.model.check_inputs(token_ids, padding_mask)
        return jnp.asarray(token_ids), None if padding_mask is None else jnp.asarray(padding_mask)

    def output(self, token_ids: np.ndarray, padding_mask: np.ndarray | None = None) -> np.ndarray:
        """The encoder output `[B, S, D]` for token ids int `[B, S]` and padding mask bool `[B, S]` (True = pad)."""
        call = _output if self.jit else Encoder.__call__
        return np.asarray(call(self.model, *self._inputs(token_ids, padding_mask)))

    def activations(self, token_ids: np.ndarray, padding_mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Every component boundary's output, in forward order (`Encoder.activations`)."""
        call = _activations if self.jit else Encoder.activations
        return {
            name: np.asarray(value) for name, value in call(self.model, *self._inputs(token_ids, padding_mask)).items()
        }
