"""Position-wise feed-forward network: d_model -> d_ff -> d_model, an MLP or a GLU (`act(up(x)) * gate(x)`)."""

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
    """x `[B, S, D]` -> `[B, S, D]`: up-projection, activation (times the gate projection, for a GLU), dropout,
    down-projection."""

    def __init__(
        self,
        config: EncoderConfig,
        *,
        dtype: jnp.dtype = jnp.float32,
        compute_dtype: jnp.dtype | None = None,
        rngs: nnx.Rngs,
    ) -> None:
        d, f, bias = config.d_model, config.d_ff, config.mlp_bias
        self.up = nnx.Linear(d, f, use_bias=bias, param_dtype=dtype, rngs=rngs)
        glu = config.feed_forward == "glu"
        self.gate = nnx.Linear(d, f, use_bias=bias, param_dtype=dtype, rngs=rngs) if glu else None
        self.down = nnx.Linear(f, d, use_bias=bias, param_dtype=dtype, rngs=rngs)
        self.activation = ACTIVATIONS[config.activation]
        self.dropout = nnx.Dropout(config.dropout, rngs=rngs)
        self.compute = Compute(compute_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        """The projections see the tokens as one `[B*S, D]` matrix. Same maths; under `jax.grad` on XLA's CPU
        backend a 3-D input's weight gradient took a transposed copy and a slower GEMM, slowing the training step
        (docs/pages/performance.md has the numbers)."""
        tokens = x.reshape(-1, x.shape[-1])
        if self.gate is None:
            hidden = self.compute.activation(self.activation, self.compute.linear(self.up, tokens))
        else:
            up, gate = self.compute.linears((self.up, self.gate), tokens)
            hidden = self.compute.glu(self.activation, up, gate)
        return self.compute.linear(self.down, self.dropout(hidden)).reshape(x.shape)
