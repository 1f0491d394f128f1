"""The Hugging Face checkpoint-folder layouts, one per encoder family (`hf_families`: hf-bert, hf-roberta,
hf-modernbert, hf-distilbert).

Read: `config.json` plus `model.safetensors`, or the shards a `model.safetensors.index.json` lists; the tensors
with the prefix of a task model (`bert.`, `roberta.`, `model.`, `distilbert.`) or without; everything that is not
the encoder (an MLM head, a classifier) is dropped and listed. Written: a folder the family's
`from_pretrained` loads (`config.json`, `model.safetensors`). Names go through the family's table; NumPy only
(bfloat16 tensors through ml_dtypes, cast only when asked). A `pytorch_model.bin` is a pickle: refused, with the
line that re-saves it as safetensors. Variants rosetta cannot represent are refused naming the field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import ml_dtypes  # noqa: F401  (registers bfloat16 with NumPy, so safetensors reads BF16 tensors)
import numpy as np
from safetensors.numpy import save as serialize

from rosetta_common import EncoderConfig, WeightFormatError, read_safetensors, write_directory_atomically
from rosetta_common.io import read_json_object
from rosetta_common.sentence_head import HeadConfig
from rosetta_tools.layouts.hf_families import FAMILIES, Family, family_of, stored_dtype_fields
from rosetta_tools.layouts.hf_index import read_shards
from rosetta_tools.layouts.registry import Layout, Tensors, WeightFile, agreeing_config, register
from rosetta_tools.layouts.st_modules import MODULES_FILE, encoder_folder, read_head, write_head

CONFIG_FILE, WEIGHTS_FILE, INDEX_FILE = "config.json", "model.safetensors", "model.safetensors.index.json"
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


def _stored_tensors(folder: Path) -> dict[str, np.ndarray]:
    if (folder / WEIGHTS_FILE).is_file():
        return read_safetensors(folder / WEIGHTS_FILE)
    if (folder / INDEX_FILE).exists():
        return read_shards(folder / INDEX_FILE)  # each tensor from the one shard the checked index names
    pickles = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt"))
    if pickles:
        raise WeightFormatError(f"{folder}: refusing to unpickle {pickles[0]}; {RESAVE}")
    raise WeightFormatError(f"{folder}: no {WEIGHTS_FILE} or {INDEX_FILE} beside {CONFIG_FILE}")


def _read(folder: Path, given: EncoderConfig | None, st_folder: Path | None = None) -> WeightFile:
    """The encoder of an HF folder, and the sentence-embedding head of the sentence-transformers folder
    (`st_folder`, default the folder itself) when it has a modules.json."""
    st_folder = folder if st_folder is None else st_folder
    hf = read_json_object(folder / CONFIG_FILE, "Hugging Face config")
    family = family_of(hf, folder)
    stored = _stored_tensors(folder)
    tensors = {_bare(name, family): value for name, value in stored.items()}
    try:
        config = family.read_config(hf, frozenset(tensors), folder)
    except (KeyError, TypeError, ValueError) as err:  # a field missing or of the wrong type (WeightFormatError passes)
        if isinstance(err, WeightFormatError):
            raise
        raise WeightFormatError(f"{folder}: {CONFIG_FILE} does not describe a rosetta encoder: {err!r}") from err
    kept = set(family.table.native_shapes(config))
    dropped = sorted(name for name in stored if _bare(name, family) not in kept)
    notes = family.read_notes(hf)
    if dropped:
        parts = ", ".join(sorted({".".join(name.split(".")[:-1][:2]) + ".*" for name in dropped}))  # module paths
        notes.append(f"dropped {len(dropped)} tensors that are not the encoder: {parts}")
    encoder = {name: value for name, value in tensors.items() if name in kept}
    head, head_tensors = None, {}
    if (st_folder / MODULES_FILE).is_file():
        head, head_tensors = read_head(st_folder, config.d_model)
        notes.append(f"sentence-transformers head: {head.describe()}")
    config = agreeing_config(folder, config, given)
    layout = LAYOUTS_BY_KIND[family.layout]
    return WeightFile(st_folder, layout, encoder, config, notes=notes, head=head, head_tensors=head_tensors)


def _bare(name: str, family: Family) -> str:
    for prefix in family.prefixes:
        if name.startswith(prefix):
            return name.removeprefix(prefix)
    return name


def _writer(family: Family):  # noqa: ANN202  (a Layout.write)
    def write(path: Path, config: EncoderConfig, tensors: Mapping[str, np.ndarray]) -> Path:
        return _write_folder(path, family, config, tensors)

    return write


def _write_folder(
    path: Path,
    family: Family,
    config: EncoderConfig,
    tensors: Mapping[str, np.ndarray],
    head: HeadConfig | None = None,
    head_tensors: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """The family's folder (config.json, model.safetensors), with the sentence-transformers files of `head`."""
    family.check_holds(config)
    hf = {**family.write_config(config), **stored_dtype_fields(next(iter(tensors.values())).dtype)}
    payload = serialize(family.table.to_native(config, tensors), metadata={"format": "pt"})

    def fill(tmp: Path) -> None:
        (tmp / CONFIG_FILE).write_text(json.dumps(hf, indent=2, sort_keys=True) + "\n")
        (tmp / WEIGHTS_FILE).write_bytes(payload)
        if head is not None:
            write_head(tmp, head, head_tensors or {}, config.max_len)

    return write_directory_atomically(path, fill)


