"""Hugging Face `BertModel` / `RobertaModel` `state_dict` names (the same for both; without the `bert.` /
`roberta.` prefix a task model adds): `nn.Linear` weights `[out, in]`, `nn.LayerNorm` `weight` / `bias`."""

from __future__ import annotations

from rosetta_common.name_tables.table import NameTable, rule, torch_layer_norm, torch_linear

LAYER = "encoder.layer.{}"

HF_BERT = NameTable(
    "HF BertModel / RobertaModel state_dict",
    (
        rule("embedding.weight", "embeddings.word_embeddings.weight"),
        rule("position_embedding.weight", "embeddings.position_embeddings.weight"),
        rule("token_type_embedding.weight", "embeddings.token_type_embeddings.weight"),
        *torch_layer_norm("embedding_norm", "embeddings.LayerNorm"),
        *torch_linear("layers.{}.attn.q", f"{LAYER}.attention.self.query"),
        *torch_linear("layers.{}.attn.k", f"{LAYER}.attention.self.key"),
        *torch_linear("layers.{}.attn.v", f"{LAYER}.attention.self.value"),
        *torch_linear("layers.{}.attn.out", f"{LAYER}.attention.output.dense"),
        *torch_layer_norm("layers.{}.norm1", f"{LAYER}.attention.output.LayerNorm"),
        *torch_linear("layers.{}.ffn.in", f"{LAYER}.intermediate.dense"),
        *torch_linear("layers.{}.ffn.out", f"{LAYER}.output.dense"),
        *torch_layer_norm("layers.{}.norm2", f"{LAYER}.output.LayerNorm"),
        *torch_linear("pooler", "pooler.dense"),
    ),
)
