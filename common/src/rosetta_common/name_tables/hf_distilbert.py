"""Hugging Face `DistilBertModel` `state_dict` names (without the `distilbert.` prefix a task model adds):
`nn.Linear` weights `[out, in]`, `nn.LayerNorm` `weight` / `bias`; the position table is stored even when
`sinusoidal_pos_embds` fills it with the fixed table (the layout reads and writes it, see hf_checkpoints)."""

from __future__ import annotations

from rosetta_common.name_tables.table import NameTable, rule, torch_layer_norm, torch_linear

LAYER = "transformer.layer.{}"

HF_DISTILBERT = NameTable(
    "HF DistilBertModel state_dict",
    (
        rule("embedding.weight", "embeddings.word_embeddings.weight"),
        rule("position_embedding.weight", "embeddings.position_embeddings.weight"),
        *torch_layer_norm("embedding_norm", "embeddings.LayerNorm"),
        *torch_linear("layers.{}.attn.q", f"{LAYER}.attention.q_lin"),
        *torch_linear("layers.{}.attn.k", f"{LAYER}.attention.k_lin"),
        *torch_linear("layers.{}.attn.v", f"{LAYER}.attention.v_lin"),
        *torch_linear("layers.{}.attn.out", f"{LAYER}.attention.out_lin"),
        *torch_layer_norm("layers.{}.norm1", f"{LAYER}.sa_layer_norm"),
        *torch_linear("layers.{}.ffn.in", f"{LAYER}.ffn.lin1"),
        *torch_linear("layers.{}.ffn.out", f"{LAYER}.ffn.lin2"),
        *torch_layer_norm("layers.{}.norm2", f"{LAYER}.output_layer_norm"),
    ),
)
