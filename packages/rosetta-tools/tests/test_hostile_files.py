"""Hostile but realistic files through `rosetta convert / inspect / diff` (issue 27): each is exit code 2, one
`rosetta: error:` line naming the real cause, nothing written and an existing destination untouched.

NumPy only: runs in every nox suite (the Orbax and framework cases are in tests/test_cli.py and
tests/test_hardening.py). The fixed cases here include those the file fuzzer (tests/test_file_fuzz.py) found.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from rosetta_common import EncoderConfig, load_canonical, save_canonical
from rosetta_common.io import CONFIG_KEY, VERSION_KEY
from rosetta_common.vectors import random_tensors
from rosetta_tools import frameworks
from rosetta_tools.cli import main

BERT = EncoderConfig(
    vocab_size=30, d_model=8, n_heads=2, n_layers=2, d_ff=16, max_len=10, padding_idx=0, positions="learned",
    type_vocab_size=2, embedding_norm=True, scale_embedding=False, layer_norm_eps=1e-12,
)  # fmt: skip
INDEX = "model.safetensors.index.json"
READING = ["convert", "inspect", *(["diff"] if frameworks.available() else [])]  # diff needs a framework first


def run_cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under `folder` (hidden temporary files included) with its bytes (None for a folder or FIFO)."""
    found: dict[str, bytes | None] = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root, name)
            found[str(path.relative_to(folder))] = path.read_bytes() if path.is_file() else None
    return found


