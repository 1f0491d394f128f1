"""Reading and writing canonical safetensors files (config and format version in the metadata)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

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
from rosetta_common.sentence_head import HEAD_KEY, HeadConfig, check_head_tensors, split_head_tensors, stored_head

CONFIG_KEY = "rosetta.config"
VERSION_KEY = "rosetta.format_version"
LAYOUT_KEY = "rosetta.layout"  # set by `rosetta convert` on files in a framework's own layout (e.g. "torch")
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".ckpt")
TEMP_EXTRA = len("..12345678.tmp.old")  # what a temporary name adds to its prefix: mkstemp's 8 characters, suffixes


def refuse_pickle_name(path: str | os.PathLike) -> None:
    """WeightFormatError for a destination named like a pickle: rosetta writes safetensors, which `load` reads."""
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise WeightFormatError(
            f"{path}: rosetta never writes pickles ('{path.suffix}' files are refused on reading); "
            "name the file *.safetensors"
        )


def prepare_destination(path: Path) -> str:
    """Create `path`'s parent folders and return the prefix of a temporary name beside it: within the file
    system's name limit, whatever the length of `path`'s own name. OSError naming `path` (not a temporary name)
    for a name that is itself too long or a parent that is a file."""
    parent = path.absolute().parent
    existing = next(folder for folder in (parent, *parent.parents) if folder.exists())
    if not existing.is_dir():
        raise NotADirectoryError(f"cannot write {path}: {existing} is a file, not a directory")
    limit = _name_limit(existing)
    if len(os.fsencode(path.name)) > limit:
        raise OSError(f"cannot write {path}: its name is longer than the {limit} bytes this file system allows")
    parent.mkdir(parents=True, exist_ok=True)
    keep = os.fsencode(path.name)[: max(limit - TEMP_EXTRA, 1)]
    return "." + keep.decode("utf-8", "ignore") + "."


def _name_limit(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def write_atomically(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file next to `path`, then rename it into place.

    An interrupted write never leaves a half-written file at `path`.
    """
    path = Path(path)
    prefix = prepare_destination(path)
    fd, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
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
    prefix = prepare_destination(path)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=path.absolute().parent))
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


def check_regular_file(path: Path, what: str = "file") -> None:
    """WeightFormatError unless `path` is a regular file (or a link to one): missing, a directory, a FIFO, a
    device or a socket each said in words (a FIFO is never opened: reading it would wait for a writer)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise WeightFormatError(f"{path}: no such {what}") from None
    except OSError as err:
        raise WeightFormatError(f"{path}: cannot read the {what}: {err.strerror or err}") from err
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise WeightFormatError(f"{path}: a directory, not a {what}")
    kind = "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    raise WeightFormatError(f"{path}: {kind}, not a regular {what}")


def read_json_object(path: str | os.PathLike, what: str = "JSON file") -> dict[str, Any]:
    """The JSON object in a file; WeightFormatError saying what is wrong and where: not a regular file, not UTF-8
    text, malformed JSON (line and column), nested too deep, or JSON that is not an object."""
    path = Path(path)
    check_regular_file(path, what)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise WeightFormatError(f"{path}: cannot read the {what}: {err.strerror or err}") from err
    except UnicodeDecodeError as err:
        raise WeightFormatError(f"{path}: the {what} is not UTF-8 text (byte {err.start}: {err.reason})") from err
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise WeightFormatError(
            f"{path}: malformed JSON in the {what} (line {err.lineno}, column {err.colno}: {err.msg})"
        ) from err
    except RecursionError as err:
        raise WeightFormatError(f"{path}: the {what} is nested too deeply to read") from err
    if not isinstance(value, dict):
        raise WeightFormatError(f"{path}: the {what} holds a JSON {_json_kind(value)}, not an object")
    return value


def _json_kind(value: object) -> str:
    names = {list: "list", str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def read_config_file(path: str | os.PathLike) -> EncoderConfig:
    """An EncoderConfig from a JSON file (the object `EncoderConfig.to_json()` writes)."""
    path = Path(path)
    fields = read_json_object(path, "config file")
    try:
        return EncoderConfig.from_dict(fields)
    except (TypeError, ValueError, OverflowError) as err:
        raise WeightFormatError(f"{path}: not a valid rosetta config: {err}") from err


def save_canonical(
    path: str | os.PathLike,
    config: EncoderConfig,
    tensors: Mapping[str, np.ndarray],
    extra_metadata: Mapping[str, str] | None = None,
    *,
    head: HeadConfig | None = None,
    head_tensors: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Check `tensors` against `config` and write them, atomically, as a rosetta safetensors file; with a
    sentence-embedding `head`, its config in the metadata and its `sentence_head.*` tensors after the encoder's."""
    refuse_pickle_name(path)
    dtype = check_tensors(config, tensors)
    metadata = {CONFIG_KEY: config.to_json(), VERSION_KEY: FORMAT_VERSION, **(extra_metadata or {})}
    ordered = {name: np.ascontiguousarray(tensors[name]) for name in expected_shapes(config)}
    if head is not None:
        head_tensors = dict(head_tensors or {})
        check_head_dtype(path, dtype, check_head_tensors(head, head_tensors))
        metadata[HEAD_KEY] = head.to_json()
        ordered.update({name: np.ascontiguousarray(head_tensors[name]) for name in head.shapes()})
    payload = save(ordered, metadata=metadata)
    return write_atomically(path, lambda tmp: tmp.write_bytes(payload))


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a safetensors file, raising WeightFormatError for a missing, pickled or corrupt file, or
    NotSafetensorsError for a file of another kind."""
    path = Path(path)
    check_regular_file(path)
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


def stored_config(path: str | os.PathLike, text: str) -> EncoderConfig:
    """The EncoderConfig JSON stored in a file's metadata; WeightFormatError saying why it is invalid."""
    try:
        return EncoderConfig.from_json(text)
    except (TypeError, ValueError, OverflowError) as err:
        raise WeightFormatError(f"{path}: the stored config is invalid: {err}") from err
    except RecursionError as err:
        raise WeightFormatError(f"{path}: the stored config is invalid: nested too deeply to read") from err


