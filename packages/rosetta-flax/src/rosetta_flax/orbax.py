"""Orbax checkpoints of a rosetta_flax.Encoder: the Flax counterpart of `rosetta_torch.interop`.

A checkpoint directory holds `state/`, an Orbax `StandardCheckpointer` save of `nnx.state(model)`, and
`config.json`. A bare Orbax checkpoint of such a state (`_CHECKPOINT_METADATA` at its top, no config) is read
too, with the config given. Writing is atomic: an interrupted save leaves the directory as it was. Reading or
writing turns JAX's x64 mode on, so that float64 checkpoints stay float64.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from rosetta_common import (
    EncoderConfig,
    WeightFormatError,
    check_tensors,
    read_config_file,
    write_directory_atomically,
)
from rosetta_common.name_tables import FLAX_ENCODER
from rosetta_flax.convert import from_canonical, to_canonical
from rosetta_flax.encoder import Encoder

STATE_DIR, CONFIG_FILE = "state", "config.json"
MARKERS = ("_CHECKPOINT_METADATA", "_METADATA")


def read_checkpoint(
    directory: str | os.PathLike, config: EncoderConfig | None = None
) -> tuple[EncoderConfig | None, dict[str, np.ndarray]]:
    """(the stored config or None, the arrays under their NNX paths as stored; RNG state left out).

    A `state/` without its `config.json` is an error unless a `config` is given to use instead.
    """
    directory = Path(directory)
    if (directory / STATE_DIR).is_dir():
        state_dir, config_file = directory / STATE_DIR, directory / CONFIG_FILE
        if config_file.is_file():
            return read_config_file(config_file), _restore_arrays(state_dir)
        if config is None:
            raise WeightFormatError(f"{directory}: '{CONFIG_FILE}' is missing beside '{STATE_DIR}/'")
        return None, _restore_arrays(state_dir)
    if any((directory / marker).exists() for marker in MARKERS):
        return None, _restore_arrays(directory)
    raise WeightFormatError(
        f"{directory}: a directory, but not an Orbax checkpoint (no '{STATE_DIR}/' with '{CONFIG_FILE}', "
        f"no {MARKERS[0]})"
    )


def write_checkpoint(directory: str | os.PathLike, config: EncoderConfig, tensors: Mapping[str, np.ndarray]) -> Path:
    """Canonical `tensors` as `directory/state` (Orbax, `nnx.state(model)`) and `directory/config.json`."""
    jax.config.update("jax_enable_x64", True)
    check_tensors(config, tensors)
    state = nnx.state(from_canonical(config, tensors))

    def write(tmp: Path) -> None:
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(tmp / STATE_DIR, state)
        (tmp / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")

    return write_directory_atomically(directory, write)


def save_checkpoint(model: Encoder, directory: str | os.PathLike) -> Path:
    """Write the model as an Orbax checkpoint directory (atomically)."""
    return write_checkpoint(directory, model.config, to_canonical(model))


def load_checkpoint(directory: str | os.PathLike, config: EncoderConfig | None = None) -> Encoder:
    """Read a checkpoint directory into an Encoder; `config` is needed for a bare Orbax checkpoint."""
    stored, arrays = read_checkpoint(directory, config)
    if stored is not None and config is not None and stored != config:
        raise WeightFormatError(f"{directory}: the given config differs from the one stored in '{CONFIG_FILE}'")
    config = stored or config
    if config is None:
        raise WeightFormatError(f"{directory}: a bare Orbax checkpoint stores no config: pass one")
    return from_canonical(config, FLAX_ENCODER.to_canonical(config, arrays, source=str(directory)))


def _restore_arrays(state_dir: Path) -> dict[str, np.ndarray]:
    """The arrays of an Orbax checkpoint of an NNX state, by dotted path; RNG state is left out."""
    jax.config.update("jax_enable_x64", True)
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            tree = checkpointer.restore(state_dir.resolve())
    except Exception as err:  # Orbax raises many kinds; any of them means the checkpoint is unusable
        raise WeightFormatError(f"{state_dir}: not a readable Orbax checkpoint: {_first_line(err)}") from err
    tensors: dict[str, np.ndarray] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        keys = [str(getattr(key, "key", getattr(key, "idx", key))) for key in path]
        if keys and keys[-1] == "value":  # nnx.State stores each Variable as {"value": array}
            keys = keys[:-1]
        if "rngs" in keys or jax.dtypes.issubdtype(getattr(leaf, "dtype", np.float32), jax.dtypes.prng_key):
            continue
        tensors[".".join(keys)] = np.asarray(leaf)
    return tensors


def _first_line(err: Exception, limit: int = 300) -> str:
    """An error's first line, without TensorStore's multi-line spec dump, cut to `limit` characters."""
    line = (str(err).strip().splitlines() or [type(err).__name__])[0].split(" See full TensorStore details")[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."
