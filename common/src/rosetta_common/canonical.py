"""The canonical weight format: flat dotted names, kernels `[in, out]`, heads as contiguous column blocks.

Every framework converts to and from this dict of NumPy arrays; nothing else crosses between them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from rosetta_common.config import EncoderConfig
from rosetta_common.precision import BFLOAT16

FORMAT_VERSION = "2"
"""Written in every file's metadata. Version 2 added the tensors of the modern-encoder options (`ffn.gate`, and
biases and norms a config may leave out); every version-1 file is a version-2 file of a config without them."""
READABLE_VERSIONS = ("1", "2")
VERSION_2_FIELDS = (
    "feed_forward",
    "attention_bias",
    "mlp_bias",
    "norm_bias",
    "rope_theta",
    "local_rope_theta",
    "local_window",
    "global_every",
    "first_attention_norm",
)


def version_2_options(config: EncoderConfig) -> list[str]:
    """The fields of `config` that a version-1 file cannot hold (set away from their defaults; rotary too)."""
    defaults = {field.name: field.default for field in dataclasses.fields(EncoderConfig)}
    changed = [
        f"{name}={getattr(config, name)!r}" for name in VERSION_2_FIELDS if getattr(config, name) != defaults[name]
    ]
    return changed + (["positions='rotary'"] if config.positions == "rotary" else [])


FLOAT_DTYPES = (np.dtype(np.float16), BFLOAT16, np.dtype(np.float32), np.dtype(np.float64))


class WeightFormatError(ValueError):
    """A set of tensors (or a file) does not match the canonical format for its config."""


def layer_shapes(config: EncoderConfig, index: int = 0) -> dict[str, tuple[int, ...]]:
    """Shapes of layer `index`'s tensors, by name relative to `layers.{i}.`: the attention's q, k, v, out (with
    biases when `attention_bias`), norm1 (unless the layer has no attention norm), the feed-forward's in (and gate,
    for a GLU), out (biases when `mlp_bias`), norm2; LayerNorm biases when `norm_bias`."""
    d, f = config.d_model, config.d_ff
    spec = config.layer(index)
    shapes: dict[str, tuple[int, ...]] = {}

    def linear(name: str, fan_in: int, fan_out: int, bias: bool) -> None:
        shapes[f"{name}.kernel"] = (fan_in, fan_out)
        if bias:
            shapes[f"{name}.bias"] = (fan_out,)

    for proj in ("q", "k", "v", "out"):
        linear(f"attn.{proj}", d, d, config.attention_bias)
    if spec.attention_norm:
        shapes.update(norm_shapes(config, "norm1"))
    linear("ffn.in", d, f, config.mlp_bias)
    if config.feed_forward == "glu":
        linear("ffn.gate", d, f, config.mlp_bias)
    linear("ffn.out", f, d, config.mlp_bias)
    shapes.update(norm_shapes(config, "norm2"))
    return shapes


def norm_shapes(config: EncoderConfig, name: str) -> dict[str, tuple[int, ...]]:
    """A LayerNorm's `scale` (and `bias`, when `norm_bias`), `[d_model]` each."""
    shapes = {f"{name}.scale": (config.d_model,)}
    if config.norm_bias:
        shapes[f"{name}.bias"] = (config.d_model,)
    return shapes


def expected_shapes(config: EncoderConfig) -> dict[str, tuple[int, ...]]:
    """Every canonical tensor name for `config`, in file order, with its shape."""
    d = config.d_model
    shapes: dict[str, tuple[int, ...]] = {"embedding.weight": (config.vocab_size, d)}
    if config.positions == "learned":
        shapes["position_embedding.weight"] = (config.position_table_size, d)
    if config.type_vocab_size:
        shapes["token_type_embedding.weight"] = (config.type_vocab_size, d)
    if config.embedding_norm:
        shapes.update(norm_shapes(config, "embedding_norm"))
    for i in range(config.n_layers):
        shapes.update({f"layers.{i}.{name}": shape for name, shape in layer_shapes(config, i).items()})
    if config.has_final_norm:
        shapes.update(norm_shapes(config, "final_norm"))
    if config.pooler:
        shapes["pooler.kernel"], shapes["pooler.bias"] = (d, d), (d,)
    return shapes


def check_tensors(config: EncoderConfig, tensors: Mapping[str, np.ndarray], *, source: str = "tensors") -> np.dtype:
    """Check names, shapes, dtypes and finiteness; raise one WeightFormatError listing every problem.

    Returns the common floating dtype of the tensors.
    """
    return check_named_tensors(expected_shapes(config), tensors, source=source, description=str(config))


def check_named_tensors(
    expected: Mapping[str, tuple[int, ...]],
    tensors: Mapping[str, np.ndarray],
    *,
    source: str = "tensors",
    description: str = "the expected layout",
) -> np.dtype:
    """`check_tensors` against any name -> shape table (e.g. a framework's own state_dict names).

    Raises one WeightFormatError, "{source} do not match {description}", listing every problem;
    returns the common floating dtype of the tensors.
    """
    problems: list[str] = []
    missing = [name for name in expected if name not in tensors]
    unexpected = sorted(name for name in tensors if name not in expected)
    if missing:
        problems.append(f"missing tensors: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors: {', '.join(unexpected)}")
    dtypes = set()
    for name, shape in expected.items():
        if name not in tensors:
            continue
        array = np.asarray(tensors[name])
        if array.shape != tuple(shape):
            problems.append(f"{name}: shape {tuple(array.shape)}, expected {tuple(shape)}")
        if array.dtype not in FLOAT_DTYPES:
            problems.append(f"{name}: dtype {array.dtype}, expected one of float16/bfloat16/float32/float64")
            continue
        dtypes.add(array.dtype)
        if not np.isfinite(array).all():
            problems.append(f"{name}: contains NaN or Inf")
    if len(dtypes) > 1:
        problems.append(f"mixed dtypes {sorted(str(d) for d in dtypes)}: every tensor must share one dtype")
    if problems:
        raise WeightFormatError(f"{source} do not match {description}:\n  - " + "\n  - ".join(problems))
    return dtypes.pop() if dtypes else np.dtype(np.float32)
