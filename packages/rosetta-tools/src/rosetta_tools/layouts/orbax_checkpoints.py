"""The orbax layout: a directory holding an Orbax checkpoint of `nnx.state(rosetta_flax.Encoder)` and its
`config.json`. Reading and writing are `rosetta_flax.orbax`'s; this module only registers them (and names
rosetta-flax when it is not installed)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from rosetta_common import EncoderConfig
from rosetta_common.name_tables import FLAX_ENCODER
from rosetta_tools.frameworks import require
from rosetta_tools.layouts.registry import Layout, WeightFile, agreeing_config, register

NEEDED_FOR = "the orbax layout"


def _read(path: Path, config: EncoderConfig | None) -> WeightFile:
    orbax = require("flax", NEEDED_FOR, "orbax")
    stored, arrays = orbax.read_checkpoint(path, config)
    return WeightFile(path, ORBAX, arrays, agreeing_config(path, stored, config))


def _write(path: Path, config: EncoderConfig, tensors: Mapping[str, np.ndarray]) -> Path:
    return require("flax", NEEDED_FOR, "orbax").write_checkpoint(path, config, tensors)


STATE_DIR, MARKERS = "state", ("_CHECKPOINT_METADATA", "_METADATA")  # as rosetta_flax.orbax writes and reads


def _is_checkpoint(path: Path, metadata: Mapping[str, str], names: frozenset[str]) -> bool:
    """A rosetta Orbax directory (`state/`) or a bare Orbax checkpoint; detected without importing JAX."""
    return path.is_dir() and ((path / STATE_DIR).is_dir() or any((path / marker).exists() for marker in MARKERS))


ORBAX = register(
    Layout(
        "orbax",
        "Flax NNX state, Orbax checkpoint",
        detect=_is_checkpoint,
        read=_read,
        write=_write,
        table=FLAX_ENCODER,
        directory=True,
    )
)
