"""Weight files the `rosetta` command line reads and writes; every layout goes through the canonical tensors.

    rosetta        canonical safetensors file: canonical names, config + format version in the metadata
    torch          safetensors of `rosetta_torch.Encoder(...).state_dict()`
    torch-modules  safetensors of the state_dict of `{"embedding": nn.Embedding, "encoder": nn.TransformerEncoder}`
                   (keys `embedding.*`, `encoder.*`; see `rosetta_torch.interop`)
    orbax          a directory: `state/`, an Orbax checkpoint of `nnx.state(rosetta_flax.Encoder)`, and `config.json`
                   (a bare Orbax checkpoint directory is read too, with `--config`)

The torch layouts carry their config in the metadata when rosetta wrote them; otherwise it comes from a JSON file
(`--config`). Pickled files are refused, never loaded. Every output is written atomically. Reading or writing the
orbax layout turns JAX's x64 mode on (so that float64 checkpoints stay float64).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rosetta_common import (
    EncoderConfig,
    WeightFormatError,
    check_named_tensors,
    check_tensors,
    expected_shapes,
    load_canonical,
    read_metadata,
    save_canonical,
    write_atomically,
)
from rosetta_common.io import CONFIG_KEY, LAYOUT_KEY, VERSION_KEY

LAYOUTS = ("rosetta", "torch", "torch-modules", "orbax")
DESCRIPTIONS = {
    "rosetta": "rosetta canonical safetensors",
    "torch": "rosetta_torch.Encoder state_dict, safetensors",
    "torch-modules": "nn.Embedding + nn.TransformerEncoder state_dict, safetensors",
    "orbax": "Flax NNX state, Orbax checkpoint",
}
ORBAX_STATE, ORBAX_CONFIG = "state", "config.json"
ORBAX_MARKERS = ("_CHECKPOINT_METADATA", "_METADATA")
Tensors = dict[str, np.ndarray]


@dataclass
class WeightFile:
    """A weight file as stored: its layout, tensors under their own names, metadata and config (when known)."""

    path: Path
    layout: str
    tensors: Tensors
    config: EncoderConfig | None
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def description(self) -> str:
        return DESCRIPTIONS[self.layout]


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


# --- reading --------------------------------------------------------------------------------------------------


def read(path: str | os.PathLike, config: EncoderConfig | None = None) -> WeightFile:
    """Read any layout as stored (no name mapping); `config` (from `--config`) must agree with a stored one."""
    path = Path(path)
    if path.is_dir():
        return _read_orbax(path, config)
    metadata = read_metadata(path)  # refuses pickles, missing and unreadable files
    tensors = _load_safetensors(path)
    layout = detect_layout(metadata, tensors)
    if layout is None:
        names = ", ".join(sorted(tensors)[:3]) or "none"
        raise WeightFormatError(
            f"{path}: not a weight file rosetta reads: its tensors ({names}, ...) are not those of a rosetta, "
            "rosetta_torch or torch.nn.TransformerEncoder model"
        )
    return WeightFile(path, layout, tensors, _agreeing_config(path, _stored_config(path, metadata), config), metadata)


def load(path: str | os.PathLike, config: EncoderConfig | None = None) -> tuple[EncoderConfig, Tensors, str]:
    """Any layout -> (config, canonical tensors, layout), every name, shape, dtype and value checked."""
    weights = read(path, config)
    if weights.config is None:
        raise WeightFormatError(f"{weights.path} ({weights.description}) stores no config: pass --config config.json")
    if weights.layout == "rosetta" and CONFIG_KEY in weights.metadata:
        _, tensors = load_canonical(weights.path)  # the format version and every tensor checked
        return weights.config, tensors, weights.layout
    return weights.config, to_canonical(weights), weights.layout


def detect_layout(metadata: Mapping[str, str], tensors: Mapping[str, np.ndarray]) -> str | None:
    """The layout of a safetensors file, from its metadata or, failing that, its tensor names."""
    declared = metadata.get(LAYOUT_KEY)
    if declared in LAYOUTS and declared != "orbax":
        return declared
    names = list(tensors)
    if VERSION_KEY in metadata or any(name.endswith((".kernel", ".scale")) for name in names):
        return "rosetta"
    if any(name.startswith("encoder.layers.") for name in names):
        return "torch-modules"
    if any(re.match(r"layers\.\d+\.(attn|ffn|norm1|norm2)\.", name) for name in names):
        return "torch"
    return None


def to_canonical(weights: WeightFile) -> Tensors:
    """A WeightFile's tensors under canonical names; one WeightFormatError lists every problem in its own names."""
    config = weights.config
    assert config is not None
    source = f"{weights.path} ({weights.description})"
    if weights.layout == "rosetta":
        check_tensors(config, weights.tensors, source=source)
        return dict(weights.tensors)
    if weights.layout == "torch":
        from rosetta_torch.convert import torch_name, transform

        expected = {torch_name(name): _torch_shape(name, shape) for name, shape in expected_shapes(config).items()}
        check_named_tensors(expected, weights.tensors, source=source, description=f"rosetta_torch.Encoder({config})")
        tensors = {name: transform(name)(weights.tensors[torch_name(name)]) for name in expected_shapes(config)}
    elif weights.layout == "torch-modules":
        tensors = _torch_modules_to_canonical(config, weights.tensors, source)
    else:
        from rosetta_flax.convert import flax_name

        expected = {flax_name(name): shape for name, shape in expected_shapes(config).items()}
        check_named_tensors(expected, weights.tensors, source=source, description=f"rosetta_flax.Encoder({config})")
        tensors = {name: weights.tensors[flax_name(name)] for name in expected_shapes(config)}
    tensors = {name: np.ascontiguousarray(value) for name, value in tensors.items()}
    check_tensors(config, tensors, source=source)
    return tensors


