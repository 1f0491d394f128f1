"""transformers' FlaxBertEncoder (linen) holding canonical weights behind rosetta's embedding: the
hf.FlaxBertEncoder row, and the peer `tests/test_hf_peers.py` holds to the float64 oracle."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from rosetta_common import EncoderConfig, sinusoidal_table
from rosetta_tools.throughput import hf_bert

Apply = Callable[[Any, jax.Array, jax.Array], jax.Array]  # (params, token_ids, padding_mask) -> [B, S, D]


def hf_flax_bert_peer(config: EncoderConfig, tensors: dict[str, np.ndarray], compute: jnp.dtype) -> tuple[Apply, Any]:
    """transformers' FlaxBertEncoder holding canonical `tensors`, behind rosetta's embedding: (apply, params).

    The front is rosetta's: a table lookup, the sqrt(d_model) scale, the sinusoidal table (see `hf_bert`).
    """
    from transformers import BertConfig
    from transformers.models.bert.modeling_flax_bert import FlaxBertEncoder

    bert = FlaxBertEncoder(BertConfig(**hf_bert.bert_config_kwargs(config)), dtype=compute)
    params = {
        "embedding": jnp.asarray(tensors["embedding.weight"]),
        "encoder": traverse_util.unflatten_dict(
            {name: jnp.asarray(value) for name, value in hf_bert.encoder_tensors(tensors).items()}, sep="."
        ),
    }
    scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
    table = sinusoidal_table(config.max_len, config.d_model)

    def apply(params: dict[str, Any], token_ids: jax.Array, padding_mask: jax.Array) -> jax.Array:
        x = jnp.take(params["embedding"], token_ids, axis=0) * scale
        x = x + jnp.asarray(table[: token_ids.shape[1]], x.dtype)
        keep = (~padding_mask).astype(jnp.int32)  # BERT's attention_mask: 1 = attend
        return bert.apply({"params": params["encoder"]}, x, keep, None, deterministic=True).last_hidden_state

    return apply, params
