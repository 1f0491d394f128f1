"""The hf-bert and hf-roberta layouts: a Hugging Face checkpoint folder of a BERT or RoBERTa encoder.

Read: `config.json` plus `model.safetensors`, or the shards a `model.safetensors.index.json` lists; the tensors
with the `bert.` / `roberta.` prefix of a task model (`BertForMaskedLM`...) or without; everything that is not the
encoder (an MLM head, a classifier) is dropped and listed. Written: a folder `BertModel.from_pretrained` /
`RobertaModel.from_pretrained` loads (`config.json`, `model.safetensors`). Names go through the `HF_BERT` table;
NumPy only (bfloat16 tensors through ml_dtypes, cast only when asked). A `pytorch_model.bin` is a pickle: refused,
with the line that re-saves it as safetensors. Variants rosetta cannot represent are refused naming the field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_dtypes  # noqa: F401  (registers bfloat16 with NumPy, so safetensors reads BF16 tensors)
import numpy as np
from safetensors.numpy import save as serialize

from rosetta_common import EncoderConfig, WeightFormatError, read_safetensors, write_directory_atomically
from rosetta_common.io import read_json_object
from rosetta_common.name_tables import HF_BERT
from rosetta_tools.layouts.hf_index import read_shards
from rosetta_tools.layouts.registry import Layout, WeightFile, agreeing_config, register

CONFIG_FILE, WEIGHTS_FILE, INDEX_FILE = "config.json", "model.safetensors", "model.safetensors.index.json"
KINDS = {"bert": "hf-bert", "roberta": "hf-roberta", "xlm-roberta": "hf-roberta"}  # HF model_type -> layout
PREFIXES = ("bert.", "roberta.")
ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
EXPORTED_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "gelu_tanh": "gelu_pytorch_tanh"}
RESAVE = (
    "re-save it as safetensors: `AutoModel.from_pretrained(folder).save_pretrained(folder, safe_serialization=True)`"
)


def is_checkpoint_folder(path: Path) -> bool:
    """A folder whose config.json names a Hugging Face model_type; WeightFormatError for a config.json that is
    not a JSON object (malformed, not UTF-8 text, a list...), saying so."""
    config = path / CONFIG_FILE
    if not (path.is_dir() and config.exists()):
        return False
    return "model_type" in read_json_object(config, "Hugging Face config")


def encoder_config(hf: Mapping[str, Any], has_pooler: bool, source: Path) -> EncoderConfig:
    """The EncoderConfig of an HF BERT / RoBERTa config; WeightFormatError naming a field rosetta cannot represent."""

    def refuse(field: str, why: str) -> WeightFormatError:
        return WeightFormatError(f"{source}: {field}={hf.get(field)!r}: {why}")

    model_type = hf.get("model_type")
    if model_type not in KINDS:
        raise refuse("model_type", f"rosetta reads BERT and RoBERTa encoders ({', '.join(KINDS)})")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise refuse("position_embedding_type", "only absolute (learned) position embeddings map onto rosetta")
    for field in ("is_decoder", "add_cross_attention"):
        if hf.get(field):
            raise refuse(field, "rosetta is an encoder without cross-attention")
    if hf.get("hidden_act") not in ACTIVATIONS:
        raise refuse("hidden_act", f"rosetta's activations are {', '.join(ACTIVATIONS)}")
    if hf.get("embedding_size", hf["hidden_size"]) != hf["hidden_size"]:
        raise refuse("embedding_size", "a factorised embedding (ALBERT) has no rosetta counterpart")
    dropout = hf.get("hidden_dropout_prob", 0.1)
    if hf.get("attention_probs_dropout_prob", dropout) != dropout:
        raise refuse("attention_probs_dropout_prob", f"rosetta has one dropout rate; hidden_dropout_prob is {dropout}")
    padding_idx = hf.get("pad_token_id")
    if padding_idx is None:  # absent or null: transformers' defaults
        padding_idx = 0 if model_type == "bert" else 1
    roberta = KINDS[model_type] == "hf-roberta"
    max_len = hf["max_position_embeddings"] - (padding_idx + 1 if roberta else 0)
    try:
        return EncoderConfig(
            vocab_size=hf["vocab_size"],
            d_model=hf["hidden_size"],
            n_heads=hf["num_attention_heads"],
            n_layers=hf["num_hidden_layers"],
            d_ff=hf["intermediate_size"],
            max_len=max_len,
            padding_idx=padding_idx,
            activation=ACTIVATIONS[hf["hidden_act"]],
            layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
            dropout=dropout,
            scale_embedding=False,
            positions="learned",
            position_ids="after_padding" if roberta else "sequential",
            type_vocab_size=hf.get("type_vocab_size", 2),
            embedding_norm=True,
            pooler=has_pooler,
        )
    except (KeyError, TypeError, ValueError) as err:
        raise WeightFormatError(f"{source}: {CONFIG_FILE} does not describe a rosetta encoder: {err}") from err


def hf_config(config: EncoderConfig, kind: str, dtype: np.dtype) -> dict[str, Any]:
    """The config.json of `config` as an HF BertModel / RobertaModel; WeightFormatError for what HF cannot hold.

    It records the tensors' dtype ("dtype", and "torch_dtype" for older transformers), which
    `from_pretrained(folder, dtype="auto")` keeps (transformers' default is to load in float32)."""
    roberta = kind == "hf-roberta"
    wanted = {
        "positions": "learned",
        "position_ids": "after_padding" if roberta else "sequential",
        "embedding_norm": True,
        "scale_embedding": False,
        "norm_first": False,
        "has_final_norm": False,
    }
    wrong = [
        f"{name}={getattr(config, name)!r} (needs {value!r})"
        for name, value in wanted.items()
        if getattr(config, name) != value
    ]
    if not config.type_vocab_size:
        wrong.append("type_vocab_size=0 (needs >= 1)")
    if config.embedding_norm_epsilon != config.layer_norm_eps:
        wrong.append(f"embedding_norm_eps={config.embedding_norm_eps} (HF uses layer_norm_eps for every LayerNorm)")
    if wrong:
        raise WeightFormatError(f"the {kind} layout cannot hold this encoder: {'; '.join(wrong)}")
    padding_idx = config.padding_idx
    assert padding_idx is not None  # learned, "after_padding" positions need it; BERT's default is 0
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
        "pad_token_id": padding_idx,
        "position_embedding_type": "absolute",
        "initializer_range": 0.02,
        "dtype": np.dtype(dtype).name,
        "torch_dtype": np.dtype(dtype).name,
    }