def assert_refused(capsys: pytest.CaptureFixture[str], where: Path, argv: list[object], *fragments: str) -> str:
    """The command exits 2 with one `rosetta: error:` line holding `fragments`, and nothing under `where` changed."""
    before = snapshot(where)
    code, out, err = run_cli(capsys, *argv)
    assert code == 2, (out, err)
    assert err.startswith("rosetta: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err + out
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert snapshot(where) == before, "a refused command wrote or replaced something"
    return err


@pytest.fixture
def bert(tmp_path: Path) -> Path:
    return save_canonical(tmp_path / "bert.safetensors", BERT, random_tensors(BERT, seed=5))


@pytest.fixture
def hf_folder(tmp_path: Path, bert: Path) -> Path:
    assert main(["convert", str(bert), str(tmp_path / "hf"), "--to", "hf-bert"]) == 0
    return tmp_path / "hf"


def shard(folder: Path, into: Path) -> Path:
    """`folder`'s model.safetensors split into two shards with an index, as `save_pretrained` shards."""
    into.mkdir()
    (into / "config.json").write_bytes((folder / "config.json").read_bytes())
    native = load_file(str(folder / "model.safetensors"))
    names = sorted(native)
    halves = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for file, part in halves.items():
        save_file({name: native[name] for name in part}, str(into / file), metadata={"format": "pt"})
    weight_map = {name: file for file, part in halves.items() for name in part}
    (into / INDEX).write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    return into


@pytest.fixture
def sharded(tmp_path: Path, hf_folder: Path) -> Path:
    return shard(hf_folder, tmp_path / "sharded")


def edit_index(folder: Path, change) -> None:
    index = json.loads((folder / INDEX).read_text())
    change(index)
    (folder / INDEX).write_text(json.dumps(index))


def test_a_sharded_folder_converts_and_inspects(sharded: Path, bert: Path, tmp_path: Path, capsys) -> None:
    """The valid case the refusals below damage: read from its shards, bit-exact."""
    assert run_cli(capsys, "convert", sharded, tmp_path / "back.safetensors", "--to", "rosetta")[0] == 0
    _, back = load_canonical(tmp_path / "back.safetensors")
    _, original = load_canonical(bert)
    assert sorted(back) == sorted(original)
    for name, value in original.items():
        np.testing.assert_array_equal(back[name], value, err_msg=name)
    code, out, _ = run_cli(capsys, "inspect", sharded)
    assert code == 0 and "check: every tensor matches the config" in out


# --- 1, 2, 6: the index of a sharded folder -------------------------------------------------------------------

BAD_INDEXES = {
    "not JSON": (b"{not json", "malformed JSON in the checkpoint index (line 1, column 2"),
    "truncated JSON": (b'{"weight_map": {"a": ', "malformed JSON in the checkpoint index"),
    "not UTF-8": (b"\xff\xfe{}", "the checkpoint index is not UTF-8 text"),
    "a JSON list": (b"[1, 2]", "the checkpoint index holds a JSON list, not an object"),
    "no weight_map": (
        b'{"metadata": {}}',
        "'weight_map' must be an object of tensor names to shard files; it is missing",
    ),
    "weight_map a list": (b'{"weight_map": ["a.safetensors"]}', "it is a JSON list"),
    "weight_map empty": (b'{"weight_map": {}}', "it is empty"),
    "shard not a name": (b'{"weight_map": {"embeddings.word_embeddings.weight": 3}}', "maps 'embeddings.word_em"),
    "nested too deep": (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
}


@pytest.mark.parametrize("case", BAD_INDEXES)
@pytest.mark.parametrize("command", READING)
def test_a_bad_index_is_one_line(sharded: Path, tmp_path: Path, capsys, case: str, command: str) -> None:
    content, message = BAD_INDEXES[case]
    (sharded / INDEX).write_bytes(content)
    argv = {
        "convert": ["convert", sharded, tmp_path / "x.safetensors", "--to", "rosetta"],
        "inspect": ["inspect", sharded],
    }
    assert_refused(capsys, tmp_path, argv.get(command, ["diff", sharded]), f"{sharded / INDEX}: ", message)


@pytest.mark.parametrize("outside", ["../../other.safetensors", "../hf/model.safetensors", "/etc/passwd", "a/../../x"])
def test_an_index_entry_outside_the_folder_is_refused(sharded: Path, tmp_path: Path, capsys, outside: str) -> None:
    edit_index(sharded, lambda index: index["weight_map"].update({"pooler.dense.bias": outside}))
    assert_refused(
        capsys, tmp_path, ["convert", sharded, tmp_path / "x.safetensors", "--to", "rosetta"],
        f"shard {outside!r} points outside the checkpoint folder",
    )  # fmt: skip


def test_a_tensor_stored_twice_is_refused(sharded: Path, tmp_path: Path, capsys) -> None:
    """The silent wrong answer: the same tensor in both shards with different values was read from the shard the
    index does not name."""
    first, second = sorted(sharded.glob("model-*.safetensors"))
    one, two = load_file(str(first)), load_file(str(second))
    name = next(iter(one))
    save_file({**two, name: one[name] * 2}, str(second))
    err = assert_refused(capsys, tmp_path, ["convert", sharded, tmp_path / "x.safetensors", "--to", "rosetta"], name)
    assert "stored twice" in err or "places" in err
    assert first.name in err and second.name in err


def test_a_tensor_in_another_shard_than_the_index_says(sharded: Path, tmp_path: Path, capsys) -> None:
    first, second = sorted(sharded.glob("model-*.safetensors"))
    name = next(iter(load_file(str(first))))
    edit_index(sharded, lambda index: index["weight_map"].update({name: second.name}))
    assert_refused(
        capsys, tmp_path, ["inspect", sharded], f"holds tensor {name}, which the index {INDEX} places in {second.name}"
    )


def test_a_shard_the_index_names_is_missing(sharded: Path, tmp_path: Path, capsys) -> None:
    edit_index(sharded, lambda index: index["weight_map"].update({"pooler.dense.bias": "model-00003.safetensors"}))
    assert_refused(capsys, tmp_path, ["inspect", sharded], "names shard model-00003.safetensors, which is not in")


def test_a_tensor_the_index_lists_is_missing_from_its_shard(sharded: Path, tmp_path: Path, capsys) -> None:
    first = sorted(sharded.glob("model-*.safetensors"))[0]
    edit_index(sharded, lambda index: index["weight_map"].update({"extra.weight": first.name}))
    assert_refused(capsys, tmp_path, ["inspect", sharded], "1 tensors are not in the shard it names, e.g. extra.weight")


# --- 14: an HF config.json that is not a JSON object ----------------------------------------------------------

BAD_HF_CONFIGS = {
    "malformed": (b'{"model_type": "bert",', "malformed JSON in the Hugging Face config (line 1"),
    "binary": (b"\x00\xff\x10\x80", "the Hugging Face config is not UTF-8 text"),
    "a JSON list": (b'["bert"]', "the Hugging Face config holds a JSON list, not an object"),
    "a JSON string": (b'"bert"', "holds a JSON string, not an object"),
    "model_type a list": (b'{"model_type": ["bert"]}', "model_type=['bert']: rosetta reads these encoders"),
    "fields missing": (b'{"model_type": "bert", "hidden_act": "gelu"}', "config.json does not describe a rosetta"),
}


@pytest.mark.parametrize("case", BAD_HF_CONFIGS)
@pytest.mark.parametrize("folder", ["hf", "sharded"])
def test_a_bad_hf_config_says_what_and_where(tmp_path: Path, sharded: Path, capsys, case: str, folder: str) -> None:
    content, message = BAD_HF_CONFIGS[case]
    (tmp_path / folder / "config.json").write_bytes(content)
    err = assert_refused(
        capsys, tmp_path, ["convert", tmp_path / folder, tmp_path / "x.safetensors", "--to", "rosetta"], message
    )
    assert str(tmp_path / folder) in err and "no config.json with a model_type" not in err


# --- 3: a --config file that is not text or not a config ------------------------------------------------------

BAD_CONFIG_FILES = {
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00", "the config file is not UTF-8 text (byte 0"),
    "latin-1": ('{"vocab_size": 30, "d_model": 8, "n_heads": 2, "n_layers": 2, "d_ff": 16, "x": "é"}'.encode("latin-1"),
                "the config file is not UTF-8 text"),
    "malformed": (b'{"vocab_size": 30,', "malformed JSON in the config file (line 1, column 19"),
    "a JSON list": (b"[30, 8]", "the config file holds a JSON list, not an object"),
    "null": (b"null", "holds a JSON null, not an object"),
    "unknown field": (b'{"vocab_size": 30, "colour": 1}', "not a valid rosetta config"),
    "nested too deep": (b'{"a": ' * 50_000 + b"1" + b"}" * 50_000, "nested too deeply"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_CONFIG_FILES)
@pytest.mark.parametrize("command", ["convert", "inspect"])
def test_a_bad_config_file_is_one_line(tmp_path: Path, bert: Path, capsys, case: str, command: str) -> None:
    content, message = BAD_CONFIG_FILES[case]
    config = tmp_path / "config.json"
    config.write_bytes(content)
    target = [tmp_path / "x.safetensors", "--to", "rosetta"] if command == "convert" else []
    assert_refused(capsys, tmp_path, [command, bert, *target, "--config", config], f"{config}: ", message)


# --- 7: --force replaces an earlier HF output, atomically, and nothing else -----------------------------------


def test_force_replaces_an_earlier_hf_output(tmp_path: Path, bert: Path, hf_folder: Path, capsys) -> None:
    other = EncoderConfig(**{**BERT.to_dict(), "d_ff": 12})
    second = save_canonical(tmp_path / "other.safetensors", other, random_tensors(other, seed=9))
    assert_refused(capsys, tmp_path, ["convert", second, hf_folder, "--to", "hf-bert"], "exists (pass --force")
    assert run_cli(capsys, "convert", second, hf_folder, "--to", "hf-bert", "--force")[0] == 0
    assert json.loads((hf_folder / "config.json").read_text())["intermediate_size"] == 12
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bert.safetensors", "hf", "other.safetensors"]
    assert sorted(path.name for path in hf_folder.iterdir()) == ["config.json", "model.safetensors"]


def test_force_never_replaces_an_unrelated_folder(tmp_path: Path, bert: Path, capsys) -> None:
    folder = tmp_path / "documents"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    assert_refused(
        capsys, tmp_path, ["convert", bert, folder, "--to", "hf-bert", "--force"], "holds no checkpoint rosetta reads"
    )


def test_force_does_not_put_a_file_in_place_of_a_folder(tmp_path: Path, bert: Path, hf_folder: Path, capsys) -> None:
    assert_refused(
        capsys, tmp_path, ["convert", bert, hf_folder, "--to", "rosetta", "--force"],
        f"{hf_folder} is a directory; the rosetta layout is a file",
    )  # fmt: skip


# --- 9, 15, 16: destinations and sources that are not plain files ---------------------------------------------


@pytest.mark.parametrize("length", [200, 240, 255])
@pytest.mark.parametrize("layout", ["rosetta", "hf-bert"])
def test_a_long_valid_name_is_written(tmp_path: Path, bert: Path, capsys, length: int, layout: str) -> None:
    name = "w" * (length - len(".safetensors")) + ".safetensors"
    assert run_cli(capsys, "convert", bert, tmp_path / name, "--to", layout)[0] == 0
    assert run_cli(capsys, "convert", bert, tmp_path / name, "--to", layout, "--force")[0] == 0  # beside itself
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(["bert.safetensors", name])


def test_a_name_over_the_limit_names_the_file(tmp_path: Path, bert: Path, capsys) -> None:
    name = "w" * 300 + ".safetensors"
    err = assert_refused(capsys, tmp_path, ["convert", bert, tmp_path / name, "--to", "rosetta"], "File name too long")
    assert name in err and ".tmp" not in err


@pytest.mark.parametrize("below", ["afile/x.safetensors", "afile/deeper/x.safetensors"])
@pytest.mark.parametrize("layout", ["rosetta", "hf-bert"])
def test_a_destination_under_a_file(tmp_path: Path, bert: Path, capsys, below: str, layout: str) -> None:
    (tmp_path / "afile").write_text("a file")
    assert_refused(
        capsys, tmp_path, ["convert", bert, tmp_path / below, "--to", layout],
        f"cannot write {tmp_path / below}: {tmp_path / 'afile'} is a file, not a directory",
    )  # fmt: skip


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
@pytest.mark.parametrize("command", [*READING, "config"])
def test_a_fifo_is_not_missing(tmp_path: Path, bert: Path, capsys, command: str) -> None:
    """Never opened (reading a FIFO would wait for a writer): said to be a FIFO, not 'no such file'."""
    fifo = tmp_path / "weights.safetensors.fifo"
    os.mkfifo(fifo)
    argv = {
        "inspect": ["inspect", fifo],
        "convert": ["convert", fifo, tmp_path / "x.safetensors", "--to", "rosetta"],
        "diff": ["diff", fifo],
        "config": ["inspect", bert, "--config", fifo],
    }[command]
    err = assert_refused(capsys, tmp_path, argv, f"{fifo}: a FIFO (named pipe), not a regular")
    assert "no such file" not in err


def test_a_device_is_not_a_weight_file(tmp_path: Path, capsys) -> None:
    assert_refused(capsys, tmp_path, ["inspect", "/dev/null"], "/dev/null: a device, not a regular file")


# --- 11: casts that overflow ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "value", "dtype", "limit"),
    [(np.float32, 1e6, "float16", "65504"), (np.float64, 1e300, "float32", "3.40282e+38"),
     (np.float64, -1e300, "bfloat16", "3.38953e+38"), (np.float32, 70000.0, "float16", "65504")],
)  # fmt: skip
def test_a_cast_that_overflows_says_so(tmp_path: Path, capsys, stored, value: float, dtype: str, limit: str) -> None:
    tensors = {name: array.astype(stored) for name, array in random_tensors(BERT, seed=2).items()}
    tensors["layers.1.ffn.in.bias"][4] = value
    source = save_canonical(tmp_path / "big.safetensors", BERT, tensors)
    err = assert_refused(
        capsys, tmp_path, ["convert", source, tmp_path / "x.safetensors", "--to", "rosetta", "--dtype", dtype],
        f"the cast to {dtype} overflows: layers.1.ffn.in.bias holds {abs(value):.6g}", f"range of +-{limit}",
    )  # fmt: skip
    assert "NaN or Inf" not in err and "Warning" not in err


# --- 13: a canonical file of another format version -----------------------------------------------------------


@pytest.mark.parametrize("version", ["3", "0", ""])
@pytest.mark.parametrize("command", READING)
def test_another_format_version_is_refused_by_every_command(tmp_path: Path, capsys, version: str, command: str) -> None:
    path = tmp_path / "future.safetensors"
    save_file(random_tensors(BERT, seed=1), str(path), metadata={CONFIG_KEY: BERT.to_json(), VERSION_KEY: version})
    argv = {"convert": ["convert", path, tmp_path / "x.safetensors", "--to", "torch"], "inspect": ["inspect", path]}
    err = assert_refused(capsys, tmp_path, argv.get(command, ["diff", path]), f"format version {version!r}")
    assert "this rosetta reads '1' and '2'" in err


def test_every_mismatch_with_the_config_on_one_line(tmp_path: Path, capsys) -> None:
    """Found by the file fuzzer: a flipped header byte changes a shape; the listed problems come on one line."""
    tensors = random_tensors(BERT, seed=1)
    tensors["layers.0.ffn.in.bias"] = np.zeros(17)
    del tensors["layers.1.norm2.scale"]
    path = tmp_path / "damaged.safetensors"
    save_file(tensors, str(path), metadata={CONFIG_KEY: BERT.to_json(), VERSION_KEY: "1"})
    for command in READING:
        target = [tmp_path / "x.safetensors", "--to", "rosetta"] if command == "convert" else []
        assert_refused(
            capsys, tmp_path, [command, path, *target],
            "do not match EncoderConfig(", "missing tensors: layers.1.norm2.scale; ",
            "layers.0.ffn.in.bias: shape (17,), expected (16,)",
        )  # fmt: skip
