"""rosetta-torch on its own (no JAX installed): the stored oracle vectors, file round trip, input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rosetta_torch
from rosetta_common import InputError, WeightFormatError, tolerances
from rosetta_common.vectors import CASES, stored_vector


@pytest.fixture(params=[case.name for case in CASES])
def vector(request):
    return stored_vector(request.param)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_stored_oracle(vector, dtype):
    model = rosetta_torch.from_canonical(vector.config, {k: v.astype(dtype) for k, v in vector.weights.items()})
    types = None if vector.token_type_ids is None else torch.from_numpy(vector.token_type_ids)
    with torch.no_grad():
        acts = model.eval().activations(
            torch.from_numpy(vector.token_ids), torch.from_numpy(vector.padding_mask), token_type_ids=types
        )
    assert set(acts) == set(vector.oracle)
    bound = tolerances.output_bound(np.dtype(dtype).name, against_oracle=True)
    for name, expected in vector.oracle.items():
        assert np.abs(acts[name].numpy() - expected).max() <= bound, name


def test_save_load_round_trip(tmp_path, vector):
    model = rosetta_torch.from_canonical(vector.config, vector.weights)
    loaded = rosetta_torch.load(rosetta_torch.save(model, tmp_path / "m.safetensors"))
    for name, value in rosetta_torch.to_canonical(loaded).items():
        assert np.array_equal(value, vector.weights[name]), name


def test_bad_token_id_is_a_clear_error(vector):
    model = rosetta_torch.from_canonical(vector.config, vector.weights)
    ids = torch.from_numpy(vector.token_ids).clone()
    ids[0, 0] = vector.config.vocab_size
    with pytest.raises(InputError, match="out of range"):
        model(ids)


@pytest.mark.parametrize("name", [case.name for case in CASES if case.config.type_vocab_size])
def test_bad_token_type_is_a_clear_error(name):
    vector = stored_vector(name)
    model = rosetta_torch.from_canonical(vector.config, vector.weights)
    types = torch.from_numpy(vector.token_type_ids).clone()
    types[0, 0] = vector.config.type_vocab_size
    with pytest.raises(InputError, match=rf"token type id {vector.config.type_vocab_size} is out of range"):
        model(torch.from_numpy(vector.token_ids), token_type_ids=types)


ID_DTYPES = [torch.uint8, torch.int8, torch.int16, torch.uint16, torch.uint32, torch.uint64]


@pytest.mark.parametrize("dtype", ID_DTYPES, ids=str)
def test_token_ids_of_another_dtype_are_an_input_error(dtype):
    """int32 and int64 ids only, as in rosetta_flax and the oracle (the same words), never torch's own error."""
    vector = stored_vector(CASES[0].name)
    model = rosetta_torch.from_canonical(vector.config, vector.weights)
    ids = torch.from_numpy(vector.token_ids)
    with pytest.raises(InputError, match=rf"token_ids must be int32 or int64, got dtype {dtype} "):
        model(ids.to(dtype))
    with torch.no_grad():
        assert torch.equal(model.eval()(ids.to(torch.int32)), model(ids))


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin"])
def test_save_refuses_a_pickle_name(tmp_path, suffix):
    vector = stored_vector(CASES[0].name)
    with pytest.raises(WeightFormatError, match=r"rosetta never writes pickles"):
        rosetta_torch.save(rosetta_torch.from_canonical(vector.config, vector.weights), tmp_path / f"m{suffix}")
    assert list(tmp_path.iterdir()) == []


def test_load_of_a_directory_says_so(tmp_path):
    """Read as `rosetta convert` reads it (rosetta-tools is installed beside): a directory holding no checkpoint."""
    with pytest.raises(WeightFormatError, match=r": a directory, but not an Orbax checkpoint") as err:
        rosetta_torch.load(tmp_path)
    assert "no such file" not in str(err.value)
