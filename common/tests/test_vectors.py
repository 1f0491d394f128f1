"""The stored common vectors: what they cover, and that the generator reproduces them."""

from __future__ import annotations

import numpy as np
from safetensors.numpy import load_file

from rosetta_common import read_metadata
from rosetta_common.vectors import CASES, STORED_DIR, build_case, stored_vector


def test_every_case_is_stored_and_nothing_else():
    assert sorted(p.name for p in STORED_DIR.glob("*.safetensors")) == sorted(f"{c.name}.safetensors" for c in CASES)


# Oracle outputs, regenerated on another CPU: at most this many float64 epsilons of the array's largest magnitude.
ORACLE_REGENERATION_EPS = 64


def test_regenerating_reproduces_the_stored_files():
    """Config, weights and inputs are byte-identical. Oracle outputs go through BLAS and NumPy's SIMD
    transcendentals, which pick kernels per CPU at run time (OpenBLAS's Haswell and SkylakeX GEMMs sum in other
    orders), so another CPU differs in the last bits. Measured across those kernels: <= 2.5 eps of the array's
    largest magnitude (5.5e-16 relative), the bound is 64 eps (1.4e-14). Per-element ulp is the wrong yardstick
    here: an entry near zero that comes out of a cancelling sum has the absolute error of the terms, thousands of
    its own ulp (8192 ulp seen with 5e-16 relative to the array)."""
    for case in CASES:
        tensors, metadata = build_case(case)
        path = STORED_DIR / f"{case.name}.safetensors"
        stored = load_file(str(path))
        assert read_metadata(path) == metadata
        assert sorted(stored) == sorted(tensors)
        for name, value in tensors.items():
            assert stored[name].dtype == value.dtype and stored[name].shape == value.shape, name
            if name.startswith("oracle."):
                bound = ORACLE_REGENERATION_EPS * np.finfo(np.float64).eps * np.abs(stored[name]).max()
                np.testing.assert_allclose(value, stored[name], rtol=0, atol=bound, err_msg=f"{case.name}: {name}")
            else:
                assert stored[name].tobytes() == value.tobytes(), name


def test_cases_cover_what_the_design_asks_for():
    vectors = [stored_vector(case.name) for case in CASES]
    configs = [v.config for v in vectors]
    smallest = next(v for v in vectors if v.name == "seed_smallest")
    assert smallest.token_ids.shape == (1, 1) and smallest.config.d_model == 6
    assert (smallest.config.n_heads, smallest.config.n_layers) == (1, 1)
    assert {c.activation for c in configs} == {"relu", "gelu", "gelu_tanh"}
    assert any(not c.norm_first and c.activation == "relu" for c in configs)
    assert any(c.norm_first and c.activation == "gelu" for c in configs)
    assert any(c.padding_idx is None for c in configs)
    assert any(len(set(v.padding_mask.sum(axis=1))) >= 3 for v in vectors)  # padding of varied length
    assert any(v.padding_mask.all(axis=1).any() for v in vectors)  # a sequence entirely padding
    assert any(v.token_ids.shape[1] % 8 for v in vectors if v.token_ids.shape[1] > 8)
    assert any(c.d_head & (c.d_head - 1) for c in configs)  # d_head not a power of two
    for v in vectors:
        assert v.padding_mask.dtype == np.bool_ and v.token_ids.dtype == np.int64
        assert all(np.isfinite(a).all() for a in v.oracle.values())
