"""The `state_dict` of `ModuleDict(embedding=nn.Embedding, encoder=nn.TransformerEncoder)`: keys `embedding.*`
and `encoder.*`; q, k and v fused into `self_attn.in_proj_weight [3d, d]` / `in_proj_bias [3d]`."""

from __future__ import annotations

from rosetta_common.name_tables.table import TRANSPOSE, Concatenate, NameTable, rule

QKV = ("layers.{}.attn.q", "layers.{}.attn.k", "layers.{}.attn.v")

TORCH_NN = NameTable(
    "nn.Embedding + nn.TransformerEncoder state_dict",
    (
        rule("embedding.weight", "embedding.weight"),
        rule(tuple(f"{p}.kernel" for p in QKV), "encoder.layers.{}.self_attn.in_proj_weight", Concatenate(True)),
        rule(tuple(f"{p}.bias" for p in QKV), "encoder.layers.{}.self_attn.in_proj_bias", Concatenate()),
        rule("layers.{}.attn.out.kernel", "encoder.layers.{}.self_attn.out_proj.weight", TRANSPOSE),
        rule("layers.{}.attn.out.bias", "encoder.layers.{}.self_attn.out_proj.bias"),
        rule("layers.{}.ffn.in.kernel", "encoder.layers.{}.linear1.weight", TRANSPOSE),
        rule("layers.{}.ffn.in.bias", "encoder.layers.{}.linear1.bias"),
        rule("layers.{}.ffn.out.kernel", "encoder.layers.{}.linear2.weight", TRANSPOSE),
        rule("layers.{}.ffn.out.bias", "encoder.layers.{}.linear2.bias"),
        rule("layers.{}.norm1.scale", "encoder.layers.{}.norm1.weight"),
        rule("layers.{}.norm1.bias", "encoder.layers.{}.norm1.bias"),
        rule("layers.{}.norm2.scale", "encoder.layers.{}.norm2.weight"),
        rule("layers.{}.norm2.bias", "encoder.layers.{}.norm2.bias"),
        rule("final_norm.scale", "encoder.norm.weight"),
        rule("final_norm.bias", "encoder.norm.bias"),
    ),
)
