"""The canonical weight format: flat dotted names, kernels `[in, out]`, heads as contiguous column blocks.

Every framework converts to and from this dict of NumPy arrays; nothing else crosses between them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from rosetta_common.config import EncoderConfig
from rosetta_common.precision import BFLOAT16

FORMAT_VERSION = "1"
FLOAT_DTYPES = (np.dtype(np.float16), BFLOAT16, np.dtype(np.float32), np.dtype(np.float64))


class WeightFormatError(ValueError):
    """A set of tensors (or a file) does not match the canonical format for its config."""


def layer_shapes(config: EncoderConfig) -> dict[str, tuple[int, ...]]:
    """Shapes of one encoder layer's tensors, by name relative to `layers.{i}.`."""
    d, f = config.d_model, config.d_ff
    shapes: dict[str, tuple[int, ...]] = {}
    for proj in ("q", "k", "v", "out"):
        shapes[f"attn.{proj}.kernel"] = (d, d)
        shapes[f"attn.{proj}.bias"] = (d,)
    shapes["norm1.scale"] = shapes["norm1.bias"] = (d,)
    shapes["ffn.in.kernel"], shapes["ffn.in.bias"] = (d, f), (f,)
    shapes["ffn.out.kernel"], shapes["ffn.out.bias"] = (f, d), (d,)
    shapes["norm2.scale"] = shapes["norm2.bias"] = (d,)
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
        shapes["embedding_norm.scale"] = shapes["embedding_norm.bias"] = (d,)
    for i in range(config.n_layers):
        shapes.update({f"layers.{i}.{name}": shape for name, shape in layer_shapes(config).items()})
    if config.has_final_norm:
        shapes["final_norm.scale"] = shapes["final_norm.bias"] = (d,)
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
