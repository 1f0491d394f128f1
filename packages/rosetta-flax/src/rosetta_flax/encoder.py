"""The Transformer encoder: the embedding front (token embedding, positions, token types, embedding LayerNorm),
N layers, an optional final LayerNorm, and an optional pooler."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rosetta_common import EncoderConfig, check_array_type
from rosetta_common.inputs import check_encoder_inputs, numpy_facts
from rosetta_common.sentence_head import NoSentenceHeadError
from rosetta_flax.embedding import (
    LearnedPositionalEmbedding,
    PositionalEncoding,
    TokenEmbedding,
    TokenTypeEmbedding,
    sequence_positions,
)
from rosetta_flax.layer import EncoderLayer, layer_norm
from rosetta_flax.pooler import Pooler
from rosetta_flax.precision import Compute
from rosetta_flax.rotary import RotaryTables
from rosetta_flax.sentence_head import SentenceHead

ARRAY_TYPES = (jax.Array, np.ndarray)
Array = jax.Array | np.ndarray


def _is_traced(array: object) -> bool:
    return isinstance(array, jax.core.Tracer)


class Encoder(nnx.Module):
    """`model(token_ids [B, S], padding_mask [B, S] bool, True = padding) -> [B, S, D]`.

    Keywords: `token_type_ids` int `[B, S]` (configs with token types; default all 0), `attention_mask`
    `[B, S]` (HF's convention, 1 = keep, 0 = padding; instead of `padding_mask`) and `segment_ids` int `[B, S]`
    (packed rows: 0 = padding, k = the k-th sequence of the row; each packed token's output is its sequence's
    alone; `rosetta_common.packing` builds them). `pooled(hidden) -> [B, D]` when
    the config has a pooler; `embed(...) -> [B, D_out]` when it has a sentence head.
    Inputs are checked when they are concrete; under `jax.jit` call `check_inputs`
    before the jitted function (JAX's gather would silently clamp a bad token id).
    """

    def __init__(
        self,
        config: EncoderConfig,
        *,
        dtype: jnp.dtype = jnp.float32,
        compute_dtype: jnp.dtype | None = None,
        rngs: nnx.Rngs,
    ) -> None:
        if jnp.dtype(dtype) == jnp.float64 and not jax.config.jax_enable_x64:
            raise ValueError("a float64 Encoder needs JAX x64: jax.config.update('jax_enable_x64', True)")
        self.config = config
        self.compute = Compute(compute_dtype)
        kinds = {"dtype": dtype, "compute_dtype": compute_dtype, "rngs": rngs}
        self.embedding = TokenEmbedding(config, **kinds)
        positional = {
            "learned": lambda: LearnedPositionalEmbedding(config, **kinds),
            "sinusoidal": lambda: PositionalEncoding(config),
            "rotary": lambda: None,  # applied inside each attention, from `rotary`'s tables
        }
        self.positional = positional[config.positions]()
        self.token_type = TokenTypeEmbedding(config, **kinds) if config.type_vocab_size else None
        self.embedding_norm = (
            layer_norm(config, dtype, rngs, epsilon=config.embedding_norm_epsilon) if config.embedding_norm else None
        )
        self.dropout = nnx.Dropout(config.dropout, rngs=rngs)
        self.rotary = RotaryTables(config, compute_dtype=compute_dtype)
        self.layers = nnx.List([EncoderLayer(config, index=i, **kinds) for i in range(config.n_layers)])
        self.final_norm = layer_norm(config, dtype, rngs) if config.has_final_norm else None
        self.pooler = Pooler(config, **kinds) if config.pooler else None
        self.sentence_head: SentenceHead | None = nnx.data(None)  # set by `load` from a sentence-transformers head

    def check_inputs(
        self,
        token_ids: Array,
        padding_mask: Array | None = None,
        *,
        token_type_ids: Array | None = None,
        attention_mask: Array | None = None,
        segment_ids: Array | None = None,
    ) -> None:
        """Raise a clear InputError for bad token ids, token type ids, masks or segment ids (concrete arrays only).

        The checks and their words are `rosetta_common.inputs.check_encoder_inputs`'s: both masks at once, token types
        for an encoder without them, ids out of range, shapes or dtypes that do not fit.
        """
        kind, convert = "a JAX or NumPy array", "jnp.asarray"
        check_array_type("token_ids", token_ids, ARRAY_TYPES, kind, convert)
        for name, value in (
            ("padding_mask", padding_mask),
            ("token_type_ids", token_type_ids),
            ("attention_mask", attention_mask),
            ("segment_ids", segment_ids),
        ):
            if value is not None:
                check_array_type(name, value, ARRAY_TYPES, kind, convert)
        given = None  # the padding a mask says: packed, it must agree with the segment ids
        if segment_ids is not None and attention_mask is not None:
            given = np.asarray(attention_mask) == 0
        elif segment_ids is not None and padding_mask is not None:
            given = np.asarray(padding_mask)
        check_encoder_inputs(
            self.config,
            numpy_facts(token_ids),
            None if padding_mask is None else numpy_facts(padding_mask),
            token_type_ids=None if token_type_ids is None else numpy_facts(token_type_ids),
            attention_mask=None if attention_mask is None else numpy_facts(attention_mask, binary=True),
            segment_ids=None if segment_ids is None else np.asarray(segment_ids),
            mask_padding=given,
        )

    def padding_mask_for(
        self,
        token_ids: jax.Array,
        padding_mask: jax.Array | None,
        *,
        token_type_ids: jax.Array | None = None,
        attention_mask: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
    ) -> jax.Array:
        """Check concrete inputs and return the bool padding mask `[B, S]`: `segment_ids == 0` (packed),
        `padding_mask`, or `attention_mask == 0`, or `token_ids == padding_idx` (no padding when padding_idx is
        None)."""
        arrays = (token_ids, padding_mask, token_type_ids, attention_mask, segment_ids)
        if not any(_is_traced(array) for array in arrays):
            self.check_inputs(
                token_ids,
                padding_mask,
                token_type_ids=token_type_ids,
                attention_mask=attention_mask,
                segment_ids=segment_ids,
            )
        if segment_ids is not None:
            return jnp.asarray(segment_ids) == 0
        if attention_mask is not None:
            return jnp.asarray(attention_mask) == 0
        if padding_mask is not None:
            return padding_mask
        if self.config.padding_idx is None:
            return jnp.zeros(token_ids.shape, dtype=bool)
        return token_ids == self.config.padding_idx

    def embedding_front(
        self,
        token_ids: jax.Array,
        token_type_ids: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
    ) -> dict[str, jax.Array]:
        """The activations up to the first layer, `[B, S, D]` each, named as in `rosetta_common.oracle`:
        "embedding", "positional" (+ positions, restarting at each segment when packed, + token types: all 0 when
        `token_type_ids` is None) and "embedding_norm" when configured. Unchecked and before dropout: `__call__`
        and `activations` check first."""
        acts = {"embedding": self.embedding(token_ids)}
        x = acts["embedding"]
        if self.positional is not None:
            x = self.positional(x, token_ids, segment_ids)
        if self.token_type is not None:
            types = jnp.zeros_like(token_ids) if token_type_ids is None else token_type_ids
            x = x + self.token_type(types)
        acts["positional"] = x
        if self.embedding_norm is not None:
            acts["embedding_norm"] = self.compute.norm32(self.embedding_norm, x)
        return acts

    def pooled(self, hidden: jax.Array) -> jax.Array:
        """The pooler on the encoder output: hidden `[B, S, D]` -> `tanh(dense(hidden[:, 0]))` `[B, D]`."""
        if self.pooler is None:
            raise ValueError("this encoder has no pooler (EncoderConfig.pooler=False)")
        return self.pooler(hidden)

    def embed(
        self,
        token_ids: jax.Array,
        padding_mask: jax.Array | None = None,
        *,
        token_type_ids: jax.Array | None = None,
        attention_mask: jax.Array | None = None,
        prompt_length: int | None = None,
    ) -> jax.Array:
        """Sentence embeddings `[B, D_out]`: the encoder (same calling convention), then its sentence head
        (pooling over the tokens that are not padding, dense layers, Normalize). `prompt_length`: the leading
        tokens a head with include_prompt=False leaves out. NoSentenceHeadError when the model has no head."""
        if self.sentence_head is None:
            raise NoSentenceHeadError(
                "this encoder has no sentence-embedding head: it was read from a folder without modules.json (or a "
                "file without a stored head); pool `model(token_ids)` yourself, or load a sentence-transformers folder"
            )
        padding = self.padding_mask_for(
            token_ids, padding_mask, token_type_ids=token_type_ids, attention_mask=attention_mask
        )
        hidden = self(token_ids, padding, token_type_ids=token_type_ids)
        return self.sentence_head(hidden, ~padding, prompt_length)

    def activations(
        self,
        token_ids: jax.Array,
        padding_mask: jax.Array | None = None,
        *,
        token_type_ids: jax.Array | None = None,
        attention_mask: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
    ) -> dict[str, jax.Array]:
        """Every boundary activation, named as in `rosetta_common.oracle`: `[B, S, D]` each, "pooler" `[B, D]`."""
        acts: dict[str, jax.Array] = {}
        x = self.run(token_ids, padding_mask, token_type_ids, attention_mask, segment_ids, acts)
        if self.pooler is not None:
            acts["pooler"] = self.pooler(x)
        return acts

    def __call__(
        self,
        token_ids: jax.Array,
        padding_mask: jax.Array | None = None,
        *,
        token_type_ids: jax.Array | None = None,
        attention_mask: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
    ) -> jax.Array:
        return self.run(token_ids, padding_mask, token_type_ids, attention_mask, segment_ids)

    def run(
        self,
        token_ids: jax.Array,
        padding_mask: jax.Array | None,
        token_type_ids: jax.Array | None,
        attention_mask: jax.Array | None,
        segment_ids: jax.Array | None = None,
        acts: dict[str, jax.Array] | None = None,
    ) -> jax.Array:
        """The checked forward pass -> the output `[B, S, D]`; every boundary activation into `acts` when given.
        Each layer reads the padding mask (its attention applies its own window), the segment ids when packed and
        its rotary base's tables (packed: at each token's position in its own sequence)."""
        padding_mask = self.padding_mask_for(
            token_ids,
            padding_mask,
            token_type_ids=token_type_ids,
            attention_mask=attention_mask,
            segment_ids=segment_ids,
        )
        front = self.embedding_front(token_ids, token_type_ids, segment_ids)

        def record(name: str, value: jax.Array) -> None:
            if acts is not None:
                acts[name] = value

        for name, value in front.items():
            record(name, value)
        x = self.dropout(self.compute.round(front["embedding_norm" if "embedding_norm" in front else "positional"]))
        positions = None if segment_ids is None or not self.rotary.thetas else sequence_positions(segment_ids)
        rotary = self.rotary.tables(x.shape[1], x.dtype, positions)
        for i, layer in enumerate(self.layers):
            tables = rotary.get(layer.spec.rope_theta)
            if acts is None:  # the layer's own call: FSDP2's hooks (gathering its parameters) run on it
                x = layer(x, padding_mask, tables, segment_ids)
                continue
            x = layer.attention_block(x, padding_mask, tables, segment_ids)
            record(f"layers.{i}.attn", x)
            x = layer.feed_forward_block(x)
            record(f"layers.{i}.ffn", x)
        if self.final_norm is not None:
            x = self.compute.norm(self.final_norm, x)
            record("final_norm", x)
        record("output", x)
        return x
