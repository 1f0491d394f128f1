"""rosetta_common's file and input checks on hostile input (issue 27), NumPy only: the words both frameworks and the
command line share."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

from rosetta_common import EncoderConfig, InputError, WeightFormatError, encoder_forward, load_canonical, save_canonical
from rosetta_common.io import read_config_file, read_json_object, write_atomically, write_directory_atomically
from rosetta_common.precision import CastOverflowError, cast_tensors
from rosetta_common.vectors import random_tensors

CONFIG = EncoderConfig(vocab_size=13, d_model=8, n_heads=2, n_layers=1, d_ff=12, max_len=6)
TENSORS = random_tensors(CONFIG, seed=4)


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".pkl", ".ckpt", ".PT"])
def test_save_refuses_a_pickle_name_that_load_would_refuse(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"model{suffix}"
    with pytest.raises(WeightFormatError, match=r"rosetta never writes pickles .* name the file \*\.safetensors"):
        save_canonical(path, CONFIG, TENSORS)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["model.safetensors", "model", "model.weights"])
def test_what_save_writes_load_reads(tmp_path: Path, name: str) -> None:
    config, tensors = load_canonical(save_canonical(tmp_path / name, CONFIG, TENSORS))
    assert config == CONFIG and all(np.array_equal(tensors[key], TENSORS[key]) for key in TENSORS)


def test_load_of_a_directory_says_so(tmp_path: Path) -> None:
    with pytest.raises(WeightFormatError, match=r": a directory, not a file"):
        load_canonical(tmp_path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_load_of_a_fifo_says_so_without_opening_it(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.safetensors")
    with pytest.raises(WeightFormatError, match=r"pipe.safetensors: a FIFO \(named pipe\), not a regular file"):
        load_canonical(tmp_path / "pipe.safetensors")
    with pytest.raises(WeightFormatError, match=r"a FIFO \(named pipe\), not a regular config file"):
        read_config_file(tmp_path / "pipe.safetensors")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe\x00", r"is not UTF-8 text \(byte 0"),
        (b'{"a": 1,\n "b": }', r"malformed JSON in the JSON file \(line 2, column 7"),
        (b"[1]", r"holds a JSON list, not an object"),
        (b"3", r"holds a JSON number, not an object"),
        (b"[" * 200_000, r"nested too deeply"),
    ],
)
def test_read_json_object_says_what_is_wrong_and_where(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "x.json"
    path.write_bytes(content)
    with pytest.raises(WeightFormatError, match=rf"{path}: .*{message}"):
        read_json_object(path)


def test_a_missing_json_file(tmp_path: Path) -> None:
    with pytest.raises(WeightFormatError, match=r"x.json: no such config file"):
        read_config_file(tmp_path / "x.json")


@pytest.mark.parametrize("writer", ["file", "directory"])
def test_temporary_names_stay_within_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writer: str) -> None:
    """A valid 255-byte name (multi-byte characters too) is written; its hidden temporary name beside it fits."""
    seen: list[str] = []
    for make in ("mkstemp", "mkdtemp"):
        original = getattr(tempfile, make)

        def spy(*args, _original=original, **kwargs):
            made = _original(*args, **kwargs)
            seen.append(os.path.basename(made[1] if isinstance(made, tuple) else made))
            return made

        monkeypatch.setattr(tempfile, make, spy)
    name = "é" * 120 + "w" * 15  # 255 bytes in UTF-8
    if writer == "file":
        write_atomically(tmp_path / name, lambda tmp: tmp.write_bytes(b"x"))
    else:
        write_directory_atomically(tmp_path / name, lambda tmp: (tmp / "f").write_bytes(b"x"))
        write_directory_atomically(tmp_path / name, lambda tmp: (tmp / "g").write_bytes(b"x"))  # the swap's ".old"
    assert [path.name for path in tmp_path.iterdir()] == [name]
    assert seen and all(len(os.fsencode(temporary + ".old")) <= 255 for temporary in seen)


def test_a_parent_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(NotADirectoryError, match=rf"cannot write .*: {tmp_path / 'afile'} is a file, not a directory"):
        save_canonical(tmp_path / "afile" / "sub" / "m.safetensors", CONFIG, TENSORS)
    assert (tmp_path / "afile").read_text() == "x"


@pytest.mark.parametrize(
    ("stored", "value", "dtype", "message"),
    [
        (np.float32, 1e6, "float16", r"float16 overflows: t holds 1e\+06 .* range of \+-65504 \(1 value would"),
        (np.float64, 1e300, "float32", r"float32 overflows: t holds 1e\+300 .* range of \+-3.40282e\+38"),
        (np.float64, -1e39, "bfloat16", r"bfloat16 overflows: t holds 1e\+39 .* range of \+-3.38953e\+38"),
    ],
)
def test_a_cast_that_overflows(stored, value: float, dtype: str, message: str) -> None:
    with pytest.raises(CastOverflowError, match=message):
        cast_tensors({"t": np.array([0.5, value, 1.0], dtype=stored)}, dtype)


def test_infinities_already_there_are_not_an_overflow() -> None:
    """A cast keeps an infinity it was given (the weight checks refuse it, naming the source)."""
    cast, _ = cast_tensors({"t": np.array([np.inf, 1.0])}, "float16")
    assert np.isinf(cast["t"][0])


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.uint16, np.uint32, np.uint64])
def test_the_oracle_takes_the_frameworks_id_dtypes_only(dtype) -> None:
    """Token ids are int32 or int64 in the oracle and both frameworks (tests/test_hardening.py: the same words)."""
    ids = np.full((2, 3), 3, dtype=dtype)
    with pytest.raises(InputError, match=rf"token_ids must be int32 or int64, got dtype {np.dtype(dtype).name} "):
        encoder_forward(CONFIG, TENSORS, ids)
    assert encoder_forward(CONFIG, TENSORS, ids.astype(np.int32))["output"].shape == (2, 3, 8)
