"""rosetta_flax.Encoder's NNX parameter paths: Flax kernels are already `[in, out]` and its LayerNorm already
has `scale` / `bias`, so every transform is the identity; the feed-forward is `ffn.up` / `ffn.down`."""

from __future__ import annotations

from rosetta_common.name_tables.table import NameTable, rule

FLAX_ENCODER = NameTable(
    "rosetta_flax.Encoder NNX state",
    (
        rule("embedding.weight", "embedding.weight"),
        *(
            rule(f"layers.{{}}.attn.{proj}.{leaf}", f"layers.{{}}.attn.{proj}.{leaf}")
            for proj in ("q", "k", "v", "out")
            for leaf in ("kernel", "bias")
        ),
        rule("layers.{}.norm1.scale", "layers.{}.norm1.scale"),
        rule("layers.{}.norm1.bias", "layers.{}.norm1.bias"),
        rule("layers.{}.ffn.in.kernel", "layers.{}.ffn.up.kernel"),
        rule("layers.{}.ffn.in.bias", "layers.{}.ffn.up.bias"),
        rule("layers.{}.ffn.out.kernel", "layers.{}.ffn.down.kernel"),
        rule("layers.{}.ffn.out.bias", "layers.{}.ffn.down.bias"),
        rule("layers.{}.norm2.scale", "layers.{}.norm2.scale"),
        rule("layers.{}.norm2.bias", "layers.{}.norm2.bias"),
        rule("final_norm.scale", "final_norm.scale"),
        rule("final_norm.bias", "final_norm.bias"),
    ),
)
