"""`read_checkpoint(path)`: what `rosetta_torch.load` and `rosetta_flax.load` read, one place for both.

A canonical rosetta file is read here (`load_canonical_with_head`, NumPy only). Every other layout rosetta reads
(an HF or sentence-transformers folder, a torch state_dict file with its config, an Orbax directory) is read
through `rosetta_tools.layouts`, the registry `rosetta convert` uses, with its checks and its notes: the one
place where rosetta-common reaches up, at call time, to a package installed beside it. Without rosetta-tools the
error says what the path is and what to install.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rosetta_common.canonical import WeightFormatError
from rosetta_common.config import EncoderConfig
from rosetta_common.io import CONFIG_KEY, LAYOUT_KEY, NotSafetensorsError, load_canonical_with_head, read_metadata
from rosetta_common.precision import cast_tensors
from rosetta_common.sentence_head import HeadConfig


class ConversionNote(UserWarning):
    """What reading a checkpoint of another layout left out or changed (a task head dropped, a cast): the notes
    `rosetta convert` prints, as warnings from `load`."""


@dataclass
class Checkpoint:
    """An encoder's config and canonical tensors, the layout it was read from, and its sentence-embedding head
    (None, and no tensors, when it has none)."""

    config: EncoderConfig
    tensors: dict[str, np.ndarray]
    layout: str
    head: HeadConfig | None = None
    head_tensors: dict[str, np.ndarray] = field(default_factory=dict)


def warn_note(note: str) -> None:
    warnings.warn(note, ConversionNote, stacklevel=4)


def read_checkpoint(
    path: str | os.PathLike, on_note: Callable[[str], None] | None = None, dtype: str | None = None
) -> Checkpoint:
    """Any layout rosetta reads -> a Checkpoint, checked as `rosetta convert` checks it; `dtype` casts every
    tensor (as `rosetta convert --dtype`); `on_note` hears the notes (default: each a `ConversionNote` warning)."""
    path = Path(path)
    if _is_canonical_file(path):
        config, tensors, head, head_tensors = load_canonical_with_head(path)
        if dtype is not None:
            tensors, report = cast_tensors(tensors, dtype)
            head_tensors, _ = cast_tensors(head_tensors, dtype)
            (on_note or warn_note)(report.describe())
        return Checkpoint(config, tensors, "rosetta", head, head_tensors)
    try:
        layouts = importlib.import_module("rosetta_tools.layouts")
    except ImportError:
        raise WeightFormatError(
            f"{_what(path)}: reading it needs rosetta-tools (pip install rosetta-tools), which "
            "holds the layouts `rosetta convert` reads"
        ) from None
    read = layouts.load_checkpoint(path, dtype=dtype, on_note=on_note or warn_note)
    return Checkpoint(read.config, read.tensors, read.layout, read.head, read.head_tensors)


def _is_canonical_file(path: Path) -> bool:
    """A safetensors file whose metadata holds a rosetta config and names no other layout."""
    if not path.is_file():
        return False
    try:
        metadata = read_metadata(path)
    except NotSafetensorsError:
        return False
    return CONFIG_KEY in metadata and metadata.get(LAYOUT_KEY, "rosetta") == "rosetta"


def _what(path: Path) -> str:
    if not path.exists():
        return f"{path}: no such file or directory"
    return (
        f"{path}: a directory that is not a canonical rosetta file"
        if path.is_dir()
        else (f"{path}: a file that is not a canonical rosetta file")
    )
