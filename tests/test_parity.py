"""Both frameworks against the stored float64 oracle and against each other, every component boundary,
padded positions included, in float64 and float32 (bounds: common/DESIGN.md via rosetta_common.tolerances)."""

from __future__ import annotations

import numpy as np
import pytest
from runners import first_divergence, flax_activations, max_abs_diff, torch_activations

from rosetta_common import encoder_forward, tolerances

DTYPES = ["float64", "float32"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_matches_oracle(vector, dtype, device):
    args = (vector.config, vector.weights, vector.token_ids, vector.padding_mask, dtype)
    acts = torch_activations(*args, token_type_ids=vector.token_type_ids, device=device)
    bound = tolerances.output_bound(dtype, against_oracle=True)
    assert first_divergence(acts, vector.oracle, bound) is None


@pytest.mark.parametrize("dtype", DTYPES)
def test_flax_matches_oracle(vector, dtype, device):
    args = (vector.config, vector.weights, vector.token_ids, vector.padding_mask, dtype)
    acts = flax_activations(*args, token_type_ids=vector.token_type_ids)
    bound = tolerances.output_bound(dtype, against_oracle=True)
    assert first_divergence(acts, vector.oracle, bound) is None


@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_matches_flax(vector, dtype, device):
    args = (vector.config, vector.weights, vector.token_ids, vector.padding_mask, dtype)
    types = vector.token_type_ids
    torch_acts = torch_activations(*args, token_type_ids=types, device=device)
    flax_acts = flax_activations(*args, token_type_ids=types)
    assert first_divergence(torch_acts, flax_acts, tolerances.output_bound(dtype, against_oracle=False)) is None


def test_float64_agreement_is_near_machine_precision(vector, device):
    """The 1e-10 bound has room to spare: measured differences are ~1e-15 on outputs of order 1."""
    args = (vector.config, vector.weights, vector.token_ids, vector.padding_mask, "float64")
    types = vector.token_type_ids
    for acts in (
        torch_activations(*args, token_type_ids=types, device=device),
        flax_activations(*args, token_type_ids=types),
    ):
        for name in ("output", "pooler") if vector.config.pooler else ("output",):
            assert max_abs_diff(acts[name], vector.oracle[name]) < 1e-13, name


def test_default_mask_comes_from_padding_idx(vector, device):
    """Without a padding_mask, `token_ids == padding_idx` is the mask (no padding when padding_idx is None)."""
    expected = (
        vector.oracle
        if vector.config.padding_idx is not None
        else encoder_forward(vector.config, vector.weights, vector.token_ids, token_type_ids=vector.token_type_ids)
    )
    args = (vector.config, vector.weights, vector.token_ids, None, "float64")
    types = vector.token_type_ids
    for acts in (
        torch_activations(*args, token_type_ids=types, device=device),
        flax_activations(*args, token_type_ids=types),
    ):
        assert first_divergence(acts, expected, tolerances.FLOAT64) is None


def test_all_padding_sequence_is_finite(device):
    """A sequence of padding only attends uniformly to every position: finite, and equal in all three."""
    from rosetta_common.vectors import CASES, random_tensors

    config = next(case.config for case in CASES if case.name == "all_padding_row")
    weights = random_tensors(config, seed=11)
    token_ids = np.full((2, 5), config.padding_idx, dtype=np.int64)
    oracle = encoder_forward(config, weights, token_ids)
    for acts in (
        torch_activations(config, weights, token_ids, None, "float64", device=device),
        flax_activations(config, weights, token_ids, None, "float64"),
    ):
        assert np.isfinite(acts["output"]).all()
        assert first_divergence(acts, oracle, tolerances.FLOAT64) is None


@pytest.mark.parametrize("case", ["varied_padding", "odd_sizes", "all_padding_row", "bert_front", "roberta_front"])
def test_padding_never_attended_as_key(case, device):
    """Changing the tokens at padded positions leaves the output of every real token unchanged (RoBERTa's
    position ids too: the padding is trailing, so no real token's position changes)."""

    from rosetta_common.vectors import stored_vector

    vector = stored_vector(case)
    mask = vector.padding_mask
    rng = np.random.default_rng(0)
    changed = np.where(mask, rng.integers(0, vector.config.vocab_size, mask.shape), vector.token_ids)
    assert (changed != vector.token_ids).any()
    real_tokens = ~mask
    types = vector.token_type_ids
    for run in (
        lambda ids: torch_activations(
            vector.config, vector.weights, ids, mask, "float64", token_type_ids=types, device=device
        ),
        lambda ids: flax_activations(vector.config, vector.weights, ids, mask, "float64", token_type_ids=types),
    ):
        before, after = run(vector.token_ids)["output"], run(changed)["output"]
        assert max_abs_diff(before[real_tokens], after[real_tokens]) < 1e-12
        assert max_abs_diff(before[mask], after[mask]) > 1e-3  # padded queries do see their own (changed) input
