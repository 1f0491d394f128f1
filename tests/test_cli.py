"""The `rosetta convert / inspect / diff` commands: every layout in every direction, exit codes, error messages.

Commands run in-process through `rosetta_tools.cli.main`, and once through `python -m rosetta_tools`.
Exit codes: 0 success, 1 a check failed (a difference over its bound), 2 usage or bad input.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
import pytest
import safetensors.torch
import torch
from flax import nnx
from safetensors.numpy import save_file
from torch import nn

import rosetta_flax
from rosetta_common import EncoderConfig, expected_shapes, load_canonical, save_canonical, tolerances
from rosetta_common.vectors import random_tensors
from rosetta_tools import layouts
from rosetta_tools.cli import main
from rosetta_torch import Encoder, from_canonical, to_canonical, torch_modules_to_canonical

CONFIG = EncoderConfig(
    vocab_size=23,
    d_model=12,
    n_heads=3,
    n_layers=2,
    d_ff=20,
    max_len=24,
    padding_idx=None,
    activation="gelu_tanh",
    norm_first=True,
    final_norm=True,
    layer_norm_eps=1e-6,
)
# the layouts that hold any encoder (HF: test_hf_checkpoints; sentence-transformers: test_sentence_embeddings)
LAYOUTS = [name for name in layouts.LAYOUTS if not name.startswith("hf-") and name != "sentence-transformers"]
SUFFIX = {"rosetta": ".safetensors", "torch": ".safetensors", "torch-modules": ".safetensors", "orbax": ""}


@pytest.fixture(scope="module")
def tensors() -> dict[str, np.ndarray]:
    return random_tensors(CONFIG, seed=21)


@pytest.fixture
def model_file(tmp_path: Path, tensors) -> Path:
    return save_canonical(tmp_path / "model.safetensors", CONFIG, tensors)


def write_config(path: Path, config: EncoderConfig = CONFIG) -> Path:
    path.write_text(config.to_json())
    return path


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(err: str, *fragments: str) -> None:
    assert err.startswith("rosetta: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def assert_same_tensors(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        assert actual[name].dtype == value.dtype, name
        np.testing.assert_array_equal(actual[name], value, err_msg=name)


# --- convert: every layout to every layout, bit-exact --------------------------------------------------------


@pytest.fixture(scope="module")
def converted(tmp_path_factory, tensors) -> dict[str, Path]:
    """The same weights written in each layout by `rosetta convert` from a canonical file."""
    directory = tmp_path_factory.mktemp("layouts")
    source = save_canonical(directory / "source.safetensors", CONFIG, tensors)
    paths = {}
    for layout in LAYOUTS:
        paths[layout] = directory / f"as_{layout}{SUFFIX[layout]}"
        assert main(["convert", str(source), str(paths[layout]), "--to", layout]) == 0
    return paths


@pytest.mark.parametrize("target", LAYOUTS)
@pytest.mark.parametrize("source", LAYOUTS)
def test_convert_every_direction_is_bit_exact(converted, tensors, tmp_path, capsys, source, target) -> None:
    destination = tmp_path / f"out{SUFFIX[target]}"
    code, out, err = run_cli(capsys, "convert", converted[source], destination, "--to", target)
    assert (code, err) == (0, "")
    assert f"-> {destination} ({layouts.LAYOUTS[target].description})" in out
    assert f"{sum(v.size for v in tensors.values()):,} parameters, float64" in out
    config, back, layout = layouts.load(destination)
    assert (config, layout) == (CONFIG, target)
    assert_same_tensors(back, tensors)


def test_rosetta_layout_is_the_canonical_file(converted, tensors) -> None:
    config, back = load_canonical(converted["rosetta"])
    assert config == CONFIG
    assert_same_tensors(back, tensors)


def test_torch_layout_is_a_rosetta_torch_state_dict(converted, tensors) -> None:
    model = Encoder(CONFIG, dtype=torch.float64)
    model.load_state_dict(safetensors.torch.load_file(converted["torch"]), strict=True)
    assert_same_tensors(to_canonical(model), tensors)


def build_pair(config: EncoderConfig) -> nn.ModuleDict:
    """An nn.Embedding + nn.TransformerEncoder pair built the way a PyTorch user would, independently of rosetta."""
    layer = nn.TransformerEncoderLayer(
        config.d_model,
        config.n_heads,
        config.d_ff,
        activation=nn.GELU("tanh"),
        layer_norm_eps=config.layer_norm_eps,
        batch_first=True,
        norm_first=True,
        dtype=torch.float64,
    )
    norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps, dtype=torch.float64)
    encoder = nn.TransformerEncoder(layer, config.n_layers, norm=norm, enable_nested_tensor=False)
    embedding = nn.Embedding(config.vocab_size, config.d_model, padding_idx=config.padding_idx, dtype=torch.float64)
    return nn.ModuleDict({"embedding": embedding, "encoder": encoder})


def test_torch_modules_layout_is_an_embedding_and_transformer_encoder_state_dict(converted, tensors) -> None:
    pair = build_pair(CONFIG)
    pair.load_state_dict(safetensors.torch.load_file(converted["torch-modules"]), strict=True)
    assert_same_tensors(torch_modules_to_canonical(CONFIG, pair["embedding"], pair["encoder"]), tensors)


def test_orbax_layout_restores_the_flax_way(converted, tensors) -> None:
    """The documented Flax pattern: abstract model, `nnx.split`, Orbax restore into its state, `nnx.merge`."""
    config = EncoderConfig.from_json((converted["orbax"] / "config.json").read_text())
    assert config == CONFIG
    abstract = nnx.eval_shape(lambda: rosetta_flax.Encoder(config, dtype=np.float64, rngs=nnx.Rngs(0)))
    graphdef, abstract_state = nnx.split(abstract)
    with ocp.StandardCheckpointer() as checkpointer:
        state = checkpointer.restore((converted["orbax"] / "state").absolute(), abstract_state)
    model = nnx.merge(graphdef, state)
    assert_same_tensors(rosetta_flax.to_canonical(model), tensors)


def test_user_saved_torch_state_dict_with_config_file(tmp_path, tensors, capsys) -> None:
    """`safetensors.torch.save_file(model.state_dict(), ...)` stores no config: `--config` supplies it."""
    path = tmp_path / "user.safetensors"
    safetensors.torch.save_file(from_canonical(CONFIG, tensors).state_dict(), path)
    code, _, err = run_cli(capsys, "convert", path, tmp_path / "out.safetensors", "--to", "rosetta")
    assert code == 2
    assert_one_line_error(
        err, "(rosetta_torch.Encoder state_dict, safetensors) stores no config: pass --config config.json"
    )
    config_file = write_config(tmp_path / "config.json")
    code, _, err = run_cli(
        capsys, "convert", path, tmp_path / "out.safetensors", "--to", "rosetta", "--config", config_file
    )
    assert (code, err) == (0, "")
    assert_same_tensors(load_canonical(tmp_path / "out.safetensors")[1], tensors)


def test_user_saved_torch_modules_state_dict_with_config_file(tmp_path, capsys) -> None:
    pair = build_pair(CONFIG)
    with torch.no_grad():
        for param in pair.parameters():
            param.normal_()
    path = tmp_path / "pair.safetensors"
    safetensors.torch.save_file(pair.state_dict(), path)
    code, _, err = run_cli(
        capsys, "convert", path, tmp_path / "flax", "--to", "orbax", "--config", write_config(tmp_path / "config.json")
    )
    assert (code, err) == (0, "")
    expected = torch_modules_to_canonical(CONFIG, pair["embedding"], pair["encoder"])
    assert_same_tensors(layouts.load(tmp_path / "flax")[1], expected)


def test_user_saved_bare_orbax_checkpoint_with_config_file(tmp_path, tensors, capsys) -> None:
    """`ocp.StandardCheckpointer().save(path, nnx.state(model))`, the config given with `--config`."""
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save((tmp_path / "ckpt").absolute(), nnx.state(rosetta_flax.from_canonical(CONFIG, tensors)))
    code, _, err = run_cli(capsys, "convert", tmp_path / "ckpt", tmp_path / "out.safetensors", "--to", "torch")
    assert code == 2
    assert_one_line_error(err, "(Flax NNX state, Orbax checkpoint) stores no config: pass --config")
    code, _, err = run_cli(
        capsys,
        "convert",
        tmp_path / "ckpt",
        tmp_path / "out.safetensors",
        "--to",
        "torch",
        "--config",
        write_config(tmp_path / "config.json"),
    )
    assert (code, err) == (0, "")
    assert_same_tensors(layouts.load(tmp_path / "out.safetensors")[1], tensors)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe\x00\x01", "config.json: the config file is not UTF-8 text (byte 0"),
        (b'{"vocab_size": 13,', "config.json: malformed JSON in the config file (line 1"),
        (b"[13, 8]", "config.json: the config file holds a JSON list, not an object"),
    ],
)
@pytest.mark.parametrize("command", ["convert", "inspect"])
def test_an_orbax_config_that_is_not_a_config(model_file, tmp_path, capsys, content, message, command) -> None:
    """An Orbax directory whose config.json is binary, malformed or a list: one line naming the file, nothing
    written (issue 27)."""
    assert run_cli(capsys, "convert", model_file, tmp_path / "flax", "--to", "orbax")[0] == 0
    (tmp_path / "flax" / "config.json").write_bytes(content)
    before = sorted(p.name for p in tmp_path.iterdir())
    target = [tmp_path / "out.safetensors", "--to", "rosetta"] if command == "convert" else []
    code, _, err = run_cli(capsys, command, tmp_path / "flax", *target)
    assert code == 2
    assert_one_line_error(err, str(tmp_path / "flax" / "config.json"), message)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("command", ["convert", "inspect"])
def test_an_orbax_data_file_cut_to_nothing_is_one_line(model_file, tmp_path, capsys, command) -> None:
    """Found by the file fuzzer (tests/test_file_fuzz.py): TensorStore's error spans 61 lines of its spec."""
    assert run_cli(capsys, "convert", model_file, tmp_path / "flax", "--to", "orbax")[0] == 0
    data = sorted(path for path in (tmp_path / "flax" / "state").rglob("d/*") if path.is_file())
    assert data
    for path in data:
        path.write_bytes(b"")
    target = [tmp_path / "out.safetensors", "--to", "rosetta"] if command == "convert" else []
    code, _, err = run_cli(capsys, command, tmp_path / "flax", *target)
    assert code == 2
    assert_one_line_error(err, "not a readable Orbax checkpoint")
    assert not (tmp_path / "out.safetensors").exists()


