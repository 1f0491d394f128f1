"""BERT's and RoBERTa's embedding front in both frameworks: HF's attention_mask, token type ids, RoBERTa's position
ids, the input errors (the oracle's words), gradients of the new parameters (pooler included), training with token
types, and the flax model under jit.

Bounds (common/DESIGN.md): float64 1e-10 for values, 1e-10 relative for gradients; finite differences of the
float64 oracle as in test_gradients.py (Richardson-extrapolated central differences, 1e-7 relative).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from runners import first_divergence, flax_activations, max_abs_diff, torch_activations
from test_gradients import frozen_direction, has_zero_gradient, oracle_loss, relative_differences, targets_for

import rosetta_flax
import rosetta_torch
from rosetta_common import EncoderConfig, InputError, encoder_forward, tolerances
from rosetta_common.positional import position_ids
from rosetta_common.training import AdamWConfig
from rosetta_common.vectors import Vector, stored_vector
from rosetta_flax import training as flax_training
from rosetta_torch import training as torch_training

BERT, ROBERTA = stored_vector("bert_front"), stored_vector("roberta_front")
FRONTS = {"bert_front": BERT, "roberta_front": ROBERTA}
NEW_PARAMETERS = ("position_embedding.", "token_type_embedding.", "embedding_norm.", "pooler.")


def torch_tensor(array: np.ndarray | None, device: str = "cpu") -> torch.Tensor | None:
    return None if array is None else torch.from_numpy(np.asarray(array)).to(device)


# --- attention_mask: HF's convention, 1 = keep ----------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.bool_], ids=["int64", "int32", "bool"])
@pytest.mark.parametrize("name", ["bert_front", "roberta_front"])
def test_attention_mask_is_the_inverted_padding_mask(name: str, dtype: type, device: str) -> None:
    """`attention_mask=m` gives exactly what `padding_mask=(m == 0)` gives, in torch, flax (eager and jitted) and the
    oracle; the mask here marks one more position than the padding tokens, so it is really the one used."""
    vector = FRONTS[name]
    mask = vector.padding_mask.copy()
    mask[0, 1] = True  # a real token treated as padding: not what padding_idx would give
    keep = (~mask).astype(dtype)
    config, weights, ids, types = vector.config, vector.weights, vector.token_ids, vector.token_type_ids
    oracle = encoder_forward(config, weights, ids, mask, token_type_ids=types)
    oracle_by_attention = encoder_forward(config, weights, ids, token_type_ids=types, attention_mask=keep)
    assert first_divergence(oracle_by_attention, oracle, 0.0) is None
    assert max_abs_diff(oracle["output"], vector.oracle["output"]) > 1e-3  # the extra masked key matters
    runners = {
        "torch": rosetta_torch.Runner(config, weights, device=device),
        "flax": rosetta_flax.Runner(config, weights),
        "flax_jit": rosetta_flax.Runner(config, weights, jit=True),
    }
    for runner_name, runner in runners.items():
        by_padding = runner.activations(ids, mask, token_type_ids=types)
        by_attention = runner.activations(ids, token_type_ids=types, attention_mask=keep)
        assert first_divergence(by_attention, by_padding, 0.0) is None, runner_name
        assert first_divergence(by_attention, oracle, tolerances.FLOAT64) is None, runner_name
        output = runner.output(ids, token_type_ids=types, attention_mask=keep)  # flax_jit: another XLA graph
        assert max_abs_diff(output, by_padding["output"]) <= tolerances.FLOAT64, runner_name


# --- input errors: the same InputError, in the same words, in torch, flax (before jit) and the oracle -----------


def _ids() -> np.ndarray:
    return BERT.token_ids.copy()


def _types(value: int | None = None, where: tuple[int, int] = (1, 2), dtype: type = np.int64) -> np.ndarray:
    types = BERT.token_type_ids.astype(dtype)
    if value is not None:
        types[where] = value
    return types


BAD_FRONT_INPUTS: dict[str, tuple[EncoderConfig, Callable[[], dict[str, Any]], str]] = {
    "both_masks": (BERT.config, lambda: {"padding_mask": BERT.padding_mask, "attention_mask": ~BERT.padding_mask},
                   r"pass padding_mask \(True = padding\) or attention_mask \(1 = keep, 0 = padding\), not both"),
    "both_masks_int": (BERT.config, lambda: {"padding_mask": BERT.padding_mask,
                                             "attention_mask": (~BERT.padding_mask).astype(np.int64)},
                       r"pass padding_mask \(True = padding\) or attention_mask \(1 = keep, 0 = padding\), not both"),
    "types_without_token_types": (BERT.config.replace(type_vocab_size=0), lambda: {"token_type_ids": _types()},
                                  r"token_type_ids given, but this encoder has no token-type embeddings "
                                  r"\(type_vocab_size=0\)"),
    "type_equal_to_type_vocab": (BERT.config, lambda: {"token_type_ids": _types(2)},
                                 r"token type id 2 is out of range \[0, type_vocab_size=2\)"),
    "type_far_out_of_range": (BERT.config, lambda: {"token_type_ids": _types(10**6)},
                              r"token type id 1000000 is out of range \[0, type_vocab_size=2\)"),
    "negative_type": (BERT.config, lambda: {"token_type_ids": _types(-1)},
                      r"token type id -1 is out of range \[0, type_vocab_size=2\)"),
    "float_types": (BERT.config, lambda: {"token_type_ids": _types(dtype=np.float32)},
                    r"token_type_ids must be an integer array, got dtype (torch\.)?float32"),
    "types_of_wrong_shape": (BERT.config, lambda: {"token_type_ids": _types()[:, :-1]},
                             r"token_type_ids shape \(2, 8\) does not match token_ids shape \(2, 9\)"),
    "attention_mask_of_2": (BERT.config, lambda: {"attention_mask": np.where(BERT.padding_mask, 0, 2)},
                            r"attention_mask must hold only 0 \(padding\) and 1 \(keep\)"),
    "attention_mask_of_wrong_shape": (BERT.config, lambda: {"attention_mask": np.ones((2, 8), np.int64)},
                                      r"attention_mask shape \(2, 8\) does not match token_ids shape \(2, 9\)"),
}  # fmt: skip


def _inputs_for(framework: str, inputs: dict[str, Any]) -> dict[str, Any]:
    convert = torch.from_numpy if framework == "torch" else jnp.asarray
    return {name: convert(np.asarray(value)) for name, value in inputs.items()}


@pytest.mark.parametrize("case", BAD_FRONT_INPUTS, ids=list(BAD_FRONT_INPUTS))
def test_bad_front_inputs_raise_the_oracles_input_error(case: str) -> None:
    config, make_inputs, message = BAD_FRONT_INPUTS[case]
    weights = {
        name: value for name, value in BERT.weights.items() if config.type_vocab_size or "token_type" not in name
    }
    inputs = make_inputs()
    with pytest.raises(InputError, match=message):
        encoder_forward(config, weights, _ids(), **inputs)
    for framework, package in (("torch", rosetta_torch), ("flax", rosetta_flax)):
        model = package.from_canonical(config, weights)
        native = _inputs_for(framework, inputs)
        ids = torch.from_numpy(_ids()) if framework == "torch" else jnp.asarray(_ids())
        padding_mask = native.pop("padding_mask", None)
        for call in (model, model.activations, model.check_inputs):  # check_inputs: the check to run before jit
            with pytest.raises(InputError, match=message):
                call(ids, padding_mask, **native)
        with pytest.raises(InputError, match=message):  # the NumPy face, and flax's jitted one
            package.Runner(config, weights).output(_ids(), inputs.get("padding_mask"), **_without(inputs))
    with pytest.raises(InputError, match=message):
        rosetta_flax.Runner(config, weights, jit=True).output(_ids(), inputs.get("padding_mask"), **_without(inputs))


def _without(inputs: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in inputs.items() if name != "padding_mask"}


def test_bad_token_types_are_checked_in_training_too() -> None:
    """Every training entry point takes token_type_ids and checks them before running (flax: before jit)."""
    bad = _types(2)
    targets = targets_for(BERT.config, BERT.token_ids)
    message = r"token type id 2 is out of range"
    torch_model = rosetta_torch.from_canonical(BERT.config, BERT.weights)
    flax_model = rosetta_flax.from_canonical(BERT.config, BERT.weights)
    ids_t, targets_t, bad_t = torch.from_numpy(BERT.token_ids), torch.from_numpy(targets), torch.from_numpy(bad)
    adamw = AdamWConfig(lr=1e-3)
    for call in (
        lambda: torch_training.loss_and_gradients(torch_model, ids_t, targets_t, token_type_ids=bad_t),
        lambda: torch_training.evaluate_loss(torch_model, ids_t, targets_t, token_type_ids=bad_t),
        lambda: torch_training.predict(torch_model, ids_t, token_type_ids=bad_t),
        lambda: torch_training.Trainer(torch_model, adamw).step(
            BERT.token_ids, targets, ~BERT.padding_mask, token_type_ids=bad
        ),
        lambda: flax_training.loss_and_gradients(flax_model, BERT.token_ids, targets, token_type_ids=bad),
        lambda: flax_training.evaluate_loss(flax_model, BERT.token_ids, targets, token_type_ids=bad),
        lambda: flax_training.predict(flax_model, BERT.token_ids, token_type_ids=bad),
        lambda: flax_training.Trainer(flax_model, adamw).step(
            BERT.token_ids, targets, ~BERT.padding_mask, token_type_ids=bad
        ),
    ):
        with pytest.raises(InputError, match=message):
            call()


# --- token types and RoBERTa's position ids ----------------------------------------------------------------------


def test_default_token_types_are_zeros(device: str) -> None:
    """Without token_type_ids every token is of type 0, in all three; other types really change the output."""
    config, weights, ids = BERT.config, BERT.weights, BERT.token_ids
    zeros = np.zeros_like(ids)
    oracle = encoder_forward(config, weights, ids, token_type_ids=zeros)
    assert first_divergence(encoder_forward(config, weights, ids), oracle, 0.0) is None
    for framework in (torch_activations, flax_activations):
        options = {"device": device} if framework is torch_activations else {}
        default = framework(config, weights, ids, None, "float64", **options)
        assert (
            first_divergence(
                default, framework(config, weights, ids, None, "float64", token_type_ids=zeros, **options), 0.0
            )
            is None
        )
        assert first_divergence(default, oracle, tolerances.FLOAT64) is None
    assert max_abs_diff(oracle["output"], BERT.oracle["output"]) > 1e-3  # the stored types are not all 0


LEFT_AND_INNER_PADDING = np.array([[1, 1, 5, 6, 1, 7, 8], [4, 4, 4, 4, 4, 4, 4], [1, 1, 1, 1, 1, 1, 1]])


@pytest.mark.parametrize("ids", [ROBERTA.token_ids, LEFT_AND_INNER_PADDING], ids=["stored", "left_and_inner"])
def test_roberta_position_ids(ids: np.ndarray, device: str) -> None:
    """A padding token reads position row padding_idx; the first real token padding_idx + 1, then + 2, ...
    (rosetta_common.positional.position_ids), in both frameworks' modules and in what every one of the three adds."""
    config, weights = ROBERTA.config, ROBERTA.weights
    pad = config.padding_idx
    rows = position_ids(config, ids)
    padding = ids == pad
    assert np.all(rows[padding] == pad)
    for b in range(ids.shape[0]):
        real = np.flatnonzero(~padding[b])
        assert np.array_equal(rows[b, real], pad + 1 + np.arange(real.size))  # the first real token: pad + 1
    torch_model = rosetta_torch.from_canonical(config, weights, device=device)
    flax_model = rosetta_flax.from_canonical(config, weights)
    assert np.array_equal(torch_model.positional.position_ids(torch_tensor(ids, device)).cpu().numpy(), rows)
    assert np.array_equal(np.asarray(flax_model.positional.position_ids(jnp.asarray(ids))), rows)
    # What each adds: "positional" - "embedding" - the type 0 row is the position row read.
    table, type_row = weights["position_embedding.weight"], weights["token_type_embedding.weight"][0]
    for acts in (
        encoder_forward(config, weights, ids),
        torch_activations(config, weights, ids, None, "float64", device=device),
        flax_activations(config, weights, ids, None, "float64"),
    ):
        added = acts["positional"] - acts["embedding"] - type_row
        assert max_abs_diff(added, table[rows]) <= 1e-15
        assert max_abs_diff(added[padding], np.broadcast_to(table[pad], added[padding].shape)) <= 1e-15


