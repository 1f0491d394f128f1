"""rosetta_torch <-> canonical weights through the `TORCH_ENCODER` name table, and safetensors I/O."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch

from rosetta_common import EncoderConfig, check_tensors, save_canonical
from rosetta_common.checkpoints import read_checkpoint
from rosetta_common.name_tables import TORCH_ENCODER
from rosetta_common.precision import BFLOAT16, Precision, cast_tensors, model_precision
from rosetta_common.sentence_head import head_dtype
from rosetta_torch.embedding import PositionalEncoding
from rosetta_torch.encoder import Encoder
from rosetta_torch.sentence_head import head_from_canonical, head_to_canonical

HEAD_PREFIX = "sentence_head."


def tensor_from_numpy(array: np.ndarray) -> torch.Tensor:
    """A NumPy array -> a torch tensor sharing its memory; bfloat16 (ml_dtypes, which torch cannot read) through
    its 16-bit pattern."""
    if array.dtype == BFLOAT16:
        return torch.from_numpy(np.ascontiguousarray(array).view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)


def tensor_to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A CPU tensor -> NumPy (bfloat16 as ml_dtypes' bfloat16, bit for bit)."""
    if tensor.dtype == torch.bfloat16:
        return tensor.contiguous().view(torch.int16).numpy().view(BFLOAT16)
    return tensor.numpy()


def parameters_to_canonical(
    model: Encoder, read: Callable[[torch.nn.Parameter], torch.Tensor]
) -> dict[str, np.ndarray]:
    """`read(parameter)` for every parameter, as canonical NumPy arrays (copies, on the CPU): the weights,
    their gradients or an optimizer's per-parameter state all cross to the canonical layout this way."""
    native = {
        name: tensor_to_numpy(read(param).detach().cpu())
        for name, param in model.named_parameters()
        if not name.startswith(HEAD_PREFIX)  # a sentence head's: head_to_canonical
    }
    return TORCH_ENCODER.to_canonical(model.config, native, source=f"{type(model).__name__} parameters")


def canonical_to_parameters(model: Encoder, tensors: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Canonical arrays -> new tensors (never sharing memory) keyed by the model's parameter names."""
    native = TORCH_ENCODER.to_native(model.config, tensors)
    return {name: tensor_from_numpy(value) for name, value in native.items()}


def to_canonical(model: Encoder) -> dict[str, np.ndarray]:
    """The model's parameters as canonical NumPy arrays (copies, on the CPU, in the model's dtype)."""
    return parameters_to_canonical(model, lambda param: param)


def from_canonical(
    config: EncoderConfig,
    tensors: Mapping[str, np.ndarray],
    *,
    precision: Precision | None = None,
    device: torch.device | str | None = None,
) -> Encoder:
    """Build an Encoder holding exactly `tensors`; the model takes their dtype (float64 in, float64 model out).

    With a `precision` policy the tensors are cast to `precision.params` first (round to nearest even: exact from
    bfloat16 to float32, lossy the other way) and the model computes as the policy says; bfloat16 tensors without
    one get the pure bfloat16 policy (`rosetta_common.precision.model_precision`).
    """
    dtype = check_tensors(config, tensors)
    precision = model_precision(dtype, precision)
    compute_dtype = None
    if precision is not None:
        tensors, _ = cast_tensors(tensors, precision.params)
        dtype, compute_dtype = tensors["embedding.weight"].dtype, getattr(torch, precision.compute)
    torch_dtype = tensor_from_numpy(np.zeros(0, dtype=dtype)).dtype
    with torch.device("meta"):
        model = Encoder(config, dtype=torch_dtype, compute_dtype=compute_dtype)
    # copied: the model never aliases (and so never mutates) the caller's arrays
    model.load_state_dict(canonical_to_parameters(model, tensors), strict=True, assign=True)
    if isinstance(model.positional, PositionalEncoding):  # a non-persistent buffer: still on meta, rebuilt here
        model.positional.table = model.positional._table(torch_dtype, None)
    model.rotary.rebuild(torch_dtype, None)  # likewise
    return model.to(device) if device is not None else model


def save(model: Encoder, path: str | os.PathLike) -> Path:
    """Write the model as a canonical safetensors file (atomically), with its sentence head when it has one."""
    head = model.sentence_head
    if head is None:
        return save_canonical(path, model.config, to_canonical(model))
    return save_canonical(path, model.config, to_canonical(model), head=head.head, head_tensors=head_to_canonical(head))


def load(
    path: str | os.PathLike,
    *,
    precision: Precision | None = None,
    device: torch.device | str | None = None,
    dtype: str | None = None,
    on_note: Callable[[str], None] | None = None,
) -> Encoder:
    """Read any layout rosetta reads into an Encoder, checked before anything is built: a canonical file, or, as
    `rosetta convert` reads them (with rosetta-tools), an HF or sentence-transformers folder, a torch state_dict
    file with its config, an Orbax directory. A sentence-transformers head (modules.json, or one stored in the
    canonical file) becomes `model.sentence_head`, which `model.embed` runs. `dtype` casts the stored tensors first
    (as `rosetta convert --dtype`: "float64", "float32", ...); `on_note` hears what reading left out or a cast
    changed (default: `rosetta_common.checkpoints.ConversionNote` warnings); `precision`: as in `from_canonical`."""
    checkpoint = read_checkpoint(path, on_note, dtype)
    model = from_canonical(checkpoint.config, checkpoint.tensors, precision=precision, device=device)
    if checkpoint.head is not None:
        dtype = head_dtype(str(model.embedding.weight.dtype).removeprefix("torch."))
        model.sentence_head = head_from_canonical(checkpoint.head, checkpoint.head_tensors, dtype, device=device)
    return model
