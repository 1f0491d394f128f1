"""rosetta_flax behind a NumPy face: canonical tensors and NumPy inputs in, NumPy arrays out.

The one way the command line, the tests and the tools run this framework on NumPy data. Mirrors
`rosetta_torch.runner`; the framework-specific option is `jit`: the whole call compiled as one XLA graph
(inputs are checked on the concrete arrays first: under jit JAX's gather would clamp a bad token id). Outputs are
in the model's dtype (bfloat16 as ml_dtypes' bfloat16).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from rosetta_common import EncoderConfig
from rosetta_common.precision import Precision
from rosetta_flax.convert import from_canonical
from rosetta_flax.encoder import Encoder

Keywords = dict[str, jnp.ndarray | None]


@nnx.jit
def _output(
    model: Encoder, token_ids: jnp.ndarray, padding_mask: jnp.ndarray | None, keywords: Keywords
) -> jnp.ndarray:
    return model(token_ids, padding_mask, **keywords)


@nnx.jit
def _activations(model: Encoder, token_ids: jnp.ndarray, padding_mask: jnp.ndarray | None, keywords: Keywords) -> dict:
    return model.activations(token_ids, padding_mask, **keywords)


class Runner:
    """An eval-mode rosetta_flax.Encoder holding `tensors` (their dtype, or `precision.params`; float64 needs
    JAX x64)."""

    framework = "flax"

    def __init__(
        self,
        config: EncoderConfig,
        tensors: Mapping[str, np.ndarray],
        *,
        precision: Precision | None = None,
        jit: bool = False,
    ) -> None:
        self.config, self.jit = config, jit
        self.model = from_canonical(config, tensors, precision=precision)
        self.model.eval()

    def _inputs(
        self,
        token_ids: np.ndarray,
        padding_mask: np.ndarray | None,
        token_type_ids: np.ndarray | None,
        attention_mask: np.ndarray | None,
    ) -> tuple[jnp.ndarray, jnp.ndarray | None, Keywords]:
        if self.jit:
            self.model.check_inputs(
                token_ids, padding_mask, token_type_ids=token_type_ids, attention_mask=attention_mask
            )

        def array(value: np.ndarray | None) -> jnp.ndarray | None:
            return None if value is None else jnp.asarray(value)

        keywords = {"token_type_ids": array(token_type_ids), "attention_mask": array(attention_mask)}
        return jnp.asarray(token_ids), array(padding_mask), keywords

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
        ids, mask, keywords = self._inputs(token_ids, padding_mask, token_type_ids, attention_mask)
        return np.asarray(_output(self.model, ids, mask, keywords) if self.jit else self.model(ids, mask, **keywords))

    def activations(
        self,
        token_ids: np.ndarray,
        padding_mask: np.ndarray | None = None,
        *,
        token_type_ids: np.ndarray | None = None,
        attention_mask: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """Every component boundary's output, in forward order (`Encoder.activations`)."""
        ids, mask, keywords = self._inputs(token_ids, padding_mask, token_type_ids, attention_mask)
        if self.jit:
            activations = _activations(self.model, ids, mask, keywords)
        else:
            activations = self.model.activations(ids, mask, **keywords)
        return {name: np.asarray(value) for name, value in activations.items()}
