"""The canonical format as the interchange: names, dtypes, and bit-exact round trips through files."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from runners import max_abs_diff

import rosetta_flax
import rosetta_torch
from rosetta_common import EncoderConfig, expected_shapes, load_canonical
from rosetta_common.tolerances import FLOAT64

CONFIG = EncoderConfig(vocab_size=31, d_model=12, n_heads=3, n_layers=2, d_ff=20, norm_first=True, dropout=0.0)


def assert_same_tensors(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert list(a) == list(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        assert a[name].tobytes() == b[name].tobytes(), f"{name} differs"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_file_flax_file_torch_is_bit_exact(tmp_path, dtype):
    torch.manual_seed(0)
    original = rosetta_torch.Encoder(CONFIG, dtype=dtype)
    with torch.no_grad():  # non-trivial LayerNorm parameters, so a scale/bias swap cannot pass unnoticed
        for param in original.parameters():
            param.add_(0.1 * torch.randn_like(param))
    rosetta_torch.save(original, tmp_path / "a.safetensors")
    in_flax = rosetta_flax.load(tmp_path / "a.safetensors")
    rosetta_flax.save(in_flax, tmp_path / "b.safetensors")
    back = rosetta_torch.load(tmp_path / "b.safetensors")
    for name, value in original.state_dict().items():
        assert torch.equal(value, back.state_dict()[name]), name
    assert_same_tensors(rosetta_torch.to_canonical(original), rosetta_flax.to_canonical(in_flax))
    # Both files hold the same config and tensors, byte for byte (safetensors orders header metadata freely).
    (config_a, tensors_a), (config_b, tensors_b) = (
        load_canonical(tmp_path / f) for f in ("a.safetensors", "b.safetensors")
    )
    assert config_a == config_b == CONFIG
    assert_same_tensors(tensors_a, tensors_b)


def test_flax_to_torch_round_trip_is_bit_exact(tmp_path):
    original = rosetta_flax.Encoder(CONFIG, rngs=nnx.Rngs(7))
    canonical = rosetta_flax.to_canonical(original)
    again = rosetta_flax.to_canonical(
        rosetta_flax.from_canonical(CONFIG, rosetta_torch.to_canonical(rosetta_torch.from_canonical(CONFIG, canonical)))
    )
    assert_same_tensors(canonical, again)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_model_takes_the_dtype_of_its_arrays(dtype):
    from rosetta_common.vectors import random_tensors

    tensors = random_tensors(CONFIG, seed=1, dtype=dtype)
    torch_model = rosetta_torch.from_canonical(CONFIG, tensors)
    flax_model = rosetta_flax.from_canonical(CONFIG, tensors)
    assert {p.dtype for p in torch_model.parameters()} == {torch.from_numpy(np.zeros(1, dtype)).dtype}
    assert torch_model.positional.table.dtype == torch_model.embedding.weight.dtype
    assert {v.dtype for v in rosetta_flax.to_canonical(flax_model).values()} == {np.dtype(dtype)}
    ids = np.array([[2, 3, 4, 1]])
    assert torch_model.eval()(torch.from_numpy(ids)).dtype == torch_model.embedding.weight.dtype
    flax_model.eval()
    assert flax_model(jnp.asarray(ids)).dtype == np.dtype(dtype)


def test_canonical_names_and_layouts():
    """Kernels are [in, out]; torch's Linear weight is the transpose; names follow common/DESIGN.md exactly."""
    torch_model = rosetta_torch.Encoder(CONFIG, dtype=torch.float64)
    canonical = rosetta_torch.to_canonical(torch_model)
    assert {name: value.shape for name, value in canonical.items()} == expected_shapes(CONFIG)
    assert "final_norm.scale" in canonical  # norm_first -> final norm by default
    q = torch_model.layers[1].attn.q
    assert np.array_equal(canonical["layers.1.attn.q.kernel"], q.weight.detach().numpy().T)
    up = torch_model.layers[0].ffn.up
    assert np.array_equal(canonical["layers.0.ffn.in.kernel"], up.weight.detach().numpy().T)
    x = np.random.default_rng(0).normal(size=(5, CONFIG.d_model))
    with torch.no_grad():
        by_torch = q(torch.from_numpy(x)).numpy()
    assert (
        max_abs_diff(by_torch, x @ canonical["layers.1.attn.q.kernel"] + canonical["layers.1.attn.q.bias"]) <= FLOAT64
    )


