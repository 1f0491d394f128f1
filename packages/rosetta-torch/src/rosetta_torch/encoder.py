"""The Transformer encoder: the embedding front (token embedding, positions, token types, embedding LayerNorm),
N layers, an optional final LayerNorm, and an optional pooler."""

from __future__ import annotations

import torch
from torch import nn

from rosetta_common import EncoderConfig, check_array_type
from rosetta_common.inputs import ArrayFacts, check_encoder_inputs
from rosetta_common.sentence_head import NoSentenceHeadError
from rosetta_torch.embedding import (
    LearnedPositionalEmbedding,
    PositionalEncoding,
    TokenEmbedding,
    TokenTypeEmbedding,
    sequence_positions,
)
from rosetta_torch.layer import EncoderLayer, layer_norm
from rosetta_torch.pooler import Pooler
from rosetta_torch.precision import Compute
from rosetta_torch.rotary import RotaryTables
from rosetta_torch.sentence_head import SentenceHead


def _facts(tensor: torch.Tensor, *, binary: bool = False) -> ArrayFacts:
    """What the input checks read of a tensor: only its extremes (and, for a mask, whether it is all 0 and 1) come
    back to the host, never the tensor itself. Extremes of int32 / int64 only: the checks refuse other id dtypes
    (torch has no min for some of them)."""
    dtype = tensor.dtype
    is_integer = not dtype.is_floating_point and not dtype.is_complex and dtype != torch.bool
    has_extremes = dtype in (torch.int32, torch.int64) and tensor.numel() > 0
    lowest, highest = (int(tensor.min()), int(tensor.max())) if has_extremes else (0, 0)
    zeros_and_ones = bool(((tensor == 0) | (tensor == 1)).all()) if binary else True
    return ArrayFacts(tuple(tensor.shape), str(dtype), is_integer, dtype == torch.bool, lowest, highest, zeros_and_ones)


