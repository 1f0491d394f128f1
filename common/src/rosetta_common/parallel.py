"""One parallel plan for both frameworks: each canonical tensor's logical axes, and per strategy the mesh axis
each logical axis is split over.

The mesh has two named axes, `data` (the batch is split over it; FSDP shards parameters over it too) and `model`
(tensor parallelism, Megatron's split: q, k, v and ffn.in by columns, so every rank holds whole heads and a slice
of the hidden units; attn.out and ffn.out by rows). `plan(config, strategy, mesh)` resolves, for every canonical
tensor, which mesh axis (or None) splits each of its dimensions; rosetta_flax turns that into NNX sharding
metadata and `NamedSharding`s, rosetta_torch into `parallelize_module` / `fully_shard` plans.

Logical axes: `vocab` (token rows), `embed` (d_model), `heads` (the attention's n_heads * d_head columns), `mlp`
(d_ff); None for a dimension no strategy splits (position and token-type rows, the pooler kernel's columns).
Strategies: `dp` (parameters replicated), `fsdp` (every tensor split once over `data`, along `embed` where it has
one), `tp` (`heads` and `mlp` over `model`), and the two 2-D combinations `fsdp+tp` and `dp+tp`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rosetta_common.canonical import expected_shapes
from rosetta_common.config import EncoderConfig
from rosetta_common.name_tables.table import TRANSPOSE, NameTable

MESH_AXES = ("data", "model")
DATA, MODEL = MESH_AXES

TENSOR_AXES: dict[str, tuple[str | None, ...]] = {
    "embedding.weight": ("vocab", "embed"),
    "position_embedding.weight": (None, "embed"),
    "token_type_embedding.weight": (None, "embed"),
    "norm.scale": ("embed",),
    "norm.bias": ("embed",),
    "attn.q.kernel": ("embed", "heads"),
    "attn.q.bias": ("heads",),
    "attn.k.kernel": ("embed", "heads"),
    "attn.k.bias": ("heads",),
    "attn.v.kernel": ("embed", "heads"),
    "attn.v.bias": ("heads",),
    "attn.out.kernel": ("heads", "embed"),
    "attn.out.bias": ("embed",),
    "ffn.in.kernel": ("embed", "mlp"),
    "ffn.in.bias": ("mlp",),
    "ffn.gate.kernel": ("embed", "mlp"),  # a GLU's gate: split with ffn.in, so a rank's units keep their gates
    "ffn.gate.bias": ("mlp",),
    "ffn.out.kernel": ("mlp", "embed"),
    "ffn.out.bias": ("embed",),
    "pooler.kernel": ("embed", None),
    "pooler.bias": ("embed",),
}
"""Logical axes by canonical name, with `layers.{i}.` left out and every LayerNorm under `norm`."""

STRATEGY_RULES: dict[str, tuple[tuple[str, str], ...]] = {
    "dp": (),
    "fsdp": (("embed", DATA), ("vocab", DATA), ("heads", DATA), ("mlp", DATA)),
    "tp": (("heads", MODEL), ("mlp", MODEL)),
    "fsdp+tp": (("heads", MODEL), ("mlp", MODEL), ("embed", DATA), ("vocab", DATA)),
    "dp+tp": (("heads", MODEL), ("mlp", MODEL)),
}
"""Per strategy, (logical axis, mesh axis) rules in priority order. A tensor takes each rule whose logical axis it
has, unless the mesh axis already splits another of its dimensions: every tensor is split at most once per mesh
axis (under fsdp, q.kernel `[embed, heads]` is split along embed; its bias, which has no embed, along heads)."""

STRATEGIES = tuple(STRATEGY_RULES)
SHARDS_PARAMETERS_OVER_DATA = {"fsdp", "fsdp+tp"}
TENSOR_PARALLEL = {"tp", "fsdp+tp", "dp+tp"}


class PlanError(ValueError):
    """A strategy, mesh or device count that does not fit the model, the batch or the machine."""


@dataclass(frozen=True)
class Mesh:
    """The sizes of the two mesh axes; `data * model` devices (JAX) or processes (torch)."""

    data: int = 1
    model: int = 1

    def __post_init__(self) -> None:
        for axis in MESH_AXES:
            size = getattr(self, axis)
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise PlanError(f"mesh axis {axis!r} needs a size >= 1, got {size!r}")

    @property
    def size(self) -> int:
        return self.data * self.model

    @property
    def shape(self) -> tuple[int, int]:
        return self.data, self.model

    def __str__(self) -> str:
        return f"data={self.data},model={self.model}"

    @classmethod
    def parse(cls, text: str) -> Mesh:
        """`"data=2,model=2"` (either axis may be left out: size 1) -> Mesh; PlanError names a bad part."""
        sizes: dict[str, int] = {}
        for part in filter(None, (piece.strip() for piece in text.split(","))):
            match = re.fullmatch(r"(\w+)=(\d+)", part)
            if match is None:
                raise PlanError(f"mesh {text!r}: {part!r} is not AXIS=SIZE (e.g. data=2,model=2)")
            axis, size = match[1], int(match[2])
            if axis not in MESH_AXES:
                raise PlanError(f"mesh {text!r}: unknown axis {axis!r} (axes: {', '.join(MESH_AXES)})")
            if axis in sizes:
                raise PlanError(f"mesh {text!r}: axis {axis!r} given twice")
            sizes[axis] = size
        if not sizes:
            raise PlanError(f"mesh {text!r}: no axis given (e.g. data=2,model=2)")
        return cls(**sizes)


def logical_axes(name: str) -> tuple[str | None, ...]:
    """The logical axes of canonical tensor `name` (e.g. "layers.3.attn.q.kernel" -> ("embed", "heads"))."""
    short = re.sub(r"^layers\.\d+\.", "", name)
    short = re.sub(r"^(embedding_norm|final_norm|norm1|norm2)\.", "norm.", short)
    try:
        return TENSOR_AXES[short]
    except KeyError:
        raise KeyError(f"no logical axes for canonical tensor {name!r}") from None


def check_strategy(strategy: str) -> str:
    if strategy not in STRATEGY_RULES:
        raise PlanError(f"unknown parallel strategy {strategy!r} (strategies: {', '.join(STRATEGIES)})")
    return strategy


def check_mesh(strategy: str, mesh: Mesh) -> None:
    """A mesh axis the strategy does not use must have size 1 (a tp run on data=2 would silently be dp+tp)."""
    check_strategy(strategy)
    uses = {DATA: strategy != "tp", MODEL: strategy in TENSOR_PARALLEL}
    for axis, used in uses.items():
        if not used and getattr(mesh, axis) != 1:
            raise PlanError(
                f"strategy {strategy!r} does not use mesh axis {axis!r}, but the mesh gives it size "
                f"{getattr(mesh, axis)} (mesh {mesh})"
            )


def axis_sizes(config: EncoderConfig) -> dict[str, int]:
    """The length of each logical axis for `config` (heads counts whole heads: a split must not cut one)."""
    return {"vocab": config.vocab_size, "embed": config.d_model, "heads": config.n_heads, "mlp": config.d_ff}


AXIS_OPTIONS = {"vocab": "vocab_size", "embed": "d_model", "heads": "n_heads", "mlp": "d_ff"}


def plan(config: EncoderConfig, strategy: str, mesh: Mesh) -> dict[str, tuple[str | None, ...]]:
    """Canonical name -> the mesh axis splitting each dimension (None: whole), for every tensor of `config`.

    PlanError, before any work, when the strategy is unknown, the mesh gives size > 1 to an axis the strategy
    does not use, or a dimension the plan splits is not divisible by its mesh axis (n_heads or d_ff by `model`;
    under fsdp d_model, vocab_size, n_heads or d_ff by `data`).
    """
    check_mesh(strategy, mesh)
    rules = STRATEGY_RULES[strategy]
    resolved: dict[str, tuple[str | None, ...]] = {}
    for name in expected_shapes(config):
        axes = logical_axes(name)
        placement: list[str | None] = [None] * len(axes)
        for logical, mesh_axis in rules:
            if logical in axes and mesh_axis not in placement and getattr(mesh, mesh_axis) > 1:
                placement[axes.index(logical)] = mesh_axis
        resolved[name] = tuple(placement)
    _check_divisible(config, strategy, mesh, resolved)
    return resolved


def _check_divisible(
    config: EncoderConfig, strategy: str, mesh: Mesh, resolved: Mapping[str, tuple[str | None, ...]]
) -> None:
    lengths = axis_sizes(config)
    needed = {
        (logical, mesh_axis)
        for name, placement in resolved.items()
        for logical, mesh_axis in zip(logical_axes(name), placement, strict=True)
        if mesh_axis is not None
    }
    problems = []
    for logical, mesh_axis in sorted(needed, key=str):
        # whole heads per rank under tp; under fsdp a bias is cut by columns, so only d_model must divide
        option = "embed" if (logical, mesh_axis) == ("heads", DATA) else logical
        if lengths[option] % getattr(mesh, mesh_axis):
            problems.append(
                f"{AXIS_OPTIONS[option]} ({lengths[option]}) is not divisible by mesh axis {mesh_axis!r} "
                f"({getattr(mesh, mesh_axis)})"
            )
    if problems:
        raise PlanError(f"strategy {strategy!r} on mesh {mesh}: " + "; ".join(problems))


def check_batch(batch_size: int, mesh: Mesh) -> None:
    """The global batch is split over `data`: it must divide evenly."""
    if batch_size % mesh.data:
        raise PlanError(f"batch size {batch_size} is not divisible by mesh axis 'data' ({mesh.data})")


def check_device_count(mesh: Mesh, available: int, what: str, hint: str = "") -> None:
    """The mesh must use exactly the devices (JAX) or processes (torch) there are; `hint` says how to get more."""
    if mesh.size != available:
        raise PlanError(f"mesh {mesh} needs {mesh.size} {what}, but there are {available}{hint}")


def native_plan(
    table: NameTable, config: EncoderConfig, resolved: Mapping[str, tuple[str | None, ...]]
) -> dict[str, tuple[str | None, ...]]:
    """The plan in a framework's own names and layouts (`table`: its name table): a transposed kernel (torch's
    `nn.Linear.weight [out, in]`) takes its mesh axes reversed."""
    native: dict[str, tuple[str | None, ...]] = {}
    for entry in table.entries(config):
        (name,) = entry.canonical
        placement = resolved[name]
        native[entry.native] = placement[::-1] if entry.transform == TRANSPOSE else placement
    return native


RUN_FILE = "run.json"
"""Beside a sharded checkpoint's state: what it was written for (framework, config, AdamW, step, strategy, mesh)."""


