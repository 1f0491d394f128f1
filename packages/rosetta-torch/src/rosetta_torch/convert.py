"""rosetta_torch <-> canonical weights: a name-mapping table plus per-key transforms, and safetensors I/O."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch

from rosetta_common import EncoderConfig, check_tensors, expected_shapes, load_canonical, save_canonical
from rosetta_torch.encoder import Encoder

Transform = Callable[[np.ndarray], np.ndarray]

# Canonical name piece -> rosetta_torch name piece; applied to every canonical name in order.
NAME_TABLE: tuple[tuple[str, str], ...] = (
    ("ffn.in.", "ffn.up."),
    ("ffn.out.", "ffn.down."),
    (".kernel", ".weight"),  # nn.Linear stores weight [out, in] = kernel.T
    (".scale", ".weight"),  # nn.LayerNorm
)


def torch_name(canonical_name: str) -> str:
    name = canonical_name
    for canonical_piece, torch_piece in NAME_TABLE:
        name = name.replace(canonical_piece, torch_piece)
    return name


def transform(canonical_name: str) -> Transform:
    """The per-key transform between the two layouts; each is its own inverse."""
    return np.transpose if canonical_name.endswith(".kernel") else (lambda array: array)


def to_canonical(model: Encoder) -> dict[str, np.ndarray]:
    """The model's parameters as canonical NumPy arrays (copies, on the CPU, in the model's dtype)."""
    state = model.state_dict()
    return {
        name: np.array(transform(name)(state[torch_name(name)].detach().cpu().numpy()), order="C", copy=True)
        for name in expected_shapes(model.config)
    }


def from_canonical(
    config: EncoderConfig, tensors: Mapping[str, np.ndarray], *, device: torch.device | str | None = None
) -> Encoder:
    """Build an Encoder holding exactly `tensors`; the model takes their dtype (float64 in, float64 model out)."""
    dtype = check_tensors(config, tensors)
    torch_dtype = torch.from_numpy(np.zeros(0, dtype=dtype)).dtype
    with torch.device("meta"):
        model = Encoder(config, dtype=torch_dtype)
    state = {  # copied: the model never aliases (and so never mutates) the caller's arrays
        torch_name(name): torch.from_numpy(np.array(transform(name)(np.asarray(value)), order="C", copy=True))
        for name, value in tensors.items()
    }
    model.load_state_dict(state, strict=True, assign=True)
    model.positional.table = model.positional._table(torch_dtype, None)
    return model.to(device) if device is not None else model


def save(model: Encoder, path: str | os.PathLike) -> Path:
    """Write the model as a canonical safetensors file (atomically)."""
    return save_canonical(path, model.config, to_canonical(model))


def load(path: str | os.PathLike, *, device: torch.device | str | None = None) -> Encoder:
    """Read a canonical safetensors file (checked before anything is built) into an Encoder."""
    config, tensors = load_canonical(path)
    return from_canonical(config, tensors, device=device)
