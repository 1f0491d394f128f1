"""Optimizer-step parity: torch.optim.AdamW (+ LR schedulers, clip_grad_norm_) and optax.adamw (+ schedules,
clip_by_global_norm), each built from its own framework's tools by `rosetta_*.training`, take the same steps.

float64, 12 steps from the same weights on the same batches: after every step each parameter agrees within
1e-9 relative (max|diff| / max|param|; measured <= 2e-15) and the losses within 1e-12 relative (measured
<= 3e-16). `attn.k.bias` has an exactly-zero gradient (see test_gradients.py): AdamW turns its rounding
noise into steps of lr * noise / eps, so it is checked against its exact trajectory (weight decay alone)
in each framework instead of against the other framework's noise.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx
from test_gradients import has_zero_gradient

import rosetta_flax
import rosetta_torch
from rosetta_common import EncoderConfig
from rosetta_common.training import AdamWConfig
from rosetta_common.vectors import random_inputs, random_tensors
from rosetta_flax import training as flax_training
from rosetta_torch import training as torch_training

CONFIG = EncoderConfig(vocab_size=23, d_model=16, n_heads=4, n_layers=2, d_ff=32, dropout=0.0)
STEPS = 12
SEQ_LEN = 7  # every batch: 3 sequences of 7, so only attn.k.bias has an exactly-zero gradient
PARAM_BOUND = 1e-9
LOSS_BOUND = 1e-12

CONSTANT = AdamWConfig(lr=1e-2, weight_decay=0.1)
SCHEDULED = AdamWConfig(lr=1e-2, weight_decay=0.1, warmup_steps=3, total_steps=10, end_factor=0.1)
CLIPPED = AdamWConfig(lr=1e-2, weight_decay=0.1, warmup_steps=3, total_steps=10, end_factor=0.1, clip_norm=0.5)


def batches(config: EncoderConfig = CONFIG, steps: int = STEPS) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """`steps` batches (token ids, targets, loss mask) of 3 sequences of SEQ_LEN with 0, 2 and 4 padding tokens."""
    rng = np.random.default_rng(1)
    result = []
    for step in range(steps):
        token_ids, padding = random_inputs(config, SEQ_LEN, (0, 2, 4), seed=step)
        result.append((token_ids, rng.integers(0, config.vocab_size, token_ids.shape), ~padding))
    return result


def trainers(
    adamw: AdamWConfig, device: str, config: EncoderConfig = CONFIG
) -> tuple[torch_training.Trainer, flax_training.Trainer]:
    weights = random_tensors(config, seed=0)
    return (
        torch_training.Trainer(rosetta_torch.from_canonical(config, weights, device=device), adamw),
        flax_training.Trainer(rosetta_flax.from_canonical(config, weights), adamw),
    )


def canonical_copy(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """rosetta_torch.to_canonical returns views of the live parameters where no transpose is needed: copy."""
    return {name: value.copy() for name, value in rosetta_torch.to_canonical(model).items()}


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(a).max())


@pytest.mark.parametrize(
    "adamw",
    [
        CONSTANT,
        SCHEDULED,
        AdamWConfig(lr=3e-3, warmup_steps=4, warmup_start_factor=0.25),
        AdamWConfig(lr=3e-3, total_steps=9, end_factor=0.0),
    ],
    ids=["constant", "warmup_cosine", "warmup_only", "cosine_only"],
)
def test_schedules_follow_the_reference(adamw: AdamWConfig) -> None:
    """torch's LinearLR/CosineAnnealingLR/SequentialLR and optax's schedules give update t the rate
    `AdamWConfig.learning_rate(t)`, also past `total_steps` (both hold the end rate)."""
    holder = torch.nn.Module()
    holder.weight = param = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    optimizer = torch_training.build_optimizer(adamw, holder)
    scheduler = torch_training.build_schedule(adamw, optimizer)
    optax_schedule = flax_training.build_schedule(adamw, jnp.float64)
    reference = [adamw.learning_rate(step) for step in range(25)]
    for step, expected in enumerate(reference):
        torch_lr = optimizer.param_groups[0]["lr"]
        flax_lr = float(optax_schedule(jnp.asarray(step, jnp.int32))) if callable(optax_schedule) else optax_schedule
        assert torch_lr == pytest.approx(expected, rel=1e-14, abs=1e-18), step
        assert flax_lr == pytest.approx(expected, rel=1e-14, abs=1e-18), step
        param.grad = torch.ones_like(param)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    if adamw.has_schedule:  # not vacuous: the rate really changes
        assert max(reference) > 1.5 * min(reference)


def exact_decay_trajectory(start: np.ndarray, adamw: AdamWConfig, steps: int) -> np.ndarray:
    """A parameter with zero gradient under AdamW: p <- p (1 - lr_t wd), nothing else."""
    value = start.copy()
    for step in range(steps):
        value = value * (1.0 - adamw.learning_rate(step) * adamw.weight_decay)
    return value


def check_step_parity(torch_params: dict, flax_params: dict, start: dict, adamw: AdamWConfig, steps: int) -> None:
    for name, torch_value in torch_params.items():
        if has_zero_gradient(name, SEQ_LEN):
            exact = exact_decay_trajectory(start[name], adamw, steps)
            assert relative(exact, torch_value) <= PARAM_BOUND, f"torch {name} after {steps} steps"
            assert relative(exact, flax_params[name]) <= PARAM_BOUND, f"flax {name} after {steps} steps"
        else:
            assert relative(torch_value, flax_params[name]) <= PARAM_BOUND, f"{name} after {steps} steps"


@pytest.mark.parametrize("adamw", [CONSTANT, SCHEDULED], ids=["constant_lr", "warmup_cosine"])
def test_adamw_steps_agree(adamw: AdamWConfig, device: str) -> None:
    torch_trainer, flax_trainer = trainers(adamw, device)
    start = canonical_copy(torch_trainer.model)
    for step, batch in enumerate(batches(), start=1):
        assert torch_trainer.learning_rate() == pytest.approx(flax_trainer.learning_rate(), rel=1e-14)
        torch_loss, flax_loss = float(torch_trainer.step(*batch)), float(flax_trainer.step(*batch))
        assert abs(torch_loss - flax_loss) <= LOSS_BOUND * abs(torch_loss), f"loss at step {step}"
        torch_params = canonical_copy(torch_trainer.model)
        flax_params = flax_training.params_to_canonical(CONFIG, flax_trainer.params)
        check_step_parity(torch_params, flax_params, start, adamw, step)
    # Not vacuous: training moved every other parameter by far more than the bound.
    moved = [relative(start[name], torch_params[name]) for name in start if not has_zero_gradient(name, SEQ_LEN)]
    assert min(moved) > 1e3 * PARAM_BOUND
    # The padding row stays exactly zero: no gradient, and decay keeps zero at zero.
    for params in (torch_params, flax_params):
        assert np.all(params["embedding.weight"][CONFIG.padding_idx] == 0.0)


def test_adamw_matches_the_documented_update(device: str) -> None:
    """Three steps of both trainers against AdamWConfig's formula in NumPy, fed torch's canonical gradients."""
    adamw = SCHEDULED
    torch_trainer, flax_trainer = trainers(adamw, device)
    params = canonical_copy(torch_trainer.model)
    mu = {name: np.zeros_like(value) for name, value in params.items()}
    nu = {name: np.zeros_like(value) for name, value in params.items()}
    for step, batch in enumerate(batches(steps=3)):
        model = rosetta_torch.from_canonical(CONFIG, params, device=device)
        ids, targets, loss_mask = (torch.from_numpy(a).to(device) for a in batch)
        _, grads = torch_training.loss_and_gradients(model, ids, targets, loss_mask=loss_mask)
        lr, t = adamw.learning_rate(step), step + 1
        for name, grad in grads.items():
            mu[name] = adamw.b1 * mu[name] + (1 - adamw.b1) * grad
            nu[name] = adamw.b2 * nu[name] + (1 - adamw.b2) * grad**2
            adam = mu[name] / (1 - adamw.b1**t) / (np.sqrt(nu[name] / (1 - adamw.b2**t)) + adamw.eps)
            params[name] = params[name] - lr * (adam + adamw.weight_decay * params[name])
        torch_trainer.step(*batch)
        flax_trainer.step(*batch)
        for trainer_params in (
            canonical_copy(torch_trainer.model),
            flax_training.params_to_canonical(CONFIG, flax_trainer.params),
        ):
            for name, expected in params.items():
                if not has_zero_gradient(name, SEQ_LEN):
                    assert relative(expected, trainer_params[name]) <= PARAM_BOUND, f"{name} step {step}"


def clip_like_torch(max_norm: float) -> optax.GradientTransformation:
    """torch.nn.utils.clip_grad_norm_'s maths in optax: g * min(1, max_norm / (|g| + 1e-6))."""

    def update(updates, state, params=None):
        del params
        scale = jnp.minimum(max_norm / (optax.tree.norm(updates) + 1e-6), 1.0)
        return optax.tree.scale(scale, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def test_clipping_differs_only_by_torchs_epsilon(device: str) -> None:
    """clip_grad_norm_ scales by max/(|g| + 1e-6), optax.clip_by_global_norm by max/|g|: nothing else differs."""
    max_norm = 0.5
    weights = random_tensors(CONFIG, seed=0)
    token_ids, targets, loss_mask = batches(steps=1)[0]
    model = rosetta_torch.from_canonical(CONFIG, weights, device=device)
    model.zero_grad()
    loss = torch_training.sequence_loss(
        model,
        *(torch.from_numpy(a).to(device) for a in (token_ids, targets)),
        loss_mask=torch.from_numpy(loss_mask).to(device),
    )
    loss.backward()
    norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
    torch_clipped = torch_training.gradients_to_canonical(model)

    flax_model = rosetta_flax.from_canonical(CONFIG, weights)
    params = nnx.state(flax_model, nnx.Param)
    _, flax_grads = flax_training.loss_and_gradients(flax_model, token_ids, targets, loss_mask=loss_mask)
    grads_state = flax_training.params_from_canonical(CONFIG, params, flax_grads)
    optax_clipped, _ = optax.clip_by_global_norm(max_norm).update(grads_state, optax.EmptyState())
    optax_clipped = flax_training.params_to_canonical(CONFIG, optax_clipped)

    assert norm > 2 * max_norm  # clipping is active
    flax_norm = np.sqrt(sum(float((g**2).sum()) for g in flax_grads.values()))
    assert flax_norm == pytest.approx(norm, rel=1e-12)
    factor = norm / (norm + 1e-6)
    for name, clipped in torch_clipped.items():
        if not has_zero_gradient(name, SEQ_LEN):
            assert relative(optax_clipped[name] * factor, clipped) <= 1e-12, name
    compared = [n for n in torch_clipped if not has_zero_gradient(n, SEQ_LEN)]
    assert max(relative(optax_clipped[n], torch_clipped[n]) for n in compared) > 1e-8


def test_clipped_steps_agree(device: str) -> None:
    """12 clipped steps (clipping active at each), schedule on: torch's trainer and optax.adamw behind a clip
    with torch's epsilon agree to 1e-9; the production optax chain (clip_by_global_norm) stays within the
    1e-6 relative that torch's epsilon explains (measured 1.2e-8)."""
    adamw = CLIPPED
    torch_trainer, flax_trainer = trainers(adamw, device)
    start = canonical_copy(torch_trainer.model)
    flax_model = rosetta_flax.from_canonical(CONFIG, start)
    like_torch = optax.chain(
        clip_like_torch(adamw.clip_norm), flax_training.build_optimizer(adamw.replace(clip_norm=None), flax_model)
    )
    graphdef, params, rest = nnx.split(flax_model, nnx.Param, ...)
    step_fn, opt_state = flax_training.make_train_step(graphdef, like_torch), like_torch.init(params)
    for step, batch in enumerate(batches(), start=1):
        ids, targets, loss_mask = (torch.from_numpy(a).to(device) for a in batch)
        _, grads = torch_training.loss_and_gradients(torch_trainer.model, ids, targets, loss_mask=loss_mask)
        assert np.sqrt(sum(float((g**2).sum()) for g in grads.values())) > adamw.clip_norm
        torch_loss = float(torch_trainer.step(*batch))
        flax_loss = float(flax_trainer.step(*batch))
        params, rest, opt_state, like_torch_loss = step_fn(params, rest, opt_state, *map(jnp.asarray, batch))
        assert abs(torch_loss - float(like_torch_loss)) <= LOSS_BOUND * abs(torch_loss)
        assert abs(torch_loss - flax_loss) <= 1e-6 * abs(torch_loss)
        torch_params = canonical_copy(torch_trainer.model)
        check_step_parity(torch_params, flax_training.params_to_canonical(CONFIG, params), start, adamw, step)
        production = flax_training.params_to_canonical(CONFIG, flax_trainer.params)
        for name, value in torch_params.items():
            if not has_zero_gradient(name, SEQ_LEN):
                assert relative(value, production[name]) <= 1e-6, f"{name} after {step} steps"


MODERNBERT_LIKE = EncoderConfig(
    vocab_size=23, d_model=16, n_heads=2, n_layers=3, d_ff=12, dropout=0.0, padding_idx=0, activation="gelu",
    norm_first=True, scale_embedding=False, positions="rotary", embedding_norm=True, feed_forward="glu",
    attention_bias=False, mlp_bias=False, norm_bias=False, rope_theta=160000.0, local_rope_theta=10000.0,
    local_window=4, global_every=2, first_attention_norm=False,
)  # fmt: skip


def test_adamw_steps_agree_on_a_modernbert_config(device: str) -> None:
    """Rotary positions, a local layer between global ones, GeGLU, no biases: 6 AdamW steps, torch vs flax."""
    torch_trainer, flax_trainer = trainers(SCHEDULED, device, MODERNBERT_LIKE)
    start = canonical_copy(torch_trainer.model)
    for step, batch in enumerate(batches(MODERNBERT_LIKE, steps=6), start=1):
        torch_loss, flax_loss = float(torch_trainer.step(*batch)), float(flax_trainer.step(*batch))
        assert abs(torch_loss - flax_loss) <= LOSS_BOUND * abs(torch_loss), f"loss at step {step}"
        torch_params = canonical_copy(torch_trainer.model)
        flax_params = flax_training.params_to_canonical(MODERNBERT_LIKE, flax_trainer.params)
        for name, value in torch_params.items():
            assert relative(value, flax_params[name]) <= PARAM_BOUND, f"{name} after {step} steps"
    assert min(relative(start[name], torch_params[name]) for name in start) > 1e3 * PARAM_BOUND
