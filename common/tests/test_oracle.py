"""The float64 oracle's own properties, and the float32 rounding estimate built on it (NumPy only)."""

from __future__ import annotations

import numpy as np
import pytest

from rosetta_common import EncoderConfig, encoder_forward, oracle, tolerances
from rosetta_common.rounding_error import FLOAT32_UNIT_ROUNDOFF, float32_error_estimate
from rosetta_common.vectors import random_inputs, random_tensors

CONFIG = EncoderConfig(vocab_size=17, d_model=8, n_heads=2, n_layers=2, d_ff=12, activation="gelu", dropout=0.0)
WEIGHTS = random_tensors(CONFIG, seed=3)

# Issue 11's input: a LayerNorm input of std 0.08 summed from terms of size ~2 (see tests/test_property.py).
CANCELLING = EncoderConfig(vocab_size=5, d_model=5, n_heads=1, n_layers=2, d_ff=7, max_len=3, padding_idx=0,
                           activation="gelu_tanh")  # fmt: skip
CANCELLING_IDS = np.random.default_rng(216).integers(0, 5, size=(3, 3), dtype=np.int64)
CANCELLING_MASK = np.array([[False, True, False], [True, True, True], [True, True, True]])


def to_float32(x: np.ndarray) -> np.ndarray:
    """A real float32 rounding of every intermediate (the oracle's `rounding` hook)."""
    return np.asarray(x, np.float32).astype(np.float64)


def test_layer_norm_normalises() -> None:
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(4, 8))
    y = oracle.layer_norm(x, np.ones(8), np.zeros(8), 0.0)
    np.testing.assert_allclose(y.mean(-1), 0.0, atol=1e-15)
    np.testing.assert_allclose(y.var(-1), 1.0, atol=1e-14)


def test_padded_keys_do_not_change_the_real_positions() -> None:
    ids, mask = random_inputs(CONFIG, seq_len=6, pad_lengths=(0, 3), seed=1)
    other = ids.copy()
    other[mask] = (other[mask] + 5) % CONFIG.vocab_size  # change only what sits at padded positions
    first, second = encoder_forward(CONFIG, WEIGHTS, ids, mask), encoder_forward(CONFIG, WEIGHTS, other, mask)
    np.testing.assert_allclose(first["output"][~mask], second["output"][~mask], rtol=0, atol=1e-14)
    assert not np.allclose(first["output"][mask], second["output"][mask])  # padded queries do see their input


def test_an_all_padding_row_is_finite_and_attends_uniformly() -> None:
    x = np.random.default_rng(2).normal(size=(1, 4, 8))
    layer = {name.removeprefix("layers.0."): value for name, value in WEIGHTS.items() if name.startswith("layers.0.")}
    out = oracle.attention(x, layer, 2, np.ones((1, 4), dtype=bool))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, np.broadcast_to(out[:, :1], out.shape), atol=1e-15)  # same for every query


def test_the_rounding_hook_defaults_to_exact() -> None:
    ids, mask = random_inputs(CONFIG, seq_len=6, pad_lengths=(0, 3), seed=1)
    exact = encoder_forward(CONFIG, WEIGHTS, ids, mask)
    hooked = encoder_forward(CONFIG, WEIGHTS, ids, mask, rounding=lambda x: x)
    assert all(np.array_equal(exact[name], hooked[name]) for name in exact)
    assert all(value == 0.0 for value in float32_error_estimate(CONFIG, WEIGHTS, ids, mask, unit_roundoff=0).values())


def test_the_estimate_scales_with_the_unit_roundoff() -> None:
    ids, mask = random_inputs(CONFIG, seq_len=6, pad_lengths=(0, 3), seed=1)
    u32 = float32_error_estimate(CONFIG, WEIGHTS, ids, mask)
    u16 = float32_error_estimate(CONFIG, WEIGHTS, ids, mask, unit_roundoff=FLOAT32_UNIT_ROUNDOFF / 16)
    for name in u32:
        assert u32[name] == pytest.approx(16 * u16[name], rel=1e-3), name  # first-order: linear in u


def test_the_estimate_sees_the_cancellation_that_broke_the_fixed_bound() -> None:
    weights = random_tensors(CANCELLING, seed=216, dtype=np.float32)
    estimate = float32_error_estimate(CANCELLING, weights, CANCELLING_IDS, CANCELLING_MASK)
    assert estimate["layers.1.ffn"] > 5 * estimate["layers.1.attn"]  # measured: 3.5e-6 vs 5.6e-7
    assert tolerances.float32_bound(estimate["output"], against_oracle=False) > 2 * tolerances.FLOAT32_CROSS


@pytest.mark.parametrize("case", ["ordinary", "cancelling"])
def test_real_float32_rounding_stays_within_the_bound_from_the_estimate(case: str) -> None:
    """Round every intermediate of the oracle to float32 (a third float32 implementation): each component moves
    by at most `FLOAT32_ROUNDING_FACTOR` times the estimate."""
    config, ids, mask = CANCELLING, CANCELLING_IDS, CANCELLING_MASK
    if case == "ordinary":
        config, (ids, mask) = CONFIG, random_inputs(CONFIG, seq_len=6, pad_lengths=(0, 3), seed=1)
    weights = random_tensors(config, seed=216, dtype=np.float32)
    exact = encoder_forward(config, weights, ids, mask)
    rounded = encoder_forward(config, weights, ids, mask, rounding=to_float32)
    estimate = float32_error_estimate(config, weights, ids, mask)
    for name in exact:
        moved = np.abs(rounded[name] - exact[name]).max()
        assert 0 < moved <= tolerances.FLOAT32_ROUNDING_FACTOR * estimate[name], name