def _torch_shape(canonical_name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    return shape[::-1] if canonical_name.endswith(".kernel") else shape


def _torch_modules_to_canonical(config: EncoderConfig, tensors: Tensors, source: str) -> Tensors:
    import torch

    from rosetta_torch import torch_modules_to_canonical

    pair = _torch_modules(config, next(iter(tensors.values())).dtype if tensors else np.dtype(np.float32))
    expected = {name: tuple(value.shape) for name, value in pair.state_dict().items()}
    description = f"nn.Embedding + nn.TransformerEncoder for {config}"
    check_named_tensors(expected, tensors, source=source, description=description)
    pair.load_state_dict({name: torch.from_numpy(np.array(value)) for name, value in tensors.items()}, assign=True)
    return torch_modules_to_canonical(config, pair["embedding"], pair["encoder"])


def _torch_modules(config: EncoderConfig, dtype: np.dtype, canonical: Tensors | None = None):
    """`ModuleDict(embedding=nn.Embedding, encoder=nn.TransformerEncoder)` holding `canonical` (zeros if None)."""
    from torch import nn

    from rosetta_torch import from_canonical, to_torch_modules

    dtype = dtype if dtype in (np.float16, np.float32, np.float64) else np.dtype(np.float32)
    if canonical is None:
        canonical = {name: np.zeros(shape, dtype) for name, shape in expected_shapes(config).items()}
    embedding, encoder = to_torch_modules(from_canonical(config, canonical))
    return nn.ModuleDict({"embedding": embedding, "encoder": encoder})


def _load_safetensors(path: Path) -> Tensors:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, TypeError) as err:
        raise WeightFormatError(f"{path}: not a readable safetensors file (truncated or corrupted?): {err}") from err


def _stored_config(path: Path, metadata: Mapping[str, str]) -> EncoderConfig | None:
    if CONFIG_KEY not in metadata:
        return None
    try:
        return EncoderConfig.from_json(metadata[CONFIG_KEY])
    except (TypeError, ValueError) as err:
        raise WeightFormatError(f"{path}: the stored config is invalid: {err}") from err


def _agreeing_config(path: Path, stored: EncoderConfig | None, given: EncoderConfig | None) -> EncoderConfig | None:
    """The stored config or the given one; when both exist they must be equal."""
    if stored is not None and given is not None and stored != given:
        fields = [name for name, value in stored.to_dict().items() if given.to_dict()[name] != value]
        raise WeightFormatError(f"{path}: --config disagrees with the config stored with the weights on {fields}")
    return stored if stored is not None else given