def check_format_version(
    path: str | os.PathLike, metadata: Mapping[str, str], config: EncoderConfig | None = None
) -> None:
    """WeightFormatError unless a canonical file's metadata names a format version this rosetta reads (and, given
    the stored `config`, one that can hold it: version 1 has none of the modern-encoder options)."""
    version = metadata.get(VERSION_KEY)
    if version not in READABLE_VERSIONS:
        raise WeightFormatError(
            f"{path}: format version {version!r}, this rosetta reads {' and '.join(map(repr, READABLE_VERSIONS))}"
        )
    if config is not None and version == "1" and (newer := version_2_options(config)):
        raise WeightFormatError(f"{path}: format version '1' cannot hold {', '.join(newer)} (version 2 options)")


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


def check_head_dtype(source: object, encoder: np.dtype, head: np.dtype | None) -> None:
    """WeightFormatError unless the sentence head's tensors share the encoder's dtype (one dtype per file)."""
    if head is not None and head != encoder:
        raise WeightFormatError(f"{source}: the sentence head is {head}, the encoder {encoder}: one dtype for both")


def load_canonical(path: str | os.PathLike) -> tuple[EncoderConfig, dict[str, np.ndarray]]:
    """Read a rosetta safetensors file; check config, names, shapes, dtypes and values before returning. A
    sentence-embedding head stored with the encoder is checked too, and left out (`load_canonical_with_head`)."""
    config, tensors, _, _ = load_canonical_with_head(path)
    return config, tensors


def load_canonical_with_head(
    path: str | os.PathLike,
) -> tuple[EncoderConfig, dict[str, np.ndarray], HeadConfig | None, dict[str, np.ndarray]]:
    """`load_canonical`, and the sentence-embedding head stored with the encoder: (config, encoder tensors, head
    config or None, the head's `sentence_head.*` tensors), every one checked."""
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
    check_format_version(path, metadata)
    config = stored_config(path, metadata[CONFIG_KEY])
    check_format_version(path, metadata, config)
    head = stored_head(str(path), metadata)
    tensors = read_safetensors(path)
    head_tensors: dict[str, np.ndarray] = {}
    if head is not None:
        tensors, head_tensors = split_head_tensors(tensors)
    dtype = check_tensors(config, tensors, source=str(path))
    if head is not None:
        check_head_dtype(path, dtype, check_head_tensors(head, head_tensors, source=str(path)))
    return config, tensors, head, head_tensors
