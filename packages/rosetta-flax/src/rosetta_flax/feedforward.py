"""Position-wise feed-forward network: d_model -> d_ff -> d_model."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from rosetta_common import EncoderConfig
from rosetta_flax.precision import Compute

ACTIVATIONS = {
    "relu": jax.nn.relu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # jax's default is the tanh approximation
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
}


class FeedForward(nnx.Module):
    """x `[B, S, D]` -> `[B, S, D]`: up-projection, activation, dropout, down-projection."""

    def __init__(
        self,
        config: EncoderConfig,
        *,
        dtype: jnp.dtype = jnp.float32,
        compute_dtype: jnp.dtype | None = None,
        rngs: nnx.Rngs,
    ) -> None:
        self.up = nnx.Linear(config.d_model, config.d_ff, param_dtype=dtype, rngs=rngs)
        self.down = nnx.Linear(config.d_ff, config.d_model, param_dtype=dtype, rngs=rngs)
        self.activation = ACTIVATIONS[config.activation]
        self.dropout = nnx.Dropout(config.dropout, rngs=rngs)
        self.compute = Compute(compute_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        """The projections see the tokens as one `[B*S, D]` matrix. Same maths; under `jax.grad` on XLA's CPU
        backend a 3-D input's weight gradient took a transposed copy and a slower GEMM, slowing the training step
        (the README's performance section has the numbers)."""
        tokens = x.reshape(-1, x.shape[-1])
        hidden = self.compute.activation(self.activation, self.compute.linear(self.up, tokens))
        return self.compute.linear(self.down, self.dropout(hidden)).reshape(x.shape)
