"""One framework's side of the training run behind one interface, and the hand-over between frameworks.

A lane holds a model and its AdamW trainer. `save(dir)` writes the canonical weights and the canonical
optimizer state (moments, step count); `load_lane(framework, dir)` continues from such a folder in either
framework: this is how a run switches framework mid-way. Each lane is a thin face over its framework
package's public training API (`rosetta_torch.training` / `rosetta_flax.training`, which mirror each other);
the frameworks are imported when a lane is built, so a run needs only the one it uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from rosetta_common import EncoderConfig
from rosetta_common.precision import Precision
from rosetta_common.training import AdamWConfig, OptimizerState, load_optimizer_state, save_optimizer_state
from rosetta_tools.sidebyside.task import Batch, batch_parts

if TYPE_CHECKING:
    import rosetta_flax
    import rosetta_flax.training
    import rosetta_torch
    import rosetta_torch.training

FRAMEWORKS = ("torch", "flax")
WEIGHTS_FILE, OPTIMIZER_FILE = "weights.safetensors", "optimizer.safetensors"


class Lane(Protocol):
    framework: str

    def step(self, batch: Batch) -> float:
        """One update; the loss before it (returning it waits for the step to finish)."""

    def loss(self, batch: Batch) -> float:
        """The loss at the current weights, without an update."""

    def predict(self, token_ids: np.ndarray) -> np.ndarray: ...
    def save(self, directory: Path) -> None: ...
    def load_optimizer_state(self, state: OptimizerState) -> None: ...


class TorchLane:
    """rosetta_torch: eager autograd, torch.optim.AdamW, torch LR schedulers, clip_grad_norm_."""

    framework = "torch"

    def __init__(self, model: rosetta_torch.Encoder, adamw: AdamWConfig) -> None:
        from rosetta_torch.training import Trainer

        self.trainer: rosetta_torch.training.Trainer = Trainer(model, adamw)

    def step(self, batch: Batch) -> float:
        token_ids, targets, loss_mask, segments = batch_parts(batch)
        return float(self.trainer.step(token_ids, targets, loss_mask, segment_ids=segments))  # float() synchronises

    def loss(self, batch: Batch) -> float:
        import torch

        from rosetta_torch.training import evaluate_loss

        model = self.trainer.model
        device = model.embedding.weight.device
        token_ids, targets, loss_mask, segments = (
            None if array is None else torch.from_numpy(array).to(device) for array in batch_parts(batch)
        )
        return evaluate_loss(model.train(), token_ids, targets, loss_mask=loss_mask, segment_ids=segments)

    def predict(self, token_ids: np.ndarray) -> np.ndarray:
        import torch

        from rosetta_torch.training import predict

        model = self.trainer.model
        model.eval()
        try:
            ids = torch.from_numpy(token_ids).to(model.embedding.weight.device)
            return predict(model, ids).cpu().numpy()
        finally:
            model.train()

    def save(self, directory: Path) -> None:
        import rosetta_torch

        rosetta_torch.save(self.trainer.model, directory / WEIGHTS_FILE)
        save_optimizer_state(directory / OPTIMIZER_FILE, self.trainer.optimizer_state())

    def load_optimizer_state(self, state: OptimizerState) -> None:
        self.trainer.load_optimizer_state(state)


class FlaxLane:
    """rosetta_flax: jax.jit over the nnx.split state, optax.adamw, optax schedules, clip_by_global_norm."""

    framework = "flax"

    def __init__(self, model: rosetta_flax.Encoder, adamw: AdamWConfig) -> None:
        from rosetta_flax.training import Trainer

        self.trainer: rosetta_flax.training.Trainer = Trainer(model, adamw)

    def step(self, batch: Batch) -> float:
        token_ids, targets, loss_mask, segments = batch_parts(batch)
        return float(self.trainer.step(token_ids, targets, loss_mask, segment_ids=segments))  # float() waits

    def loss(self, batch: Batch) -> float:
        from rosetta_flax.training import evaluate_loss

        token_ids, targets, loss_mask, segments = batch_parts(batch)
        return evaluate_loss(self.trainer.model, token_ids, targets, loss_mask=loss_mask, segment_ids=segments)

    def predict(self, token_ids: np.ndarray) -> np.ndarray:
        from rosetta_flax.training import predict

        model = self.trainer.model
        model.eval()
        return np.asarray(predict(model, token_ids))

    def save(self, directory: Path) -> None:
        import rosetta_flax

        rosetta_flax.save(self.trainer.model, directory / WEIGHTS_FILE)
        save_optimizer_state(directory / OPTIMIZER_FILE, self.trainer.optimizer_state())

    def load_optimizer_state(self, state: OptimizerState) -> None:
        self.trainer.load_optimizer_state(state)


def new_lane(
    framework: str,
    config: EncoderConfig,
    weights: dict[str, np.ndarray],
    adamw: AdamWConfig,
    precision: Precision | None = None,
) -> Lane:
    """A lane in `framework` starting from canonical `weights` (their dtype is the model's, or `precision`'s)."""
    if framework == "torch":
        import rosetta_torch

        return TorchLane(rosetta_torch.from_canonical(config, weights, precision=precision), adamw)
    import rosetta_flax

    return FlaxLane(rosetta_flax.from_canonical(config, weights, precision=precision), adamw)


def load_lane(framework: str, directory: Path, precision: Precision | None = None) -> Lane:
    """Continue, in `framework`, the run saved in `directory` by either framework (under `precision`, as it ran)."""
    state = load_optimizer_state(directory / OPTIMIZER_FILE)
    if framework == "torch":
        import rosetta_torch

        lane: Lane = TorchLane(rosetta_torch.load(directory / WEIGHTS_FILE, precision=precision), state.adamw)
    else:
        import rosetta_flax

        lane = FlaxLane(rosetta_flax.load(directory / WEIGHTS_FILE, precision=precision), state.adamw)
    lane.load_optimizer_state(state)
    return lane