# --- gradients of the new parameters: torch vs flax vs the oracle's finite differences --------------------------


def probe(config: EncoderConfig, batch: int) -> np.ndarray:
    """Fixed weights `[B, D]` for the pooler's part of the loss."""
    return np.random.default_rng(17).normal(size=(batch, config.d_model))


def torch_front_gradients(vector: Vector, targets: np.ndarray, device: str) -> dict[str, np.ndarray]:
    """d/dparams of sequence_loss + sum(pooled * probe), by torch autograd."""
    model = rosetta_torch.from_canonical(vector.config, vector.weights, device=device)
    ids, mask, types = (torch_tensor(a, device) for a in (vector.token_ids, vector.padding_mask, vector.token_type_ids))
    loss = torch_training.sequence_loss(model, ids, torch_tensor(targets, device), mask, token_type_ids=types)
    pooled = model.pooled(model(ids, mask, token_type_ids=types))
    (loss + (pooled * torch_tensor(probe(vector.config, ids.shape[0]), device)).sum()).backward()
    return torch_training.gradients_to_canonical(model)


def flax_front_gradients(vector: Vector, targets: np.ndarray) -> dict[str, np.ndarray]:
    """The same loss, by `jax.grad` over the `nnx.split` parameters, jitted (inputs checked before)."""
    model = rosetta_flax.from_canonical(vector.config, vector.weights)
    ids, mask, types = (jnp.asarray(a) for a in (vector.token_ids, vector.padding_mask, vector.token_type_ids))
    model.check_inputs(ids, mask, token_type_ids=types)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    weights = jnp.asarray(probe(vector.config, ids.shape[0]))

    @jax.jit
    def grad(params: nnx.State) -> nnx.State:
        def loss_fn(params: nnx.State) -> jax.Array:
            merged = nnx.merge(graphdef, params, rest, copy=True)
            loss = flax_training.sequence_loss(merged, ids, jnp.asarray(targets), mask, token_type_ids=types)
            return loss + (merged.pooled(merged(ids, mask, token_type_ids=types)) * weights).sum()

        return jax.grad(loss_fn)(params)

    return flax_training.gradients_to_canonical(model, grad(params))


