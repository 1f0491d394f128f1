"""A sharded Hugging Face checkpoint's `model.safetensors.index.json`, checked, and the shards it names, read.

The index's `weight_map` must map tensor names to shard files named inside the checkpoint folder (a name that
leaves it, `../other.safetensors` or an absolute path, is refused; links inside the folder, as the HF cache makes
them, are followed). Every shard is read once, and each tensor must be where the index says and nowhere else: a
tensor stored in two shards, or in a shard the index does not name for it, is refused naming both.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import numpy as np

from rosetta_common import WeightFormatError, read_safetensors
from rosetta_common.io import read_json_object


def weight_map(index: Path) -> dict[str, Path]:
    """Tensor name -> shard file, from an index file; WeightFormatError saying what is wrong with it."""
    content = read_json_object(index, "checkpoint index")
    mapping = content.get("weight_map")
    if not isinstance(mapping, dict) or not mapping:
        found = "missing" if mapping is None else f"a JSON {type(mapping).__name__}" if mapping else "empty"
        raise WeightFormatError(
            f"{index}: 'weight_map' must be an object of tensor names to shard files; it is {found}"
        )
    shards: dict[str, Path] = {}
    for name, shard in mapping.items():
        if not isinstance(shard, str) or not shard:
            raise WeightFormatError(f"{index}: 'weight_map' maps {name!r} to {shard!r}, not a shard file name")
        shards[name] = _inside(index, shard)
    return shards


def _inside(index: Path, shard: str) -> Path:
    """`shard` as a path in the index's folder; WeightFormatError for a name that points outside it."""
    parts = PurePosixPath(shard.replace("\\", "/")).parts
    if os.path.isabs(shard) or PurePosixPath(shard).is_absolute() or ".." in parts or not parts:
        raise WeightFormatError(
            f"{index}: shard {shard!r} points outside the checkpoint folder; shards must be files inside it"
        )
    return index.parent.joinpath(*parts)


def read_shards(index: Path) -> dict[str, np.ndarray]:
    """Every tensor the index names, each read from the one shard it names; WeightFormatError for a missing
    shard, a tensor missing from its shard, or a tensor stored twice or in another shard than the index says."""
    by_name = weight_map(index)
    tensors: dict[str, np.ndarray] = {}
    found_in: dict[str, Path] = {}
    for shard in sorted(set(by_name.values())):
        if not shard.is_file():
            raise WeightFormatError(f"{index}: names shard {shard.name}, which is not in {index.parent}")
        for name, value in read_safetensors(shard).items():
            if name in found_in:
                raise WeightFormatError(
                    f"{index.parent}: tensor {name} is stored twice, in {found_in[name].name} and {shard.name}"
                )
            found_in[name] = shard
            if by_name.get(name) != shard:
                where = f"in {by_name[name].name}" if name in by_name else "nowhere (it does not list it)"
                raise WeightFormatError(f"{shard}: holds tensor {name}, which the index {index.name} places {where}")
            tensors[name] = value
    missing = sorted(name for name, shard in by_name.items() if found_in.get(name) != shard)
    if missing:
        raise WeightFormatError(
            f"{index}: {len(missing)} tensors are not in the shard it names, e.g. {missing[0]} "
            f"(in {by_name[missing[0]].name})"
        )
    return tensors
