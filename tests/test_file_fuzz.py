"""The file fuzzer (`nox -s fuzz`, issue 27): Hypothesis mutations of a valid canonical file, a sharded Hugging Face
folder and an Orbax directory (truncation, byte flips, safetensors header edits, JSON edits) through
`rosetta inspect` and `rosetta convert`. Every outcome is either success with an output that loads and holds what
the mutated source holds, or exit code 2 with one `rosetta: error:` line and nothing written.

Skipped without `--fuzz-examples N`. A falsifying mutation is printed as a `Mutation(...)`: paste it into
packages/rosetta-tools/tests/test_hostile_files.py (or tests/test_cli.py for Orbax) as a fixed case.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file, save_file

from rosetta_common import EncoderConfig, load_canonical, save_canonical
from rosetta_common.vectors import random_tensors
from rosetta_tools import layouts
from rosetta_tools.cli import main

BERT = EncoderConfig(
    vocab_size=20, d_model=8, n_heads=2, n_layers=1, d_ff=12, max_len=8, padding_idx=0, positions="learned",
    type_vocab_size=2, embedding_norm=True, scale_embedding=False, layer_norm_eps=1e-12,
)  # fmt: skip
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


@dataclass(frozen=True)
class Mutation:
    """One damage to one file of a valid source: `kind` truncate / flip / header / json, with its parameters."""

    source: str  # "canonical", "sharded" or "orbax"
    file: str  # relative to the source ("" for the canonical file itself)
    kind: str
    at: float = 0.0  # truncate / flip: where, as a fraction of the file's length
    xor: int = 1  # flip: the byte's change
    count: int = 1  # flip: how many consecutive bytes
    key: str = ""  # header / json: which entry ("" appends a new one)
    value: object = None  # header / json: its new value ("<delete>" removes the entry)


def build_sources(root: Path) -> dict[str, Path]:
    """The three valid sources the mutations damage."""
    canonical = save_canonical(root / "bert.safetensors", BERT, random_tensors(BERT, seed=11))
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["convert", str(canonical), str(root / "hf"), "--to", "hf-bert"]) == 0
        assert main(["convert", str(canonical), str(root / "orbax"), "--to", "orbax"]) == 0
    sharded = root / "sharded"
    sharded.mkdir()
    shutil.copy(root / "hf" / "config.json", sharded / "config.json")
    native = load_file(str(root / "hf" / "model.safetensors"))
    names = sorted(native)
    files = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for file, part in files.items():
        save_file({name: native[name] for name in part}, str(sharded / file), metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {name: file for file, part in files.items() for name in part}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    return {"canonical": canonical, "sharded": sharded, "orbax": root / "orbax"}


def files_of(source: Path) -> list[str]:
    if source.is_file():
        return [""]
    return sorted(str(path.relative_to(source)) for path in source.rglob("*") if path.is_file())


def mutate(data: bytes, mutation: Mutation) -> bytes:
    """`data` damaged as `mutation` says."""
    at = int(mutation.at * len(data))
    if mutation.kind == "truncate":
        return data[:at]
    if mutation.kind == "flip":
        at = min(at, max(len(data) - 1, 0))
        changed = bytes(byte ^ mutation.xor for byte in data[at : at + mutation.count])
        return data[:at] + changed + data[at + len(changed) :]
    if mutation.kind == "header" and len(data) >= 8:  # a safetensors file: edit its JSON header
        length = struct.unpack("<Q", data[:8])[0]
        try:
            header = json.loads(data[8 : 8 + length])
        except ValueError:
            return data
        edited = json.dumps(edit(header, mutation)).encode()
        return struct.pack("<Q", len(edited)) + edited + data[8 + length :]
    if mutation.kind == "json":
        try:
            content = json.loads(data)
        except ValueError:
            return data
        return json.dumps(edit(content, mutation)).encode()
    return data


def edit(content: object, mutation: Mutation) -> object:
    """One entry of a JSON object (or of its first nested object with that key) set, added or deleted."""
    if not isinstance(content, dict):
        return mutation.value
    target = content
    for value in content.values():  # the index's weight_map, a header's tensor entry
        if isinstance(value, dict) and mutation.key in value:
            target = value
            break
    key = mutation.key or "added"
    if mutation.value == "<delete>":
        target.pop(key, None)
    else:
        target[key] = mutation.value
    return content


@st.composite
def mutations(draw: st.DrawFn, sources: dict[str, Path]) -> Mutation:
    source = draw(st.sampled_from(sorted(sources)))
    file = draw(st.sampled_from(files_of(sources[source])))
    is_json = file.endswith(".json") or file.endswith("_METADATA")
    kinds = (
        ["truncate", "flip"] + (["json"] if is_json else []) + (["header"] if "safetensors" in file or not file else [])
    )
    kind = draw(st.sampled_from(kinds))
    at = draw(st.floats(0, 1))
    if kind in ("truncate", "flip"):
        return Mutation(source, file, kind, at, draw(st.integers(1, 255)), draw(st.integers(1, 16)))
    path = sources[source] / file if file else sources[source]
    keys = json_keys(path.read_bytes(), kind)
    key = draw(st.sampled_from([*keys, ""]))
    value = draw(st.just("<delete>") | JSON_VALUES)
    return Mutation(source, file, kind, key=key, value=value)


def json_keys(data: bytes, kind: str) -> list[str]:
    try:
        content = json.loads(data[8 : 8 + struct.unpack("<Q", data[:8])[0]] if kind == "header" else data)
    except ValueError:
        return []
    if not isinstance(content, dict):
        return []
    nested = [key for value in content.values() if isinstance(value, dict) for key in value]
    return sorted({*content, *nested[:50]})


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def check_mutation(sources: dict[str, Path], mutation: Mutation) -> None:
    """The promise for one damaged source, through inspect and convert."""
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        original = sources[mutation.source]
        damaged = work / original.name
        if original.is_dir():
            shutil.copytree(original, damaged)
        else:
            shutil.copy(original, damaged)
        target = damaged / mutation.file if mutation.file else damaged
        target.write_bytes(mutate(target.read_bytes(), mutation))
        for argv in (
            ["inspect", str(damaged)],
            ["convert", str(damaged), str(work / "out.safetensors"), "--to", "rosetta"],
        ):
            code, _, err = run(argv)
            assert code in (0, 2), f"{mutation}: {argv[0]} exited {code}: {err[-2000:]}"
            if code == 2:
                assert err.startswith("rosetta: error: ") and err.count("\n") == 1, f"{mutation}: {argv[0]}: {err}"
                assert not (work / "out.safetensors").exists(), f"{mutation}: refused but wrote"
            elif argv[0] == "convert":
                _, written = load_canonical(work / "out.safetensors")
                _, read = layouts.load(damaged)[:2]
                assert sorted(written) == sorted(read), mutation
                for name, value in read.items():
                    np.testing.assert_array_equal(written[name], value, err_msg=f"{mutation}: {name}")
                (work / "out.safetensors").unlink()
            else:
                assert err == "", f"{mutation}: inspect succeeded with {err}"


@pytest.mark.fuzz
def test_damaged_files_keep_the_promise(fuzz_examples: int, tmp_path_factory: pytest.TempPathFactory) -> None:
    sources = build_sources(tmp_path_factory.mktemp("sources"))
    counts: dict[str, int] = {}

    def check(mutation: Mutation) -> None:
        counts[mutation.source] = counts.get(mutation.source, 0) + 1
        check_mutation(sources, mutation)

    exploring = settings(
        max_examples=fuzz_examples,
        deadline=None,
        derandomize=False,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    exploring(given(mutation=mutations(sources))(check))()
    print(f"file fuzzer: {sum(counts.values())} damaged sources checked ({counts})")
