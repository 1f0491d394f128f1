"""Training in PyTorch: tied-head loss, AdamW + schedule from torch's own tools, a train step, canonical views.

Mirrors `rosetta_flax.training`. Everything leaving this module is canonical (names, `[in, out]` kernels,
NumPy arrays), so gradients and optimizer state compare and cross frameworks like the weights do.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim import lr_scheduler

from rosetta_common import EncoderConfig
from rosetta_common.training import AdamWConfig, OptimizerState
from rosetta_torch.convert import canonical_to_parameters, parameters_to_canonical
from rosetta_torch.encoder import Encoder


def token_logits(model: Encoder, hidden: torch.Tensor) -> torch.Tensor:
    """The head tied to the token embedding: hidden `[B, S, D]` -> logits `[B, S, V]` = hidden @ embedding.T.

    The padding row is held out of the head's gradient, so it stays zero (its logit is 0) as common/DESIGN.md asks.
    """
    weight = model.embedding.weight
    padding_idx = model.config.padding_idx
    if padding_idx is not None:
        is_padding_row = torch.arange(weight.shape[0], device=weight.device)[:, None] == padding_idx
        weight = torch.where(is_padding_row, weight.detach(), weight)
    return hidden @ weight.T


def sequence_loss(
    model: Encoder,
    token_ids: torch.Tensor,
    targets: torch.Tensor,
    padding_mask: torch.Tensor | None = None,
    loss_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of the tied-head logits against `targets` int `[B, S]` over the counted positions.

    `loss_mask` bool `[B, S]` (True = counted) defaults to the positions that are not padding.
    """
    padding_mask = model.padding_mask_for(token_ids, padding_mask)
    if loss_mask is None:
        loss_mask = ~padding_mask
    logits = token_logits(model, model(token_ids, padding_mask))
    per_token = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # [B, S]
    weights = loss_mask.to(per_token.dtype)
    return (per_token * weights).sum() / weights.sum().clamp_min(1.0)


def predict(model: Encoder, token_ids: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The most likely token at every position, int `[B, S]` (in the model's current train/eval mode)."""
    with torch.no_grad():
        return token_logits(model, model(token_ids, padding_mask)).argmax(dim=-1)


def gradients_to_canonical(model: Encoder) -> dict[str, np.ndarray]:
    """The `.grad` of every parameter in canonical names and layout (zeros where there is none)."""
    return parameters_to_canonical(model, lambda param: torch.zeros_like(param) if param.grad is None else param.grad)


def evaluate_loss(
    model: Encoder,
    token_ids: torch.Tensor,
    targets: torch.Tensor,
    padding_mask: torch.Tensor | None = None,
    loss_mask: torch.Tensor | None = None,
) -> float:
    """`sequence_loss` at the model's weights, without gradients."""
    with torch.no_grad():
        return float(sequence_loss(model, token_ids, targets, padding_mask, loss_mask))


def loss_and_gradients(
    model: Encoder,
    token_ids: torch.Tensor,
    targets: torch.Tensor,
    padding_mask: torch.Tensor | None = None,
    loss_mask: torch.Tensor | None = None,
) -> tuple[float, dict[str, np.ndarray]]:
    """`sequence_loss` and its gradient w.r.t. every parameter (canonical), by autograd. Clears `.grad` first."""
    model.zero_grad(set_to_none=True)
    loss = sequence_loss(model, token_ids, targets, padding_mask, loss_mask)
    loss.backward()
    grads = gradients_to_canonical(model)
    model.zero_grad(set_to_none=True)
    return float(loss.detach()), grads


def build_optimizer(model: Encoder, adamw: AdamWConfig) -> torch.optim.AdamW:
    """`torch.optim.AdamW` with the config's maths: decay p <- p (1 - lr wd), eps outside the square root."""
    return torch.optim.AdamW(
        model.parameters(), lr=adamw.lr, betas=(adamw.b1, adamw.b2), eps=adamw.eps, weight_decay=adamw.weight_decay
    )


def build_schedule(optimizer: torch.optim.Optimizer, adamw: AdamWConfig) -> lr_scheduler.LRScheduler | None:
    """Linear warm-up (`LinearLR`), cosine decay (`CosineAnnealingLR`), then a constant tail, in `SequentialLR`.

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


class Trainer:
    """Trains an Encoder in place with AdamW: `step(token_ids, targets, loss_mask) -> loss before the update`.

    Batches are NumPy or torch int `[B, S]` (ids, targets) and bool `[B, S]` (loss mask, True = counted);
    the padding mask follows `padding_idx`. The step is eager autograd.
    """

    def __init__(self, model: Encoder, adamw: AdamWConfig) -> None:
        self.model, self.adamw = model, adamw
        self.optimizer = build_optimizer(model, adamw)
        self.scheduler = build_schedule(self.optimizer, adamw)
        self.steps_done = 0

    @property
    def config(self) -> EncoderConfig:
        return self.model.config

    def _tensor(self, array, dtype: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(array, dtype=dtype, device=self.model.embedding.weight.device)

    def step(self, token_ids, targets, loss_mask) -> torch.Tensor:
        """One update on one batch; returns the loss at the parameters before it (a detached scalar)."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        token_ids, targets = self._tensor(token_ids, torch.int64), self._tensor(targets, torch.int64)
        loss = sequence_loss(self.model, token_ids, targets, loss_mask=self._tensor(loss_mask, torch.bool))
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
        if state.config != self.config or state.adamw != self.adamw:
            raise ValueError("the optimizer state was written for another encoder config or AdamW config")
        mu, nu = canonical_to_parameters(self.model, state.mu), canonical_to_parameters(self.model, state.nu)
        for name, param in self.model.named_parameters():
            self.optimizer.state[param] = {
                "step": torch.tensor(float(state.step), dtype=_step_dtype()),
                "exp_avg": mu[name].to(dtype=param.dtype, device=param.device),
                "exp_avg_sq": nu[name].to(dtype=param.dtype, device=param.device),
            }
        for group in self.optimizer.param_groups:  # a fresh schedule, advanced to the state's step
            group["lr"] = group.pop("initial_lr", group["lr"])
        self.scheduler = build_schedule(self.optimizer, self.adamw)
        if self.scheduler is not None:
            with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()": intended here
                warnings.simplefilter("ignore", UserWarning)
                for _ in range(state.step):
                    self.scheduler.step()
        self.steps_done = state.step


def _step_dtype() -> torch.dtype:
    """The dtype AdamW keeps its step count in (a CPU scalar): float64 if that is torch's default, else float32."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
