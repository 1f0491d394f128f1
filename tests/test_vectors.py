"""The stored common vectors: what they cover, and that the generator reproduces them."""

from __future__ import annotations

import numpy as np
from runners import VECTORS_DIR
from safetensors.numpy import load_file

from rosetta_common import read_metadata
from rosetta_common.vectors import CASES, build_case, load_vector


def test_every_case_is_stored_and_nothing_else():
    assert sorted(p.name for p in VECTORS_DIR.glob("*.safetensors")) == sorted(f"{c.name}.safetensors" for c in CASES)


def test_regenerating_reproduces_the_stored_files():
    """Config, weights and inputs are byte-identical. Oracle outputs are identical on this machine kind; they go
    through BLAS and NumPy's SIMD transcendentals, which pick kernels per CPU at run time, so another CPU may
    differ in the last bits: allowed at most 16 ulp (~4e-15 relative), nothing more."""
    for case in CASES:
        tensors, metadata = build_case(case)
        path = VECTORS_DIR / f"{case.name}.safetensors"
        stored = load_file(str(path))
        assert read_metadata(path) == metadata
        assert sorted(stored) == sorted(tensors)
        for name, value in tensors.items():
            assert stored[name].dtype == value.dtype and stored[name].shape == value.shape, name
            if name.startswith("oracle."):
                np.testing.assert_array_max_ulp(stored[name], value, maxulp=16)
            else:
                assert stored[name].tobytes() == value.tobytes(), name


def test_cases_cover_what_the_design_asks_for():
    vectors = [load_vector(VECTORS_DIR / f"{case.name}.safetensors") for case in CASES]
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