def test_float64_round_trip_through_float64_file(tmp_path):
    model = rosetta_torch.Encoder(CONFIG, dtype=torch.float64)
    path = rosetta_torch.save(model, tmp_path / "m.safetensors")
    config, tensors = load_canonical(path)
    assert config == CONFIG
    assert {value.dtype for value in tensors.values()} == {np.dtype(np.float64)}


def test_positional_table_survives_a_dtype_round_trip():
    """float64 -> float32 -> float64 with .to(): the buffer is rebuilt, not upcast from float32."""
    model = rosetta_torch.Encoder(CONFIG, dtype=torch.float64)
    before = model.positional.table.clone()
    model.float().double()
    assert torch.equal(model.positional.table, before)


def test_models_never_alias_the_callers_arrays():
    from rosetta_common.vectors import random_tensors

    tensors = random_tensors(CONFIG, seed=2)
    before = {name: value.copy() for name, value in tensors.items()}
    model = rosetta_torch.from_canonical(CONFIG, tensors)
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(2.0)
    assert all(np.array_equal(tensors[name], before[name]) for name in tensors)


def test_to_canonical_returns_copies_not_live_views():
    model = rosetta_torch.Encoder(CONFIG, dtype=torch.float64)
    snapshot = rosetta_torch.to_canonical(model)
    before = {name: value.copy() for name, value in snapshot.items()}
    with torch.no_grad():
        for param in model.parameters():
            param.add_(1.0)
    assert all(np.array_equal(snapshot[name], before[name]) for name in snapshot)


@pytest.mark.parametrize("case", ["bert_front", "roberta_front"])
def test_embedding_front_models_hold_exactly_the_canonical_tensors(case, tmp_path):
    """Learned positions, token types, the embedding LayerNorm and the pooler: every canonical tensor, no other
    (native names from the name tables), bit-exact through both frameworks and their files; torch's model built
    on the meta device keeps nothing there (the sinusoidal buffer is the one rebuilt, and these configs have none).
    """
    from rosetta_common.name_tables import FLAX_ENCODER, TORCH_ENCODER
    from rosetta_common.vectors import stored_vector

    vector = stored_vector(case)
    config = vector.config
    weights = {name: vector.weights[name] for name in expected_shapes(config)}  # file order (the file sorts them)
    assert {"position_embedding.weight", "token_type_embedding.weight", "pooler.kernel"} <= set(weights)
    torch_model = rosetta_torch.from_canonical(config, weights)
    assert not any(t.is_meta for t in (*torch_model.parameters(), *torch_model.buffers()))
    assert list(torch_model.state_dict()) == list(TORCH_ENCODER.native_names(config).values())
    flax_model = rosetta_flax.from_canonical(config, weights)
    flax_names = {".".join(map(str, path)) for path, _ in nnx.to_flat_state(nnx.state(flax_model, nnx.Param))}
    assert flax_names == set(FLAX_ENCODER.native_names(config).values())
    assert_same_tensors(rosetta_torch.to_canonical(torch_model), weights)
    assert_same_tensors(rosetta_flax.to_canonical(flax_model), weights)
    torch_file = rosetta_torch.save(torch_model, tmp_path / "torch.safetensors")
    flax_file = rosetta_flax.save(rosetta_flax.load(torch_file), tmp_path / "flax.safetensors")
    assert_same_tensors(rosetta_torch.to_canonical(rosetta_torch.load(flax_file)), weights)
    # A fresh model of the config (random init) has the same names and shapes.
    fresh = rosetta_torch.Encoder(config, dtype=torch.float64)
    assert {n: v.shape for n, v in rosetta_torch.to_canonical(fresh).items()} == expected_shapes(config)
    fresh_flax = rosetta_flax.Encoder(config, dtype=jnp.float64, rngs=nnx.Rngs(0))
    assert {n: v.shape for n, v in rosetta_flax.to_canonical(fresh_flax).items()} == expected_shapes(config)