def test_force_replaces_an_orbax_output_with_an_hf_folder_and_back(tmp_path, capsys) -> None:
    """Both directory layouts replace an earlier output of either with --force (issue 27)."""
    config = EncoderConfig(
        vocab_size=13, d_model=8, n_heads=2, n_layers=1, d_ff=12, max_len=6, padding_idx=0, positions="learned",
        type_vocab_size=2, embedding_norm=True, scale_embedding=False, layer_norm_eps=1e-12,
    )  # fmt: skip
    source = save_canonical(tmp_path / "bert.safetensors", config, random_tensors(config, seed=1))
    out = tmp_path / "out"
    for layout in ("orbax", "hf-bert", "orbax"):
        assert run_cli(capsys, "convert", source, out, "--to", layout, "--force")[0] == 0
        assert layouts.load(out)[2] == layout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bert.safetensors", "out"]


def test_convert_casts_with_dtype(model_file, tmp_path, tensors, capsys) -> None:
    code, out, _ = run_cli(capsys, "convert", model_file, tmp_path / "f32", "--to", "orbax", "--dtype", "float32")
    assert code == 0 and "float32" in out
    _, back, _ = layouts.load(tmp_path / "f32")
    assert_same_tensors(back, {name: value.astype(np.float32) for name, value in tensors.items()})


