"""An invertible name table: canonical tensors <-> one layout's own names, with a transform per key.

A table is a list of rules, each `canonical name template(s) -> native name template` plus a transform that
maps the canonical array(s) to the native one and back (identity, transpose, or the concatenation of several
canonical tensors into one fused tensor). `{}` in a template stands for the layer index. Both directions and
the native names and shapes a config expects come from the same rules, so they cannot disagree; no model is
built to learn them. NumPy only, as in torchtitan's per-model `state_dict_adapter.py`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from rosetta_common.canonical import WeightFormatError, check_named_tensors, expected_shapes
from rosetta_common.config import EncoderConfig

Tensors = dict[str, np.ndarray]
Shape = tuple[int, ...]


@dataclass(frozen=True)
class Identity:
    """The native tensor is the canonical one."""

    def to_native(self, parts: Sequence[np.ndarray]) -> np.ndarray:
        return parts[0]

    def to_canonical(self, native: np.ndarray, count: int) -> list[np.ndarray]:
        return [native]

    def native_shape(self, shapes: Sequence[Shape]) -> Shape:
        return shapes[0]


@dataclass(frozen=True)
class Transpose:
    """A canonical kernel `[in, out]` stored as a torch `nn.Linear.weight` `[out, in]`."""

    def to_native(self, parts: Sequence[np.ndarray]) -> np.ndarray:
        return parts[0].T

    def to_canonical(self, native: np.ndarray, count: int) -> list[np.ndarray]:
        return [native.T]

    def native_shape(self, shapes: Sequence[Shape]) -> Shape:
        return shapes[0][::-1]


@dataclass(frozen=True)
class Concatenate:
    """Several canonical tensors stored as one, stacked along axis 0 (each transposed first when `transpose`):
    torch's fused `in_proj_weight` `[3d, d]` = q, k, v kernels transposed; `in_proj_bias` `[3d]`."""

    transpose: bool = False

    def to_native(self, parts: Sequence[np.ndarray]) -> np.ndarray:
        return np.concatenate([part.T if self.transpose else part for part in parts], axis=0)

    def to_canonical(self, native: np.ndarray, count: int) -> list[np.ndarray]:
        return [part.T if self.transpose else part for part in np.split(native, count, axis=0)]

    def native_shape(self, shapes: Sequence[Shape]) -> Shape:
        oriented = [shape[::-1] if self.transpose else shape for shape in shapes]
        return (sum(shape[0] for shape in oriented), *oriented[0][1:])


Transform = Identity | Transpose | Concatenate
IDENTITY, TRANSPOSE = Identity(), Transpose()


@dataclass(frozen=True)
class Rule:
    """`canonical` template(s) -> `native` template, and the transform between them."""

    canonical: tuple[str, ...]
    native: str
    transform: Transform = IDENTITY


def rule(canonical: str | tuple[str, ...], native: str, transform: Transform = IDENTITY) -> Rule:
    return Rule((canonical,) if isinstance(canonical, str) else canonical, native, transform)


def torch_linear(canonical: str, native: str) -> tuple[Rule, Rule]:
    """A canonical `kernel [in, out]` / `bias` pair stored as an `nn.Linear`: `weight [out, in]` / `bias`."""
    return rule(f"{canonical}.kernel", f"{native}.weight", TRANSPOSE), rule(f"{canonical}.bias", f"{native}.bias")


def torch_layer_norm(canonical: str, native: str) -> tuple[Rule, Rule]:
    """A canonical `scale` / `bias` pair stored as an `nn.LayerNorm`: `weight` / `bias`."""
    return rule(f"{canonical}.scale", f"{native}.weight"), rule(f"{canonical}.bias", f"{native}.bias")


def same_leaves(canonical: str, native: str, leaves: tuple[str, ...]) -> tuple[Rule, ...]:
    """Leaves stored under the same names below another prefix (Flax: `kernel`, `bias`, `scale`)."""
    return tuple(rule(f"{canonical}.{leaf}", f"{native}.{leaf}") for leaf in leaves)


@dataclass(frozen=True)
class Entry:
    """One rule for one layer: concrete canonical names, the concrete native name, the transform."""

    canonical: tuple[str, ...]
    native: str
    transform: Transform


@dataclass(frozen=True)
class NameTable:
    """The rules of one layout; `description` names it in error messages ("rosetta_torch.Encoder state_dict")."""

    description: str
    rules: tuple[Rule, ...]

    def entries(self, config: EncoderConfig) -> list[Entry]:
        """The rules for `config`'s layers, in canonical file order; every canonical tensor covered once."""
        order = {name: index for index, name in enumerate(expected_shapes(config))}
        entries = []
        for item in self.rules:
            for layer in range(config.n_layers) if "{}" in item.native else (None,):
                names = tuple(template.format(layer) for template in item.canonical)
                if all(name in order for name in names):
                    entries.append(Entry(names, item.native.format(layer), item.transform))
        covered = [name for entry in entries for name in entry.canonical]
        assert len(covered) == len(set(covered)), f"{self.description}: a canonical tensor has two rules"
        unplaced = [name for name in order if name not in set(covered)]
        if unplaced:  # the config uses a part this layout has no place for (e.g. learned positions in nn.Transformer)
            kinds = dict.fromkeys(re.sub(r"^layers\.\d+\.", "layers.*.", name) for name in unplaced)
            raise WeightFormatError(
                f"the {self.description} layout cannot hold this encoder: no place for {', '.join(kinds)}"
            )
        return sorted(entries, key=lambda entry: order[entry.canonical[0]])

    def native_names(self, config: EncoderConfig) -> dict[str, str]:
        """canonical name -> native name, for the tables whose rules are one-to-one."""
        entries = self.entries(config)
        if any(len(entry.canonical) != 1 for entry in entries):
            raise ValueError(f"{self.description} fuses tensors: it has no one-to-one names")
        return {entry.canonical[0]: entry.native for entry in entries}

    def native_shapes(self, config: EncoderConfig) -> dict[str, Shape]:
        """Every native tensor name `config` implies, with its shape."""
        canonical = expected_shapes(config)
        return {
            entry.native: entry.transform.native_shape([canonical[name] for name in entry.canonical])
            for entry in self.entries(config)
        }

    def to_native(self, config: EncoderConfig, tensors: Mapping[str, np.ndarray]) -> Tensors:
        """Canonical tensors -> native tensors (contiguous copies)."""
        return {
            entry.native: _copy(entry.transform.to_native([np.asarray(tensors[name]) for name in entry.canonical]))
            for entry in self.entries(config)
        }

    def to_canonical(
        self, config: EncoderConfig, tensors: Mapping[str, np.ndarray], *, source: str = "tensors"
    ) -> Tensors:
        """Native tensors -> canonical tensors (contiguous copies). Names and shapes are checked first: one
        WeightFormatError, "{source} do not match {description} for {config}", lists every problem."""
        check_named_tensors(
            self.native_shapes(config), tensors, source=source, description=f"{self.description} for {config}"
        )
        canonical: Tensors = {}
        for entry in self.entries(config):
            parts = entry.transform.to_canonical(np.asarray(tensors[entry.native]), len(entry.canonical))
            canonical.update({name: _copy(part) for name, part in zip(entry.canonical, parts, strict=True)})
        return canonical


def _copy(array: np.ndarray) -> np.ndarray:
    """A C-contiguous copy: converted tensors never share memory with their source (a model, a file buffer)."""
    return np.array(array, order="C", copy=True)