def oracle_front_loss(vector: Vector, weights: dict[str, np.ndarray], targets: np.ndarray) -> float:
    pooled = encoder_forward(
        vector.config, weights, vector.token_ids, vector.padding_mask, token_type_ids=vector.token_type_ids
    )["pooler"]
    sequence = oracle_loss(
        vector.config, weights, vector.token_ids, targets, vector.padding_mask, vector.token_type_ids
    )
    return sequence + float((pooled * probe(vector.config, pooled.shape[0])).sum())


@pytest.mark.parametrize("name", ["bert_front", "roberta_front"])
def test_gradients_of_the_new_parameters(name: str, device: str) -> None:
    """Positions, token types, embedding LayerNorm and pooler: torch and flax within 1e-10 relative for every
    parameter, both equal to directional derivatives of the float64 oracle, per new parameter and overall."""
    vector = FRONTS[name]
    config, weights = vector.config, vector.weights
    targets = targets_for(config, vector.token_ids)
    torch_grads, flax_grads = torch_front_gradients(vector, targets, device), flax_front_gradients(vector, targets)
    assert set(torch_grads) == set(flax_grads) == set(weights)
    relative = relative_differences(torch_grads, flax_grads, vector.token_ids.shape[1])
    for name in ("pooler.kernel", "pooler.bias"):  # zero for the training loss alone (test_gradients), not here
        relative[name] = float(np.abs(torch_grads[name] - flax_grads[name]).max() / np.abs(torch_grads[name]).max())
    worst = max(relative, key=relative.get)
    assert relative[worst] <= tolerances.GRADIENT_FLOAT64_RELATIVE, f"{worst}: {relative[worst]:.2e}"
    new = [n for n in weights if n.startswith(NEW_PARAMETERS)]
    assert len(new) == 6 and all(n in relative for n in new)
    assert all(np.abs(torch_grads[n]).max() > 1e-3 for n in new)  # the pooler's too: its part of the loss

    rng = np.random.default_rng(23)
    step = 1e-5
    groups = [[n] for n in new] + [list(weights)]
    for group in groups:
        direction = {n: rng.normal(size=w.shape) if n in group else np.zeros_like(w) for n, w in weights.items()}
        direction = frozen_direction(config, direction)

        def central(h: float, direction: dict = direction) -> float:
            def at(t: float) -> float:
                return oracle_front_loss(vector, {n: weights[n] + t * direction[n] for n in weights}, targets)

            return (at(h) - at(-h)) / (2 * h)

        numeric = (4 * central(step) - central(2 * step)) / 3
        for grads in (torch_grads, flax_grads):
            analytic = sum(float((grads[n] * direction[n]).sum()) for n in weights)
            assert analytic == pytest.approx(numeric, rel=1e-7, abs=1e-9), group