def _read_orbax(directory: Path, config: EncoderConfig | None) -> WeightFile:
    if (directory / ORBAX_STATE).is_dir():
        state_dir, config_file = directory / ORBAX_STATE, directory / ORBAX_CONFIG
    elif any((directory / marker).exists() for marker in ORBAX_MARKERS):
        state_dir, config_file = directory, None
    else:
        raise WeightFormatError(
            f"{directory}: a directory, but not an Orbax checkpoint (no '{ORBAX_STATE}/' with '{ORBAX_CONFIG}', "
            f"no {ORBAX_MARKERS[0]})"
        )
    stored = read_config_file(config_file) if config_file is not None and config_file.is_file() else None
    if config_file is not None and stored is None and config is None:
        raise WeightFormatError(f"{directory}: '{ORBAX_CONFIG}' is missing beside '{ORBAX_STATE}/'")
    tensors = _restore_orbax(state_dir)
    return WeightFile(directory, "orbax", tensors, _agreeing_config(directory, stored, config))


def _restore_orbax(state_dir: Path) -> Tensors:
    """The arrays of an Orbax checkpoint of an NNX state, by dotted path; RNG state is left out."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import orbax.checkpoint as ocp

    try:
        with ocp.StandardCheckpointer() as checkpointer:
            tree = checkpointer.restore(state_dir.resolve())
    except Exception as err:  # Orbax raises many kinds; any of them means the checkpoint is unusable
        raise WeightFormatError(f"{state_dir}: not a readable Orbax checkpoint: {err}") from err
    tensors: Tensors = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        keys = [str(getattr(key, "key", getattr(key, "idx", key))) for key in path]
        if keys and keys[-1] == "value":  # nnx.State stores each Variable as {"value": array}
            keys = keys[:-1]
        if "rngs" in keys or jax.dtypes.issubdtype(getattr(leaf, "dtype", np.float32), jax.dtypes.prng_key):
            continue
        tensors[".".join(keys)] = np.asarray(leaf)
    return tensors


# --- writing --------------------------------------------------------------------------------------------------


def save(
    path: str | os.PathLike, layout: str, config: EncoderConfig, tensors: Mapping[str, np.ndarray], *, force: bool
) -> Path:
    """Write canonical `tensors` in `layout`, atomically; an existing `path` is replaced only when `force`."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}, expected one of {LAYOUTS}")
    path = Path(path)
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists (pass --force to replace it)")
    if path.is_dir() and layout != "orbax":
        raise IsADirectoryError(f"{path} is a directory")
    check_tensors(config, tensors)
    if layout == "rosetta":
        return save_canonical(path, config, tensors)
    if layout == "orbax":
        return _save_orbax(path, config, tensors)
    from safetensors.numpy import save as serialize

    native = _torch_state(config, tensors) if layout == "torch" else _torch_modules_state(config, tensors)
    payload = serialize(native, metadata={CONFIG_KEY: config.to_json(), LAYOUT_KEY: layout})
    return write_atomically(path, lambda tmp: tmp.write_bytes(payload))


def _torch_state(config: EncoderConfig, tensors: Mapping[str, np.ndarray]) -> Tensors:
    from rosetta_torch.convert import torch_name, transform

    return {torch_name(name): np.ascontiguousarray(transform(name)(tensors[name])) for name in expected_shapes(config)}


def _torch_modules_state(config: EncoderConfig, tensors: Mapping[str, np.ndarray]) -> Tensors:
    dtype = next(iter(tensors.values())).dtype
    pair = _torch_modules(config, dtype, dict(tensors))
    return {name: value.detach().numpy().copy() for name, value in pair.state_dict().items()}


def _save_orbax(path: Path, config: EncoderConfig, tensors: Mapping[str, np.ndarray]) -> Path:
    """`path/state` (Orbax, `nnx.state(model)`) and `path/config.json`, built in a temporary directory beside
    `path` and renamed into place, so an interrupted write leaves `path` as it was."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import orbax.checkpoint as ocp
    from flax import nnx

    import rosetta_flax

    state = nnx.state(rosetta_flax.from_canonical(config, tensors))
    path.absolute().parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.absolute().parent))
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(tmp / ORBAX_STATE, state)
        (tmp / ORBAX_CONFIG).write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        _replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _replace(new: Path, path: Path) -> None:
    """Rename the directory `new` to `path`; an existing `path` is moved aside first and put back on failure."""
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
