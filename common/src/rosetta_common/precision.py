"""The mixed-precision policy both frameworks follow, and exact or rounding casts of canonical tensors.

A `Precision` names two dtypes: `params` (the weights the optimizer updates, and its AdamW moments) and `compute`
(the matmul operands and the activations between layers). Both frameworks round at the same places, written out in
their `precision.py` (common/DESIGN.md, "Mixed precision", lists them):

- float32 islands: the embedding front (gathers, scale, positions, token types, embedding LayerNorm), every
  LayerNorm, the softmax (scores from float32 operands), the activation function, the pooler's tanh, the tied
  head's logits and the loss;
- in `compute`: every linear layer (operands in `compute`, float32 accumulation, the bias added in float32, one
  rounding), the attention's probabilities @ values (one rounding), the residual sums (one rounding each);
- the backward rounds where the forward does (each gradient leaving a float32 island or a matmul).

bfloat16 values are NumPy arrays of `ml_dtypes.bfloat16` (what safetensors reads a `BF16` tensor as).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import ml_dtypes
import numpy as np

BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
DTYPES = {
    "float64": np.dtype(np.float64),
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "bfloat16": BFLOAT16,
}
"""The dtypes a canonical file, a cast or a policy may name."""


def numpy_dtype(name: str) -> np.dtype:
    """'float64', 'float32', 'float16' or 'bfloat16' -> the NumPy dtype; ValueError naming the choices otherwise."""
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}: expected one of {', '.join(DTYPES)}")
    return DTYPES[name]


@dataclass(frozen=True)
class Precision:
    """Where a model keeps its weights (`params`) and what it computes in (`compute`); see the module docstring."""

    params: str
    compute: str

    def __post_init__(self) -> None:
        if self.params not in ("float32", "bfloat16"):
            raise ValueError(f"Precision.params={self.params!r}: expected 'float32' (master weights) or 'bfloat16'")
        if self.compute != "bfloat16":
            raise ValueError(
                f"Precision.compute={self.compute!r}: a policy computes in bfloat16 (float32 and float64 models "
                "need none: they compute in their parameters' dtype)"
            )

    @property
    def name(self) -> str:
        """The policy's name in POLICIES."""
        return next(name for name, policy in POLICIES.items() if policy == self)


POLICIES: dict[str, Precision] = {
    "bfloat16-mixed": Precision(params="float32", compute="bfloat16"),
    "bfloat16": Precision(params="bfloat16", compute="bfloat16"),
}
"""(a) bfloat16 compute with float32 master weights and AdamW moments; (b) pure bfloat16 (weights and moments too)."""


def model_precision(dtype: np.dtype, precision: Precision | None) -> Precision | None:
    """The policy a model built from tensors of `dtype` runs under: `precision` when given; pure bfloat16 for
    bfloat16 tensors without one (a bfloat16 model always rounds at the policy's places); None (plain: compute in
    the tensors' dtype) otherwise."""
    if precision is None and np.dtype(dtype) == BFLOAT16:
        return POLICIES["bfloat16"]
    return precision


def policy(name: str) -> Precision:
    """A policy by name; ValueError naming the choices otherwise."""
    if name not in POLICIES:
        raise ValueError(f"unknown precision policy {name!r}: expected one of {', '.join(POLICIES)}")
    return POLICIES[name]


@dataclass(frozen=True)
class CastReport:
    """What a cast did: how many tensors changed value and the largest relative change of any element."""

    dtype: str
    tensors: int
    changed: int
    max_relative_change: float

    @property
    def exact(self) -> bool:
        return self.changed == 0

    def describe(self) -> str:
        """One line: exact, or how many tensors lost bits and by how much."""
        if self.exact:
            return f"cast {self.tensors} tensors to {self.dtype}: exact (every value is representable)"
        return (
            f"cast {self.tensors} tensors to {self.dtype}, rounding to nearest even: {self.changed} changed, by at "
            f"most {self.max_relative_change:.2g} relative (bits below {self.dtype}'s precision are lost)"
        )


class CastOverflowError(ValueError):
    """A cast would turn finite values into infinities: they lie outside the target dtype's range."""


def cast_tensors(tensors: Mapping[str, np.ndarray], dtype: str) -> tuple[dict[str, np.ndarray], CastReport]:
    """Every tensor cast to `dtype` (round to nearest even, ml_dtypes' and IEEE's rounding) and a report of what
    that lost: a float32 -> bfloat16 cast rounds away 16 bits of each value; bfloat16 -> float32 is exact.
    CastOverflowError, naming the tensor, its largest value and the dtype's range, when a finite value overflows."""
    target = numpy_dtype(dtype)
    cast, changed, worst = {}, 0, 0.0
    for name, value in tensors.items():
        array = np.asarray(value)
        with np.errstate(over="ignore", invalid="ignore"):
            cast[name] = array.astype(target)
        _check_no_overflow(name, array, cast[name], dtype)
        back, original = cast[name].astype(np.float64), array.astype(np.float64)
        if not np.array_equal(back, original):
            changed += 1
            scale = np.maximum(np.abs(original), np.finfo(np.float64).tiny)
            worst = max(worst, float(np.max(np.abs(back - original) / scale)))
    return cast, CastReport(dtype, len(cast), changed, worst)


def _check_no_overflow(name: str, original: np.ndarray, cast: np.ndarray, dtype: str) -> None:
    """CastOverflowError when a value finite in `original` is infinite in `cast`."""
    with np.errstate(over="ignore", invalid="ignore"):
        overflowed = np.isinf(cast.astype(np.float64)) & np.isfinite(original.astype(np.float64))
    if overflowed.any():
        largest = float(np.max(np.abs(original.astype(np.float64)[np.isfinite(original.astype(np.float64))])))
        limit = float(ml_dtypes.finfo(np.dtype(cast.dtype)).max)
        raise CastOverflowError(
            f"the cast to {dtype} overflows: {name} holds {largest:.6g} (largest magnitude), beyond {dtype}'s "
            f"range of +-{limit:.6g} ({_count(int(overflowed.sum()), 'value')} would become infinite)"
        )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")
