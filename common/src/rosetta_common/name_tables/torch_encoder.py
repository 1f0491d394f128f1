"""rosetta_torch.Encoder's `state_dict` names: nn.Linear stores `weight [out, in]` (the canonical kernel
transposed), nn.LayerNorm `weight` for the canonical `scale`, the feed-forward is `ffn.up` (`ffn.gate` for a GLU)
/ `ffn.down`."""

from __future__ import annotations

from rosetta_common.name_tables.table import NameTable, rule, torch_layer_norm, torch_linear

TORCH_ENCODER = NameTable(
    "rosetta_torch.Encoder state_dict",
    (
        rule("embedding.weight", "embedding.weight"),
        rule("position_embedding.weight", "positional.weight"),
        rule("token_type_embedding.weight", "token_type.weight"),
        *torch_layer_norm("embedding_norm", "embedding_norm"),
        *torch_linear("layers.{}.attn.q", "layers.{}.attn.q"),
        *torch_linear("layers.{}.attn.k", "layers.{}.attn.k"),
        *torch_linear("layers.{}.attn.v", "layers.{}.attn.v"),
        *torch_linear("layers.{}.attn.out", "layers.{}.attn.out"),
        *torch_layer_norm("layers.{}.norm1", "layers.{}.norm1"),
        *torch_linear("layers.{}.ffn.in", "layers.{}.ffn.up"),
        *torch_linear("layers.{}.ffn.gate", "layers.{}.ffn.gate"),
        *torch_linear("layers.{}.ffn.out", "layers.{}.ffn.down"),
        *torch_layer_norm("layers.{}.norm2", "layers.{}.norm2"),
        *torch_layer_norm("final_norm", "final_norm"),
        *torch_linear("pooler", "pooler.dense"),
    ),
)
