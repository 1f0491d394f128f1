"""Hugging Face `ModernBertModel` `state_dict` names (without the `model.` prefix a task model adds): q, k and v
fused into one `Wqkv` `[3 d, d]`, the GLU's input and gate halves into one `Wi` `[2 d_ff, d]` (input first, as
`Wi(x).chunk(2)` reads them), `nn.LayerNorm` `weight` (and `bias` when `norm_bias`); layer 0 has no `attn_norm`."""

from __future__ import annotations

from rosetta_common.name_tables.table import Concatenate, NameTable, rule, torch_layer_norm, torch_linear

LAYER = "layers.{}"
FUSED_KERNELS, FUSED_BIASES = Concatenate(transpose=True), Concatenate()

HF_MODERNBERT = NameTable(
    "HF ModernBertModel state_dict",
    (
        rule("embedding.weight", "embeddings.tok_embeddings.weight"),
        *torch_layer_norm("embedding_norm", "embeddings.norm"),
        *torch_layer_norm("layers.{}.norm1", f"{LAYER}.attn_norm"),
        rule(tuple(f"layers.{{}}.attn.{p}.kernel" for p in "qkv"), f"{LAYER}.attn.Wqkv.weight", FUSED_KERNELS),
        rule(tuple(f"layers.{{}}.attn.{p}.bias" for p in "qkv"), f"{LAYER}.attn.Wqkv.bias", FUSED_BIASES),
        *torch_linear("layers.{}.attn.out", f"{LAYER}.attn.Wo"),
        *torch_layer_norm("layers.{}.norm2", f"{LAYER}.mlp_norm"),
        rule(("layers.{}.ffn.in.kernel", "layers.{}.ffn.gate.kernel"), f"{LAYER}.mlp.Wi.weight", FUSED_KERNELS),
        rule(("layers.{}.ffn.in.bias", "layers.{}.ffn.gate.bias"), f"{LAYER}.mlp.Wi.bias", FUSED_BIASES),
        *torch_linear("layers.{}.ffn.out", f"{LAYER}.mlp.Wo"),
        *torch_layer_norm("final_norm", "final_norm"),
    ),
)
