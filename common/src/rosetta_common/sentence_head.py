"""The sentence-embedding head (sentence-transformers' Pooling, Dense and Normalize modules): its config, its
canonical tensors and their checks. NumPy only; the float64 maths is `rosetta_common.pooling`.

A head reads the encoder's output `[B, S, D]` and its keep mask `[B, S]` (1 = a real token) and gives
`[B, D_out]`: pooling (one or several modes, concatenated), then each dense layer (`y = act(x @ kernel + bias)`),
then, when `normalize`, division by the L2 norm. Canonical tensors: `sentence_head.dense.{i}.kernel [in, out]`
and `sentence_head.dense.{i}.bias [out]` (when the layer has a bias); the config is JSON in the file's metadata
under `HEAD_KEY`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from rosetta_common.canonical import WeightFormatError, check_named_tensors

HEAD_KEY = "rosetta.sentence_head"
PREFIX = "sentence_head."
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
DENSE_ACTIVATIONS = ("identity", "tanh", "relu", "gelu", "sigmoid")


class NoSentenceHeadError(ValueError):
    """`embed` on a model read without a sentence-embedding head (no modules.json, or a file without one)."""


@dataclass(frozen=True)
class DenseSpec:
    """One dense layer: `in_features -> out_features`, with a bias or not, then `activation`."""

    in_features: int
    out_features: int
    bias: bool = True
    activation: str = "tanh"  # sentence-transformers' default (torch.nn.Tanh)


@dataclass(frozen=True)
class HeadConfig:
    """Pooling over `d_model` (each of `pooling`'s modes, concatenated in order), the dense layers, Normalize.

    `include_prompt=False`: the first `prompt_length` real tokens of each row are left out of the pooling (the
    caller passes `prompt_length`; sentence-transformers' INSTRUCTOR-style models)."""

    d_model: int
    pooling: tuple[str, ...] = ("mean",)
    include_prompt: bool = True
    dense: tuple[DenseSpec, ...] = field(default_factory=tuple)
    normalize: bool = False

    def __post_init__(self) -> None:
        problems = []
        if not self.pooling:
            problems.append("pooling: at least one mode")
        problems += [
            f"pooling: unknown mode {mode!r}, expected one of {POOLING_MODES}"
            for mode in self.pooling
            if mode not in POOLING_MODES
        ]
        width = self.pooled_dim
        for i, dense in enumerate(self.dense):
            if dense.in_features != width:
                problems.append(f"dense[{i}]: in_features {dense.in_features}, but its input has width {width}")
            if dense.activation not in DENSE_ACTIVATIONS:
                problems.append(f"dense[{i}]: activation {dense.activation!r}, expected one of {DENSE_ACTIVATIONS}")
            width = dense.out_features
        if problems:
            raise ValueError("invalid sentence head: " + "; ".join(problems))

    @property
    def pooled_dim(self) -> int:
        return len(self.pooling) * self.d_model

    @property
    def output_dim(self) -> int:
        """D_out: the width of `embed`'s output."""
        return self.dense[-1].out_features if self.dense else self.pooled_dim

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every canonical head tensor, in file order, with its shape."""
        shapes: dict[str, tuple[int, ...]] = {}
        for i, dense in enumerate(self.dense):
            shapes[f"{PREFIX}dense.{i}.kernel"] = (dense.in_features, dense.out_features)
            if dense.bias:
                shapes[f"{PREFIX}dense.{i}.bias"] = (dense.out_features,)
        return shapes

    def describe(self) -> str:
        """One line for notes: "mean pooling, dense 8 -> 4 (tanh), normalize"."""
        parts = [f"{'+'.join(self.pooling)} pooling" + ("" if self.include_prompt else " (prompt excluded)")]
        parts += [f"dense {d.in_features} -> {d.out_features} ({d.activation})" for d in self.dense]
        return ", ".join(parts + (["normalize"] if self.normalize else []))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, fields: Mapping[str, Any]) -> HeadConfig:
        fields = dict(fields)
        fields["pooling"] = tuple(fields.get("pooling", ("mean",)))
        fields["dense"] = tuple(DenseSpec(**dense) for dense in fields.get("dense", ()))
        return cls(**fields)

    @classmethod
    def from_json(cls, text: str) -> HeadConfig:
        return cls.from_dict(json.loads(text))


def head_dtype(encoder_dtype: str) -> str:
    """The dtype a head computes in beside an encoder of `encoder_dtype`: the same for float32 and float64,
    float32 beside a bfloat16 or float16 encoder (its output is widened, exactly)."""
    return encoder_dtype if encoder_dtype in ("float32", "float64") else "float32"


def stored_head(source: str, metadata: Mapping[str, str]) -> HeadConfig | None:
    """The head config in a file's metadata (None when it has none); WeightFormatError saying why it is invalid."""
    if HEAD_KEY not in metadata:
        return None
    try:
        return HeadConfig.from_json(metadata[HEAD_KEY])
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as err:
        raise WeightFormatError(f"{source}: the stored sentence head is invalid: {err}") from err


def split_head_tensors(tensors: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(the encoder's tensors, the head's `sentence_head.*` tensors)."""
    encoder = {name: value for name, value in tensors.items() if not name.startswith(PREFIX)}
    head = {name: value for name, value in tensors.items() if name.startswith(PREFIX)}
    return encoder, head


def check_head_tensors(
    head: HeadConfig, tensors: Mapping[str, np.ndarray], *, source: str = "sentence head tensors"
) -> np.dtype | None:
    """Names, shapes, dtypes and finiteness of the head's tensors (one WeightFormatError listing every problem);
    their common dtype, None for a head without tensors."""
    if not head.shapes() and not tensors:
        return None
    return check_named_tensors(
        head.shapes(), tensors, source=source, description=f"the sentence head ({head.describe()})"
    )