class Encoder(nn.Module):
    """`model(token_ids [B, S], padding_mask [B, S] bool, True = padding) -> [B, S, D]`.

    Keywords: `token_type_ids` int `[B, S]` (configs with token types; default all 0), `attention_mask`
    `[B, S]` (HF's convention, 1 = keep, 0 = padding; instead of `padding_mask`) and `segment_ids` int `[B, S]`
    (packed rows: 0 = padding, k = the k-th sequence of the row; each packed token's output is its sequence's
    alone; `rosetta_common.packing` builds them). `pooled(hidden) -> [B, D]` when
    the config has a pooler; `embed(...) -> [B, D_out]` when it has a sentence head.
    Every call checks its inputs first (`check_inputs`, also callable on its own, as in
    rosetta_flax).
    """

    def __init__(
        self,
        config: EncoderConfig,
        *,
        dtype: torch.dtype | None = None,
        compute_dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.compute = Compute(compute_dtype)
        kinds = {"dtype": dtype, "compute_dtype": compute_dtype, "device": device}
        norms = {"dtype": dtype, "device": device}
        self.embedding = TokenEmbedding(config, **kinds)
        positional = {"learned": LearnedPositionalEmbedding, "sinusoidal": PositionalEncoding, "rotary": None}
        self.positional = (
            None if positional[config.positions] is None else positional[config.positions](config, **kinds)
        )
        self.token_type = TokenTypeEmbedding(config, **kinds) if config.type_vocab_size else None
        self.embedding_norm = (
            layer_norm(config, eps=config.embedding_norm_epsilon, **norms) if config.embedding_norm else None
        )
        self.dropout = nn.Dropout(config.dropout)
        self.rotary = RotaryTables(config, **kinds)  # rotary positions: the tables every attention reads
        self.layers = nn.ModuleList(EncoderLayer(config, index=i, **kinds) for i in range(config.n_layers))
        self.final_norm = layer_norm(config, **norms) if config.has_final_norm else None
        self.pooler = Pooler(config, **kinds) if config.pooler else None
        self.sentence_head: SentenceHead | None = None  # set by `load` from a sentence-transformers head

    # The checks read token ids back to the host (int(min), int(max)): under torch.compile they run eagerly
    # before the compiled graph instead of breaking it in two (rosetta_flax checks outside jax.jit likewise).
    @torch.compiler.disable
    def check_inputs(
        self,
        token_ids: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        *,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
    ) -> None:
        """Raise a clear InputError for bad token ids, token type ids, masks or segment ids (never a silent clamp).

        The checks and their words are `rosetta_common.inputs.check_encoder_inputs`'s: both masks at once, token types
        for an encoder without them, ids out of range, shapes or dtypes that do not fit.
        """
        kind, convert = "a torch.Tensor", "torch.as_tensor"
        check_array_type("token_ids", token_ids, (torch.Tensor,), kind, convert)
        for name, value in (
            ("padding_mask", padding_mask),
            ("token_type_ids", token_type_ids),
            ("attention_mask", attention_mask),
            ("segment_ids", segment_ids),
        ):
            if value is not None:
                check_array_type(name, value, (torch.Tensor,), kind, convert)
        given = None  # the padding a mask says, on the host: packed, it must agree with the segment ids
        if segment_ids is not None and attention_mask is not None:
            given = (attention_mask == 0).cpu().numpy()
        elif segment_ids is not None and padding_mask is not None:
            given = padding_mask.cpu().numpy()
        check_encoder_inputs(
            self.config,
            _facts(token_ids),
            None if padding_mask is None else _facts(padding_mask),
            token_type_ids=None if token_type_ids is None else _facts(token_type_ids),
            attention_mask=None if attention_mask is None else _facts(attention_mask, binary=True),
            segment_ids=None if segment_ids is None else segment_ids.detach().cpu().numpy(),
            mask_padding=given,
        )

    @torch.compiler.disable
    def padding_mask_for(
        self,
        token_ids: torch.Tensor,
        padding_mask: torch.Tensor | None,
        *,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Check the inputs (`check_inputs`) and return the bool padding mask `[B, S]`: `segment_ids == 0` (packed),
        `padding_mask`, or `attention_mask == 0`, or `token_ids == padding_idx` (no padding when padding_idx is
        None)."""
        self.check_inputs(
            token_ids,
            padding_mask,
            token_type_ids=token_type_ids,
            attention_mask=attention_mask,
            segment_ids=segment_ids,
        )
        if segment_ids is not None:
            return segment_ids == 0
        if attention_mask is not None:
            return attention_mask == 0
        if padding_mask is not None:
            return padding_mask
        if self.config.padding_idx is None:
            return torch.zeros(token_ids.shape, dtype=torch.bool, device=token_ids.device)
        return token_ids == self.config.padding_idx

    def embedding_front(
        self,
        token_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The activations up to the first layer, `[B, S, D]` each, named as in `rosetta_common.oracle`:
        "embedding", "positional" (+ positions, restarting at each segment when packed, + token types: all 0 when
        `token_type_ids` is None) and "embedding_norm" when configured. Unchecked and before dropout: `forward`
        and `activations` check first."""
        acts = {"embedding": self.embedding(token_ids)}
        x = acts["embedding"]
        if self.positional is not None:
            x = self.positional(x, token_ids, segment_ids)
        if self.token_type is not None:
            types = torch.zeros_like(token_ids) if token_type_ids is None else token_type_ids
            x = x + self.token_type(types)
        acts["positional"] = x
        if self.embedding_norm is not None:
            acts["embedding_norm"] = self.compute.norm32(self.embedding_norm, x)
        return acts

    def pooled(self, hidden: torch.Tensor) -> torch.Tensor:
        """The pooler on the encoder output: hidden `[B, S, D]` -> `tanh(dense(hidden[:, 0]))` `[B, D]`."""
        if self.pooler is None:
            raise ValueError("this encoder has no pooler (EncoderConfig.pooler=False)")
        return self.pooler(hidden)

    def embed(
        self,
        token_ids: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        *,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        prompt_length: int | None = None,
    ) -> torch.Tensor:
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
        token_ids: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        *,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Every boundary activation, named as in `rosetta_common.oracle`: `[B, S, D]` each, "pooler" `[B, D]`."""
        acts: dict[str, torch.Tensor] = {}
        x = self.run(token_ids, padding_mask, token_type_ids, attention_mask, segment_ids, acts)
        if self.pooler is not None:
            acts["pooler"] = self.pooler(x)
        return acts

    def forward(
        self,
        token_ids: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        *,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.run(token_ids, padding_mask, token_type_ids, attention_mask, segment_ids)

    def run(
        self,
        token_ids: torch.Tensor,
        padding_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        segment_ids: torch.Tensor | None = None,
        acts: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
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

        def record(name: str, value: torch.Tensor) -> None:  # forward keeps no reference: only what it needs
            if acts is not None:
                acts[name] = value

        for name, value in front.items():
            record(name, value)
        x = self.dropout(self.compute.round(front["embedding_norm" if "embedding_norm" in front else "positional"]))
        positions = None if segment_ids is None or not self.rotary.thetas else sequence_positions(segment_ids)
        rotary = self.rotary.tables(x.shape[1], positions)
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
