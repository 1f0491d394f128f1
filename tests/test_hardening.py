"""Bad input fails the same clear way in both frameworks: token ids, padding masks, weights, files, writes.

Every case asserts the error's type and that its message names the problem. For Flax the input check runs
before any computation (JAX's gather would silently clamp an out-of-range id).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from safetensors.numpy import save_file

import rosetta_flax
import rosetta_torch
from rosetta_common import EncoderConfig, InputError, WeightFormatError, save_canonical
from rosetta_common.io import CONFIG_KEY, LAYOUT_KEY, VERSION_KEY
from rosetta_common.vectors import random_tensors

CONFIG = EncoderConfig(vocab_size=23, d_model=12, n_heads=3, n_layers=2, d_ff=20, max_len=24, dropout=0.0)
TENSORS = random_tensors(CONFIG, seed=31)


@dataclass(frozen=True)
class Framework:
    """One framework: its package, whose NumPy `Runner` builds and calls the model, and its array type."""

    name: str
    module: Any

    def build(self, tensors: dict[str, np.ndarray] = TENSORS, config: EncoderConfig = CONFIG) -> Any:
        """`rosetta_{name}.Runner`: an eval-mode model (`.model`) with `.output(ids, mask)` on NumPy inputs."""
        return self.module.Runner(config, tensors)

    def load(self, path: Path) -> Any:
        return self.module.load(path)

    def array(self, value: np.ndarray) -> Any:
        return torch.from_numpy(value) if self.name == "torch" else jnp.asarray(value)


FRAMEWORKS = [Framework("torch", rosetta_torch), Framework("flax", rosetta_flax)]


@pytest.fixture(params=FRAMEWORKS, ids=lambda framework: framework.name)
def framework(request) -> Framework:
    return request.param


def ids_of(shape: tuple[int, ...], dtype=np.int64) -> np.ndarray:
    return (np.arange(int(np.prod(shape))) % (CONFIG.vocab_size - 2) + 2).reshape(shape).astype(dtype)


# --- token ids and padding masks ------------------------------------------------------------------------------

BAD_INPUTS = {
    "id_equal_to_vocab": (lambda: _with(ids_of((2, 5)), (1, 3), 23), None,
                          r"token id 23 is out of range \[0, vocab_size=23\)"),
    "id_far_out_of_range": (lambda: _with(ids_of((2, 5)), (0, 0), 10**6), None, r"token id 1000000 is out of range"),
    "negative_id": (lambda: _with(ids_of((2, 5)), (1, 0), -1), None, r"token id -1 is out of range"),
    "float_ids": (lambda: ids_of((2, 5), np.float32), None,
                  r"token_ids must be an integer array, got dtype (torch\.)?float32"),
    "bool_ids": (lambda: ids_of((2, 5)) > 5, None, r"token_ids must be an integer array, got dtype (torch\.)?bool"),
    "empty_batch": (lambda: ids_of((0, 5)), None, r"token_ids has an empty batch \(shape \(0, 5\)\)"),
    "seq_of_length_0": (lambda: ids_of((2, 0)), None, r"token_ids has sequence length 0 \(shape \(2, 0\)\)"),
    "seq_longer_than_max_len": (lambda: ids_of((2, 25)), None, r"sequence length 25 exceeds max_len 24"),
    "ids_not_2d": (lambda: ids_of((5,)), None, r"token_ids must have shape \[batch, seq\], got shape \(5,\)"),
    "uint8_ids": (lambda: ids_of((2, 5), np.uint8), None,
                 r"token_ids must be int32 or int64, got dtype (torch\.)?uint8 "),
    "int8_ids": (lambda: ids_of((2, 5), np.int8), None,
                 r"token_ids must be int32 or int64, got dtype (torch\.)?int8 "),
    "int16_ids": (lambda: ids_of((2, 5), np.int16), None,
                 r"token_ids must be int32 or int64, got dtype (torch\.)?int16 "),
    "uint16_ids": (lambda: ids_of((2, 5), np.uint16), None,
                 r"token_ids must be int32 or int64, got dtype (torch\.)?uint16 "),
    "uint32_ids": (lambda: ids_of((2, 5), np.uint32), None,
                 r"token_ids must be int32 or int64, got dtype (torch\.)?uint32 "),
    "uint64_ids": (lambda: ids_of((2, 5), np.uint64), None,
                 r"token_ids must be int32 or int64, got dtype (torch\.)?uint64 "),
    "mask_of_wrong_shape": (lambda: ids_of((2, 5)), lambda: np.zeros((2, 4), bool),
                            r"padding_mask shape \(2, 4\) does not match token_ids shape \(2, 5\)"),
    "mask_transposed": (lambda: ids_of((2, 5)), lambda: np.zeros((5, 2), bool),
                        r"padding_mask shape \(5, 2\) does not match token_ids shape \(2, 5\)"),
    "mask_of_int_dtype": (lambda: ids_of((2, 5)), lambda: np.zeros((2, 5), np.int64),
                          r"padding_mask must be bool \(True = padding\), got dtype (torch\.)?int64"),
    "mask_of_float_dtype": (lambda: ids_of((2, 5)), lambda: np.zeros((2, 5), np.float32),
                            r"padding_mask must be bool \(True = padding\), got dtype (torch\.)?float32"),
}  # fmt: skip


def _with(ids: np.ndarray, where: tuple[int, int], value: int) -> np.ndarray:
    ids = ids.copy()
    ids[where] = value
    return ids


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_inputs_raise_a_clear_input_error(framework: Framework, case: str) -> None:
    make_ids, make_mask, message = BAD_INPUTS[case]
    runner = framework.build()
    with pytest.raises(InputError, match=message):
        runner.output(make_ids(), None if make_mask is None else make_mask())


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_inputs_raise_in_activations_too(framework: Framework, case: str) -> None:
    make_ids, make_mask, message = BAD_INPUTS[case]
    model = framework.build().model
    mask = None if make_mask is None else framework.array(make_mask())
    with pytest.raises(InputError, match=message):
        model.activations(framework.array(make_ids()), mask)


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_check_inputs_is_the_check_to_run_before_jit(framework: Framework, case: str) -> None:
    """Under jit the inputs are tracers: `check_inputs` on the concrete arrays is the guard, with the same words.
    Both Encoders expose it (torch's forward calls it too); flax's takes NumPy arrays, torch's tensors."""
    make_ids, make_mask, message = BAD_INPUTS[case]
    model = framework.build().model
    ids, mask = make_ids(), None if make_mask is None else make_mask()
    if framework.name == "torch":
        ids, mask = framework.array(ids), None if mask is None else framework.array(mask)
    with pytest.raises(InputError, match=message):
        model.check_inputs(ids, mask)


def test_the_input_check_runs_before_any_computation(framework: Framework, monkeypatch) -> None:
    """The error comes from the check, not from a gather that failed (torch) or clamped silently (JAX)."""
    runner = framework.build()
    embedding = type(runner.model.embedding)
    looked_up = []
    original = embedding.forward if framework.name == "torch" else embedding.__call__

    def recording(self, token_ids):
        looked_up.append(token_ids.shape)
        return original(self, token_ids)

    monkeypatch.setattr(embedding, "forward" if framework.name == "torch" else "__call__", recording)
    good = ids_of((2, 5))
    runner.output(good)
    assert looked_up == [good.shape]  # the spy sees real lookups
    with pytest.raises(InputError, match="out of range"):
        runner.output(_with(good, (0, 1), CONFIG.vocab_size))
    assert looked_up == [good.shape]


def test_jax_would_not_raise_for_a_bad_id_under_jit() -> None:
    """Why the check exists: under jit (tracers, nothing to check) JAX's gather fills a bad id's row with NaN
    and returns without an error; `check_inputs` on the concrete ids names the problem instead."""
    model = FRAMEWORKS[1].build().model
    bad = _with(ids_of((1, 5)), (0, 2), CONFIG.vocab_size + 7)
    silently = nnx.jit(lambda model, ids: model(ids))(model, jnp.asarray(bad))
    assert silently.shape == (1, 5, CONFIG.d_model)
    assert not bool(jnp.isfinite(silently).all())
    with pytest.raises(InputError, match=f"token id {CONFIG.vocab_size + 7} is out of range"):
        model.check_inputs(bad)


def test_good_inputs_still_pass(framework: Framework) -> None:
    """The boundaries: ids 0 and vocab_size - 1, seq == max_len, an all-padding row, an explicit bool mask."""
    ids = ids_of((3, CONFIG.max_len))
    ids[0, 0], ids[0, 1] = 0, CONFIG.vocab_size - 1
    ids[2, :] = CONFIG.padding_idx
    mask = ids == CONFIG.padding_idx
    output = framework.build().output(ids, mask)
    assert output.shape == (3, CONFIG.max_len, CONFIG.d_model)
    assert np.isfinite(output).all()


# --- weights: NaN / Inf, missing, mis-shaped, mismatched config -----------------------------------------------


def with_value(name: str, value: float) -> dict[str, np.ndarray]:
    tensors = {key: array.copy() for key, array in TENSORS.items()}
    tensors[name].flat[3] = value
    return tensors


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_weights_are_refused_by_from_canonical(framework: Framework, bad_value: float) -> None:
    with pytest.raises(WeightFormatError, match=r"layers\.1\.ffn\.in\.kernel: contains NaN or Inf"):
        framework.build(with_value("layers.1.ffn.in.kernel", bad_value))


def write_raw(path: Path, tensors: dict[str, np.ndarray], config: EncoderConfig | str = CONFIG, **metadata) -> Path:
    """A safetensors file written without rosetta's checks (to hold what save_canonical would refuse)."""
    config_json = config if isinstance(config, str) else config.to_json()
    save_file(tensors, str(path), metadata={CONFIG_KEY: config_json, VERSION_KEY: "1", **metadata})
    return path


def test_non_finite_weights_are_refused_on_load(framework: Framework, tmp_path: Path) -> None:
    tensors = with_value("embedding.weight", np.nan)
    tensors["layers.0.norm2.bias"][0] = -np.inf
    path = write_raw(tmp_path / "nan.safetensors", tensors)
    with pytest.raises(WeightFormatError) as error:
        framework.load(path)
    message = str(error.value)
    assert str(path) in message
    assert "embedding.weight: contains NaN or Inf" in message
    assert "layers.0.norm2.bias: contains NaN or Inf" in message


def test_save_canonical_refuses_non_finite_weights(tmp_path: Path) -> None:
    with pytest.raises(WeightFormatError, match=r"layers\.0\.attn\.q\.bias: contains NaN or Inf"):
        save_canonical(tmp_path / "nan.safetensors", CONFIG, with_value("layers.0.attn.q.bias", np.nan))
    assert list(tmp_path.iterdir()) == []


def test_missing_and_mis_shaped_tensors_are_listed_in_one_error(framework: Framework, tmp_path: Path) -> None:
    tensors = dict(TENSORS)
    del tensors["layers.1.norm2.bias"], tensors["layers.0.attn.v.kernel"]
    tensors["layers.0.attn.q.kernel"] = np.zeros((12, 11))
    tensors["layers.1.ffn.out.bias"] = np.zeros(13)
    tensors["layers.2.attn.q.kernel"] = np.zeros((12, 12))
    path = write_raw(tmp_path / "broken.safetensors", tensors)
    for attempt in (lambda: framework.load(path), lambda: framework.build(tensors)):
        with pytest.raises(WeightFormatError) as error:
            attempt()
        message = str(error.value)
        assert "missing tensors: layers.0.attn.v.kernel, layers.1.norm2.bias" in message
        assert "unexpected tensors: layers.2.attn.q.kernel" in message
        assert "layers.0.attn.q.kernel: shape (12, 11), expected (12, 12)" in message
        assert "layers.1.ffn.out.bias: shape (13,), expected (12,)" in message


def test_wrong_and_mixed_dtypes_are_listed(framework: Framework) -> None:
    tensors = dict(TENSORS)
    tensors["layers.0.norm1.scale"] = TENSORS["layers.0.norm1.scale"].astype(np.float32)
    tensors["layers.0.norm1.bias"] = np.zeros(CONFIG.d_model, np.int32)
    with pytest.raises(WeightFormatError) as error:
        framework.build(tensors)
    assert "layers.0.norm1.bias: dtype int32, expected one of float16/bfloat16/float32/float64" in str(error.value)
    assert "mixed dtypes ['float32', 'float64']: every tensor must share one dtype" in str(error.value)


def test_file_whose_config_does_not_match_its_tensors(framework: Framework, tmp_path: Path) -> None:
    stated = CONFIG.replace(d_ff=21, n_layers=1)
    path = write_raw(tmp_path / "mismatch.safetensors", TENSORS, config=stated)
    with pytest.raises(WeightFormatError) as error:
        framework.load(path)
    message = str(error.value)
    assert "layers.0.ffn.in.kernel: shape (12, 20), expected (12, 21)" in message
    assert "layers.0.ffn.out.kernel: shape (20, 12), expected (21, 12)" in message
    assert "unexpected tensors: layers.1.attn.k.bias" in message


def test_file_with_an_invalid_stored_config(framework: Framework, tmp_path: Path) -> None:
    path = write_raw(
        tmp_path / "bad_config.safetensors", TENSORS, config=CONFIG.to_json().replace('"n_heads": 3', '"n_heads": 5')
    )
    with pytest.raises(WeightFormatError, match=r"the stored config is invalid: .*divisible by n_heads \(5\)"):
        framework.load(path)


def test_file_of_another_format_version(framework: Framework, tmp_path: Path) -> None:
    path = write_raw(tmp_path / "v3.safetensors", TENSORS, **{VERSION_KEY: "3"})
    with pytest.raises(WeightFormatError, match=r"format version '3', this rosetta reads '1' and '2'"):
        framework.load(path)


def test_non_rosetta_safetensors_file(framework: Framework, tmp_path: Path) -> None:
    path = tmp_path / "resnet.safetensors"
    save_file({"conv1.weight": np.zeros((4, 3, 3, 3), np.float32)}, str(path))
    with pytest.raises(
        WeightFormatError, match=r"not a weight file rosetta reads: its tensors \(conv1\.weight, \.\.\.\)"
    ):
        framework.load(path)


def test_framework_layout_file_is_read_as_its_layout(framework: Framework, tmp_path: Path) -> None:
    """`load` reads a file in the layout its metadata names (as `rosetta convert` does): canonical tensors in a
    file declared a torch state_dict are that layout's mismatch, named in its own terms."""
    path = write_raw(tmp_path / "state_dict.safetensors", TENSORS, **{LAYOUT_KEY: "torch"})
    with pytest.raises(WeightFormatError, match=r"\(rosetta_torch\.Encoder state_dict, safetensors\) do not match"):
        framework.load(path)


@pytest.mark.parametrize("suffix", [".pt", ".bin", ".pth", ".ckpt", ".pkl"])
def test_pickles_are_refused(framework: Framework, tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"\x80\x04\x95 a pickle that must never be loaded")
    with pytest.raises(
        WeightFormatError, match=rf"refusing to unpickle a '\{suffix}' file\. Re-save it as safetensors"
    ):
        framework.load(path)


def test_missing_file(framework: Framework, tmp_path: Path) -> None:
    with pytest.raises(WeightFormatError, match=r"absent\.safetensors: no such file"):
        framework.load(tmp_path / "absent.safetensors")


def _header_length(data: bytes) -> int:
    return struct.unpack("<Q", data[:8])[0]


DAMAGES = {
    "empty": lambda data: b"",
    "cut_in_length": lambda data: data[:4],
    "cut_in_header": lambda data: data[: 8 + _header_length(data) // 2],
    "cut_in_data": lambda data: data[:-100],
    "one_byte_short": lambda data: data[:-1],
    "trailing_bytes": lambda data: data + b"\0" * 16,
    "garbage_header": lambda data: data[:8] + b"#" * _header_length(data) + data[8 + _header_length(data) :],
    "random_bytes": lambda data: bytes(range(256)) * 8,
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_truncated_or_corrupted_file(framework: Framework, tmp_path: Path, damage: str) -> None:
    good = save_canonical(tmp_path / "good.safetensors", CONFIG, TENSORS)
    path = tmp_path / "damaged.safetensors"
    path.write_bytes(DAMAGES[damage](good.read_bytes()))
    with pytest.raises(WeightFormatError, match=r"damaged\.safetensors: not a readable safetensors file \(truncated"):
        framework.load(path)


def test_corrupted_values_that_become_nan_are_caught(framework: Framework, tmp_path: Path) -> None:
    """Safetensors has no checksum; a corrupted float that reads as NaN is still refused."""
    path = save_canonical(tmp_path / "model.safetensors", CONFIG, TENSORS)
    data = bytearray(path.read_bytes())
    data[-8:] = np.array([np.nan]).tobytes()  # the last float64 of the last tensor
    path.write_bytes(bytes(data))
    with pytest.raises(WeightFormatError, match="contains NaN or Inf"):
        framework.load(path)


# --- writes are atomic ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("interruption", [OSError("No space left on device"), KeyboardInterrupt()],
                         ids=["disk_full", "ctrl_c"])  # fmt: skip
@pytest.mark.parametrize("existing", [False, True], ids=["new_file", "existing_file"])
def test_an_interrupted_save_leaves_the_destination_untouched(
    framework: Framework, tmp_path: Path, monkeypatch, interruption: BaseException, existing: bool
) -> None:
    destination = tmp_path / "model.safetensors"
    if existing:
        save_canonical(destination, CONFIG, random_tensors(CONFIG, seed=1))
    before = destination.read_bytes() if existing else None
    model = framework.build().model
    written = []

    def write_half_then_stop(self: Path, data: bytes) -> int:
        with open(self, "wb") as handle:
            handle.write(data[: len(data) // 2])
        written.append(self)
        raise interruption

    monkeypatch.setattr(Path, "write_bytes", write_half_then_stop)
    with pytest.raises(type(interruption)):
        framework.module.save(model, destination)
    assert written and written[0] != destination  # the half-written bytes went to a temporary file...
    assert sorted(p.name for p in tmp_path.iterdir()) == (["model.safetensors"] if existing else [])  # ...now gone
    if existing:
        assert destination.read_bytes() == before
    monkeypatch.undo()
    framework.module.save(model, destination)  # and a later save goes through
    np.testing.assert_array_equal(
        rosetta_torch.to_canonical(rosetta_torch.load(destination))["embedding.weight"], TENSORS["embedding.weight"]
    )


@pytest.mark.parametrize("argument", ["token_ids", "padding_mask"])
def test_a_python_list_is_refused_by_name(framework: Framework, argument: str) -> None:
    """Lists (or another framework's tensors) are refused before any attribute of them is read."""
    model = framework.build().model
    ids, mask = ids_of((2, 5)), np.zeros((2, 5), bool)
    args = (ids.tolist(), None) if argument == "token_ids" else (framework.array(ids), mask.tolist())
    with pytest.raises(InputError, match=rf"{argument} must be a .*, got list"):
        model(*args)


# --- token id dtypes, pickle names, folders and FIFOs, jitted calls (issue 27) ----------------------------------


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_both_id_dtypes_give_the_same_output(framework: Framework, dtype) -> None:
    """int32 and int64 ids (the dtypes both frameworks take) give one output; the others: BAD_INPUTS."""
    runner = framework.build()
    ids = ids_of((2, 5))
    np.testing.assert_array_equal(runner.output(ids.astype(dtype)), runner.output(ids))


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint32])
def test_token_type_ids_take_the_same_dtypes(framework: Framework, dtype) -> None:
    config = CONFIG.replace(type_vocab_size=2)
    runner = framework.build(random_tensors(config, seed=3), config)
    ids = ids_of((2, 5))
    with pytest.raises(
        InputError, match=rf"token_type_ids must be int32 or int64, got dtype (torch\.)?{np.dtype(dtype)}"
    ):
        runner.output(ids, token_type_ids=np.zeros((2, 5), dtype))
    assert runner.output(ids, token_type_ids=np.zeros((2, 5), np.int32)).shape == (2, 5, CONFIG.d_model)


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".ckpt", ".pkl"])
def test_save_refuses_a_name_load_would_refuse(framework: Framework, tmp_path: Path, suffix: str) -> None:
    """What `save` writes, `load` reads: a pickle's name is refused before anything is written."""
    with pytest.raises(WeightFormatError, match=rf"model\{suffix}: rosetta never writes pickles"):
        framework.module.save(framework.build().model, tmp_path / f"model{suffix}")
    assert list(tmp_path.iterdir()) == []


