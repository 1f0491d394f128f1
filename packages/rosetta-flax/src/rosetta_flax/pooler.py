"""BERT's pooler: the first position's output through a dense layer and tanh."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from rosetta_common import EncoderConfig
from rosetta_flax.precision import Compute


class Pooler(nnx.Module):
    """hidden `[B, S, D]` -> `tanh(dense(hidden[:, 0]))` `[B, D]` (dense: D -> D, with bias)."""

    def __init__(
        self,
        config: EncoderConfig,
        *,
        dtype: jnp.dtype = jnp.float32,
        compute_dtype: jnp.dtype | None = None,
        rngs: nnx.Rngs,
    ) -> None:
        self.dense = nnx.Linear(config.d_model, config.d_model, param_dtype=dtype, rngs=rngs)
        self.compute = Compute(compute_dtype)

    def __call__(self, hidden: jax.Array) -> jax.Array:
        return self.compute.activation(jnp.tanh, self.compute.linear(self.dense, hidden[:, 0]))