def test_convert_refuses_to_overwrite_without_force(model_file, tmp_path, tensors, capsys) -> None:
    destination = tmp_path / "flax"
    assert run_cli(capsys, "convert", model_file, destination, "--to", "orbax")[0] == 0
    code, _, err = run_cli(capsys, "convert", model_file, destination, "--to", "orbax", "--dtype", "float32")
    assert code == 2
    assert_one_line_error(err, "exists (pass --force to replace it)")
    assert layouts.load(destination)[1]["embedding.weight"].dtype == np.float64  # untouched
    code, _, _ = run_cli(capsys, "convert", model_file, destination, "--to", "orbax", "--dtype", "float32", "--force")
    assert code == 0
    assert layouts.load(destination)[1]["embedding.weight"].dtype == np.float32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flax", "model.safetensors"]  # nothing left beside


def test_convert_refuses_a_pickle_destination(model_file, tmp_path, capsys) -> None:
    code, _, err = run_cli(capsys, "convert", model_file, tmp_path / "model.pt", "--to", "torch")
    assert code == 2
    assert_one_line_error(err, "never writes pickles")
    assert not (tmp_path / "model.pt").exists()


def test_convert_without_to_is_a_usage_error(model_file, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", str(model_file), str(tmp_path / "out.safetensors")])
    assert exit_info.value.code == 2
    assert "the following arguments are required: --to" in capsys.readouterr().err


# --- interrupted writes ----------------------------------------------------------------------------------------


def test_interrupted_orbax_write_leaves_the_destination_untouched(model_file, tmp_path, monkeypatch, capsys) -> None:
    destination = tmp_path / "flax"
    assert run_cli(capsys, "convert", model_file, destination, "--to", "orbax")[0] == 0
    before = sorted(str(p.relative_to(destination)) for p in destination.rglob("*"))
    real_save = ocp.StandardCheckpointer.save

    def save_then_fail(self, directory, *args, **kwargs):
        real_save(self, directory, *args, **kwargs)
        self.wait_until_finished()
        assert any(Path(directory).iterdir())  # a checkpoint was half built...
        raise OSError("No space left on device")  # ...when the disk filled up

    monkeypatch.setattr(ocp.StandardCheckpointer, "save", save_then_fail)
    code, _, err = run_cli(capsys, "convert", model_file, destination, "--to", "orbax", "--dtype", "float32", "--force")
    assert code == 2
    assert_one_line_error(err, "No space left on device")
    assert sorted(str(p.relative_to(destination)) for p in destination.rglob("*")) == before
    assert layouts.load(destination)[1]["embedding.weight"].dtype == np.float64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flax", "model.safetensors"]

    code, _, _ = run_cli(capsys, "convert", model_file, tmp_path / "new", "--to", "orbax")
    assert code == 2 and not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flax", "model.safetensors"]


@pytest.mark.parametrize("layout", ["rosetta", "torch", "torch-modules"])
def test_interrupted_safetensors_write_leaves_no_file(model_file, tmp_path, monkeypatch, capsys, layout) -> None:
    def write_half_then_fail(self: Path, data: bytes) -> int:
        with open(self, "wb") as handle:
            handle.write(data[: len(data) // 2])
        raise OSError("No space left on device")

    monkeypatch.setattr(Path, "write_bytes", write_half_then_fail)
    code, _, err = run_cli(capsys, "convert", model_file, tmp_path / "out.safetensors", "--to", layout)
    assert code == 2
    assert_one_line_error(err, "No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


# --- inspect ---------------------------------------------------------------------------------------------------


def test_inspect_prints_config_tensors_and_parameter_count(model_file, tensors, capsys) -> None:
    code, out, err = run_cli(capsys, "inspect", model_file)
    assert (code, err) == (0, "")
    assert "rosetta canonical safetensors, format version 2" in out
    assert f"config: {CONFIG}" in out
    for name, value in tensors.items():
        assert re.search(rf"{re.escape(name)}\s+│ {re.escape(str(value.shape))}\s+│ float64\s+│\s+{value.size:,}", out)
    total = sum(value.size for value in tensors.values())
    assert f"total: {len(tensors)} tensors, {total:,} parameters (float64" in out
    assert "check: every tensor matches the config" in out


def test_inspect_lists_layers_in_numeric_order(tmp_path, capsys) -> None:
    config = CONFIG.replace(n_layers=11)
    path = save_canonical(tmp_path / "deep.safetensors", config, random_tensors(config, seed=0))
    out = run_cli(capsys, "inspect", path)[1]
    assert out.index("embedding.weight") < out.index("layers.2.attn.k.bias") < out.index("layers.10.attn.k.bias")
    assert out.index("layers.10.norm2.scale") < out.index("final_norm.bias")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_inspect_reads_every_layout(converted, tensors, capsys, layout) -> None:
    code, out, _ = run_cli(capsys, "inspect", converted[layout])
    assert code == 0
    assert layouts.LAYOUTS[layout].description in out
    assert f"{sum(value.size for value in tensors.values()):,} parameters" in out
    assert "check: every tensor matches the config" in out


def test_inspect_without_a_config_shows_the_tensors(tmp_path, tensors, capsys) -> None:
    path = tmp_path / "user.safetensors"
    safetensors.torch.save_file(from_canonical(CONFIG, tensors).state_dict(), path)
    code, out, _ = run_cli(capsys, "inspect", path)
    assert code == 0
    assert "config: not stored in the file" in out and "layers.1.ffn.up.weight" in out
    assert "check:" not in out


def test_inspect_reports_every_mismatch_with_the_config(tmp_path, tensors, capsys) -> None:
    path = tmp_path / "user.safetensors"
    safetensors.torch.save_file(from_canonical(CONFIG, tensors).state_dict(), path)
    wrong = write_config(tmp_path / "config.json", CONFIG.replace(d_ff=21, final_norm=False))
    code, out, err = run_cli(capsys, "inspect", path, "--config", wrong)
    assert code == 2
    assert "layers.0.ffn.up.weight" in out  # the table is printed before the verdict
    assert err.startswith("rosetta: error: ") and "Traceback" not in err
    assert "unexpected tensors: final_norm.bias, final_norm.weight" in err
    assert "layers.0.ffn.up.weight: shape (20, 12), expected (21, 12)" in err
    assert "layers.1.ffn.down.weight: shape (12, 20), expected (12, 21)" in err


# --- diff ------------------------------------------------------------------------------------------------------


def diff_table(out: str) -> dict[str, list[float]]:
    """component -> [torch vs flax, torch vs oracle, flax vs oracle] parsed from `rosetta diff` output."""
    rows = {}
    for line in out.splitlines():
        cells = [cell.strip().removesuffix(" !") for cell in line.split("│")]
        if len(cells) == 4 and re.fullmatch(r"[\w.]+", cells[0]):
            rows[cells[0]] = [float(cell) for cell in cells[1:]]
    return rows


COMPONENTS = [
    "embedding",
    "positional",
    "layers.0.attn",
    "layers.0.ffn",
    "layers.1.attn",
    "layers.1.ffn",
    "final_norm",
    "output",
]


@pytest.mark.parametrize("layout", ["rosetta", "orbax"])
def test_diff_of_one_file_agrees_everywhere(converted, capsys, layout) -> None:
    code, out, err = run_cli(capsys, "diff", converted[layout], "--batch", "3", "--seq", "7", "--seed", "5")
    assert (code, err) == (0, "")
    table = diff_table(out)
    assert list(table) == COMPONENTS
    assert all(value <= tolerances.FLOAT64 for row in table.values() for value in row)
    assert max(value for row in table.values() for value in row) > 0  # the comparison really ran
    assert "batch 3 x seq 7 (seed 5)" in out and "every component within its bound" in out


def test_diff_in_float32_uses_the_float32_bounds(model_file, capsys) -> None:
    code, out, _ = run_cli(capsys, "diff", model_file, "--dtype", "float32")
    assert code == 0
    table = diff_table(out)
    assert all(row[0] <= tolerances.FLOAT32_CROSS for row in table.values())
    assert all(max(row[1:]) <= tolerances.FLOAT32_ORACLE for row in table.values())
    assert max(row[1] for row in table.values()) > 1e-9  # float32 rounding is visible against the oracle


def test_diff_finds_where_a_mismatch_starts(model_file, tmp_path, tensors, capsys) -> None:
    changed = dict(tensors)
    changed["layers.1.attn.v.bias"] = tensors["layers.1.attn.v.bias"] + 1e-3
    other = tmp_path / "other"
    layouts.save(other, "orbax", CONFIG, changed, force=False)
    code, out, err = run_cli(capsys, "diff", model_file, other)
    assert (code, err) == (1, "")
    assert f"weights: 1 of {len(tensors)} tensors differ between A and B" in out
    assert "(largest |difference| 1.0e-03, in layers.1.attn.v.bias)" in out
    table = diff_table(out)
    for name in COMPONENTS[:4]:
        assert max(table[name]) <= tolerances.FLOAT64, name
    for name in COMPONENTS[4:]:
        assert table[name][0] > tolerances.FLOAT64 and table[name][2] > tolerances.FLOAT64, name
        assert table[name][1] <= tolerances.FLOAT64, name  # torch runs A, as the oracle does
    assert "DIFFERENCE OVER BOUND, first at layers.1.attn (torch vs flax, flax vs oracle)" in out


def test_diff_of_different_configs_fails_the_check(model_file, tmp_path, capsys) -> None:
    config = CONFIG.replace(layer_norm_eps=1e-5)
    other = save_canonical(tmp_path / "other.safetensors", config, random_tensors(config, seed=21))
    code, out, _ = run_cli(capsys, "diff", model_file, other)
    assert code == 1
    assert "A and B have different configs: they differ on ['layer_norm_eps']" in out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [(["--seq", "25"], "sequence length 25 exceeds max_len 24")],
)
def test_diff_bad_input_is_exit_code_2(model_file, capsys, arguments, message) -> None:
    code, _, err = run_cli(capsys, "diff", model_file, *arguments)
    assert code == 2
    assert_one_line_error(err, message)


@pytest.mark.parametrize("argument", ["--batch", "--seq"])
def test_diff_needs_a_positive_size(model_file, capsys, argument) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["diff", str(model_file), argument, "0"])
    assert exit_info.value.code == 2
    assert "must be at least 1, got 0" in capsys.readouterr().err


# --- bad input: exit code 2, one line, no traceback -----------------------------------------------------------


def test_missing_file(tmp_path, capsys) -> None:
    for command in ("inspect", "diff"):
        code, _, err = run_cli(capsys, command, tmp_path / "absent.safetensors")
        assert code == 2
        assert_one_line_error(err, "absent.safetensors: no such file")


@pytest.mark.parametrize("suffix", [".pt", ".bin", ".pth", ".ckpt"])
def test_pickles_are_refused_not_loaded(tmp_path, capsys, suffix) -> None:
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"\x80\x04 not to be unpickled")
    for command in (["inspect"], ["diff"], ["convert", "--to", "rosetta"]):
        argv = [command[0], path, *([tmp_path / "out.safetensors"] if command[0] == "convert" else []), *command[1:]]
        code, _, err = run_cli(capsys, *argv)
        assert code == 2
        assert_one_line_error(
            err,
            f"refusing to unpickle a '{suffix}' file",
            "safetensors.torch.save_file(model.state_dict(), 'model.safetensors')",
        )


def test_non_rosetta_safetensors_file(tmp_path, capsys) -> None:
    path = tmp_path / "other.safetensors"
    save_file({"conv.weight": np.zeros((3, 3), np.float32), "fc.bias": np.zeros(3, np.float32)}, str(path))
    code, _, err = run_cli(capsys, "convert", path, tmp_path / "out", "--to", "orbax")
    assert code == 2
    assert_one_line_error(err, "not a weight file rosetta reads", "conv.weight, fc.bias")


def test_truncated_file(model_file, capsys) -> None:
    model_file.write_bytes(model_file.read_bytes()[:-100])
    code, _, err = run_cli(capsys, "inspect", model_file)
    assert code == 2
    assert_one_line_error(err, "not a readable safetensors file (truncated or corrupted?)")


def test_directory_that_is_not_a_checkpoint(tmp_path, capsys) -> None:
    code, _, err = run_cli(capsys, "inspect", tmp_path)
    assert code == 2
    assert_one_line_error(err, "a directory, but not an Orbax checkpoint")


def test_invalid_config_file(model_file, tmp_path, capsys) -> None:
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({**CONFIG.to_dict(), "n_heads": 5}))
    code, _, err = run_cli(capsys, "inspect", model_file, "--config", bad)
    assert code == 2
    assert_one_line_error(err, "not a valid rosetta config", "d_model (12) must be divisible by n_heads (5)")


