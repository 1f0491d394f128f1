"""The command line with one framework, or none: what runs without torch or JAX, and what says which package to add.

Runs in every nox suite: `common-only` (rosetta-common + rosetta-tools, no framework), `torch-only`,
`flax-only` and `cross`. Tests for a missing framework are generated only where that framework is missing, so
each suite checks what its own installation can and cannot do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rosetta_common import EncoderConfig, load_canonical, save_canonical, tolerances
from rosetta_common.name_tables import TORCH_ENCODER, TORCH_NN
from rosetta_common.vectors import random_tensors
from rosetta_tools import frameworks, layouts
from rosetta_tools.cli import main

CONFIG = EncoderConfig(vocab_size=19, d_model=8, n_heads=2, n_layers=2, d_ff=12, max_len=10, final_norm=True)
SAFETENSORS_LAYOUTS = ["rosetta", "torch", "torch-modules"]
PRESENT = frameworks.available()
MISSING = [framework for framework in frameworks.PACKAGES if framework not in PRESENT]


@pytest.fixture(scope="module")
def tensors() -> dict[str, np.ndarray]:
    return random_tensors(CONFIG, seed=7)


@pytest.fixture
def model_file(tmp_path: Path, tensors: dict[str, np.ndarray]) -> Path:
    return save_canonical(tmp_path / "model.safetensors", CONFIG, tensors)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(err: str, *fragments: str) -> None:
    assert err.startswith("rosetta: error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


@pytest.mark.parametrize("target", SAFETENSORS_LAYOUTS)
@pytest.mark.parametrize("source", SAFETENSORS_LAYOUTS)
def test_convert_between_safetensors_layouts_is_bit_exact(
    tmp_path: Path,
    model_file: Path,
    tensors: dict[str, np.ndarray],
    capsys: pytest.CaptureFixture[str],
    source: str,
    target: str,
) -> None:
    first, second = tmp_path / "first.safetensors", tmp_path / "second.safetensors"
    assert run_cli(capsys, "convert", model_file, first, "--to", source)[0] == 0
    code, out, err = run_cli(capsys, "convert", first, second, "--to", target)
    assert (code, err) == (0, "")
    assert f"({layouts.LAYOUTS[target].description})" in out
    config, back, layout = layouts.load(second)
    assert (config, layout) == (CONFIG, target)
    assert back.keys() == tensors.keys()
    for name, value in tensors.items():
        np.testing.assert_array_equal(back[name], value, err_msg=name)


@pytest.mark.parametrize(("layout", "table"), [("torch", TORCH_ENCODER), ("torch-modules", TORCH_NN)])
def test_torch_layouts_hold_the_name_tables_native_tensors(
    tmp_path: Path, model_file: Path, layout: str, table
) -> None:
    """The file holds exactly the native names and shapes its table derives (transposed kernels, fused q/k/v)."""
    from safetensors.numpy import load_file

    path = tmp_path / "native.safetensors"
    assert main(["convert", str(model_file), str(path), "--to", layout]) == 0
    stored = load_file(str(path))
    assert {name: value.shape for name, value in stored.items()} == table.native_shapes(CONFIG)
    _, canonical = load_canonical(model_file)
    q, k, v = (canonical[f"layers.1.attn.{p}.kernel"] for p in "qkv")
    if layout == "torch-modules":
        fused = stored["encoder.layers.1.self_attn.in_proj_weight"]
        np.testing.assert_array_equal(fused, np.concatenate([q.T, k.T, v.T]))
    else:
        np.testing.assert_array_equal(stored["layers.1.attn.q.weight"], q.T)


def test_inspect_needs_no_framework(model_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "inspect", model_file)
    assert (code, err) == (0, "")
    assert f"config: {CONFIG}" in out and "check: every tensor matches the config" in out


if "flax" in PRESENT:

    def test_orbax_round_trip_with_flax(tmp_path: Path, model_file: Path, tensors: dict[str, np.ndarray]) -> None:
        assert main(["convert", str(model_file), str(tmp_path / "ckpt"), "--to", "orbax"]) == 0
        config, back, layout = layouts.load(tmp_path / "ckpt")
        assert (config, layout) == (CONFIG, "orbax")
        for name, value in tensors.items():
            np.testing.assert_array_equal(back[name], value, err_msg=name)

else:

    def test_orbax_names_rosetta_flax_when_missing(
        model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, _, err = run_cli(capsys, "convert", model_file, tmp_path / "ckpt", "--to", "orbax")
        assert code == 2
        assert_one_line_error(err, "the orbax layout needs rosetta-flax", frameworks.INSTALL["flax"])
        assert not (tmp_path / "ckpt").exists()


def check_diff_runs(model_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each installed framework has its column against the oracle; a missing one is named with its install line."""
    code, out, err = run_cli(capsys, "diff", model_file, "--batch", "3", "--seq", "6")
    assert (code, err) == (0, "")
    rows = [line.split("│") for line in out.splitlines() if line.strip().startswith(("embedding", "layers.", "output"))]
    header = next(line for line in out.splitlines() if "component" in line)
    for framework in PRESENT:
        assert f"{framework} vs oracle" in header
    for missing in MISSING:
        assert missing not in header and f"{missing}: not run" in out and frameworks.INSTALL[missing] in out
    values = [float(cell.strip()) for row in rows for cell in row[1:]]
    assert values and max(values) <= tolerances.FLOAT64 and max(values) > 0  # a real comparison ran