def _detects(family: Family):  # noqa: ANN202  (a Layout.detect)
    def detect(path: Path, metadata: Mapping[str, str], names: frozenset[str]) -> bool:
        if not is_checkpoint_folder(path):
            return False
        model_type = read_json_object(path / CONFIG_FILE, "Hugging Face config").get("model_type")
        if not isinstance(model_type, str):
            model_type = None
        if model_type in family.model_types:
            return True
        # another model_type: read as the first family, which refuses it by name
        return family is FAMILIES[0] and all(model_type not in other.model_types for other in FAMILIES)

    return detect


LAYOUTS_BY_KIND = {
    family.layout: register(
        Layout(
            family.layout, family.description, _detects(family), _read, _writer(family), family.table, directory=True
        )
    )
    for family in FAMILIES
}


def _family_holding(config: EncoderConfig) -> Family:
    """The first HF family whose folder can hold `config` (BERT, RoBERTa, ModernBERT, DistilBERT)."""
    problems = []
    for family in FAMILIES:
        try:
            family.check_holds(config)
        except WeightFormatError as err:
            problems.append(str(err))
            continue
        return family
    raise WeightFormatError("no Hugging Face family holds this encoder:\n  - " + "\n  - ".join(problems))


def _is_st_folder(path: Path, metadata: Mapping[str, str], names: frozenset[str]) -> bool:
    """A sentence-transformers folder whose encoder is in a subfolder (`0_Transformer/`); one with the encoder at
    its top is read by the HF family layouts, which read modules.json beside config.json too."""
    return path.is_dir() and (path / MODULES_FILE).is_file() and not is_checkpoint_folder(path)


def _read_st(folder: Path, given: EncoderConfig | None) -> WeightFile:
    inner = encoder_folder(folder)
    if not is_checkpoint_folder(inner):
        raise WeightFormatError(f"{folder}: its modules.json puts the encoder in {inner}, which has no config.json")
    return _read(inner, given, st_folder=folder)


def _refuse_without_head(path: Path, config: EncoderConfig, tensors: Mapping[str, np.ndarray]) -> Path:
    raise WeightFormatError(
        f"cannot write {path} as a sentence-transformers folder: the weights have no sentence head (no modules.json "
        "where they came from); write an HF folder (--to hf-bert, ...) instead"
    )


def _write_st(
    path: Path, config: EncoderConfig, tensors: Mapping[str, np.ndarray], head: HeadConfig, head_tensors: Tensors
) -> Path:
    return _write_folder(path, _family_holding(config), config, tensors, head, head_tensors)


register(
    Layout(
        "sentence-transformers",
        "sentence-transformers folder (an HF encoder folder + modules.json: Pooling, Dense, Normalize)",
        _is_st_folder,
        _read_st,
        _refuse_without_head,
        None,
        directory=True,
        write_with_head=_write_st,
    )
)
