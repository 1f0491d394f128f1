"""What both frameworks' training code shares: the AdamW settings and the canonical optimizer-state file.

`AdamWConfig` describes one optimizer (AdamW, optional linear warm-up then cosine decay, optional clipping by
global norm) that `rosetta_torch.training` and `rosetta_flax.training` each build from their own framework's
tools. `AdamWConfig.learning_rate(step)` is the float64 reference of the schedule both must follow.

The optimizer state crosses frameworks like the weights do: one safetensors file with the first and second
moments in canonical names and layout (`mu.<canonical name>`, `nu.<canonical name>`), the step count, the
encoder config and the AdamW settings in its metadata.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save

from rosetta_common.canonical import WeightFormatError, check_tensors, expected_shapes
from rosetta_common.config import EncoderConfig
from rosetta_common.io import CONFIG_KEY, read_metadata, read_safetensors, write_atomically

ADAMW_KEY = "rosetta.adamw"
STEP_KEY = "rosetta.step"
KIND_KEY = "rosetta.kind"
OPTIMIZER_STATE_KIND = "adamw-state"
TRAINING_STATE_KIND = "training-state"


@dataclass(frozen=True)
class AdamWConfig:
    """AdamW (decoupled weight decay, bias-corrected moments) with an optional schedule and gradient clipping.

    The update of step t (t = 0, 1, ...) is, with lr_t = `learning_rate(t)` and g the (clipped) gradient:
        m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
        p = p - lr_t * (m / (1 - b1^(t+1)) / (sqrt(v / (1 - b2^(t+1))) + eps) + weight_decay * p)
    Weight decay applies to every parameter (biases and LayerNorm too), as in both frameworks' defaults.

    Schedule: `warmup_steps` > 0 ramps linearly from `warmup_start_factor * lr` (step 0) to `lr` (step
    `warmup_steps`); `total_steps` set then decays by a half cosine to `end_factor * lr` at step `total_steps`
    and holds it. Neither set: constant `lr`. `clip_norm` set: gradients are clipped to that global L2 norm.
    """

    lr: float = 1e-3
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.01
    warmup_steps: int = 0
    warmup_start_factor: float = 0.1
    total_steps: int | None = None
    end_factor: float = 0.0
    clip_norm: float | None = None

    def __post_init__(self) -> None:
        def number(name: str) -> float:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"AdamWConfig.{name} must be a finite number, got {value!r}")
            return float(value)

        if number("lr") <= 0:
            raise ValueError(f"AdamWConfig.lr must be > 0, got {self.lr!r}")
        for name in ("b1", "b2"):
            if not 0 <= number(name) < 1:
                raise ValueError(f"AdamWConfig.{name} must be in [0, 1), got {getattr(self, name)!r}")
        for name in ("eps", "weight_decay"):
            if number(name) < 0:
                raise ValueError(f"AdamWConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0 < number("warmup_start_factor") <= 1:  # torch's LinearLR refuses a start factor of 0
            raise ValueError(f"AdamWConfig.warmup_start_factor must be in (0, 1], got {self.warmup_start_factor!r}")
        if not 0 <= number("end_factor") <= 1:
            raise ValueError(f"AdamWConfig.end_factor must be in [0, 1], got {self.end_factor!r}")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"AdamWConfig.warmup_steps must be an int >= 0, got {self.warmup_steps!r}")
        if self.total_steps is not None and (
            isinstance(self.total_steps, bool)
            or not isinstance(self.total_steps, int)
            or self.total_steps <= self.warmup_steps
        ):
            raise ValueError(
                f"AdamWConfig.total_steps must be None or an int > warmup_steps ({self.warmup_steps}), "
                f"got {self.total_steps!r}"
            )
        if self.clip_norm is not None and number("clip_norm") <= 0:
            raise ValueError(f"AdamWConfig.clip_norm must be None or > 0, got {self.clip_norm!r}")

    @property
    def has_schedule(self) -> bool:
        return self.warmup_steps > 0 or self.total_steps is not None

    def learning_rate(self, step: int) -> float:
        """The learning rate of update `step` (0-based), in float64: the reference both schedules follow."""
        warmup, total = self.warmup_steps, self.total_steps
        if step < warmup:
            start = self.warmup_start_factor * self.lr
            return start + (self.lr - start) * step / warmup
        if total is None:
            return self.lr
        progress = min(step - warmup, total - warmup) / (total - warmup)
        end = self.end_factor * self.lr
        return end + (self.lr - end) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def replace(self, **changes: Any) -> AdamWConfig:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> AdamWConfig:
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"AdamWConfig got unknown fields: {', '.join(unknown)}")
        return cls(**data)


@dataclass(frozen=True)
class OptimizerState:
    """AdamW's state in canonical names and layout: `step` updates done, moments `mu` and `nu` per tensor."""

    config: EncoderConfig
    adamw: AdamWConfig
    step: int
    mu: dict[str, np.ndarray]
    nu: dict[str, np.ndarray]

    def check_fits(self, config: EncoderConfig, adamw: AdamWConfig) -> None:
        """ValueError unless this state was written for `config` and `adamw` (what a trainer resuming it has)."""
        if self.config != config or self.adamw != adamw:
            raise ValueError("the optimizer state was written for another encoder config or AdamW config")