def test_roberta_padding_position_row_gets_exactly_zero_gradient(device: str) -> None:
    """The padding_idx row of an after_padding position table: read by every padding token, frozen as torch's
    nn.Embedding padding_idx freezes it (flax by its stop_gradient). The loss counts padded positions too, and the
    oracle shows that row does move the loss: the zero is the freezing, not an unused row."""
    vector = ROBERTA
    config, weights = vector.config, vector.weights
    pad = config.padding_idx
    targets = targets_for(config, vector.token_ids, seed=4)
    everywhere = np.ones(vector.token_ids.shape, dtype=bool)
    torch_model = rosetta_torch.from_canonical(config, weights, device=device)
    ids_t, targets_t, everywhere_t, types_t = (
        torch_tensor(a, device) for a in (vector.token_ids, targets, everywhere, vector.token_type_ids)
    )
    _, torch_grads = torch_training.loss_and_gradients(
        torch_model, ids_t, targets_t, loss_mask=everywhere_t, token_type_ids=types_t
    )
    _, flax_grads = flax_training.loss_and_gradients(
        rosetta_flax.from_canonical(config, weights),
        vector.token_ids,
        targets,
        loss_mask=everywhere,
        token_type_ids=vector.token_type_ids,
    )
    used = np.unique(position_ids(config, vector.token_ids))
    assert pad in used
    for grads in (torch_grads, flax_grads):
        table = grads["position_embedding.weight"]
        assert np.all(table[pad] == 0.0)
        assert np.all(np.abs(table[used[used != pad]]).max(axis=1) > 0)
        assert np.all(table[np.setdiff1d(np.arange(config.position_table_size), used)] == 0.0)  # rows never read

    direction = np.random.default_rng(3).normal(size=config.d_model)  # not constant: LayerNorm removes a shift

    def loss_with_padding_row(t: float) -> float:
        moved = {name: value.copy() for name, value in weights.items()}
        moved["position_embedding.weight"][pad] += t * direction
        return oracle_loss(config, moved, vector.token_ids, targets, ~everywhere, vector.token_type_ids)

    assert abs(loss_with_padding_row(1e-3) - loss_with_padding_row(-1e-3)) > 1e-6


