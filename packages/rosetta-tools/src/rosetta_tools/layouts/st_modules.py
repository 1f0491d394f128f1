"""sentence-transformers' `modules.json` and its module folders, read into and written from a `HeadConfig` and the
canonical `sentence_head.*` tensors (NumPy only).

    modules.json            [{"idx": 0, "name": "0", "path": "", "type": "...Transformer"},
                             {"idx": 1, "name": "1", "path": "1_Pooling", "type": "...Pooling"}, ...]
    1_Pooling/config.json   {"embedding_dimension": D, "pooling_mode": "mean" | [modes], "include_prompt": true}
                            (or the older {"word_embedding_dimension": D, "pooling_mode_mean_tokens": true, ...})
    2_Dense/config.json     {"in_features", "out_features", "bias", "activation_function": "torch.nn....Tanh"}
    2_Dense/model.safetensors  linear.weight [out, in], linear.bias [out]   (transposed: kernel [in, out])
    3_Normalize/            (no files)

The order rosetta reads: one Transformer (the encoder, whose folder is `path`), Pooling, any Dense layers,
Normalize last or absent; any other module (LayerNorm, WeightedLayerPooling, a second Pooling, ...) is refused
by name. `sentence_bert_config.json` (max_seq_length, do_lower_case) is the tokenizer's, read by `rosetta embed`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save as serialize

from rosetta_common import WeightFormatError, read_safetensors
from rosetta_common.io import read_json_object
from rosetta_common.sentence_head import POOLING_MODES, PREFIX, DenseSpec, HeadConfig

MODULES_FILE, CONFIG_FILE, WEIGHTS_FILE = "modules.json", "config.json", "model.safetensors"
ST_CONFIG_FILE = "sentence_bert_config.json"
LEGACY_POOLING_KEYS = {  # sentence-transformers < 5: one boolean per mode, concatenated in this order
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
ACTIVATIONS = {  # Dense's activation_function (torch's class path) <-> rosetta's name
    "torch.nn.modules.linear.Identity": "identity",
    "torch.nn.modules.activation.Tanh": "tanh",
    "torch.nn.modules.activation.ReLU": "relu",
    "torch.nn.modules.activation.GELU": "gelu",
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
}
TYPES = {  # what modules.json's "type" ends with -> the module kind
    "Transformer": "transformer",
    "Pooling": "pooling",
    "Dense": "dense",
    "Normalize": "normalize",
}


def modules(folder: Path) -> list[dict[str, Any]]:
    """modules.json's entries in order, each with "kind" added; WeightFormatError for a malformed file or a
    module rosetta does not read."""
    path = folder / MODULES_FILE
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WeightFormatError(f"{path}: not a readable sentence-transformers modules.json: {err}") from err
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and isinstance(e.get("type"), str) for e in entries
    ):
        raise WeightFormatError(f"{path}: expected a list of {{'idx', 'name', 'path', 'type'}} objects")
    read = []
    for entry in sorted(entries, key=lambda e: e.get("idx", 0)):
        kind = TYPES.get(entry["type"].rsplit(".", 1)[-1])
        if kind is None:
            raise WeightFormatError(f"{path}: module {entry['type']!r} is not one rosetta reads ({', '.join(TYPES)})")
        read.append({**entry, "kind": kind})
    kinds = [entry["kind"] for entry in read]
    if (
        kinds[:2] != ["transformer", "pooling"]
        or "transformer" in kinds[1:]
        or "pooling" in kinds[2:]
        or ("normalize" in kinds and kinds.index("normalize") != len(kinds) - 1)
    ):
        raise WeightFormatError(
            f"{path}: modules {kinds}: rosetta reads Transformer, Pooling, any Dense layers, then Normalize (or none)"
        )
    return read


def encoder_folder(folder: Path) -> Path:
    """The Transformer module's folder (its `path`; "" is the folder itself)."""
    return folder / (modules(folder)[0].get("path") or "")


def read_head(folder: Path, d_model: int) -> tuple[HeadConfig, dict[str, np.ndarray]]:
    """The head modules.json declares, and its canonical `sentence_head.*` tensors."""
    dense: list[DenseSpec] = []
    tensors: dict[str, np.ndarray] = {}
    pooling, include_prompt, normalize = ("mean",), True, False
    for entry in modules(folder)[1:]:
        where = folder / (entry.get("path") or "")
        if entry["kind"] == "pooling":
            pooling, include_prompt = _pooling(where / CONFIG_FILE, d_model)
        elif entry["kind"] == "dense":
            spec, weight, bias = _dense(where)
            i = len(dense)
            tensors[f"{PREFIX}dense.{i}.kernel"] = np.ascontiguousarray(weight.T)
            if bias is not None:
                tensors[f"{PREFIX}dense.{i}.bias"] = bias
            dense.append(spec)
        else:
            normalize = True
    try:
        head = HeadConfig(d_model, pooling, include_prompt, tuple(dense), normalize)
    except ValueError as err:
        raise WeightFormatError(f"{folder / MODULES_FILE}: {err}") from err
    return head, tensors


