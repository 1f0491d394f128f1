"""Gradient parity: torch autograd and `jax.grad` through the NNX model give the same gradient for every
parameter (compared in canonical names), and both agree with finite differences of the float64 oracle.

Relative difference per parameter = max|g_torch - g_flax| / max|g_torch|.
Bounds: float64 1e-10 (common/DESIGN.md; measured <= 4e-15); float32 1e-5 (measured <= 2.6e-6 over the stored
vectors x 6 random weight draws; the float32 unit roundoff is 6e-8, so this is ~40 roundoffs of headroom
over the worst seen and still 5 orders of magnitude below a real bug).

Some gradients are exactly zero in exact arithmetic, and both frameworks return rounding noise there (which
noise depends on the CPU's kernels: torch's AVX2 softmax backward gives ~1e-17, its AVX-512 one 0). They are
asserted to be noise (relative to the largest gradient) instead of comparing noise with noise:
- `layers.{i}.attn.k.bias`, always: softmax is invariant to adding the same score to every key, and q.b_k is
  the same for every key;
- the query and key projections (`attn.q.*`, `attn.k.kernel`) when every sequence has length 1: a softmax
  over one key is the constant 1, whatever the score;
- the pooler (`pooler.*`, bert_front and roberta_front): the training loss reads the encoder output only (its
  gradients through the pooler are tests/test_embedding_front.py's).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch

import rosetta_flax
import rosetta_torch
from rosetta_common import EncoderConfig, encoder_forward, tolerances
from rosetta_common.vectors import Vector, random_inputs, random_tensors
from rosetta_flax import training as flax_training
from rosetta_torch import training as torch_training

RELATIVE_BOUND = {np.float64: tolerances.GRADIENT_FLOAT64_RELATIVE, np.float32: 1e-5}
# max |grad| over the exactly-zero gradients / max |grad| over all params
ZERO_GRADIENT_NOISE = {np.float64: 1e-14, np.float32: 1e-6}


def has_zero_gradient(name: str, seq_len: int) -> bool:
    """True for a parameter whose gradient is exactly zero in exact arithmetic (see the module docstring)."""
    if name.endswith(".attn.k.bias") or name.startswith("pooler."):
        return True
    return seq_len == 1 and name.endswith((".attn.q.kernel", ".attn.q.bias", ".attn.k.kernel"))


def relative_differences(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray], seq_len: int) -> dict[str, float]:
    """max|a - b| / max|a| per parameter, except the zero gradients; a zero `a` needs `b` zero."""
    result = {}
    for name, a in ours.items():
        if has_zero_gradient(name, seq_len):
            continue
        scale = float(np.abs(a).max())
        diff = float(np.abs(a - theirs[name]).max())
        result[name] = diff / scale if scale > 0 else (0.0 if diff == 0 else math.inf)
    return result


def both_gradients(
    config: EncoderConfig,
    weights: dict[str, np.ndarray],
    token_ids: np.ndarray,
    targets: np.ndarray,
    padding_mask: np.ndarray | None,
    device: str,
    token_type_ids: np.ndarray | None = None,
) -> tuple[tuple[float, dict], tuple[float, dict]]:
    """(loss, canonical gradients) from torch and from flax for the same weights and batch."""
    torch_model = rosetta_torch.from_canonical(config, weights, device=device)
    flax_model = rosetta_flax.from_canonical(config, weights)

    def to_torch(array: np.ndarray | None) -> torch.Tensor | None:
        return None if array is None else torch.from_numpy(array).to(device)

    torch_result = torch_training.loss_and_gradients(
        torch_model,
        to_torch(token_ids),
        to_torch(targets),
        to_torch(padding_mask),
        token_type_ids=to_torch(token_type_ids),
    )
    flax_result = flax_training.loss_and_gradients(
        flax_model, token_ids, targets, padding_mask, token_type_ids=token_type_ids
    )
    return torch_result, flax_result


def targets_for(config: EncoderConfig, token_ids: np.ndarray, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, config.vocab_size, token_ids.shape)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_gradients_agree_on_every_vector(vector: Vector, dtype, device: str) -> None:
    """The stored vectors cover post/pre-norm, relu/gelu/gelu_tanh, padding_idx None, padding and all-padding,
    BERT's and RoBERTa's embedding fronts (learned positions, token types, embedding LayerNorm)."""
    weights = {name: value.astype(dtype) for name, value in vector.weights.items()}
    targets = targets_for(vector.config, vector.token_ids)
    (torch_loss, torch_grads), (flax_loss, flax_grads) = both_gradients(
        vector.config, weights, vector.token_ids, targets, vector.padding_mask, device, vector.token_type_ids
    )
    assert set(torch_grads) == set(flax_grads) == set(weights)
    assert abs(torch_loss - flax_loss) <= RELATIVE_BOUND[dtype] * abs(torch_loss)
    seq_len = vector.token_ids.shape[1]
    relative = relative_differences(torch_grads, flax_grads, seq_len)
    worst = max(relative, key=relative.get)
    assert relative[worst] <= RELATIVE_BOUND[dtype], f"{worst}: relative difference {relative[worst]:.3e}"
    # Not vacuous: every compared gradient is a real signal.
    assert all(np.abs(torch_grads[name]).max() > 0 for name in relative)
    # The gradients that are zero in exact arithmetic: both frameworks return rounding noise only.
    zero = [name for name in weights if has_zero_gradient(name, seq_len)]  # none without attention biases
    for grads in (torch_grads, flax_grads) if zero else ():
        largest = max(float(np.abs(g).max()) for g in grads.values())
        noise = max(float(np.abs(grads[name]).max()) for name in zero)
        assert noise <= ZERO_GRADIENT_NOISE[dtype] * largest, f"{zero}: {noise / largest:.1e} of the largest"


@pytest.mark.parametrize("mask_source", ["explicit", "from_padding_idx"])
def test_padding_mask_paths(mask_source: str, device: str) -> None:
    """The mask given explicitly (also with padding_idx None) and derived from padding_idx give the same parity."""
    config = EncoderConfig(vocab_size=19, d_model=12, n_heads=3, n_layers=2, d_ff=20, dropout=0.0, padding_idx=2)
    token_ids, mask = random_inputs(config, 7, (0, 3, 6), seed=11)
    targets = targets_for(config, token_ids, seed=3)
    if mask_source == "explicit":
        config = config.replace(padding_idx=None)  # nothing to derive: only the explicit mask marks padding
    weights = random_tensors(config, seed=12)
    padding_mask = mask if mask_source == "explicit" else None
    (torch_loss, torch_grads), (flax_loss, flax_grads) = both_gradients(
        config, weights, token_ids, targets, padding_mask, device
    )
    bound = RELATIVE_BOUND[np.float64]
    assert abs(torch_loss - flax_loss) <= bound * abs(torch_loss)
    assert max(relative_differences(torch_grads, flax_grads, token_ids.shape[1]).values()) <= bound
    # The padding really is masked: a row's loss equals the loss on its valid prefix alone (torch; flax
    # agrees with torch on the masked batch above).
    row, model = 1, rosetta_torch.from_canonical(config, weights, device=device)
    valid = int((~mask[row]).sum())
    ids_t, targets_t, mask_t = (torch.from_numpy(a[row : row + 1]).to(device) for a in (token_ids, targets, mask))
    masked_row_loss = torch_training.evaluate_loss(model, ids_t, targets_t, mask_t)
    prefix_loss = torch_training.evaluate_loss(model, ids_t[:, :valid], targets_t[:, :valid])
    assert masked_row_loss == pytest.approx(prefix_loss, rel=1e-12)


def test_padding_row_gets_exactly_zero_gradient(device: str) -> None:
    """Through the embedding (torch natively, flax by its stop_gradient) and through the tied head alike."""
    config = EncoderConfig(vocab_size=13, d_model=8, n_heads=2, n_layers=1, d_ff=16, dropout=0.0, padding_idx=1)
    token_ids, mask = random_inputs(config, 6, (0, 2, 4), seed=5)
    targets = targets_for(config, token_ids, seed=6)
    weights = random_tensors(config, seed=7)
    loss_everywhere = np.ones(mask.shape, dtype=bool)  # count padded positions too: their outputs feed the loss

    torch_model = rosetta_torch.from_canonical(config, weights, device=device)
    flax_model = rosetta_flax.from_canonical(config, weights)
    ids_t, targets_t, mask_t = (torch.from_numpy(a).to(device) for a in (token_ids, targets, loss_everywhere))
    _, torch_grads = torch_training.loss_and_gradients(torch_model, ids_t, targets_t, loss_mask=mask_t)
    _, flax_grads = flax_training.loss_and_gradients(flax_model, token_ids, targets, loss_mask=loss_everywhere)
    for grads in (torch_grads, flax_grads):
        embedding = grads["embedding.weight"]
        assert np.all(embedding[config.padding_idx] == 0.0)
        assert np.all(np.abs(np.delete(embedding, config.padding_idx, axis=0)).max(axis=1) > 0)

    # Control: the same tokens with padding_idx None (same mask) do give that row a gradient in both.
    free = config.replace(padding_idx=None)
    torch_free = rosetta_torch.from_canonical(free, weights, device=device)
    flax_free = rosetta_flax.from_canonical(free, weights)
    _, torch_free_grads = torch_training.loss_and_gradients(
        torch_free, ids_t, targets_t, torch.from_numpy(mask).to(device), mask_t
    )
    _, flax_free_grads = flax_training.loss_and_gradients(flax_free, token_ids, targets, mask, loss_everywhere)
    for grads in (torch_free_grads, flax_free_grads):
        assert np.abs(grads["embedding.weight"][config.padding_idx]).max() > 1e-3


def oracle_loss(
    config: EncoderConfig,
    weights: dict[str, np.ndarray],
    token_ids: np.ndarray,
    targets: np.ndarray,
    mask: np.ndarray,
    token_type_ids: np.ndarray | None = None,
) -> float:
    """The training loss in float64 NumPy: tied head (padding row's logit from its zero row), masked mean CE."""
    hidden = encoder_forward(config, weights, token_ids, mask, token_type_ids=token_type_ids)["output"]
    logits = hidden @ weights["embedding.weight"].T
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    per_token = -np.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    counted = ~mask
    return float((per_token * counted).sum() / max(counted.sum(), 1))


def frozen_direction(config: EncoderConfig, direction: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`direction` with the frozen padding rows (token embedding; RoBERTa's position table) set to 0: the oracle
    does not know they are frozen."""
    if config.padding_idx is not None:
        direction["embedding.weight"][config.padding_idx] = 0.0
    if config.position_ids == "after_padding":
        direction["position_embedding.weight"][config.padding_idx] = 0.0
    return direction


FINITE_DIFFERENCE_CASES = [
    "post_norm_relu",
    "pre_norm_gelu",
    "gelu_tanh_eps",
    "bert_front",
    "roberta_front",
    "modernbert_front",
    "distilbert_front",
]


@pytest.mark.parametrize("case", FINITE_DIFFERENCE_CASES)
def test_gradients_match_oracle_finite_differences(case: str, device: str) -> None:
    """Directional derivatives of the float64 oracle loss equal <grad, direction>.

    Central differences with Richardson's extrapolation, (4 D(h) - D(2h)) / 3, whose error is O(h^4): a plain
    central difference's O(h^2) error reached 3.3e-7 relative on roberta_front (h = 1e-5; a direction whose
    derivative is small, -0.11, by cancellation), over the bound, shrinking 4x per halving of h; extrapolated it
    is 2e-10 there.
    """

    from rosetta_common.vectors import stored_vector

    vector = stored_vector(case)
    config, weights, types = vector.config, vector.weights, vector.token_type_ids
    targets = targets_for(config, vector.token_ids)
    (_, torch_grads), (_, flax_grads) = both_gradients(
        config, weights, vector.token_ids, targets, vector.padding_mask, device, types
    )
    rng = np.random.default_rng(42)
    step = 1e-5
    for _ in range(3):
        direction = frozen_direction(config, {name: rng.normal(size=value.shape) for name, value in weights.items()})

        def loss_at(t: float, direction: dict = direction) -> float:
            moved = {name: weights[name] + t * direction[name] for name in weights}
            return oracle_loss(config, moved, vector.token_ids, targets, vector.padding_mask, types)

        def central(h: float, loss_at: Callable[[float], float] = loss_at) -> float:
            return (loss_at(h) - loss_at(-h)) / (2 * h)

        numeric = (4 * central(step) - central(2 * step)) / 3
        for grads in (torch_grads, flax_grads):
            analytic = sum(float((grads[name] * direction[name]).sum()) for name in weights)
            assert analytic == pytest.approx(numeric, rel=1e-7, abs=1e-9)


def test_gradients_through_an_all_padding_sequence(device: str) -> None:
    """A loss that reads the outputs of a sequence that is all padding (here: every position counted; a pooler on
    it does the same). Such a sequence attends uniformly (its scores are 0 in the oracle): q and k get no gradient
    from it, v the uniform average's. Before both attentions zeroed its queries and bias, torch's fused CPU kernel
    gave value gradients S times too large and both passed gradients to q and k through the absorbed scores."""
    from rosetta_common.vectors import stored_vector

    vector = stored_vector("all_padding_row")
    config, weights = vector.config, vector.weights
    assert vector.padding_mask.all(axis=1).any()
    targets = targets_for(config, vector.token_ids, seed=8)
    everywhere = np.ones(vector.token_ids.shape, dtype=bool)
    torch_model = rosetta_torch.from_canonical(config, weights, device=device)
    ids_t, targets_t, mask_t, everywhere_t = (
        torch.from_numpy(a).to(device) for a in (vector.token_ids, targets, vector.padding_mask, everywhere)
    )
    _, torch_grads = torch_training.loss_and_gradients(torch_model, ids_t, targets_t, mask_t, everywhere_t)
    _, flax_grads = flax_training.loss_and_gradients(
        rosetta_flax.from_canonical(config, weights), vector.token_ids, targets, vector.padding_mask, everywhere
    )
    relative = relative_differences(torch_grads, flax_grads, vector.token_ids.shape[1])
    worst = max(relative, key=relative.get)
    assert relative[worst] <= RELATIVE_BOUND[np.float64], f"{worst}: relative difference {relative[worst]:.3e}"

    def loss_at(t: float, direction: dict) -> float:
        moved = {name: weights[name] + t * direction[name] for name in weights}
        hidden = encoder_forward(config, moved, vector.token_ids, vector.padding_mask)["output"]
        logits = hidden @ moved["embedding.weight"].T
        top = logits.max(axis=-1, keepdims=True)
        log_probs = logits - top - np.log(np.exp(logits - top).sum(axis=-1, keepdims=True))
        return float(-np.take_along_axis(log_probs, targets[..., None], axis=-1).mean())

    rng, step = np.random.default_rng(9), 1e-5
    for group in ("attn.q.", "attn.k.kernel", "attn.v.", "embedding.weight", ""):  # "": every parameter
        direction = frozen_direction(
            config, {n: rng.normal(size=w.shape) if group in n else np.zeros_like(w) for n, w in weights.items()}
        )

        def central(h: float, direction: dict = direction) -> float:
            return (loss_at(h, direction) - loss_at(-h, direction)) / (2 * h)

        numeric = (4 * central(step) - central(2 * step)) / 3
        for grads in (torch_grads, flax_grads):
            analytic = sum(float((grads[name] * direction[name]).sum()) for name in weights)
            assert analytic == pytest.approx(numeric, rel=1e-7, abs=1e-9), group
