"""rosetta_flax.Encoder's NNX parameter paths: Flax kernels are already `[in, out]` and its LayerNorm already
has `scale` / `bias`, so every transform is the identity; the feed-forward is `ffn.up` (`ffn.gate` for a GLU) /
`ffn.down`."""

from __future__ import annotations

from rosetta_common.name_tables.table import NameTable, rule, same_leaves

LINEAR, NORM = ("kernel", "bias"), ("scale", "bias")

FLAX_ENCODER = NameTable(
    "rosetta_flax.Encoder NNX state",
    (
        rule("embedding.weight", "embedding.weight"),
        rule("position_embedding.weight", "positional.weight"),
        rule("token_type_embedding.weight", "token_type.weight"),
        *same_leaves("embedding_norm", "embedding_norm", NORM),
        *same_leaves("layers.{}.attn.q", "layers.{}.attn.q", LINEAR),
        *same_leaves("layers.{}.attn.k", "layers.{}.attn.k", LINEAR),
        *same_leaves("layers.{}.attn.v", "layers.{}.attn.v", LINEAR),
        *same_leaves("layers.{}.attn.out", "layers.{}.attn.out", LINEAR),
        *same_leaves("layers.{}.norm1", "layers.{}.norm1", NORM),
        *same_leaves("layers.{}.ffn.in", "layers.{}.ffn.up", LINEAR),
        *same_leaves("layers.{}.ffn.gate", "layers.{}.ffn.gate", LINEAR),
        *same_leaves("layers.{}.ffn.out", "layers.{}.ffn.down", LINEAR),
        *same_leaves("layers.{}.norm2", "layers.{}.norm2", NORM),
        *same_leaves("final_norm", "final_norm", NORM),
        *same_leaves("pooler", "pooler.dense", LINEAR),
    ),
)
