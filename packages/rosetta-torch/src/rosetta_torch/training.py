"""Training in PyTorch: tied-head loss, AdamW + schedule from torch's own tools, a train step, canonical views.

Mirrors `rosetta_flax.training`. Everything leaving this module is canonical (names, `[in, out]` kernels,
NumPy arrays), so gradients and optimizer state compare and cross frameworks like the weights do.

The public functions have the same names, parameters and order in both modules:

    token_logits(model, hidden)
    sequence_loss(model, token_ids, targets, padding_mask=None, loss_mask=None, *, token_type_ids=None,
                  segment_ids=None, denominator=None)
    predict(model, token_ids, padding_mask=None, *, token_type_ids=None, segment_ids=None)
    evaluate_loss(model, token_ids, targets, padding_mask=None, loss_mask=None, *, token_type_ids=None,
                  segment_ids=None) -> float
    loss_and_gradients(model, token_ids, targets, padding_mask=None, loss_mask=None, *, token_type_ids=None,
                       segment_ids=None) -> (float, canonical grads)
    gradients_to_canonical(model, grads) -> canonical grads
    build_optimizer(adamw, model)
    build_schedule(adamw, <the framework's second argument>)
    Trainer(model, adamw): step(token_ids, targets, loss_mask, *, token_type_ids=None,
                           segment_ids=None), learning_rate(),
                           optimizer_state(), load_optimizer_state(state)

`token_type_ids` int `[B, S]` (configs with token types; default all 0) and `segment_ids` int `[B, S]` (packed
rows, `rosetta_common.packing`) go to the model. The loss reads the
encoder output only: a pooler's parameters get zero gradients from it.

Where the frameworks differ, by necessity:
- `gradients_to_canonical(model, grads=None)`: `grads` maps parameter names (`model.named_parameters()`) to
  tensors, e.g. from `torch.autograd.grad`; None (the default) reads each parameter's `.grad`. (rosetta_flax's
  `grads` is the State `jax.grad` returned, and required: NNX parameters hold no gradient.)
- `build_schedule(adamw, optimizer)`: torch's LR schedulers drive an optimizer, so the second argument is the
  optimizer `build_optimizer` returned; the scheduler is stepped after each update. (rosetta_flax's is the
  dtype the optax schedule computes in, as its schedule lives inside the optimizer.)
- The objects returned are torch's own: `torch.optim.AdamW`, an `LRScheduler` (or None), tensors.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim import lr_scheduler

from rosetta_common import EncoderConfig
from rosetta_common.training import AdamWConfig, OptimizerState
from rosetta_torch.convert import canonical_to_parameters, parameters_to_canonical
from rosetta_torch.encoder import Encoder

ArrayLike = np.ndarray | torch.Tensor  # a batch: NumPy or torch


def token_logits(model: Encoder, hidden: torch.Tensor) -> torch.Tensor:
    """The head tied to the token embedding: hidden `[B, S, D]` -> logits `[B, S, V]` = hidden @ embedding.T.

    The padding row is held out of the head's gradient, so it stays zero (its logit is 0) as common/DESIGN.md asks.
    Under a precision policy the operands are the compute dtype's values and the logits float32 (the loss is a
    float32 island).
    """
    weight = model.embedding.weight
    padding_idx = model.config.padding_idx
    if padding_idx is not None:
        is_padding_row = torch.arange(weight.shape[0], device=weight.device)[:, None] == padding_idx
        weight = torch.where(is_padding_row, weight.detach(), weight)
    compute = model.compute
    return compute.widen(hidden) @ compute.widen(compute.weight(weight)).T


def sequence_loss(
    model: Encoder,
    token_ids: torch.Tensor,
    targets: torch.Tensor,
    padding_mask: torch.Tensor | None = None,
    loss_mask: torch.Tensor | None = None,
    *,
    token_type_ids: torch.Tensor | None = None,
    segment_ids: torch.Tensor | None = None,
    denominator: float | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of the tied-head logits against `targets` int `[B, S]` over the counted positions.

    `loss_mask` bool `[B, S]` (True = counted) defaults to the positions that are not padding; `segment_ids`: packed
    rows (the model's keyword; padding where it is 0). `denominator`: the
    count to divide the summed loss by (default: the counted positions of this batch; a data-parallel shard passes
    the global batch's, so that the shards' losses sum to the global mean).
    """
    padding_mask = model.padding_mask_for(
        token_ids, padding_mask, token_type_ids=token_type_ids, segment_ids=segment_ids
    )
    if loss_mask is None:
        loss_mask = ~padding_mask
    hidden = model(token_ids, padding_mask, token_type_ids=token_type_ids, segment_ids=segment_ids)
    logits = token_logits(model, hidden)
    per_token = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # [B, S]
    weights = loss_mask.to(per_token.dtype)
    return (per_token * weights).sum() / (weights.sum().clamp_min(1.0) if denominator is None else denominator)


