"""The canonical format on its own (NumPy + safetensors): names and shapes, the file round trip, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from rosetta_common import (
    EncoderConfig,
    WeightFormatError,
    check_tensors,
    expected_shapes,
    load_canonical,
    read_metadata,
    save_canonical,
)
from rosetta_common.vectors import random_tensors

CONFIG = EncoderConfig(vocab_size=13, d_model=12, n_heads=3, n_layers=2, d_ff=20, norm_first=True)
TENSORS = random_tensors(CONFIG, seed=5)


def test_expected_names_and_shapes_follow_the_design() -> None:
    shapes = expected_shapes(CONFIG)
    assert shapes["embedding.weight"] == (13, 12)
    assert shapes["layers.1.attn.q.kernel"] == (12, 12) and shapes["layers.1.attn.out.bias"] == (12,)
    assert shapes["layers.0.ffn.in.kernel"] == (12, 20) and shapes["layers.0.ffn.out.kernel"] == (20, 12)
    assert shapes["final_norm.scale"] == (12,)  # pre-norm: a final norm by default
    per_layer = {name.split(".", 2)[2] for name in shapes if name.startswith("layers.0.")}
    assert len(per_layer) == 16 and len(shapes) == 1 + 2 * 16 + 2


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_file_round_trip_is_bit_exact(tmp_path: Path, dtype) -> None:
    tensors = {name: value.astype(dtype) for name, value in TENSORS.items()}
    path = save_canonical(tmp_path / "model.safetensors", CONFIG, tensors)
    config, back = load_canonical(path)
    assert config == CONFIG and sorted(back) == sorted(tensors)
    for name, value in tensors.items():
        assert back[name].dtype == dtype and back[name].tobytes() == value.tobytes(), name
    assert read_metadata(path)["rosetta.format_version"]


def test_every_problem_is_listed_in_one_error() -> None:
    tensors = dict(TENSORS)
    del tensors["layers.1.norm2.bias"]
    tensors["layers.0.attn.q.kernel"] = np.zeros((12, 11))
    tensors["layers.5.attn.q.kernel"] = np.zeros((12, 12))
    tensors["final_norm.bias"] = np.full(12, np.nan)
    with pytest.raises(WeightFormatError) as error:
        check_tensors(CONFIG, tensors)
    message = str(error.value)
    for expected in ("layers.1.norm2.bias", "layers.0.attn.q.kernel", "layers.5.attn.q.kernel", "final_norm.bias"):
        assert expected in message


def test_a_refused_save_writes_nothing(tmp_path: Path) -> None:
    bad = {**TENSORS, "layers.0.ffn.in.bias": np.full(20, np.inf)}
    with pytest.raises(WeightFormatError, match=r"layers\.0\.ffn\.in\.bias: contains NaN or Inf"):
        save_canonical(tmp_path / "model.safetensors", CONFIG, bad)
    assert list(tmp_path.iterdir()) == []


def test_files_that_are_not_canonical_are_refused_by_name(tmp_path: Path) -> None:
    pickle = tmp_path / "model.pt"
    pickle.write_bytes(b"\x80\x04 never unpickled")
    with pytest.raises(WeightFormatError, match=r"refusing to unpickle a '\.pt' file"):
        load_canonical(pickle)
    with pytest.raises(WeightFormatError, match=r"no such file"):
        load_canonical(tmp_path / "absent.safetensors")
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": np.zeros(3)}, str(foreign))
    with pytest.raises(WeightFormatError, match=r"not a rosetta weight file"):
        load_canonical(foreign)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(save_canonical(tmp_path / "whole.safetensors", CONFIG, TENSORS).read_bytes()[:-64])
    with pytest.raises(WeightFormatError, match=r"truncated or corrupted"):
        load_canonical(truncated)