MOMENT_GROUPS = ("mu", "nu")


def _state_tensors(state: OptimizerState) -> dict[str, np.ndarray]:
    """The moments, checked against the config (names, shapes, one dtype), as `mu.<name>` / `nu.<name>`."""
    for group in MOMENT_GROUPS:
        check_tensors(state.config, getattr(state, group), source=f"optimizer state {group}")
    tensors = {}
    for name in expected_shapes(state.config):
        for group in MOMENT_GROUPS:
            tensors[f"{group}.{name}"] = np.ascontiguousarray(getattr(state, group)[name])
    return tensors


def _state_metadata(state: OptimizerState, kind: str) -> dict[str, str]:
    return {
        CONFIG_KEY: state.config.to_json(),
        ADAMW_KEY: state.adamw.to_json(),
        STEP_KEY: str(int(state.step)),
        KIND_KEY: kind,
    }


def save_optimizer_state(path: str | os.PathLike, state: OptimizerState) -> Path:
    """Check the moments against the config (names, shapes, one dtype) and write them atomically."""
    payload = save(_state_tensors(state), metadata=_state_metadata(state, OPTIMIZER_STATE_KIND))
    return write_atomically(path, lambda tmp: tmp.write_bytes(payload))


def save_training_state(path: str | os.PathLike, weights: dict[str, np.ndarray], state: OptimizerState) -> Path:
    """One safetensors file holding a run's whole state: the canonical weights (under their own names), AdamW's
    moments (`mu.<name>`, `nu.<name>`), the step, the encoder config and the AdamW settings. Checked, then written
    atomically: what `rosetta train --framework ...` gathers at its end and any framework resumes on any mesh."""
    check_tensors(state.config, weights, source="the weights")
    tensors = {name: np.ascontiguousarray(weights[name]) for name in expected_shapes(state.config)}
    tensors.update(_state_tensors(state))
    payload = save(tensors, metadata=_state_metadata(state, TRAINING_STATE_KIND))
    return write_atomically(path, lambda tmp: tmp.write_bytes(payload))


def _read_state(path: str | os.PathLike, kind: str) -> tuple[OptimizerState, dict[str, np.ndarray]]:
    """(the optimizer state, the tensors outside the moment groups) of a file of `kind`, every tensor checked."""
    metadata = read_metadata(path)
    if metadata.get(KIND_KEY) != kind:
        what = {OPTIMIZER_STATE_KIND: "optimizer-state", TRAINING_STATE_KIND: "training-state"}[kind]
        raise WeightFormatError(f"{path}: not a rosetta {what} file (metadata {KIND_KEY!r} is not {kind!r})")
    try:
        config = EncoderConfig.from_json(metadata[CONFIG_KEY])
        adamw = AdamWConfig.from_json(metadata[ADAMW_KEY])
        step = int(metadata[STEP_KEY])
    except (KeyError, TypeError, ValueError) as err:
        raise WeightFormatError(f"{path}: the stored optimizer metadata is invalid: {err}") from err
    tensors = read_safetensors(path)
    groups = {
        group: {name[len(group) + 1 :]: value for name, value in tensors.items() if name.startswith(f"{group}.")}
        for group in MOMENT_GROUPS
    }
    for group, values in groups.items():
        check_tensors(config, values, source=f"{path} ({group})")
    rest = {name: value for name, value in tensors.items() if not name.startswith(("mu.", "nu."))}
    return OptimizerState(config=config, adamw=adamw, step=step, mu=groups["mu"], nu=groups["nu"]), rest


def load_optimizer_state(path: str | os.PathLike) -> OptimizerState:
    """Read a file written by `save_optimizer_state`; every tensor is checked before returning."""
    state, stray = _read_state(path, OPTIMIZER_STATE_KIND)
    if stray:
        raise WeightFormatError(f"{path}: unexpected tensors: {', '.join(sorted(stray))}")
    return state


def load_training_state(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], OptimizerState]:
    """(canonical weights, optimizer state) from a file written by `save_training_state`, every tensor checked."""
    state, weights = _read_state(path, TRAINING_STATE_KIND)
    check_tensors(state.config, weights, source=f"{path} (weights)")
    return weights, state