def predict(
    model: Encoder,
    token_ids: torch.Tensor,
    padding_mask: torch.Tensor | None = None,
    *,
    token_type_ids: torch.Tensor | None = None,
    segment_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """The most likely token at every position, int `[B, S]` (in the model's current train/eval mode)."""
    with torch.no_grad():
        hidden = model(token_ids, padding_mask, token_type_ids=token_type_ids, segment_ids=segment_ids)
        return token_logits(model, hidden).argmax(dim=-1)


def gradients_to_canonical(
    model: Encoder, grads: Mapping[str, torch.Tensor | None] | None = None
) -> dict[str, np.ndarray]:
    """The gradient of every parameter in canonical names and layout (zeros where there is none).

    `grads` maps the model's parameter names to gradients (e.g. `torch.autograd.grad` zipped with
    `model.named_parameters()`); None reads each parameter's `.grad`.
    """
    if grads is None:
        by_parameter = {param: param.grad for param in model.parameters()}
    else:
        by_parameter = {param: grads.get(name) for name, param in model.named_parameters()}

    def read(param: torch.nn.Parameter) -> torch.Tensor:
        grad = by_parameter[param]
        return torch.zeros_like(param) if grad is None else grad

    return parameters_to_canonical(model, read)


def evaluate_loss(
    model: Encoder,
    token_ids: torch.Tensor,
    targets: torch.Tensor,
    padding_mask: torch.Tensor | None = None,
    loss_mask: torch.Tensor | None = None,
    *,
    token_type_ids: torch.Tensor | None = None,
    segment_ids: torch.Tensor | None = None,
) -> float:
    """`sequence_loss` at the model's weights, without gradients."""
    with torch.no_grad():
        loss = sequence_loss(
            model, token_ids, targets, padding_mask, loss_mask, token_type_ids=token_type_ids, segment_ids=segment_ids
        )
        return float(loss)


def loss_and_gradients(
    model: Encoder,
    token_ids: torch.Tensor,
    targets: torch.Tensor,
    padding_mask: torch.Tensor | None = None,
    loss_mask: torch.Tensor | None = None,
    *,
    token_type_ids: torch.Tensor | None = None,
    segment_ids: torch.Tensor | None = None,
) -> tuple[float, dict[str, np.ndarray]]:
    """`sequence_loss` and its gradient w.r.t. every parameter (canonical), by autograd. Clears `.grad` first."""
    model.zero_grad(set_to_none=True)
    loss = sequence_loss(
        model, token_ids, targets, padding_mask, loss_mask, token_type_ids=token_type_ids, segment_ids=segment_ids
    )
    loss.backward()
    grads = gradients_to_canonical(model)
    model.zero_grad(set_to_none=True)
    return float(loss.detach()), grads


def build_optimizer(adamw: AdamWConfig, model: torch.nn.Module, *, foreach: bool | None = None) -> torch.optim.AdamW:
    """`torch.optim.AdamW` over `model`'s parameters with the config's maths: decay p <- p (1 - lr wd), eps
    outside the square root. Clipping (`clip_norm`) is not part of it: `Trainer.step` clips before the update.
    `foreach` as torch's (None: its default; `rosetta_torch.parallel` needs False where DTensors and plain
    tensors mix)."""
    return torch.optim.AdamW(
        model.parameters(),
        lr=adamw.lr,
        betas=(adamw.b1, adamw.b2),
        eps=adamw.eps,
        weight_decay=adamw.weight_decay,
        foreach=foreach,
    )


def build_schedule(adamw: AdamWConfig, optimizer: torch.optim.Optimizer) -> lr_scheduler.LRScheduler | None:
    """Linear warm-up (`LinearLR`), cosine decay (`CosineAnnealingLR`), then a constant tail, in `SequentialLR`,
    driving `optimizer` (the one `build_optimizer` returned).

    Call `scheduler.step()` after each `optimizer.step()`: update t then uses `adamw.learning_rate(t)`.
    None when the config has no schedule. The constant tail keeps the rate at `end_factor * lr` after
    `total_steps` (CosineAnnealingLR alone would rise again).
    """
    if not adamw.has_schedule:
        return None
    pieces: list[lr_scheduler.LRScheduler] = []
    milestones: list[int] = []
    if adamw.warmup_steps:
        pieces.append(lr_scheduler.LinearLR(optimizer, adamw.warmup_start_factor, 1.0, total_iters=adamw.warmup_steps))
    if adamw.total_steps is not None:
        if pieces:
            milestones.append(adamw.warmup_steps)
        end_factor = adamw.end_factor
        pieces.append(
            lr_scheduler.CosineAnnealingLR(
                optimizer, T_max=adamw.total_steps - adamw.warmup_steps, eta_min=end_factor * adamw.lr
            )
        )
        milestones.append(adamw.total_steps)
        pieces.append(lr_scheduler.LambdaLR(optimizer, lambda _: end_factor))
    if len(pieces) == 1:
        return pieces[0]
    return lr_scheduler.SequentialLR(optimizer, pieces, milestones=milestones)


def restart_schedule(
    adamw: AdamWConfig, optimizer: torch.optim.Optimizer, step: int
) -> lr_scheduler.LRScheduler | None:
    """A fresh `build_schedule` for `optimizer`, advanced to update `step` (resuming a run): the rate the next
    update uses is `adamw.learning_rate(step)`."""
    for group in optimizer.param_groups:
        group["lr"] = group.pop("initial_lr", group["lr"])
    scheduler = build_schedule(adamw, optimizer)
    if scheduler is not None:
        with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()": intended here
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(step):
                scheduler.step()
    return scheduler


class Trainer:
    """Trains an Encoder in place with AdamW: `step(token_ids, targets, loss_mask) -> loss before the update`.

    Batches are NumPy or torch int `[B, S]` (ids, targets, token type ids when given) and bool `[B, S]` (loss
    mask, True = counted); the padding mask follows `padding_idx`. The step is eager autograd.
    """

    def __init__(self, model: Encoder, adamw: AdamWConfig) -> None:
        self.model, self.adamw = model, adamw
        self.optimizer = build_optimizer(adamw, model)
        self.scheduler = build_schedule(adamw, self.optimizer)
        self.steps_done = 0

    @property
    def config(self) -> EncoderConfig:
        return self.model.config

    def _tensor(self, array: ArrayLike, dtype: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(array, dtype=dtype, device=self.model.embedding.weight.device)

    def step(
        self,
        token_ids: ArrayLike,
        targets: ArrayLike,
        loss_mask: ArrayLike,
        *,
        token_type_ids: ArrayLike | None = None,
        segment_ids: ArrayLike | None = None,
    ) -> torch.Tensor:
        """One update on one batch; returns the loss at the parameters before it (a detached scalar).
        `segment_ids`: packed rows (`rosetta_common.packing`)."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        token_ids, targets = self._tensor(token_ids, torch.int64), self._tensor(targets, torch.int64)
        types = None if token_type_ids is None else self._tensor(token_type_ids, torch.int64)
        loss_mask = self._tensor(loss_mask, torch.bool)
        segments = None if segment_ids is None else self._tensor(segment_ids, torch.int64)
        loss = sequence_loss(
            self.model, token_ids, targets, loss_mask=loss_mask, token_type_ids=types, segment_ids=segments
        )
        loss.backward()
        if self.adamw.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.adamw.clip_norm)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.steps_done += 1
        return loss.detach()

    def learning_rate(self) -> float:
        """The rate the next update will use."""
        return float(self.optimizer.param_groups[0]["lr"])

    def optimizer_state(self) -> OptimizerState:
        """AdamW's moments in canonical names and layout (zeros before the first step) and the step count."""

        def moment(key: str) -> dict[str, np.ndarray]:
            return parameters_to_canonical(
                self.model, lambda param: self.optimizer.state.get(param, {}).get(key, torch.zeros_like(param))
            )

        mu, nu = moment("exp_avg"), moment("exp_avg_sq")
        return OptimizerState(self.config, self.adamw, self.steps_done, mu, nu)

    def load_optimizer_state(self, state: OptimizerState) -> None:
        """Continue from `state` (e.g. written by the other framework): moments, step count and schedule."""
        state.check_fits(self.config, self.adamw)
        mu, nu = canonical_to_parameters(self.model, state.mu), canonical_to_parameters(self.model, state.nu)
        for name, param in self.model.named_parameters():
            self.optimizer.state[param] = {
                "step": torch.tensor(float(state.step), dtype=_step_dtype()),
                "exp_avg": mu[name].to(dtype=param.dtype, device=param.device),
                "exp_avg_sq": nu[name].to(dtype=param.dtype, device=param.device),
            }
        self.scheduler = restart_schedule(self.adamw, self.optimizer, state.step)
        self.steps_done = state.step


def _step_dtype() -> torch.dtype:
    """The dtype AdamW keeps its step count in (a CPU scalar): float64 if that is torch's default, else float32."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