# --- training with token types -------------------------------------------------------------------------------------


def test_training_with_token_types_agrees(device: str) -> None:
    """Trainer.step, evaluate_loss and predict take token_type_ids in both; two AdamW steps agree (float64)."""
    vector = BERT
    config, weights, ids, types = vector.config, vector.weights, vector.token_ids, vector.token_type_ids
    targets, loss_mask = targets_for(config, ids), ~vector.padding_mask
    adamw = AdamWConfig(lr=1e-2, weight_decay=0.1)
    torch_trainer = torch_training.Trainer(rosetta_torch.from_canonical(config, weights, device=device), adamw)
    flax_trainer = flax_training.Trainer(rosetta_flax.from_canonical(config, weights), adamw)
    for _ in range(2):
        torch_loss = float(torch_trainer.step(ids, targets, loss_mask, token_type_ids=types))
        flax_loss = float(flax_trainer.step(ids, targets, loss_mask, token_type_ids=types))
        assert torch_loss == pytest.approx(flax_loss, rel=1e-12)
    torch_params = rosetta_torch.to_canonical(torch_trainer.model)
    flax_params = flax_training.params_to_canonical(config, flax_trainer.params)
    for name, value in torch_params.items():
        if has_zero_gradient(name, ids.shape[1]):  # the pooler, attn.k.bias: weight decay alone, as test_optimizer
            continue
        assert np.abs(value - flax_params[name]).max() <= 1e-9 * np.abs(value).max(), name
        assert np.abs(value - weights[name]).max() > 1e-4, f"{name} did not move"
    torch_model, flax_model = torch_trainer.model.eval(), flax_trainer.model
    flax_model.eval()
    ids_t, targets_t, types_t = (torch_tensor(a, device) for a in (ids, targets, types))
    torch_eval = torch_training.evaluate_loss(torch_model, ids_t, targets_t, token_type_ids=types_t)
    flax_eval = flax_training.evaluate_loss(flax_model, ids, targets, token_type_ids=types)
    assert torch_eval == pytest.approx(flax_eval, rel=1e-12)
    assert torch_eval != pytest.approx(torch_training.evaluate_loss(torch_model, ids_t, targets_t), rel=1e-6)
    torch_predicted = torch_training.predict(torch_model, ids_t, token_type_ids=types_t).cpu().numpy()
    assert np.array_equal(torch_predicted, np.asarray(flax_training.predict(flax_model, ids, token_type_ids=types)))