def _pooling(path: Path, d_model: int) -> tuple[tuple[str, ...], bool]:
    fields = read_json_object(path, "Pooling config")
    width = fields.get("embedding_dimension", fields.get("word_embedding_dimension"))
    if width != d_model:
        raise WeightFormatError(f"{path}: embedding_dimension {width!r}, but the encoder's output has width {d_model}")
    mode = fields.get("pooling_mode")
    if mode is None:
        modes = tuple(name for key, name in LEGACY_POOLING_KEYS.items() if fields.get(key)) or ("mean",)
    else:
        modes = (mode,) if isinstance(mode, str) else tuple(mode)
    unknown = [m for m in modes if m not in POOLING_MODES]
    if unknown or not modes:
        raise WeightFormatError(f"{path}: pooling_mode {mode!r}: rosetta reads {', '.join(POOLING_MODES)}")
    include_prompt = fields.get("include_prompt", True)
    if not isinstance(include_prompt, bool):
        raise WeightFormatError(f"{path}: include_prompt {include_prompt!r}, expected true or false")
    return modes, include_prompt


def _dense(folder: Path) -> tuple[DenseSpec, np.ndarray, np.ndarray | None]:
    path = folder / CONFIG_FILE
    fields = read_json_object(path, "Dense config")
    for key in ("module_input_name", "module_output_name"):
        if fields.get(key, "sentence_embedding") not in ("sentence_embedding", None):
            raise WeightFormatError(
                f"{path}: {key} {fields[key]!r}: rosetta's Dense reads and writes sentence_embedding"
            )
    activation_path = fields.get("activation_function", "torch.nn.modules.activation.Tanh")
    if activation_path not in ACTIVATIONS:
        raise WeightFormatError(
            f"{path}: activation_function {activation_path!r}: rosetta reads {', '.join(ACTIVATIONS)}"
        )
    try:
        spec = DenseSpec(
            int(fields["in_features"]),
            int(fields["out_features"]),
            bool(fields.get("bias", True)),
            ACTIVATIONS[activation_path],
        )
    except (KeyError, TypeError, ValueError) as err:
        raise WeightFormatError(f"{path}: a Dense config needs in_features and out_features: {err!r}") from err
    if not (folder / WEIGHTS_FILE).is_file():
        pickles = sorted(p.name for p in folder.glob("*.bin"))
        why = (
            f"refusing to unpickle {pickles[0]}; re-save the model with `SentenceTransformer.save`"
            if pickles
            else (f"no {WEIGHTS_FILE}")
        )
        raise WeightFormatError(f"{folder}: {why}")
    stored = read_safetensors(folder / WEIGHTS_FILE)
    expected = {"linear.weight"} | ({"linear.bias"} if spec.bias else set())
    if set(stored) != expected:
        raise WeightFormatError(f"{folder / WEIGHTS_FILE}: tensors {sorted(stored)}, expected {sorted(expected)}")
    weight = stored["linear.weight"]
    if weight.shape != (spec.out_features, spec.in_features):
        raise WeightFormatError(
            f"{folder / WEIGHTS_FILE}: linear.weight {weight.shape}, expected {(spec.out_features, spec.in_features)}"
        )
    return spec, weight, stored.get("linear.bias")


def write_head(folder: Path, head: HeadConfig, tensors: Mapping[str, np.ndarray], max_seq_length: int) -> None:
    """modules.json (the encoder at the folder itself), sentence_bert_config.json and one folder per module."""
    entries = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]

    def add(kind: str) -> Path:
        idx = len(entries)
        entries.append(
            {"idx": idx, "name": str(idx), "path": f"{idx}_{kind}", "type": f"sentence_transformers.models.{kind}"}
        )
        (folder / f"{idx}_{kind}").mkdir()
        return folder / f"{idx}_{kind}"

    pooling = {
        "embedding_dimension": head.d_model,
        "pooling_mode": list(head.pooling),
        "include_prompt": head.include_prompt,
    }
    (add("Pooling") / CONFIG_FILE).write_text(json.dumps(pooling, indent=2) + "\n")
    names = {name: path for path, name in ACTIVATIONS.items()}
    for i, dense in enumerate(head.dense):
        where = add("Dense")
        fields = {
            "in_features": dense.in_features,
            "out_features": dense.out_features,
            "bias": dense.bias,
            "activation_function": names[dense.activation],
        }
        (where / CONFIG_FILE).write_text(json.dumps(fields, indent=2) + "\n")
        stored = {"linear.weight": np.ascontiguousarray(tensors[f"{PREFIX}dense.{i}.kernel"].T)}
        if dense.bias:
            stored["linear.bias"] = np.ascontiguousarray(tensors[f"{PREFIX}dense.{i}.bias"])
        (where / WEIGHTS_FILE).write_bytes(serialize(stored, metadata={"format": "pt"}))
    if head.normalize:
        add("Normalize")
    (folder / MODULES_FILE).write_text(json.dumps(entries, indent=2) + "\n")
    settings = {"max_seq_length": max_seq_length, "do_lower_case": False}
    (folder / ST_CONFIG_FILE).write_text(json.dumps(settings, indent=2) + "\n")
