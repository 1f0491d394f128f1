"""The safetensors layouts: rosetta (canonical), torch (rosetta_torch state_dict), torch-modules
(nn.Embedding + nn.TransformerEncoder state_dict). NumPy only: each converts through its name table."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
from safetensors.numpy import save as serialize

from rosetta_common import EncoderConfig, read_metadata, read_safetensors, save_canonical
from rosetta_common.io import (
    CONFIG_KEY,
    LAYOUT_KEY,
    VERSION_KEY,
    check_format_version,
    stored_config,
    write_atomically,
)
from rosetta_common.name_tables import TORCH_ENCODER, TORCH_NN, NameTable
from rosetta_common.sentence_head import HeadConfig, split_head_tensors, stored_head
from rosetta_tools.layouts.registry import LAYOUTS, Layout, Tensors, WeightFile, agreeing_config, detect, register


def read_any(path: Path, config: EncoderConfig | None) -> WeightFile:
    """A safetensors file in whichever layout it is (refusing pickles, missing and unreadable files, and a
    canonical file of another format version, as `load_canonical` does)."""
    metadata = read_metadata(path)
    tensors = read_safetensors(path)
    head = stored_head(str(path), metadata)
    tensors, head_tensors = split_head_tensors(tensors) if head is not None else (tensors, {})
    layout = detect(path, metadata, frozenset(tensors))
    if layout.name == "rosetta" and (CONFIG_KEY in metadata or VERSION_KEY in metadata):
        check_format_version(path, metadata)
    stored = agreeing_config(path, _stored_config(path, metadata), config)
    return WeightFile(path, layout, tensors, stored, metadata, head=head, head_tensors=head_tensors)


def _write_canonical_with_head(
    path: Path, config: EncoderConfig, tensors: Mapping[str, np.ndarray], head: HeadConfig, head_tensors: Tensors
) -> Path:
    return save_canonical(path, config, tensors, head=head, head_tensors=head_tensors)


def _stored_config(path: Path, metadata: Mapping[str, str]) -> EncoderConfig | None:
    return stored_config(path, metadata[CONFIG_KEY]) if CONFIG_KEY in metadata else None


def _declared(metadata: Mapping[str, str], name: str) -> bool | None:
    """True / False when the metadata names a layout (rosetta writes it), None when it names none."""
    declared = metadata.get(LAYOUT_KEY)
    return None if declared not in LAYOUTS or declared == "orbax" else declared == name


def _native_writer(name: str, table: NameTable) -> Callable[[Path, EncoderConfig, Mapping[str, np.ndarray]], Path]:
    def write(path: Path, config: EncoderConfig, tensors: Mapping[str, np.ndarray]) -> Path:
        payload = serialize(table.to_native(config, tensors), metadata={CONFIG_KEY: config.to_json(), LAYOUT_KEY: name})
        return write_atomically(path, lambda tmp: tmp.write_bytes(payload))

    return write


def _is_canonical(path: Path, metadata: Mapping[str, str], names: frozenset[str]) -> bool:
    declared = _declared(metadata, "rosetta")
    if declared is not None:
        return declared
    return VERSION_KEY in metadata or any(name.endswith((".kernel", ".scale")) for name in names)


def _is_torch_modules(path: Path, metadata: Mapping[str, str], names: frozenset[str]) -> bool:
    declared = _declared(metadata, "torch-modules")
    return declared if declared is not None else any(name.startswith("encoder.layers.") for name in names)


def _is_torch(path: Path, metadata: Mapping[str, str], names: frozenset[str]) -> bool:
    declared = _declared(metadata, "torch")
    if declared is not None:
        return declared
    return any(re.match(r"layers\.\d+\.(attn|ffn|norm1|norm2)\.", name) for name in names)


NATIVE_LAYOUTS = (  # name, description, how a stored file is recognised, its name table
    ("torch", "rosetta_torch.Encoder state_dict, safetensors", _is_torch, TORCH_ENCODER),
    ("torch-modules", "nn.Embedding + nn.TransformerEncoder state_dict, safetensors", _is_torch_modules, TORCH_NN),
)

register(
    Layout(
        "rosetta",
        "rosetta canonical safetensors",
        _is_canonical,
        read_any,
        save_canonical,
        table=None,
        write_with_head=_write_canonical_with_head,
    )
)
for _name, _description, _is_it, _table in NATIVE_LAYOUTS:
    register(Layout(_name, _description, _is_it, read_any, _native_writer(_name, _table), _table))
