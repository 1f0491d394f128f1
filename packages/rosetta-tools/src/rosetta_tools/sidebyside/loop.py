"""The side-by-side training loop: two lanes, same initial weights, same batches, one JSON line per step.

Lane "a" starts in torch and lane "b" in flax (torch initialises the weights; flax gets them through the
canonical format). With `switch_at=N`, after N updates each lane saves its weights and optimizer state and
continues in the other framework; at that step the new framework's loss is checked against the loss the old
framework computes for the same state and batch.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rosetta_common import EncoderConfig
from rosetta_common.precision import POLICIES, Precision
from rosetta_common.training import AdamWConfig
from rosetta_tools.sidebyside.divergence import check_finite
from rosetta_tools.sidebyside.lanes import FRAMEWORKS, Lane, load_lane, new_lane
from rosetta_tools.sidebyside.task import Batch, ReversalTask, accuracy

LANES = ("a", "b")
# Relative loss difference allowed over the first `check_steps` steps and at a framework switch. float32: the
# gradients agree to ~1e-6 and the step-by-step loss difference stays <= ~1e-5 for the first tens of steps
# (measured 3e-6), so 1e-4 leaves a margin and still catches any real mismatch (those show at step 0-1).
# float64: 1e-10 (measured ~3e-16), except with gradient clipping: torch's clip_grad_norm_ divides by
# |g| + 1e-6 where optax.clip_by_global_norm divides by |g|, a relative 1e-6/|g| on the clipped gradients
# (tests/test_optimizer.py proves it is the only difference); the losses then differ by ~1e-9.
# bfloat16 policies: the forward and the gradients round at the same places in both frameworks, but AdamW's update
# is each library's own (tests/test_bfloat16.py): from the second step the losses part. bfloat16-mixed updates
# float32 masters (the libraries differ by float32 rounding): measured 7.0e-5 over the first 20 steps of the default
# run, 1.9e-4 at the switch. Pure bfloat16 rounds each library's update steps to bfloat16: measured 7.8e-3.
LOSS_BOUNDS = {"float32": 1e-4, "float64": 1e-10, "bfloat16-mixed": 1e-3, "bfloat16": 3e-2}
FLOAT64_CLIPPED_LOSS_BOUND = 1e-6


def loss_bound(dtype: str, clipping: bool) -> float:
    """The relative loss difference the run's checks allow (see LOSS_BOUNDS)."""
    return FLOAT64_CLIPPED_LOSS_BOUND if dtype == "float64" and clipping else LOSS_BOUNDS[dtype]


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a training run (dtype "float32", "float64", or a bfloat16 policy's name)."""

    encoder: EncoderConfig
    adamw: AdamWConfig
    task: ReversalTask
    steps: int
    dtype: str = "float32"
    init_seed: int = 0
    eval_every: int = 100
    switch_at: int | None = None
    check_steps: int = 20

    def __post_init__(self) -> None:
        if self.dtype not in LOSS_BOUNDS:
            raise ValueError(f"RunConfig.dtype must be one of {sorted(LOSS_BOUNDS)}, got {self.dtype!r}")
        if self.steps < 1:
            raise ValueError(f"RunConfig.steps must be >= 1, got {self.steps}")
        if self.switch_at is not None and not 0 < self.switch_at < self.steps:
            raise ValueError(f"RunConfig.switch_at must be in (0, steps={self.steps}), got {self.switch_at}")

    @property
    def precision(self) -> Precision | None:
        """The bfloat16 policy the run trains under (None: plain float32 or float64)."""
        return POLICIES.get(self.dtype)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunResult:
    """What the run measured; `summary()` is what goes to summary.json."""

    config: RunConfig
    records: list[dict[str, Any]] = field(default_factory=list)
    switch_check: dict[str, Any] | None = None
    wall_seconds: float = 0.0

    def max_relative_diff(self, first: int | None = None) -> float:
        records = self.records[:first] if first is not None else self.records
        return max(record["rel_diff"] for record in records)

    @property
    def loss_bound(self) -> float:
        return loss_bound(self.config.dtype, self.config.adamw.clip_norm is not None)

    def checks(self) -> dict[str, bool]:
        bound = self.loss_bound
        result = {
            f"first {self.config.check_steps} steps agree": self.max_relative_diff(self.config.check_steps) <= bound
        }
        if self.switch_check is not None:
            result["switch continues the loss"] = self.switch_check["max_rel_diff"] <= bound
        return result

    def summary(self) -> dict[str, Any]:
        last_eval = next((r for r in reversed(self.records) if "accuracy" in r), None)
        first_ms = {fw: [] for fw in FRAMEWORKS}
        ms = {fw: [] for fw in FRAMEWORKS}
        for index, record in enumerate(self.records):
            for lane, framework in record["framework"].items():
                fresh = index == 0 or self.records[index - 1]["framework"][lane] != framework
                (first_ms if fresh else ms)[framework].append(record["ms"][lane])
        return {
            "config": self.config.to_dict(),
            "loss_bound": self.loss_bound,
            "checks": self.checks(),
            "wall_seconds": self.wall_seconds,
            "train_step_ms_median": {fw: float(np.median(v)) for fw, v in ms.items() if v},
            "first_step_ms": {fw: max(v) for fw, v in first_ms.items() if v},  # compilation, for jax
            "final_loss": self.records[-1]["loss"],
            "final_accuracy": last_eval["accuracy"] if last_eval else None,
            "max_rel_diff_first_steps": self.max_relative_diff(self.config.check_steps),
            "max_rel_diff": self.max_relative_diff(),
            "max_abs_diff_first_steps": max(r["abs_diff"] for r in self.records[: self.config.check_steps]),
            "switch": self.switch_check,
        }


def initial_weights(config: RunConfig) -> dict[str, np.ndarray]:
    """torch's default initialisation (seeded), as canonical arrays in the run's dtype (float32 under a policy:
    the lanes cast them to the policy's parameter dtype)."""
    import torch

    import rosetta_torch

    torch.manual_seed(config.init_seed)
    dtype = "float32" if config.precision is not None else config.dtype
    model = rosetta_torch.Encoder(config.encoder, dtype=getattr(torch, dtype))
    return {name: value.copy() for name, value in rosetta_torch.to_canonical(model).items()}


def evaluate(lanes: dict[str, Lane], task: ReversalTask) -> dict[str, dict[str, float]]:
    token_ids, targets, mask = task.eval_batch()
    result = {}
    for name, lane in lanes.items():
        tokens, sequences = accuracy(lane.predict(token_ids), targets, mask)
        result[name] = {"token": tokens, "sequence": sequences}
    return result


def switch_frameworks(
    lanes: dict[str, Lane], directory: Path, step: int, batch: Batch, precision: Precision | None = None
) -> tuple[dict[str, Lane], dict[str, Any]]:
    """Save each lane, reload it in the other framework; check the next loss is the same in both frameworks."""
    switched, diffs = {}, {}
    for name, lane in lanes.items():
        lane_dir = directory / f"lane-{name}-step-{step}"
        lane_dir.mkdir(parents=True, exist_ok=True)
        lane.save(lane_dir)
        other = FRAMEWORKS[1 - FRAMEWORKS.index(lane.framework)]
        switched[name] = load_lane(other, lane_dir, precision)
        old, new = lane.loss(batch), switched[name].loss(batch)
        diffs[name] = {
            "from": lane.framework,
            "to": other,
            "loss_before": old,
            "loss_after": new,
            "rel_diff": abs(old - new) / abs(old),
            "saved_in": str(lane_dir),
        }
    return switched, {"step": step, "lanes": diffs, "max_rel_diff": max(d["rel_diff"] for d in diffs.values())}


def run(config: RunConfig, out_dir: Path, on_step: Callable[[dict[str, Any]], None] | None = None) -> RunResult:
    """Train both lanes for `config.steps` updates; write out_dir/log.jsonl (one line per step) as it goes.
    TrainingDiverged at the first non-finite loss of either lane (that step is not logged)."""
    if config.dtype == "float64":
        import jax

        jax.config.update("jax_enable_x64", True)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = initial_weights(config)
    lanes: dict[str, Lane] = {
        name: new_lane(framework, config.encoder, weights, config.adamw, config.precision)
        for name, framework in zip(LANES, FRAMEWORKS, strict=True)
    }
    result = RunResult(config)
    start = time.perf_counter()
    with open(out_dir / "log.jsonl", "w") as log:
        for step in range(config.steps):
            batch = config.task.batch(step)
            if step == config.switch_at:
                lanes, result.switch_check = switch_frameworks(lanes, out_dir / "switch", step, batch, config.precision)
            frameworks = {name: lane.framework for name, lane in lanes.items()}
            losses, ms = {}, {}
            for name, lane in lanes.items():
                began = time.perf_counter()
                losses[name] = lane.step(batch)
                ms[name] = 1e3 * (time.perf_counter() - began)
            check_finite(step, {frameworks[name]: loss for name, loss in losses.items()})  # before logging it
            abs_diff = abs(losses["a"] - losses["b"])
            record: dict[str, Any] = {
                "step": step,
                "lr": config.adamw.learning_rate(step),
                "loss": losses,
                "framework": frameworks,
                "abs_diff": abs_diff,
                "rel_diff": abs_diff / abs(losses["a"]) if losses["a"] else math.inf,
                "ms": ms,
            }
            if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
                record["accuracy"] = evaluate(lanes, config.task)
            log.write(json.dumps(record) + "\n")
            log.flush()  # an interrupted run keeps every step it logged
            result.records.append(record)
            if on_step is not None:
                on_step(record)
    result.wall_seconds = time.perf_counter() - start
    return result
