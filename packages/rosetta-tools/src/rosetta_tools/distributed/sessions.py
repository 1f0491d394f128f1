"""One framework's training behind one face, on one device or on a mesh.

`open_session(framework, strategy, mesh, config, weights, adamw, state)` starts from canonical weights (and an
optimizer state, to resume); `step(batch)` takes the global batch and returns the global mean loss before the
update; `weights()` and `optimizer_state()` give them back gathered and canonical (in torch every rank must call
them: gathering is a collective). Strategy None is the framework's plain single-device Trainer, the reference
every sharded run is compared with.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rosetta_common import EncoderConfig
from rosetta_common.parallel import Mesh
from rosetta_common.precision import Precision
from rosetta_common.training import AdamWConfig, OptimizerState
from rosetta_tools.sidebyside.task import Batch, batch_parts


class Session(Protocol):
    framework: str
    strategy: str | None

    @property
    def steps_done(self) -> int: ...
    def step(self, batch: Batch) -> float: ...
    def weights(self) -> dict[str, np.ndarray]: ...
    def optimizer_state(self) -> OptimizerState: ...
    def save_sharded(self, directory: Path) -> None: ...
    def restore_sharded(self, directory: Path) -> None: ...
    def describe(self, batch: Batch) -> dict[str, Any]: ...


class SingleDevice:
    """The framework's own `Trainer` (rosetta_torch.training / rosetta_flax.training) on one device."""

    strategy = None

    def __init__(self, framework: str, trainer: Any) -> None:
        self.framework, self.trainer = framework, trainer

    @property
    def steps_done(self) -> int:
        return self.trainer.steps_done

    def step(self, batch: Batch) -> float:
        token_ids, targets, loss_mask, segment_ids = batch_parts(batch)
        return float(self.trainer.step(token_ids, targets, loss_mask, segment_ids=segment_ids))

    def weights(self) -> dict[str, np.ndarray]:
        if self.framework == "torch":
            import rosetta_torch

            return rosetta_torch.to_canonical(self.trainer.model)
        from rosetta_flax.training import params_to_canonical

        return params_to_canonical(self.trainer.config, self.trainer.params)

    def optimizer_state(self) -> OptimizerState:
        return self.trainer.optimizer_state()

    def save_sharded(self, directory: Path) -> None:
        raise ValueError("a single-device run has no sharded checkpoint (its canonical checkpoint is the whole state)")

    def restore_sharded(self, directory: Path) -> None:
        raise ValueError("a sharded checkpoint resumes on a mesh (--parallel, --mesh)")

    def describe(self, batch: Batch) -> dict[str, Any]:
        return {"devices": 1}


class OnMesh:
    """The framework's `parallel.ParallelTrainer` on a mesh, with its sharded checkpoints."""

    def __init__(self, framework: str, strategy: str, trainer: Any, module: Any) -> None:
        self.framework, self.strategy, self.trainer, self.module = framework, strategy, trainer, module

    @property
    def steps_done(self) -> int:
        return self.trainer.steps_done

    def step(self, batch: Batch) -> float:
        return self.trainer.step(*batch_parts(batch))

    def weights(self) -> dict[str, np.ndarray]:
        return self.trainer.weights()

    def optimizer_state(self) -> OptimizerState:
        return self.trainer.optimizer_state()

    def save_sharded(self, directory: Path) -> None:
        self.module.save_sharded(self.trainer, directory)

    def restore_sharded(self, directory: Path) -> None:
        self.module.restore_sharded(self.trainer, directory)

    def describe(self, batch: Batch) -> dict[str, Any]:
        """The layout as the engine holds it, and (JAX) the collectives of the compiled step."""
        facts: dict[str, Any] = {"placements": self.trainer.placements()}
        if self.framework == "flax":
            from rosetta_flax.parallel import collectives

            facts["collectives"] = collectives(self.trainer.compiled_text(*batch_parts(batch)))
        return facts


def torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def open_session(
    framework: str,
    strategy: str | None,
    mesh: Mesh | None,
    config: EncoderConfig,
    weights: dict[str, np.ndarray],
    adamw: AdamWConfig,
    state: OptimizerState | None = None,
    precision: Precision | None = None,
) -> Session:
    """A session in `framework` from canonical `weights` (resuming `state` when given)."""
    session: Session
    if framework == "torch":
        import rosetta_torch

        device = None
        if strategy is not None and torch_cuda():  # one GPU per process, as torchrun's LOCAL_RANK says
            device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
        model = rosetta_torch.from_canonical(config, weights, precision=precision, device=device)
        if strategy is None:
            from rosetta_torch.training import Trainer

            session = SingleDevice("torch", Trainer(model, adamw))
        else:
            from rosetta_torch import parallel

            assert mesh is not None
            session = OnMesh(
                "torch",
                strategy,
                parallel.ParallelTrainer(model, adamw, strategy, parallel.device_mesh(mesh)),
                parallel,
            )
    else:
        import rosetta_flax

        model = rosetta_flax.from_canonical(config, weights, precision=precision)
        if strategy is None:
            from rosetta_flax.training import Trainer

            session = SingleDevice("flax", Trainer(model, adamw))
        else:
            from rosetta_flax import parallel

            assert mesh is not None
            session = OnMesh(
                "flax", strategy, parallel.ParallelTrainer(model, adamw, strategy, parallel.device_mesh(mesh)), parallel
            )
    if state is not None:
        session.trainer.load_optimizer_state(state)  # type: ignore[attr-defined]
    return session