if PRESENT:

    def test_diff_runs_the_installed_frameworks(model_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
        check_diff_runs(model_file, capsys)

else:

    def test_diff_without_any_framework_names_both(model_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
        code, _, err = run_cli(capsys, "diff", model_file)
        assert code == 2
        assert_one_line_error(err, frameworks.INSTALL["torch"], frameworks.INSTALL["flax"])


if MISSING:

    @pytest.mark.parametrize("framework", MISSING)
    @pytest.mark.parametrize("command", [["demo"], ["train", "--steps", "1"]])
    def test_commands_that_need_both_frameworks_name_the_missing_one(
        capsys: pytest.CaptureFixture[str], framework: str, command: list[str]
    ) -> None:
        code, out, err = run_cli(capsys, *command)
        assert code == 2 and out == ""
        package = frameworks.PACKAGES[framework].replace("_", "-")
        verb = "is" if len(MISSING) == 1 else "are"
        assert_one_line_error(err, f"needs {' and '.join(f'rosetta-{f}' for f in MISSING)}, which {verb} not installed")
        assert package in err and frameworks.INSTALL[framework] in err


BERT_LIKE = CONFIG.replace(
    padding_idx=0,
    scale_embedding=False,
    positions="learned",
    type_vocab_size=2,
    embedding_norm=True,
    pooler=True,
    activation="gelu",
    final_norm=None,  # post-norm: none, as BERT
)


@pytest.mark.parametrize(
    ("kind", "config"), [("hf-bert", BERT_LIKE), ("hf-roberta", BERT_LIKE.replace(position_ids="after_padding"))]
)
def test_hf_checkpoint_folders_need_no_framework(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, config: EncoderConfig
) -> None:
    """Out to a Hugging Face folder and back, bit-exact, NumPy only (transformers loads it: test_hf_checkpoints)."""
    tensors = random_tensors(config, seed=3)
    source = save_canonical(tmp_path / "bert.safetensors", config, tensors)
    assert main(["convert", str(source), str(tmp_path / "hf"), "--to", kind]) == 0
    assert sorted(path.name for path in (tmp_path / "hf").iterdir()) == ["config.json", "model.safetensors"]
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "back.safetensors"), "--to", "rosetta"]) == 0
    back_config, back = load_canonical(tmp_path / "back.safetensors")
    assert back_config == config.replace(dropout=back_config.dropout)
    for name, value in tensors.items():
        np.testing.assert_array_equal(back[name], value, err_msg=name)
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "hf")]) == 0
    assert "check: every tensor matches the config" in capsys.readouterr().out