# --- flax under jit ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bert_front", "roberta_front"])
def test_flax_front_under_jit(name: str) -> None:
    """nnx.jit on the model and jax.jit over its `nnx.split` state, with token types and an attention_mask (the
    inputs checked first, on the concrete arrays): the oracle's activations, pooler included."""
    vector = FRONTS[name]
    model = rosetta_flax.from_canonical(vector.config, vector.weights)
    model.eval()
    ids, types = jnp.asarray(vector.token_ids), jnp.asarray(vector.token_type_ids)
    keep = jnp.asarray((~vector.padding_mask).astype(np.int32))
    model.check_inputs(ids, token_type_ids=types, attention_mask=keep)
    by_nnx_jit = nnx.jit(lambda m, i, t, k: m.activations(i, token_type_ids=t, attention_mask=k))(
        model, ids, types, keep
    )
    graphdef, state = nnx.split(model)

    @jax.jit
    def pooled(state: nnx.State, ids: jax.Array, types: jax.Array, keep: jax.Array) -> jax.Array:
        merged = nnx.merge(graphdef, state, copy=True)
        return merged.pooled(merged(ids, token_type_ids=types, attention_mask=keep))

    acts = {name: np.asarray(value) for name, value in by_nnx_jit.items()}
    assert set(acts) == set(vector.oracle)
    assert first_divergence(acts, {n: vector.oracle[n] for n in acts}, tolerances.FLOAT64) is None
    assert max_abs_diff(pooled(state, ids, types, keep), vector.oracle["pooler"]) <= tolerances.FLOAT64