def test_config_file_disagreeing_with_the_stored_one(model_file, tmp_path, capsys) -> None:
    config_file = write_config(tmp_path / "config.json", CONFIG.replace(dropout=0.0, max_len=30))
    code, _, err = run_cli(capsys, "diff", model_file, "--config", config_file)
    assert code == 2
    assert_one_line_error(err, "--config disagrees with the config stored with the weights on ['max_len', 'dropout']")


HANG_GUARD_S = 600  # a hang guard only: each run starts Python, torch and JAX in a few seconds on 2 quiet cores


def test_python_dash_m_exit_codes_and_stderr(model_file, tmp_path) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    missing = subprocess.run(
        [sys.executable, "-m", "rosetta_tools", "inspect", str(tmp_path / "absent.safetensors")],
        capture_output=True,
        text=True,
        env=env,
        timeout=HANG_GUARD_S,
    )
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr == f"rosetta: error: {tmp_path / 'absent.safetensors'}: no such file\n"

    ok = subprocess.run(
        [sys.executable, "-m", "rosetta_tools", "inspect", str(model_file)],
        capture_output=True,
        text=True,
        env=env,
        timeout=HANG_GUARD_S,
    )
    assert ok.returncode == 0 and ok.stderr == ""
    assert f"{sum(math.prod(s) for s in expected_shapes(CONFIG).values()):,} parameters" in ok.stdout


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--threads", "0"], "rosetta: error: train: argument --threads: must be at least 1, got 0"),
        (["train", "--steps", "0"], "rosetta: error: train: argument --steps: must be at least 1, got 0"),
        (["bench", "--preset", "nope"], "rosetta: error: bench: argument --preset: invalid choice: 'nope'"),
        (["bench", "--batch", "0"], "rosetta: error: bench: argument --batch: must be at least 1, got 0"),
        (["convert", "a", "b", "--to", "pytorch"], "rosetta: error: convert: argument --to: invalid choice"),
        (["nope"], "rosetta: error: argument COMMAND: invalid choice: 'nope'"),
    ],
)
def test_usage_errors_are_one_line_naming_the_option(capsys, argv, message) -> None:
    """argparse's usage errors too: one `rosetta: error:` line naming the option, then where the help is."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err
    assert "usage:" not in err and err.rstrip().endswith("--help`)")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--steps", "10", "--switch-at", "10"], "train: --switch-at (10) must be below --steps (10)"),
        (["train", "--min-len", "5", "--max-len", "4"], "train: --min-len (5) must not exceed --max-len (4)"),
        (["train", "--d-model", "10", "--n-heads", "3"], "train: --d-model (10) must be divisible by n_heads (3)"),
    ],
)
def test_every_command_reports_bad_input_the_same_way(capsys, argv, message) -> None:
    assert main(argv) == 2
    assert_one_line_error(capsys.readouterr().err, message)


@pytest.mark.parametrize(
    ("command", "first_line"),
    [
        ("diff {model} --batch 1 --seq 3", "float64, torch and flax run A; input batch 1 x seq 3"),
        ("inspect {model}", "rosetta canonical safetensors, format version 2"),
        ("convert {model} {tmp}/out.safetensors --to torch", None),  # its one line goes to a reader that left
    ],
)
def test_a_closed_pipe_is_not_a_failed_check(model_file, tmp_path, command, first_line) -> None:
    """`rosetta diff ... | head -1`: the reader goes away; the command ends with its own exit code, no traceback."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    rosetta = f"{sys.executable} -m rosetta_tools {command.format(model=model_file, tmp=tmp_path)}"
    reader = "head -1" if first_line else "head -0"
    script = f"{rosetta} | {reader}; echo exit=${{PIPESTATUS[0]}}"
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=HANG_GUARD_S)
    lines = done.stdout.splitlines()
    assert lines[-1] == "exit=0" and done.stderr == "", done
    if first_line:
        assert first_line in lines[0], done


def test_a_file_that_is_not_safetensors_lists_what_rosetta_reads(tmp_path, capsys) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("some notes\n")
    code, _, err = run_cli(capsys, "inspect", notes)
    assert code == 2
    assert_one_line_error(
        err, "notes.txt: not a safetensors file", "rosetta reads safetensors files (layouts rosetta, torch, torch"
    )
    assert "truncated" not in err


def test_a_missing_pickle_is_missing(tmp_path, capsys) -> None:
    code, _, err = run_cli(capsys, "inspect", tmp_path / "model.pt")
    assert code == 2
    assert_one_line_error(err, "model.pt: no such file")