@dataclass(frozen=True)
class ShardedCheckpointInfo:
    """What a sharded checkpoint (Orbax or torch.distributed.checkpoint) holds, written beside it as JSON."""

    framework: str
    config: EncoderConfig
    adamw: Any
    step: int
    strategy: str
    mesh: Mesh

    def to_json(self) -> str:
        return json.dumps(
            {
                "framework": self.framework,
                "config": self.config.to_dict(),
                "adamw": json.loads(self.adamw.to_json()),
                "step": self.step,
                "strategy": self.strategy,
                "mesh": str(self.mesh),
            },
            indent=2,
            sort_keys=True,
        )

    @classmethod
    def read(cls, directory: str | os.PathLike) -> ShardedCheckpointInfo:
        from rosetta_common.canonical import WeightFormatError
        from rosetta_common.training import AdamWConfig

        path = Path(directory) / RUN_FILE
        if not path.is_file():
            raise WeightFormatError(f"{directory}: not a rosetta sharded checkpoint ('{RUN_FILE}' is missing)")
        try:
            data = json.loads(path.read_text())
            return cls(
                framework=data["framework"],
                config=EncoderConfig.from_dict(data["config"]),
                adamw=AdamWConfig.from_json(json.dumps(data["adamw"])),
                step=int(data["step"]),
                strategy=data["strategy"],
                mesh=Mesh.parse(data["mesh"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise WeightFormatError(f"{path}: invalid: {err}") from err

    def check_resumes(self, framework: str, config: EncoderConfig, adamw: Any, where: str) -> None:
        """WeightFormatError unless a run of `framework` with `config` and `adamw` can continue from here (any
        strategy and mesh: the state is laid out anew)."""
        from rosetta_common.canonical import WeightFormatError

        problems = []
        if framework != self.framework:
            problems.append(f"it was written by {self.framework}, not {framework} (resume from the canonical files)")
        if config != self.config:
            changed = sorted(k for k, v in config.to_dict().items() if self.config.to_dict().get(k) != v)
            problems.append(f"its encoder config differs in {', '.join(changed)}")
        if adamw != self.adamw:
            problems.append("its AdamW settings differ")
        if problems:
            raise WeightFormatError(f"{where}: cannot resume this run: " + "; ".join(problems))
