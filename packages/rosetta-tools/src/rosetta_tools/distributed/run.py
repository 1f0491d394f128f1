"""`rosetta train --framework F [--parallel S --mesh data=N,model=M]`: one framework, one device or a mesh.

The task, the batches and the initial canonical weights are the side-by-side run's, so any such run compares with
the single-device run of either framework. Rank 0 alone writes: `log.jsonl` (one line per step: the global mean
loss), `summary.json`, and at the end `checkpoint.safetensors` (the gathered canonical weights and AdamW state in one
file, written once, atomically) and, on a mesh, `sharded/` (the framework's own sharded checkpoint, Orbax or
torch.distributed.checkpoint, written by every rank). `--resume` continues from either, or from a `--switch-at`
folder (weights.safetensors + optimizer.safetensors).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rosetta_common import load_canonical
from rosetta_common.parallel import RUN_FILE, Mesh, plan
from rosetta_common.training import (
    OptimizerState,
    load_optimizer_state,
    load_training_state,
    save_training_state,
)
from rosetta_tools.distributed.sessions import Session, open_session
from rosetta_tools.sidebyside.divergence import check_finite
from rosetta_tools.sidebyside.lanes import OPTIMIZER_FILE, WEIGHTS_FILE
from rosetta_tools.sidebyside.loop import RunConfig, initial_weights

CHECKPOINT_FILE, SHARDED_DIR = "checkpoint.safetensors", "sharded"


@dataclass(frozen=True)
class FrameworkRun:
    """A run of one framework: the side-by-side run's settings, the framework, and a strategy and mesh (None: one
    device), resumed from `resume` (a canonical checkpoint folder or this framework's sharded one) when set."""

    run: RunConfig
    framework: str
    strategy: str | None = None
    mesh: Mesh | None = None
    resume: Path | None = None
    stop_at: int | None = None

    @property
    def last_step(self) -> int:
        """The steps run end here (exclusive): `stop_at` when set, else the schedule's `steps`."""
        return self.run.steps if self.stop_at is None else self.stop_at

    def check(self) -> None:
        """PlanError before any work: a strategy without a mesh, a mesh that does not fit the model or batch."""
        from rosetta_common.parallel import PlanError, check_batch

        if self.stop_at is not None and not 0 < self.stop_at <= self.run.steps:
            raise PlanError(f"--stop-at ({self.stop_at}) must be in 1..--steps ({self.run.steps})")
        if self.strategy is None:
            if self.mesh is not None:
                raise PlanError("--mesh needs --parallel STRATEGY")
            if self.resume is not None and (self.resume / RUN_FILE).is_file():
                raise PlanError(
                    f"--resume {self.resume}: a sharded checkpoint resumes on a mesh (--parallel, --mesh); "
                    f"one device resumes from the run's {CHECKPOINT_FILE}"
                )
            return
        if self.mesh is None:
            raise PlanError(f"--parallel {self.strategy} needs --mesh (e.g. --mesh data=2,model=2)")
        if self.run.precision is not None:
            raise PlanError(f"--parallel runs float32 or float64; --dtype {self.run.dtype} is not supported yet")
        plan(self.run.encoder, self.strategy, self.mesh)
        check_batch(self.run.task.batch_size, self.mesh)


def read_resume(path: Path) -> tuple[str, Any]:
    """("sharded", None) for a sharded checkpoint; ("canonical", (weights, OptimizerState)) for a canonical one:
    a training-state file, or a `--switch-at` folder of weights and optimizer files."""
    from rosetta_common import WeightFormatError

    if path.is_file():
        return "canonical", load_training_state(path)
    if (path / RUN_FILE).is_file():
        return "sharded", None
    if (path / WEIGHTS_FILE).is_file() and (path / OPTIMIZER_FILE).is_file():
        _, weights = load_canonical(path / WEIGHTS_FILE)
        return "canonical", (weights, load_optimizer_state(path / OPTIMIZER_FILE))
    raise WeightFormatError(
        f"--resume {path}: neither a training-state file ({CHECKPOINT_FILE}), nor a sharded checkpoint folder "
        f"({RUN_FILE}), nor a --switch-at folder ({WEIGHTS_FILE} + {OPTIMIZER_FILE})"
    )


def start(config: FrameworkRun) -> Session:
    """The session the run starts from: fresh initial weights, or the checkpoint it resumes."""
    run = config.run
    kind, found = read_resume(config.resume) if config.resume is not None else (None, None)
    weights, state = initial_weights(run), None
    if kind == "canonical":
        weights, state = found
        check_resumable(state, run, config.resume)
    session = open_session(
        config.framework, config.strategy, config.mesh, run.encoder, weights, run.adamw, state, run.precision
    )
    if kind == "sharded":
        assert config.resume is not None
        session.restore_sharded(config.resume)
    if session.steps_done >= config.last_step:
        from rosetta_common.parallel import PlanError

        raise PlanError(
            f"--resume {config.resume}: it is at step {session.steps_done}, nothing left before {config.last_step}"
        )
    return session


def check_resumable(state: OptimizerState, run: RunConfig, where: Path | None) -> None:
    from rosetta_common import WeightFormatError

    if state.config != run.encoder or state.adamw != run.adamw:
        raise WeightFormatError(
            f"--resume {where}: the checkpoint was written for another encoder or AdamW config than this run's"
        )


def train(
    config: FrameworkRun, out_dir: Path, is_writer: bool, on_step: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Run the steps left, write the files (rank 0: `is_writer`), return the summary. TrainingDiverged at the first
    non-finite loss (that step is not logged, no checkpoint is written)."""
    run = config.run
    session = start(config)  # every check done: only now is anything written
    if is_writer:
        out_dir.mkdir(parents=True, exist_ok=True)
    first = session.steps_done
    records, ms = [], []
    log_file = open(out_dir / "log.jsonl", "a" if first else "w") if is_writer else contextlib.nullcontext()  # noqa: SIM115
    began = time.perf_counter()
    with log_file as log:
        for step in range(first, config.last_step):
            tick = time.perf_counter()
            loss = session.step(run.task.batch(step))
            check_finite(step, {config.framework: loss}, first)  # every rank sees the same global loss
            ms.append(1e3 * (time.perf_counter() - tick))
            record = {"step": step, "loss": loss, "lr": run.adamw.learning_rate(step), "ms": ms[-1]}
            records.append(record)
            if log is not None:
                log.write(json.dumps(record) + "\n")
                log.flush()
            if on_step is not None:
                on_step(record)
    wall = time.perf_counter() - began
    weights, state = session.weights(), session.optimizer_state()  # gathered: every rank takes part
    accuracy = None
    if is_writer:
        save_training_state(out_dir / CHECKPOINT_FILE, weights, state)
        accuracy = held_out_accuracy(config, weights)
    if config.strategy is not None:
        session.save_sharded(out_dir / SHARDED_DIR)
    facts = session.describe(run.task.batch(0))
    return {
        "framework": config.framework,
        "strategy": config.strategy,
        "mesh": None if config.mesh is None else str(config.mesh),
        "dtype": run.dtype,
        "steps": run.steps,
        "stopped_at": config.last_step,
        "first_step": first,
        "resumed_from": None if config.resume is None else str(config.resume),
        "losses": [record["loss"] for record in records],
        "final_loss": records[-1]["loss"],
        "final_accuracy": accuracy,
        "wall_seconds": wall,
        "step_ms_median": float(np.median(ms[1:] if len(ms) > 1 else ms)),
        "first_step_ms": ms[0],
        "checkpoint": str(out_dir / CHECKPOINT_FILE),
        "sharded_checkpoint": None if config.strategy is None else str(out_dir / SHARDED_DIR),
        **facts,
    }


def held_out_accuracy(config: FrameworkRun, weights: dict[str, np.ndarray]) -> dict[str, float]:
    """Token and sequence accuracy of the gathered weights on the task's held-out batch (one device, the run's
    framework), as the side-by-side run reports it."""
    from rosetta_tools.sidebyside.lanes import new_lane
    from rosetta_tools.sidebyside.task import accuracy

    run = config.run
    lane = new_lane(config.framework, run.encoder, weights, run.adamw, run.precision)
    token_ids, targets, mask = run.task.eval_batch()
    tokens, sequences = accuracy(lane.predict(token_ids), targets, mask)
    return {"token": tokens, "sequence": sequences}