def test_load_of_a_directory_says_it_is_one(framework: Framework, tmp_path: Path) -> None:
    with pytest.raises(WeightFormatError, match=rf"{tmp_path}: a directory, but not an Orbax checkpoint") as err:
        framework.load(tmp_path)
    assert "no such file" not in str(err.value)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_load_of_a_fifo_says_it_is_one(framework: Framework, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "m.safetensors")
    with pytest.raises(WeightFormatError, match=r"m.safetensors: a FIFO \(named pipe\), not a regular file"):
        framework.load(tmp_path / "m.safetensors")


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_flax_checked_jit_raises_what_an_eager_call_raises(case: str) -> None:
    """`rosetta_flax.checked_jit`: checked on the host, then compiled; the same InputError as torch's eager call."""
    make_ids, make_mask, message = BAD_INPUTS[case]
    ids, mask = make_ids(), None if make_mask is None else make_mask()
    with pytest.raises(InputError, match=message):
        FRAMEWORKS[0].build().output(ids, mask)
    with pytest.raises(InputError, match=message):
        rosetta_flax.checked_jit(FRAMEWORKS[1].build().model)(ids, mask)


def test_flax_checked_jit_computes_what_the_eager_call_does() -> None:
    model = FRAMEWORKS[1].build().model
    ids = ids_of((2, 5))
    jitted = rosetta_flax.checked_jit(model)
    np.testing.assert_allclose(np.asarray(jitted(ids)), np.asarray(model(jnp.asarray(ids))), rtol=0, atol=1e-12)
    acts = rosetta_flax.checked_jit(model, method="activations")(ids, ids == CONFIG.padding_idx)
    assert set(acts) == set(model.activations(jnp.asarray(ids)))
    bad = _with(ids, (1, 4), CONFIG.vocab_size)
    with pytest.raises(InputError, match=f"token id {CONFIG.vocab_size} is out of range"):
        jitted(jnp.asarray(bad))
