"""The weight layouts `rosetta inspect / convert / diff` read and write: name -> detect, read, write, description.

    rosetta        canonical safetensors file: canonical names, config + format version in the metadata
    torch          safetensors of `rosetta_torch.Encoder(...).state_dict()`
    torch-modules  safetensors of the state_dict of `{"embedding": nn.Embedding, "encoder": nn.TransformerEncoder}`
    orbax          a directory: `state/`, an Orbax checkpoint of `nnx.state(rosetta_flax.Encoder)`, and `config.json`
                   (a bare Orbax checkpoint directory is read too, with `--config`)
    hf-*           Hugging Face checkpoint folders, one per encoder family (hf_checkpoints.py, hf_families.py)
    sentence-transformers  an HF folder + modules.json (st_modules.py): written with the sentence head; read
                   through the hf-* layouts (a modules.json beside config.json), or here for `0_Transformer/` ones

A sentence-embedding head (`rosetta_common.sentence_head`) rides along in `WeightFile.head` / `Checkpoint.head`:
read from modules.json or a canonical file's metadata, written by the layouts with `write_with_head`.

Every layout goes through the canonical tensors, by its name table (`rosetta_common.name_tables`). The
safetensors layouts need NumPy only; orbax needs rosetta-flax. The torch layouts carry their config in the
metadata when rosetta wrote them; otherwise it comes from `--config`. Pickled files are refused, never loaded.
Every output is written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rosetta_common import EncoderConfig, WeightFormatError, check_tensors
from rosetta_common.checkpoints import Checkpoint
from rosetta_common.io import CONFIG_KEY, NotSafetensorsError, check_head_dtype, load_canonical_with_head
from rosetta_common.name_tables import NameTable
from rosetta_common.precision import cast_tensors
from rosetta_common.sentence_head import HeadConfig, check_head_tensors

Tensors = dict[str, np.ndarray]


@dataclass
class WeightFile:
    """A weight file as stored: its layout, tensors under their own names, metadata and config (when known)."""

    path: Path
    layout: Layout
    tensors: Tensors
    config: EncoderConfig | None
    metadata: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what reading it left out (e.g. a task head), to tell the user
    head: HeadConfig | None = None  # a sentence-embedding head (modules.json; a canonical file's stored one)
    head_tensors: Tensors = field(default_factory=dict)  # its `sentence_head.*` tensors, canonical names

    @property
    def description(self) -> str:
        return self.layout.description


@dataclass(frozen=True)
class Layout:
    """One layout. `detect(path, metadata, names)` says whether a stored file is in it (metadata and names are
    empty for a directory); `read(path, config)` reads it as stored; `write(path, config, canonical)` writes it
    atomically; `table` maps its names to the canonical ones (None: they are the canonical ones); `directory`:
    written as a folder (`--force` replaces an earlier one) rather than a file; `write_with_head`: how it writes
    a sentence-embedding head with the encoder (None: it has no place for one)."""

    name: str
    description: str
    detect: Callable[[Path, Mapping[str, str], frozenset[str]], bool]
    read: Callable[[Path, EncoderConfig | None], WeightFile]
    write: Callable[[Path, EncoderConfig, Mapping[str, np.ndarray]], Path]
    table: NameTable | None
    directory: bool = False
    write_with_head: Callable[[Path, EncoderConfig, Mapping[str, np.ndarray], HeadConfig, Tensors], Path] | None = None

    def to_canonical(self, weights: WeightFile) -> Tensors:
        """The file's tensors under canonical names; one WeightFormatError lists every problem in its own names."""
        assert weights.config is not None
        source = f"{weights.path} ({self.description})"
        if self.table is None:
            check_tensors(weights.config, weights.tensors, source=source)
            return dict(weights.tensors)
        tensors = self.table.to_canonical(weights.config, weights.tensors, source=source)
        check_tensors(weights.config, tensors, source=source)
        return tensors


LAYOUTS: dict[str, Layout] = {}


def register(layout: Layout) -> Layout:
    LAYOUTS[layout.name] = layout
    return layout


def detect(path: Path, metadata: Mapping[str, str], names: frozenset[str]) -> Layout:
    """The layout of a stored file; WeightFormatError naming what was found and what is read."""
    for layout in LAYOUTS.values():
        if layout.detect(path, metadata, names):
            return layout
    if path.is_dir():
        raise WeightFormatError(
            f"{path}: a directory, but not an Orbax checkpoint (no 'state/' with 'config.json', no "
            "_CHECKPOINT_METADATA) nor a Hugging Face checkpoint folder (no config.json with a model_type)"
        )
    shown = ", ".join(sorted(names)[:3]) or "none"
    raise WeightFormatError(
        f"{path}: not a weight file rosetta reads: its tensors ({shown}, ...) are not those of a rosetta, "
        "rosetta_torch or torch.nn.TransformerEncoder model"
    )


def read(path: str | os.PathLike, config: EncoderConfig | None = None) -> WeightFile:
    """Read any layout as stored (no name mapping); `config` (from `--config`) must agree with a stored one."""
    from rosetta_tools.layouts.safetensors_files import read_any

    path = Path(path)
    if path.is_dir():
        return detect(path, {}, frozenset()).read(path, config)
    try:
        return read_any(path, config)
    except NotSafetensorsError as err:
        raise NotSafetensorsError(f"{err}; rosetta reads {accepted()}") from err


