"""One record per Hugging Face encoder family rosetta reads and writes: its layout name, the `model_type`s it
covers, its name table, the prefixes of its task models, and its `config.json` in both directions.

    hf-bert        bert                     BertModel            HF_BERT
    hf-roberta     roberta, xlm-roberta     RobertaModel         HF_BERT
    hf-modernbert  modernbert               ModernBertModel      HF_MODERNBERT (fused Wqkv and Wi)
    hf-distilbert  distilbert               DistilBertModel      HF_DISTILBERT

Reading refuses, naming the field, what rosetta cannot represent; writing refuses a config the family cannot hold,
naming every field that would have to change (`FamilyNeeds`: one table per family, checked the same way).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rosetta_common import EncoderConfig, WeightFormatError
from rosetta_common.name_tables import HF_BERT, HF_DISTILBERT, HF_MODERNBERT, NameTable

HfConfig = Mapping[str, Any]
ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
EXPORTED_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "gelu_tanh": "gelu_pytorch_tanh"}
DISTILBERT_EPS = 1e-12  # DistilBERT's LayerNorms hard-code eps=1e-12 (no config field)


@dataclass(frozen=True)
class Family:
    """`read_config(hf, tensor_names, source) -> EncoderConfig`; `write_config(config) -> config.json` (without the
    dtype, which the writer adds); `needs`: the config values the family can hold ((field, value) pairs, where a
    field may be a property such as has_final_norm); `read_notes(hf)`: what reading it tells the user."""

    layout: str
    description: str
    model_types: tuple[str, ...]
    architecture: str
    table: NameTable
    prefixes: tuple[str, ...]
    read_config: Callable[[HfConfig, frozenset[str], Path], EncoderConfig]
    write_config: Callable[[EncoderConfig], dict[str, Any]]
    needs: Callable[[EncoderConfig], tuple[tuple[str, object], ...]]
    read_notes: Callable[[HfConfig], list[str]] = lambda hf: []  # what reading its config.json changes in meaning

    def check_holds(self, config: EncoderConfig) -> None:
        """WeightFormatError naming every field of `config` this family cannot hold (and what it needs)."""
        wrong = [
            f"{name}={getattr(config, name)!r} (needs {value!r})"
            for name, value in self.needs(config)
            if getattr(config, name) != value
        ]
        if wrong:
            raise WeightFormatError(f"the {self.layout} layout cannot hold this encoder: {'; '.join(wrong)}")


def refusal(hf: HfConfig, source: Path) -> Callable[[str, str], WeightFormatError]:
    def refuse(field: str, why: str) -> WeightFormatError:
        return WeightFormatError(f"{source}: {field}={hf.get(field)!r}: {why}")

    return refuse


def built(source: Path, **fields: Any) -> EncoderConfig:
    """EncoderConfig(**fields); WeightFormatError when config.json lacks a field or holds an invalid value."""
    try:
        return EncoderConfig(**fields)
    except (KeyError, TypeError, ValueError) as err:
        raise WeightFormatError(f"{source}: config.json does not describe a rosetta encoder: {err}") from err


def one_dropout(hf: HfConfig, refuse: Callable[[str, str], WeightFormatError], main: str, *others: str) -> float:
    """The one dropout rate rosetta has: `main`, which every field of `others` present must equal."""
    rate = hf.get(main, 0.1)
    for field in others:
        if hf.get(field, rate) != rate:
            raise refuse(field, f"rosetta has one dropout rate; {main} is {rate}")
    return rate


def activation(hf: HfConfig, field: str, refuse: Callable[[str, str], WeightFormatError], default: str) -> str:
    name = hf.get(field, default)
    if name not in ACTIVATIONS:
        raise refuse(field, f"rosetta's activations are {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


# The options every family leaves at the seeds' defaults unless it says otherwise (its own `needs` override them).
CLASSIC_LAYERS: dict[str, object] = {
    "feed_forward": "mlp",
    "attention_bias": True,
    "mlp_bias": True,
    "norm_bias": True,
    "local_window": 0,
    "first_attention_norm": True,
    "scale_embedding": False,
    "embedding_norm": True,
}


def _bert_config(hf: HfConfig, names: frozenset[str], source: Path) -> EncoderConfig:
    refuse = refusal(hf, source)
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise refuse("position_embedding_type", "only absolute (learned) position embeddings map onto rosetta")
    for field in ("is_decoder", "add_cross_attention"):
        if hf.get(field):
            raise refuse(field, "rosetta is an encoder without cross-attention")
    if hf.get("embedding_size", hf.get("hidden_size")) != hf.get("hidden_size"):
        raise refuse("embedding_size", "a factorised embedding (ALBERT, ELECTRA) has no rosetta counterpart")
    act = activation(hf, "hidden_act", refuse, "gelu")
    dropout = one_dropout(hf, refuse, "hidden_dropout_prob", "attention_probs_dropout_prob")
    roberta = hf.get("model_type") != "bert"
    padding_idx = hf.get("pad_token_id")
    if padding_idx is None:  # absent or null: transformers' defaults
        padding_idx = 1 if roberta else 0
    table = hf.get("max_position_embeddings", 0)
    return built(
        source,
        vocab_size=hf.get("vocab_size"),
        d_model=hf.get("hidden_size"),
        n_heads=hf.get("num_attention_heads"),
        n_layers=hf.get("num_hidden_layers"),
        d_ff=hf.get("intermediate_size"),
        max_len=table - (padding_idx + 1 if roberta and isinstance(padding_idx, int) else 0),
        padding_idx=padding_idx,
        activation=act,
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        dropout=dropout,
        scale_embedding=False,
        positions="learned",
        position_ids="after_padding" if roberta else "sequential",
        type_vocab_size=hf.get("type_vocab_size", 2),
        embedding_norm=True,
        pooler="pooler.dense.weight" in names,
    )


def _bert_needs(roberta: bool) -> Callable[[EncoderConfig], tuple[tuple[str, object], ...]]:
    def needs(config: EncoderConfig) -> tuple[tuple[str, object], ...]:
        return (
            ("positions", "learned"),
            ("position_ids", "after_padding" if roberta else "sequential"),
            ("norm_first", False),
            ("has_final_norm", False),
            ("type_vocab_size", max(config.type_vocab_size, 1)),  # HF always has a token-type table
            ("embedding_norm_epsilon", config.layer_norm_eps),  # HF uses layer_norm_eps for every LayerNorm
            *CLASSIC_LAYERS.items(),
        )

    return needs


def _bert_writer(roberta: bool) -> Callable[[EncoderConfig], dict[str, Any]]:
    def write(config: EncoderConfig) -> dict[str, Any]:
        return {
            "architectures": ["RobertaModel" if roberta else "BertModel"],
            "model_type": "roberta" if roberta else "bert",
            "vocab_size": config.vocab_size,
            "hidden_size": config.d_model,
            "num_hidden_layers": config.n_layers,
            "num_attention_heads": config.n_heads,
            "intermediate_size": config.d_ff,
            "hidden_act": EXPORTED_ACTIVATIONS[config.activation],
            "hidden_dropout_prob": config.dropout,
            "attention_probs_dropout_prob": config.dropout,
            "max_position_embeddings": config.position_table_size,
            "type_vocab_size": config.type_vocab_size,
            "layer_norm_eps": config.layer_norm_eps,
            "pad_token_id": config.padding_idx,
            "position_embedding_type": "absolute",
            "initializer_range": 0.02,
        }

    return write


def _modernbert_config(hf: HfConfig, names: frozenset[str], source: Path) -> EncoderConfig:
    refuse = refusal(hf, source)
    if hf.get("rope_scaling") not in (None, {}) and hf["rope_scaling"].get("rope_type", "default") != "default":
        raise refuse("rope_scaling", "rosetta's rotary positions are unscaled (rope_type 'default')")
    act = activation(hf, "hidden_activation", refuse, "gelu")
    dropout = one_dropout(hf, refuse, "embedding_dropout", "attention_dropout", "mlp_dropout")
    every = hf.get("global_attn_every_n_layers", 3)
    local = every != 1  # every layer global: no window, no local base
    return built(
        source,
        vocab_size=hf.get("vocab_size"),
        d_model=hf.get("hidden_size"),
        n_heads=hf.get("num_attention_heads"),
        n_layers=hf.get("num_hidden_layers"),
        d_ff=hf.get("intermediate_size"),
        max_len=hf.get("max_position_embeddings", 8192),
        padding_idx=hf.get("pad_token_id", 50283),
        activation=act,
        norm_first=True,
        layer_norm_eps=hf.get("norm_eps", 1e-5),
        dropout=dropout,
        scale_embedding=False,
        positions="rotary",
        embedding_norm=True,
        feed_forward="glu",
        attention_bias=hf.get("attention_bias", False),
        mlp_bias=hf.get("mlp_bias", False),
        norm_bias=hf.get("norm_bias", False),
        rope_theta=float(hf.get("global_rope_theta", 160000.0)),
        local_rope_theta=None if not local or hf.get("local_rope_theta") is None else float(hf["local_rope_theta"]),
        local_window=hf.get("local_attention", 128) if local else 0,
        global_every=every,
        first_attention_norm=False,
    )


def _modernbert_needs(config: EncoderConfig) -> tuple[tuple[str, object], ...]:
    return (
        ("positions", "rotary"),
        ("feed_forward", "glu"),
        ("norm_first", True),
        ("has_final_norm", True),
        ("first_attention_norm", False),
        ("embedding_norm", True),
        ("embedding_norm_epsilon", config.layer_norm_eps),
        ("scale_embedding", False),
        ("type_vocab_size", 0),
        ("pooler", False),
    )


def _modernbert_writer(config: EncoderConfig) -> dict[str, Any]:
    return {
        "architectures": ["ModernBertModel"],
        "model_type": "modernbert",
        "vocab_size": config.vocab_size,
        "hidden_size": config.d_model,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "intermediate_size": config.d_ff,
        "hidden_activation": EXPORTED_ACTIVATIONS[config.activation],
        "max_position_embeddings": config.max_len,
        "norm_eps": config.layer_norm_eps,
        "norm_bias": config.norm_bias,
        "attention_bias": config.attention_bias,
        "mlp_bias": config.mlp_bias,
        "embedding_dropout": config.dropout,
        "attention_dropout": config.dropout,
        "mlp_dropout": config.dropout,
        "pad_token_id": config.padding_idx,
        "global_rope_theta": config.rope_theta,
        "local_rope_theta": config.local_rope_theta,
        "local_attention": config.local_window if config.local_window else 128,
        "global_attn_every_n_layers": config.global_every,
        "initializer_range": 0.02,
    }


def _distilbert_config(hf: HfConfig, names: frozenset[str], source: Path) -> EncoderConfig:
    refuse = refusal(hf, source)
    act = activation(hf, "activation", refuse, "gelu")
    dropout = one_dropout(hf, refuse, "dropout", "attention_dropout")
    return built(
        source,
        vocab_size=hf.get("vocab_size"),
        d_model=hf.get("dim"),
        n_heads=hf.get("n_heads"),
        n_layers=hf.get("n_layers"),
        d_ff=hf.get("hidden_dim"),
        max_len=hf.get("max_position_embeddings", 512),
        padding_idx=hf.get("pad_token_id", 0),
        activation=act,
        layer_norm_eps=DISTILBERT_EPS,
        dropout=dropout,
        scale_embedding=False,
        positions="learned",  # sinusoidal_pos_embds too: the stored table is what transformers computes with
        embedding_norm=True,
    )


def _distilbert_needs(config: EncoderConfig) -> tuple[tuple[str, object], ...]:
    return (
        ("positions", "learned"),
        ("position_ids", "sequential"),
        ("norm_first", False),
        ("has_final_norm", False),
        ("type_vocab_size", 0),
        ("pooler", False),
        ("layer_norm_eps", DISTILBERT_EPS),
        ("embedding_norm_epsilon", DISTILBERT_EPS),
        *CLASSIC_LAYERS.items(),
    )


def _distilbert_writer(config: EncoderConfig) -> dict[str, Any]:
    return {
        "architectures": ["DistilBertModel"],
        "model_type": "distilbert",
        "vocab_size": config.vocab_size,
        "dim": config.d_model,
        "n_layers": config.n_layers,
        "n_heads": config.n_heads,
        "hidden_dim": config.d_ff,
        "activation": EXPORTED_ACTIVATIONS[config.activation],
        "dropout": config.dropout,
        "attention_dropout": config.dropout,
        "max_position_embeddings": config.max_len,
        "pad_token_id": config.padding_idx,
        "sinusoidal_pos_embds": False,
        "initializer_range": 0.02,
    }


def distilbert_notes(hf: HfConfig) -> list[str]:
    """What reading a DistilBERT folder changes in meaning: a fixed sinusoidal table becomes a stored one."""
    if not hf.get("sinusoidal_pos_embds"):
        return []
    return [
        "sinusoidal_pos_embds: the stored position table is read as a learned table (the values transformers "
        "computes with; rosetta trains it unless you freeze it)"
    ]


FAMILIES: tuple[Family, ...] = (
    Family(
        "hf-bert",
        "Hugging Face BERT checkpoint folder",
        ("bert",),
        "BertModel",
        HF_BERT,
        ("bert.",),
        _bert_config,
        _bert_writer(roberta=False),
        _bert_needs(roberta=False),
    ),
    Family(
        "hf-roberta",
        "Hugging Face RoBERTa checkpoint folder",
        ("roberta", "xlm-roberta"),
        "RobertaModel",
        HF_BERT,
        ("roberta.",),
        _bert_config,
        _bert_writer(roberta=True),
        _bert_needs(roberta=True),
    ),
    Family(
        "hf-modernbert",
        "Hugging Face ModernBERT checkpoint folder",
        ("modernbert",),
        "ModernBertModel",
        HF_MODERNBERT,
        ("model.",),
        _modernbert_config,
        _modernbert_writer,
        _modernbert_needs,
    ),
    Family(
        "hf-distilbert",
        "Hugging Face DistilBERT checkpoint folder",
        ("distilbert",),
        "DistilBertModel",
        HF_DISTILBERT,
        ("distilbert.",),
        _distilbert_config,
        _distilbert_writer,
        _distilbert_needs,
        distilbert_notes,
    ),
)
FAMILY_OF_MODEL_TYPE = {model_type: family for family in FAMILIES for model_type in family.model_types}
FAMILY_OF_LAYOUT = {family.layout: family for family in FAMILIES}


def family_of(hf: HfConfig, source: Path) -> Family:
    """The family of an HF config; WeightFormatError naming model_type when rosetta reads no such encoder."""
    model_type = hf.get("model_type")
    if not isinstance(model_type, str) or model_type not in FAMILY_OF_MODEL_TYPE:
        raise refusal(hf, source)("model_type", f"rosetta reads these encoders: {', '.join(FAMILY_OF_MODEL_TYPE)}")
    return FAMILY_OF_MODEL_TYPE[model_type]


def stored_dtype_fields(dtype: np.dtype) -> dict[str, str]:
    """The tensors' dtype as config.json records it ("dtype", and "torch_dtype" for older transformers), which
    `from_pretrained(folder, dtype="auto")` keeps (transformers' default is to load in float32)."""
    return {"dtype": np.dtype(dtype).name, "torch_dtype": np.dtype(dtype).name}
