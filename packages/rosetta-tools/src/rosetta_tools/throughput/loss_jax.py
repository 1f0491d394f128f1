"""The harness's training loss in JAX, for the JAX rows and the float64 reference alike."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def masked_mean_square(output: jax.Array, padding_mask: jax.Array, dtype: jnp.dtype) -> jax.Array:
    """Mean of output^2 over the real positions and every feature, accumulated in `dtype`."""
    valid = (~padding_mask).astype(dtype)[..., None]
    return (jnp.square(output.astype(dtype)) * valid).sum() / (valid.sum() * output.shape[-1])
