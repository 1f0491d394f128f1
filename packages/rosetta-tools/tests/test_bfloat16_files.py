"""bfloat16 weight files with NumPy only (ml_dtypes): safetensors `BF16` tensors read and written, `rosetta inspect`
and `rosetta convert` on them, the cast's rounding (to nearest even) and what it says it lost. Runs in every suite,
with or without a framework."""

from __future__ import annotations

import json
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from rosetta_common import EncoderConfig, load_canonical, save_canonical
from rosetta_common.precision import BFLOAT16, cast_tensors
from rosetta_common.vectors import random_tensors
from rosetta_tools.cli import main

CONFIG = EncoderConfig(vocab_size=19, d_model=8, n_heads=2, n_layers=2, d_ff=12, max_len=10)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def stored_dtypes(path: Path) -> set[str]:
    """The dtypes named in a safetensors file's own header (not what a reader makes of them)."""
    raw = path.read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    return {entry["dtype"] for name, entry in header.items() if name != "__metadata__"}


def test_cast_rounds_to_nearest_even() -> None:
    """bfloat16 keeps 8 significant bits: 1 + 2^-8 is halfway between 1 and 1 + 2^-7 and goes to the even 1;
    1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6 and goes to the even 1 + 2^-6; 1 + 2^-8 + 2^-20 is
    above halfway and goes up."""
    values = np.array([1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-8 + 2**-20, -(1 + 2**-8)], dtype=np.float32)
    cast, report = cast_tensors({"x": values}, "bfloat16")
    expected = np.array([1.0, 1 + 2**-6, 1 + 2**-7, -1.0])
    np.testing.assert_array_equal(cast["x"].astype(np.float64), expected)
    assert not report.exact and report.changed == 1
    assert report.max_relative_change == pytest.approx(2**-8 / (1 + 2**-8))
    back, report_back = cast_tensors(cast, "float32")
    assert report_back.exact and "exact" in report_back.describe()
    np.testing.assert_array_equal(back["x"], cast["x"].astype(np.float32))


def test_bfloat16_file_round_trips_bit_exact(tmp_path: Path) -> None:
    tensors, _ = cast_tensors(random_tensors(CONFIG, seed=3), "bfloat16")
    path = save_canonical(tmp_path / "model.safetensors", CONFIG, tensors)
    assert stored_dtypes(path) == {"BF16"}
    config, loaded = load_canonical(path)
    assert config == CONFIG
    for name, value in tensors.items():
        assert loaded[name].dtype == BFLOAT16
        np.testing.assert_array_equal(loaded[name].view(np.uint16), value.view(np.uint16), err_msg=name)


def test_convert_to_bfloat16_and_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """float32 -> bfloat16 rounds (the note says how much), bfloat16 -> float32 is exact (the note says so), and
    the bfloat16 file converts to the other safetensors layouts and back bit for bit."""
    original = random_tensors(CONFIG, seed=4, dtype=np.float32)
    source = save_canonical(tmp_path / "f32.safetensors", CONFIG, original)
    half = tmp_path / "bf16.safetensors"
    code, out, _ = run_cli(capsys, "convert", source, half, "--to", "rosetta", "--dtype", "bfloat16")
    assert code == 0 and "to bfloat16, rounding to nearest even" in out and "changed" in out
    assert stored_dtypes(half) == {"BF16"}
    _, rounded = load_canonical(half)
    for name, value in original.items():
        np.testing.assert_array_equal(rounded[name], value.astype(ml_dtypes.bfloat16), err_msg=name)

    code, out, _ = run_cli(capsys, "inspect", half)
    assert code == 0 and "bfloat16" in out

    back = tmp_path / "back.safetensors"
    code, out, _ = run_cli(capsys, "convert", half, back, "--to", "rosetta", "--dtype", "float32")
    assert code == 0 and "to float32: exact" in out
    _, widened = load_canonical(back)
    for name, value in rounded.items():
        np.testing.assert_array_equal(widened[name], value.astype(np.float32), err_msg=name)

    for layout in ("torch", "torch-modules"):
        there, again = tmp_path / f"{layout}.safetensors", tmp_path / f"{layout}-back.safetensors"
        assert run_cli(capsys, "convert", half, there, "--to", layout)[0] == 0
        assert stored_dtypes(there) == {"BF16"}
        assert run_cli(capsys, "convert", there, again, "--to", "rosetta")[0] == 0
        _, returned = load_canonical(again)
        for name, value in rounded.items():
            np.testing.assert_array_equal(returned[name].view(np.uint16), value.view(np.uint16), err_msg=name)


def test_hf_folder_in_bfloat16(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A bfloat16 canonical file out to a Hugging Face folder (config.json says bfloat16) and back, bit for bit."""
    config = EncoderConfig(
        vocab_size=19,
        d_model=8,
        n_heads=2,
        n_layers=1,
        d_ff=12,
        max_len=10,
        padding_idx=0,
        activation="gelu",
        scale_embedding=False,
        positions="learned",
        type_vocab_size=2,
        embedding_norm=True,
        pooler=True,
    )
    tensors, _ = cast_tensors(random_tensors(config, seed=5), "bfloat16")
    source = save_canonical(tmp_path / "bert.safetensors", config, tensors)
    folder, back = tmp_path / "hf", tmp_path / "back.safetensors"
    assert run_cli(capsys, "convert", source, folder, "--to", "hf-bert")[0] == 0
    assert json.loads((folder / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert stored_dtypes(folder / "model.safetensors") == {"BF16"}
    assert run_cli(capsys, "convert", folder, back, "--to", "rosetta")[0] == 0
    _, returned = load_canonical(back)
    for name, value in tensors.items():
        np.testing.assert_array_equal(returned[name].view(np.uint16), value.view(np.uint16), err_msg=name)