def _stored_tensors(folder: Path) -> dict[str, np.ndarray]:
    if (folder / WEIGHTS_FILE).is_file():
        return read_safetensors(folder / WEIGHTS_FILE)
    if (folder / INDEX_FILE).exists():
        return read_shards(folder / INDEX_FILE)  # each tensor from the one shard the checked index names
    pickles = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt"))
    if pickles:
        raise WeightFormatError(f"{folder}: refusing to unpickle {pickles[0]}; {RESAVE}")
    raise WeightFormatError(f"{folder}: no {WEIGHTS_FILE} or {INDEX_FILE} beside {CONFIG_FILE}")


def _read(folder: Path, given: EncoderConfig | None) -> WeightFile:
    hf = read_json_object(folder / CONFIG_FILE, "Hugging Face config")
    stored = _stored_tensors(folder)
    tensors = {_bare(name): value for name, value in stored.items()}
    try:
        config = encoder_config(hf, "pooler.dense.weight" in tensors, folder)
    except (KeyError, TypeError, ValueError) as err:  # a field missing or of the wrong type (WeightFormatError passes)
        if isinstance(err, WeightFormatError):
            raise
        raise WeightFormatError(f"{folder}: {CONFIG_FILE} does not describe a rosetta encoder: {err!r}") from err
    kept = set(HF_BERT.native_shapes(config))
    dropped = sorted(name for name in stored if _bare(name) not in kept)
    notes = []
    if dropped:
        parts = ", ".join(sorted({".".join(name.split(".")[:2]) + ".*" for name in dropped}))
        notes.append(f"dropped {len(dropped)} tensors that are not the encoder: {parts}")
    layout = LAYOUTS_BY_KIND[KINDS[hf["model_type"]]]  # encoder_config refused any other model_type
    encoder = {name: value for name, value in tensors.items() if name in kept}
    return WeightFile(folder, layout, encoder, agreeing_config(folder, config, given), notes=notes)


def _bare(name: str) -> str:
    for prefix in PREFIXES:
        if name.startswith(prefix):
            return name.removeprefix(prefix)
    return name


def _writer(kind: str):  # noqa: ANN202  (a Layout.write)
    def write(path: Path, config: EncoderConfig, tensors: Mapping[str, np.ndarray]) -> Path:
        hf = hf_config(config, kind, next(iter(tensors.values())).dtype)
        payload = serialize(HF_BERT.to_native(config, tensors), metadata={"format": "pt"})

        def fill(tmp: Path) -> None:
            (tmp / CONFIG_FILE).write_text(json.dumps(hf, indent=2, sort_keys=True) + "\n")
            (tmp / WEIGHTS_FILE).write_bytes(payload)

        return write_directory_atomically(path, fill)

    return write


def _detects(kind: str):  # noqa: ANN202  (a Layout.detect)
    def detect(path: Path, metadata: Mapping[str, str], names: frozenset[str]) -> bool:
        if not is_checkpoint_folder(path):
            return False
        model_type = read_json_object(path / CONFIG_FILE, "Hugging Face config").get("model_type")
        known = KINDS.get(model_type) if isinstance(model_type, str) else None
        return (known or "hf-bert") == kind  # another model_type: read as hf-bert, refused by name

    return detect


LAYOUTS_BY_KIND = {
    kind: register(Layout(kind, description, _detects(kind), _read, _writer(kind), HF_BERT, directory=True))
    for kind, description in (
        ("hf-bert", "Hugging Face BERT checkpoint folder"),
        ("hf-roberta", "Hugging Face RoBERTa checkpoint folder"),
    )
}
