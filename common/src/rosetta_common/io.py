"""Reading and writing canonical safetensors files (config and format version in the metadata)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save

from rosetta_common.canonical import (
    FORMAT_VERSION,
    READABLE_VERSIONS,
    WeightFormatError,
    check_tensors,
    expected_shapes,
    version_2_options,
)
from rosetta_common.config import EncoderConfig

CONFIG_KEY = "rosetta.config"
VERSION_KEY = "rosetta.format_version"
LAYOUT_KEY = "rosetta.layout"  # set by `rosetta convert` on files in a framework's own layout (e.g. "torch")
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".ckpt")


def write_atomically(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file next to `path`, then rename it into place.

    An interrupted write never leaves a half-written file at `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        _allow_by_umask(tmp, 0o666)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_directory_atomically(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a new temporary directory beside `path`, then swap it into place: an existing `path`
    is moved aside first and put back if the swap fails, so an interrupted write leaves `path` as it was."""
    path = Path(path)
    path.absolute().parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.absolute().parent))
    try:
        write(tmp)
        _allow_by_umask(tmp, 0o777)
        _swap_into_place(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _allow_by_umask(path: Path, mode: int) -> None:
    """Give a temporary file or directory the permissions a plainly created one would have (mkstemp and
    mkdtemp make them private)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode & ~umask)


def _swap_into_place(new: Path, path: Path) -> None:
    """Rename `new` to `path`; an existing `path` is moved aside first and put back on failure."""
    if not path.exists():
        os.replace(new, path)
        return
    old = new.with_name(f"{new.name}.old")
    os.replace(path, old)
    try:
        os.replace(new, path)
    except BaseException:
        os.replace(old, path)
        raise
    if old.is_dir():
        shutil.rmtree(old)
    else:
        old.unlink()


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file as NumPy arrays; WeightFormatError for an unreadable file."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, TypeError) as err:
        raise _unreadable(path, err) from err


def _unreadable(path: str | os.PathLike, err: Exception) -> WeightFormatError:
    return WeightFormatError(f"{path}: not a readable safetensors file (truncated or corrupted?): {err}")


def read_config_file(path: str | os.PathLike) -> EncoderConfig:
    """An EncoderConfig from a JSON file (the object `EncoderConfig.to_json()` writes)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise WeightFormatError(f"{path}: cannot read the config file: {err.strerror or err}") from err
    try:
        return EncoderConfig.from_json(text)
    except (TypeError, ValueError) as err:
        raise WeightFormatError(f"{path}: not a valid rosetta config: {err}") from err


def save_canonical(
    path: str | os.PathLike,
    config: EncoderConfig,
    tensors: Mapping[str, np.ndarray],
    extra_metadata: Mapping[str, str] | None = None,
) -> Path:
    """Check `tensors` against `config` and write them, atomically, as a rosetta safetensors file."""
    check_tensors(config, tensors)
    metadata = {CONFIG_KEY: config.to_json(), VERSION_KEY: FORMAT_VERSION, **(extra_metadata or {})}
    ordered = {name: np.ascontiguousarray(tensors[name]) for name in expected_shapes(config)}
    payload = save(ordered, metadata=metadata)
    return write_atomically(path, lambda tmp: tmp.write_bytes(payload))


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a safetensors file, raising WeightFormatError for a missing, pickled or corrupt file, or
    NotSafetensorsError for a file of another kind."""
    path = Path(path)
    if not path.is_file():
        raise WeightFormatError(f"{path}: no such file")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise WeightFormatError(
            f"{path}: refusing to unpickle a '{path.suffix}' file. Re-save it as safetensors, e.g. "
            "`safetensors.torch.save_file(model.state_dict(), 'model.safetensors')`."
        )
    if path.suffix.lower() != ".safetensors" and not _has_safetensors_header(path):  # else: a damaged one
        raise NotSafetensorsError(f"{path}: not a safetensors file (no safetensors header at its start)")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        raise _unreadable(path, err) from err


class NotSafetensorsError(WeightFormatError):
    """A file that is not safetensors at all (as opposed to a damaged one)."""


def _has_safetensors_header(path: Path) -> bool:
    """A safetensors file starts with the header's length (8 bytes, little-endian) and then the JSON header."""
    with open(path, "rb") as handle:
        start = handle.read(9)
    if len(start) < 9:
        return False
    header_length = int.from_bytes(start[:8], "little")
    return 0 < header_length <= path.stat().st_size - 8 and start[8:9] == b"{"


def load_canonical(path: str | os.PathLike) -> tuple[EncoderConfig, dict[str, np.ndarray]]:
    """Read a rosetta safetensors file; check config, names, shapes, dtypes and values before returning."""
    metadata = read_metadata(path)
    if CONFIG_KEY not in metadata:
        raise WeightFormatError(
            f"{path}: not a rosetta weight file (its metadata has no '{CONFIG_KEY}'); "
            "convert it with `rosetta convert` first"
        )
    if metadata.get(LAYOUT_KEY, "rosetta") != "rosetta":
        raise WeightFormatError(
            f"{path}: a '{metadata[LAYOUT_KEY]}' weight file, not a canonical rosetta file; convert it with "
            f"`rosetta convert {path} OUT.safetensors --to rosetta`"
        )
    version = metadata.get(VERSION_KEY)
    if version not in READABLE_VERSIONS:
        raise WeightFormatError(
            f"{path}: format version {version!r}, this rosetta reads {' and '.join(map(repr, READABLE_VERSIONS))}"
        )
    try:
        config = EncoderConfig.from_json(metadata[CONFIG_KEY])
    except (TypeError, ValueError) as err:
        raise WeightFormatError(f"{path}: the stored config is invalid: {err}") from err
    if version == "1" and (newer := version_2_options(config)):
        raise WeightFormatError(f"{path}: format version '1' cannot hold {', '.join(newer)} (version 2 options)")
    tensors = read_safetensors(path)
    check_tensors(config, tensors, source=str(path))
    return config, tensors
