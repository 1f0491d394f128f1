"""The `state_dict` of `ModuleDict(embedding=nn.Embedding, encoder=nn.TransformerEncoder)`: keys `embedding.*`
and `encoder.*`; q, k and v fused into `self_attn.in_proj_weight [3d, d]` / `in_proj_bias [3d]`."""

from __future__ import annotations

from rosetta_common.name_tables.table import Concatenate, NameTable, rule, torch_layer_norm, torch_linear

QKV = ("layers.{}.attn.q", "layers.{}.attn.k", "layers.{}.attn.v")
LAYER = "encoder.layers.{}"

TORCH_NN = NameTable(
    "nn.Embedding + nn.TransformerEncoder state_dict",
    (
        rule("embedding.weight", "embedding.weight"),
        rule(tuple(f"{p}.kernel" for p in QKV), f"{LAYER}.self_attn.in_proj_weight", Concatenate(transpose=True)),
        rule(tuple(f"{p}.bias" for p in QKV), f"{LAYER}.self_attn.in_proj_bias", Concatenate()),
        *torch_linear("layers.{}.attn.out", f"{LAYER}.self_attn.out_proj"),
        *torch_linear("layers.{}.ffn.in", f"{LAYER}.linear1"),
        *torch_linear("layers.{}.ffn.out", f"{LAYER}.linear2"),
        *torch_layer_norm("layers.{}.norm1", f"{LAYER}.norm1"),
        *torch_layer_norm("layers.{}.norm2", f"{LAYER}.norm2"),
        *torch_layer_norm("final_norm", "encoder.norm"),
    ),
)
