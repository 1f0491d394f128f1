"""Property-based parity: random configs, weights and padded inputs; torch == flax == oracle at every component.

Every position is compared, padded ones included (rosetta defines them: a padded query attends to the valid
keys; an all-padding row attends uniformly). Bounds are DESIGN.md's: float64 1e-10 everywhere; float32 1e-5
torch vs flax and 1e-4 against the float64 oracle. Derandomized, so CI draws the same examples every run.

Flax builds its model and runs its activations under `nnx.jit` (after `check_inputs`, on the concrete arrays):
one compilation per example instead of one per operation and new shape keeps the file fast.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import rosetta_flax
import rosetta_torch
from rosetta_common import ACTIVATIONS, EncoderConfig, encoder_forward, tolerances
from rosetta_common.vectors import random_tensors

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass(frozen=True)
class Case:
    """A drawn config, weight seed and input; `padding_mask=None` means the model derives it from padding_idx."""

    config: EncoderConfig
    seed: int
    token_ids: np.ndarray  # int64 [B, S]
    padding_mask: np.ndarray | None  # bool [B, S]


def make_case(config: EncoderConfig, seed: int, mask: np.ndarray, derive_mask: bool) -> Case:
    """Random ids for `mask` `[B, S]`; with `derive_mask` the padded positions hold padding_idx (and only they)."""
    ids = np.random.default_rng(seed).integers(0, config.vocab_size, size=mask.shape, dtype=np.int64)
    if not derive_mask:
        return Case(config, seed, ids, mask)
    assert config.padding_idx is not None
    ids = np.where(ids == config.padding_idx, (config.padding_idx + 1) % config.vocab_size, ids)
    ids[mask] = config.padding_idx
    return Case(config, seed, ids, None)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    n_heads, d_head = draw(st.integers(1, 3)), draw(st.integers(1, 5))
    vocab_size = draw(st.sampled_from([2, 5, 11]))
    batch, seq = draw(st.integers(1, 3)), draw(st.integers(1, 6))
    config = EncoderConfig(
        vocab_size=vocab_size,
        d_model=n_heads * d_head,
        n_heads=n_heads,
        n_layers=draw(st.integers(1, 3)),
        d_ff=draw(st.integers(1, 9)),
        max_len=seq + draw(st.integers(0, 3)),
        padding_idx=draw(st.none() | st.integers(0, vocab_size - 1)),
        activation=draw(st.sampled_from(ACTIVATIONS)),
        norm_first=draw(st.booleans()),
        final_norm=draw(st.sampled_from([None, True, False])),
        layer_norm_eps=draw(st.sampled_from([1e-5, 1e-6, 1e-3])),
        dropout=draw(st.sampled_from([0.0, 0.1])),
        scale_embedding=draw(st.booleans()),
    )
    rows = st.lists(st.booleans(), min_size=seq, max_size=seq)
    mask = np.array(draw(st.lists(rows, min_size=batch, max_size=batch)), dtype=bool).reshape(batch, seq)
    all_padding_row = draw(st.none() | st.integers(0, batch - 1))
    if all_padding_row is not None:
        mask[all_padding_row] = True
    derive_mask = config.padding_idx is not None and draw(st.booleans())
    return make_case(config, draw(st.integers(0, 2**16)), mask, derive_mask)


# Always run, whatever is drawn: an all-padding row whose mask comes from padding_idx, and odd sizes without one.
ALL_PADDING_DERIVED = make_case(
    EncoderConfig(vocab_size=5, d_model=6, n_heads=2, n_layers=2, d_ff=5, max_len=4, padding_idx=0,
                  activation="gelu_tanh", norm_first=True, final_norm=False, layer_norm_eps=1e-6),
    seed=1, mask=np.array([[False, False, True, True], [True, True, True, True]]), derive_mask=True,
)  # fmt: skip
ODD_SIZES_NO_PADDING_IDX = make_case(
    EncoderConfig(vocab_size=11, d_model=15, n_heads=3, n_layers=3, d_ff=7, max_len=5, padding_idx=None,
                  activation="gelu", final_norm=True, scale_embedding=False),
    seed=2, mask=np.array([[False, True, False, True, False], [True] * 5, [False] * 5]), derive_mask=False,
)  # fmt: skip


def torch_activations(case: Case, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    model = rosetta_torch.from_canonical(case.config, tensors).eval()
    mask = None if case.padding_mask is None else torch.from_numpy(case.padding_mask)
    with torch.no_grad():
        return {
            name: value.numpy() for name, value in model.activations(torch.from_numpy(case.token_ids), mask).items()
        }


def flax_activations(case: Case, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    # from_canonical under nnx.jit: the random init it overwrites is dead code there, so it compiles to almost
    # nothing instead of one compilation per init op and shape (same parameters and RNG state as eager).
    model = nnx.jit(lambda: rosetta_flax.from_canonical(case.config, tensors))()
    model.eval()
    model.check_inputs(case.token_ids, case.padding_mask)
    mask = None if case.padding_mask is None else jnp.asarray(case.padding_mask)
    acts = nnx.jit(lambda model, ids, mask: model.activations(ids, mask))(model, jnp.asarray(case.token_ids), mask)
    return {name: np.asarray(value) for name, value in acts.items()}


def max_differences(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    assert a.keys() == b.keys()
    return {name: float(np.abs(a[name].astype(np.float64) - b[name].astype(np.float64)).max()) for name in a}


def assert_within(differences: dict[str, float], bound: float, what: str, case: Case) -> None:
    over = {name: value for name, value in differences.items() if not value <= bound}
    assert not over, f"{what} over {bound:.0e} at {over} for {case.config}"


def expected_components(config: EncoderConfig) -> list[str]:
    layers = [f"layers.{i}.{part}" for i in range(config.n_layers) for part in ("attn", "ffn")]
    return ["embedding", "positional", *layers, *(["final_norm"] if config.has_final_norm else []), "output"]


@SETTINGS
@given(case=cases())
@example(case=ALL_PADDING_DERIVED)
@example(case=ODD_SIZES_NO_PADDING_IDX)
def test_torch_flax_and_oracle_agree(case: Case) -> None:
    weights64 = random_tensors(case.config, case.seed)
    oracle64 = encoder_forward(case.config, weights64, case.token_ids, case.padding_mask)
    assert list(oracle64) == expected_components(case.config)
    assert all(np.isfinite(value).all() for value in oracle64.values())  # all-padding rows too

    torch64, flax64 = torch_activations(case, weights64), flax_activations(case, weights64)
    assert all(value.dtype == np.float64 for value in (*torch64.values(), *flax64.values()))
    assert_within(max_differences(torch64, flax64), tolerances.FLOAT64, "float64 torch vs flax", case)
    assert_within(max_differences(torch64, oracle64), tolerances.FLOAT64, "float64 torch vs oracle", case)
    assert_within(max_differences(flax64, oracle64), tolerances.FLOAT64, "float64 flax vs oracle", case)

    weights32 = {name: value.astype(np.float32) for name, value in weights64.items()}
    oracle32 = encoder_forward(case.config, weights32, case.token_ids, case.padding_mask)  # float64 maths
    torch32, flax32 = torch_activations(case, weights32), flax_activations(case, weights32)
    assert all(value.dtype == np.float32 for value in (*torch32.values(), *flax32.values()))
    assert_within(max_differences(torch32, flax32), tolerances.FLOAT32_CROSS, "float32 torch vs flax", case)
    assert_within(max_differences(torch32, oracle32), tolerances.FLOAT32_ORACLE, "float32 torch vs oracle", case)
    assert_within(max_differences(flax32, oracle32), tolerances.FLOAT32_ORACLE, "float32 flax vs oracle", case)