def accepted() -> str:
    """The layouts rosetta reads, for messages: "safetensors files (layouts rosetta, ...) and ... directories"."""
    files = ", ".join(name for name in LAYOUTS if name != "orbax")
    return f"safetensors files (layouts {files}) and Orbax checkpoint directories (layout orbax)"


def load(
    path: str | os.PathLike,
    config: EncoderConfig | None = None,
    dtype: str | None = None,
    on_note: Callable[[str], None] | None = None,
) -> tuple[EncoderConfig, Tensors, str]:
    """Any layout -> (config, canonical tensors, layout name), every name, shape, dtype and value checked; the
    sentence head, if any, is left out (`load_checkpoint` keeps it)."""
    checkpoint = load_checkpoint(path, config, dtype, on_note)
    return checkpoint.config, checkpoint.tensors, checkpoint.layout


def load_checkpoint(
    path: str | os.PathLike,
    config: EncoderConfig | None = None,
    dtype: str | None = None,
    on_note: Callable[[str], None] | None = None,
) -> Checkpoint:
    """Any layout -> a Checkpoint, every name, shape, dtype and value checked (the sentence head's too).

    `dtype` casts the stored tensors first (round to nearest even: `rosetta_common.precision.cast_tensors`);
    `on_note` hears what reading left out (a task model's head) and what a cast lost (or that it was exact)."""
    weights = read(path, config)
    notes = list(weights.notes)
    if dtype is not None:
        weights.tensors, report = cast_tensors({**weights.tensors, **weights.head_tensors}, dtype)
        weights.head_tensors = {name: weights.tensors.pop(name) for name in weights.head_tensors}
        notes.append(report.describe())
    for note in notes:
        if on_note is not None:
            on_note(note)
    if weights.config is None:
        raise WeightFormatError(f"{weights.path} ({weights.description}) stores no config: pass --config config.json")
    if weights.layout.name == "rosetta" and CONFIG_KEY in weights.metadata and dtype is None:
        _, tensors, head, head_tensors = load_canonical_with_head(weights.path)  # format version, every tensor
        return Checkpoint(weights.config, tensors, "rosetta", head, head_tensors)
    tensors = weights.layout.to_canonical(weights)
    if weights.head is not None:
        source = f"{weights.path} ({weights.description})"
        check_head_dtype(
            source,
            tensors["embedding.weight"].dtype,
            check_head_tensors(weights.head, weights.head_tensors, source=source),
        )
    return Checkpoint(weights.config, tensors, weights.layout.name, weights.head, dict(weights.head_tensors))


def save(
    path: str | os.PathLike,
    layout: str,
    config: EncoderConfig,
    tensors: Mapping[str, np.ndarray],
    *,
    force: bool,
    head: HeadConfig | None = None,
    head_tensors: Mapping[str, np.ndarray] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> Path:
    """Write canonical `tensors` in `layout`, atomically; an existing `path` is replaced only when `force`. A
    sentence-embedding `head` is written with them where the layout has a place for one (rosetta,
    sentence-transformers); elsewhere `on_note` hears that it was left out. A layout that is only a head's
    (sentence-transformers) refuses to write without one."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}, expected one of {tuple(LAYOUTS)}")
    path = Path(path)
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists (pass --force to replace it)")
    if path.is_dir():
        check_replaceable_directory(path, LAYOUTS[layout])
    check_tensors(config, tensors)
    target = LAYOUTS[layout]
    if head is not None and target.write_with_head is not None:
        return target.write_with_head(path, config, tensors, head, dict(head_tensors or {}))
    if head is not None and on_note is not None:
        on_note(
            f"the sentence head ({head.describe()}) is not written: the {layout} layout has no place for it "
            "(--to rosetta or --to sentence-transformers keep it)"
        )
    return target.write(path, config, tensors)


def check_replaceable_directory(path: Path, layout: Layout) -> None:
    """`--force` replaces a directory only with a layout written as one, and only an empty folder or one that
    holds a checkpoint rosetta reads (never an unrelated folder)."""
    if not layout.directory:
        raise IsADirectoryError(f"{path} is a directory; the {layout.name} layout is a file: name a file to write")
    if not any(path.iterdir()) or any(other.detect(path, {}, frozenset()) for other in _dirs()):
        return
    raise IsADirectoryError(
        f"{path} is a directory that holds no checkpoint rosetta reads: refusing to replace it, even with --force"
    )


def _dirs() -> list[Layout]:
    return [layout for layout in LAYOUTS.values() if layout.directory]


def agreeing_config(path: Path, stored: EncoderConfig | None, given: EncoderConfig | None) -> EncoderConfig | None:
    """The stored config or the given one; when both exist they must be equal."""
    if stored is not None and given is not None and stored != given:
        fields = [name for name, value in stored.to_dict().items() if given.to_dict()[name] != value]
        raise WeightFormatError(f"{path}: --config disagrees with the config stored with the weights on {fields}")
    return stored if stored is not None else given
