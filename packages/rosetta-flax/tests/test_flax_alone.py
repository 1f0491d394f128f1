"""rosetta-flax on its own (no torch installed): the stored oracle vectors, file round trip, input errors."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import rosetta_flax
from rosetta_common import InputError, WeightFormatError, tolerances
from rosetta_common.vectors import CASES, stored_vector


@pytest.fixture(params=[case.name for case in CASES])
def vector(request):
    return stored_vector(request.param)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_stored_oracle(vector, dtype):
    model = rosetta_flax.from_canonical(vector.config, {k: v.astype(dtype) for k, v in vector.weights.items()})
    model.eval()
    types = None if vector.token_type_ids is None else jnp.asarray(vector.token_type_ids)
    acts = model.activations(jnp.asarray(vector.token_ids), jnp.asarray(vector.padding_mask), token_type_ids=types)
    assert set(acts) == set(vector.oracle)
    bound = tolerances.output_bound(np.dtype(dtype).name, against_oracle=True)
    for name, expected in vector.oracle.items():
        assert np.abs(np.asarray(acts[name]) - expected).max() <= bound, name


def test_save_load_round_trip(tmp_path, vector):
    model = rosetta_flax.from_canonical(vector.config, vector.weights)
    loaded = rosetta_flax.load(rosetta_flax.save(model, tmp_path / "m.safetensors"))
    for name, value in rosetta_flax.to_canonical(loaded).items():
        assert np.array_equal(value, vector.weights[name]), name


def test_bad_token_id_is_a_clear_error(vector):
    model = rosetta_flax.from_canonical(vector.config, vector.weights)
    ids = np.array(vector.token_ids)
    ids[0, 0] = vector.config.vocab_size
    with pytest.raises(InputError, match="out of range"):
        model(jnp.asarray(ids))


@pytest.mark.parametrize("name", [case.name for case in CASES if case.config.type_vocab_size])
def test_bad_token_type_is_a_clear_error(name):
    vector = stored_vector(name)
    model = rosetta_flax.from_canonical(vector.config, vector.weights)
    types = np.array(vector.token_type_ids)
    types[0, 0] = vector.config.type_vocab_size
    with pytest.raises(InputError, match=rf"token type id {vector.config.type_vocab_size} is out of range"):
        model(jnp.asarray(vector.token_ids), token_type_ids=jnp.asarray(types))


def test_orbax_checkpoint_round_trip_without_torch(tmp_path, vector):
    """`save_checkpoint` / `load_checkpoint`: the orbax layout of `rosetta convert`, bit-exact, no torch needed."""
    model = rosetta_flax.from_canonical(vector.config, vector.weights)
    directory = rosetta_flax.save_checkpoint(model, tmp_path / "ckpt")
    assert sorted(p.name for p in directory.iterdir()) == ["config.json", "state"]
    loaded = rosetta_flax.load_checkpoint(directory)
    assert loaded.config == vector.config
    for name, value in rosetta_flax.to_canonical(loaded).items():
        assert value.dtype == vector.weights[name].dtype and np.array_equal(value, vector.weights[name]), name


def test_bare_orbax_checkpoint_needs_its_config(tmp_path):
    """A plain `StandardCheckpointer().save(dir, nnx.state(model))` stores no config: it must be given."""
    import orbax.checkpoint as ocp
    from flax import nnx

    from rosetta_common import WeightFormatError

    vector = stored_vector(CASES[0].name)
    model = rosetta_flax.from_canonical(vector.config, vector.weights)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save((tmp_path / "bare").absolute(), nnx.state(model))
    with pytest.raises(WeightFormatError, match="stores no config"):
        rosetta_flax.load_checkpoint(tmp_path / "bare")
    loaded = rosetta_flax.load_checkpoint(tmp_path / "bare", vector.config)
    for name, value in rosetta_flax.to_canonical(loaded).items():
        assert np.array_equal(value, vector.weights[name]), name
    other = vector.config.replace(layer_norm_eps=vector.config.layer_norm_eps * 2)
    rosetta_flax.save_checkpoint(model, tmp_path / "full")
    with pytest.raises(WeightFormatError, match="differs from the one stored"):
        rosetta_flax.load_checkpoint(tmp_path / "full", other)


ID_DTYPES = [np.uint8, np.int8, np.int16, np.uint16, np.uint32, np.uint64]


@pytest.mark.parametrize("dtype", ID_DTYPES)
def test_token_ids_of_another_dtype_are_an_input_error(dtype):
    """int32 and int64 ids only, as in rosetta_torch and the oracle (the same words)."""
    vector = stored_vector(CASES[0].name)
    model = rosetta_flax.from_canonical(vector.config, vector.weights)
    with pytest.raises(InputError, match=rf"token_ids must be int32 or int64, got dtype {np.dtype(dtype)} "):
        model(jnp.asarray(vector.token_ids.astype(dtype)))
    np.testing.assert_array_equal(model(jnp.asarray(vector.token_ids, jnp.int32)), model(jnp.asarray(vector.token_ids)))


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin"])
def test_save_refuses_a_pickle_name(tmp_path, suffix):
    vector = stored_vector(CASES[0].name)
    with pytest.raises(WeightFormatError, match=r"rosetta never writes pickles"):
        rosetta_flax.save(rosetta_flax.from_canonical(vector.config, vector.weights), tmp_path / f"m{suffix}")
    assert list(tmp_path.iterdir()) == []


def test_load_of_a_directory_says_so(tmp_path):
    """Read as `rosetta convert` reads it (rosetta-tools is installed beside): a directory holding no checkpoint."""
    with pytest.raises(WeightFormatError, match=r": a directory, but not an Orbax checkpoint") as err:
        rosetta_flax.load(tmp_path)
    assert "no such file" not in str(err.value)


def test_checked_jit_checks_what_jax_jit_cannot(vector):
    """Under plain `jax.jit` a bad id gives NaN or a clamped row without an error; `checked_jit` checks first."""
    model = rosetta_flax.from_canonical(vector.config, vector.weights)
    model.eval()
    jitted = rosetta_flax.checked_jit(model)
    ids, mask = vector.token_ids, vector.padding_mask
    types = None if vector.token_type_ids is None else vector.token_type_ids
    expected = model(jnp.asarray(ids), jnp.asarray(mask), token_type_ids=None if types is None else jnp.asarray(types))
    np.testing.assert_allclose(np.asarray(jitted(ids, mask, token_type_ids=types)), expected, rtol=0, atol=1e-12)
    bad = np.array(ids)
    bad[0, 0] = vector.config.vocab_size
    with pytest.raises(InputError, match=rf"token id {vector.config.vocab_size} is out of range"):
        jitted(bad, mask, token_type_ids=types)
