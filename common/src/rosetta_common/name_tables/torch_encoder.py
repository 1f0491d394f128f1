"""rosetta_torch.Encoder's `state_dict` names: nn.Linear stores `weight [out, in]` (the canonical kernel
transposed), nn.LayerNorm `weight` for the canonical `scale`, the feed-forward is `ffn.up` / `ffn.down`."""

from __future__ import annotations

from rosetta_common.name_tables.table import TRANSPOSE, NameTable, rule

TORCH_ENCODER = NameTable(
    "rosetta_torch.Encoder state_dict",
    (
        rule("embedding.weight", "embedding.weight"),
        rule("layers.{}.attn.q.kernel", "layers.{}.attn.q.weight", TRANSPOSE),
        rule("layers.{}.attn.q.bias", "layers.{}.attn.q.bias"),
        rule("layers.{}.attn.k.kernel", "layers.{}.attn.k.weight", TRANSPOSE),
        rule("layers.{}.attn.k.bias", "layers.{}.attn.k.bias"),
        rule("layers.{}.attn.v.kernel", "layers.{}.attn.v.weight", TRANSPOSE),
        rule("layers.{}.attn.v.bias", "layers.{}.attn.v.bias"),
        rule("layers.{}.attn.out.kernel", "layers.{}.attn.out.weight", TRANSPOSE),
        rule("layers.{}.attn.out.bias", "layers.{}.attn.out.bias"),
        rule("layers.{}.norm1.scale", "layers.{}.norm1.weight"),
        rule("layers.{}.norm1.bias", "layers.{}.norm1.bias"),
        rule("layers.{}.ffn.in.kernel", "layers.{}.ffn.up.weight", TRANSPOSE),
        rule("layers.{}.ffn.in.bias", "layers.{}.ffn.up.bias"),
        rule("layers.{}.ffn.out.kernel", "layers.{}.ffn.down.weight", TRANSPOSE),
        rule("layers.{}.ffn.out.bias", "layers.{}.ffn.down.bias"),
        rule("layers.{}.norm2.scale", "layers.{}.norm2.weight"),
        rule("layers.{}.norm2.bias", "layers.{}.norm2.bias"),
        rule("final_norm.scale", "final_norm.weight"),
        rule("final_norm.bias", "final_norm.bias"),
    ),
)
