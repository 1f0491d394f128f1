"""rosetta_flax <-> canonical weights through the `FLAX_ENCODER` name table, and safetensors I/O."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rosetta_common import EncoderConfig, check_tensors, save_canonical
from rosetta_common.checkpoints import read_checkpoint
from rosetta_common.name_tables import FLAX_ENCODER
from rosetta_common.precision import Precision, cast_tensors, model_precision
from rosetta_common.sentence_head import head_dtype
from rosetta_flax.encoder import Encoder
from rosetta_flax.sentence_head import head_from_canonical, head_to_canonical

HEAD_PREFIX = "sentence_head."


def _params_by_name(model: Encoder) -> dict[str, nnx.Variable]:
    """The encoder's parameters by dotted name (a sentence head's are `head_to_canonical`'s)."""
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    named = {".".join(map(str, path)): variable for path, variable in flat}
    return {name: variable for name, variable in named.items() if not name.startswith(HEAD_PREFIX)}


@functools.lru_cache(maxsize=32)
def _jitted_constructor(config: EncoderConfig, dtype: str, compute: str | None) -> Callable[[nnx.Rngs], Encoder]:
    """`Encoder(config, dtype=dtype, compute_dtype=compute, rngs=...)` under `nnx.jit`: the random init that
    `from_canonical` overwrites costs one compilation per (config, dtype) instead of one per op and shape (same
    parameters, same RNG state)."""
    compute_dtype = None if compute is None else jnp.dtype(compute)
    return nnx.jit(lambda rngs: Encoder(config, dtype=jnp.dtype(dtype), compute_dtype=compute_dtype, rngs=rngs))


def to_canonical(model: Encoder) -> dict[str, np.ndarray]:
    """The model's parameters as canonical NumPy arrays (in the model's dtype)."""
    native = {name: jax.device_get(variable[...]) for name, variable in _params_by_name(model).items()}
    return FLAX_ENCODER.to_canonical(model.config, native, source="the model's parameters")


def from_canonical(
    config: EncoderConfig,
    tensors: Mapping[str, np.ndarray],
    *,
    precision: Precision | None = None,
    rngs: nnx.Rngs | None = None,
) -> Encoder:
    """Build an Encoder holding exactly `tensors`; the model takes their dtype (float64 needs JAX x64).

    With a `precision` policy the tensors are cast to `precision.params` first (round to nearest even: exact from
    bfloat16 to float32, lossy the other way) and the model computes as the policy says; bfloat16 tensors without
    one get the pure bfloat16 policy (`rosetta_common.precision.model_precision`). `rngs` seeds dropout
    (default `nnx.Rngs(0)`).
    """
    dtype = check_tensors(config, tensors)
    precision = model_precision(dtype, precision)
    compute = None
    if precision is not None:
        tensors, _ = cast_tensors(tensors, precision.params)
        dtype, compute = tensors["embedding.weight"].dtype, precision.compute
    model = _jitted_constructor(config, np.dtype(dtype).name, compute)(rngs or nnx.Rngs(0))
    params = _params_by_name(model)
    for name, value in FLAX_ENCODER.to_native(config, tensors).items():
        params[name].set_value(jnp.asarray(value, dtype=dtype))
    return model


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
    rngs: nnx.Rngs | None = None,
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
    model = from_canonical(checkpoint.config, checkpoint.tensors, precision=precision, rngs=rngs)
    if checkpoint.head is not None:
        dtype = head_dtype(np.dtype(model.embedding.weight[...].dtype).name)
        model.sentence_head = head_from_canonical(checkpoint.head, checkpoint.head_tensors, dtype)
    return model
