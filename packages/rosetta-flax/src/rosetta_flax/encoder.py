"""The Transformer encoder: embedding, positional encoding, N layers, optional final LayerNorm."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rosetta_common import EncoderConfig, check_array_type, check_padding_mask, check_token_ids
from rosetta_flax.attention import attention_bias
from rosetta_flax.embedding import PositionalEncoding, TokenEmbedding
from rosetta_flax.layer import EncoderLayer, layer_norm

ARRAY_TYPES = (jax.Array, np.ndarray)


def _is_traced(array: object) -> bool:
    return isinstance(array, jax.core.Tracer)


class Encoder(nnx.Module):
    """`model(token_ids [B, S], padding_mask [B, S] bool, True = padding) -> [B, S, D]`.

    Inputs are checked when they are concrete; under `jax.jit` call `check_inputs` before the jitted function
    (JAX's gather would silently clamp a bad token id).
    """

    def __init__(self, config: EncoderConfig, *, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs) -> None:
        if jnp.dtype(dtype) == jnp.float64 and not jax.config.jax_enable_x64:
            raise ValueError("a float64 Encoder needs JAX x64: jax.config.update('jax_enable_x64', True)")
        self.config = config
        self.embedding = TokenEmbedding(config, dtype=dtype, rngs=rngs)
        self.positional = PositionalEncoding(config)
        self.dropout = nnx.Dropout(config.dropout, rngs=rngs)
        self.layers = nnx.List([EncoderLayer(config, dtype=dtype, rngs=rngs) for _ in range(config.n_layers)])
        self.final_norm = layer_norm(config, dtype, rngs) if config.has_final_norm else None

    def check_inputs(
        self, token_ids: jax.Array | np.ndarray, padding_mask: jax.Array | np.ndarray | None = None
    ) -> None:
        """Raise a clear InputError for bad token ids or a bad padding mask (concrete arrays only)."""
        check_array_type("token_ids", token_ids, ARRAY_TYPES, "a JAX or NumPy array", "jnp.asarray")
        if padding_mask is not None:
            check_array_type("padding_mask", padding_mask, ARRAY_TYPES, "a JAX or NumPy array", "jnp.asarray")
        ids = np.asarray(token_ids)
        is_int = np.issubdtype(ids.dtype, np.integer)
        nonempty = is_int and ids.size > 0
        check_token_ids(
            self.config,
            ids.shape,
            str(ids.dtype),
            is_int,
            int(ids.min()) if nonempty else 0,
            int(ids.max()) if nonempty else 0,
        )
        if padding_mask is not None:
            check_padding_mask(
                ids.shape, np.shape(padding_mask), str(padding_mask.dtype), padding_mask.dtype == np.bool_
            )

    def padding_mask_for(self, token_ids: jax.Array, padding_mask: jax.Array | None) -> jax.Array:
        """Check concrete inputs and return the bool padding mask `[B, S]`."""
        if not _is_traced(token_ids) and not _is_traced(padding_mask):
            self.check_inputs(token_ids, padding_mask)
        if padding_mask is not None:
            return padding_mask
        if self.config.padding_idx is None:
            return jnp.zeros(token_ids.shape, dtype=bool)
        return token_ids == self.config.padding_idx

    def activations(self, token_ids: jax.Array, padding_mask: jax.Array | None = None) -> dict[str, jax.Array]:
        """Every boundary activation `[B, S, D]`, named as in `rosetta_common.oracle`."""
        padding_mask = self.padding_mask_for(token_ids, padding_mask)
        acts = {"embedding": self.embedding(token_ids)}
        x = acts["positional"] = self.positional(acts["embedding"])
        x = self.dropout(x)
        bias = attention_bias(padding_mask, x.dtype)
        for i, layer in enumerate(self.layers):
            x = acts[f"layers.{i}.attn"] = layer.attention_block(x, bias)
            x = acts[f"layers.{i}.ffn"] = layer.feed_forward_block(x)
        if self.final_norm is not None:
            x = acts["final_norm"] = self.final_norm(x)
        acts["output"] = x
        return acts

    def __call__(self, token_ids: jax.Array, padding_mask: jax.Array | None = None) -> jax.Array:
        padding_mask = self.padding_mask_for(token_ids, padding_mask)
        x = self.dropout(self.positional(self.embedding(token_ids)))
        bias = attention_bias(padding_mask, x.dtype)
        for layer in self.layers:
            x = layer(x, bias)
        return x if self.final_norm is None else self.final_norm(x)
