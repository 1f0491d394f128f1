"""Sentence embeddings against the real client: sentence-transformers folders built offline (`st_folders`: a
random BertModel or XLMRobertaModel, a WordPiece tokenizer.json, Pooling in every mode, Dense layers, Normalize,
saved with `SentenceTransformer.save`), read by `rosetta_torch.load` / `rosetta_flax.load` and `rosetta embed`,
compared with `SentenceTransformer.encode()`: float32 within 1e-5, float64 (the client's model in float64) within
1e-10, the float64 oracle (`encoder_forward` + `rosetta_common.pooling`) within 1e-10, and `rosetta embed`'s
output equal, bit for bit, to the model's own embed on the same batch.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import st_folders
import torch
from st_folders import TEXTS

import rosetta_flax
import rosetta_torch
from rosetta_common import WeightFormatError, encoder_forward, read_metadata
from rosetta_common.pooling import sentence_embedding
from rosetta_common.sentence_head import HEAD_KEY, NoSentenceHeadError
from rosetta_tools import layouts
from rosetta_tools.cli import main
from rosetta_tools.texts import FolderTokenizer

sentence_transformers = pytest.importorskip("sentence_transformers")  # the cross suite installs it (noxfile)
from sentence_transformers import SentenceTransformer  # noqa: E402

F32_BOUND = 1e-5  # common/DESIGN.md: float32 across implementations (measured here: <= 4e-7)
F64_BOUND = 1e-10  # float64 across implementations (measured here: ~3e-16)
HEADS = {  # name -> (family, pooling, dense layers (out, bias, activation), normalize, include_prompt)
    "bert-mean-normalize": ("bert", "mean", (), True, True),
    "bert-cls": ("bert", "cls", (), False, True),
    "bert-max": ("bert", "max", (), False, True),
    "bert-mean_sqrt_len": ("bert", "mean_sqrt_len_tokens", (), False, True),
    "bert-weightedmean": ("bert", "weightedmean", (), False, True),
    "bert-lasttoken-normalize": ("bert", "lasttoken", (), True, True),
    "bert-cls+mean-dense-dense-normalize": (
        "bert", ("cls", "mean"), ((12, True, None), (8, False, torch.nn.Identity())), True, True,
    ),
    "bert-mean-without-prompt": ("bert", "mean", (), True, False),
    "xlmr-mean-normalize": ("xlm-roberta", "mean", (), True, True),
    "xlmr-lasttoken": ("xlm-roberta", "lasttoken", (), False, True),
    "xlmr-max-dense-gelu": ("xlm-roberta", "max", ((10, True, torch.nn.GELU()),), False, True),
}  # fmt: skip
PROMPT = "query: "


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """Every folder of HEADS, built once: one HF model per family, one sentence-transformers folder per head."""
    root = tmp_path_factory.mktemp("st")
    hf = {family: st_folders.hf_folder(family, root / f"hf-{family}") for family in ("bert", "xlm-roberta")}
    built = {"hf-bert": hf["bert"]}
    for name, (family, pooling, dense, normalize, include_prompt) in HEADS.items():
        built[name] = st_folders.st_folder(
            hf[family], root / name, pooling, dense=dense, normalize=normalize, include_prompt=include_prompt
        )
    return built


def client(folder: Path, dtype: torch.dtype = torch.float32) -> SentenceTransformer:
    return SentenceTransformer(str(folder), device="cpu").to(dtype).eval()


def client_encode(model: SentenceTransformer, texts: list[str], **kwargs: object) -> np.ndarray:
    """encode() in one batch (as the rosetta side runs them), in the model's dtype (convert_to_numpy would not
    keep float64)."""
    return model.encode(texts, batch_size=64, convert_to_tensor=True, **kwargs).cpu().numpy()


def texts_and_prompt(name: str) -> tuple[list[str], dict[str, str]]:
    """(the texts rosetta tokenizes, encode's prompt keyword): for the head that leaves the prompt out, the client
    is given the prompt and prepends it; rosetta is given the texts with it prepended and its length."""
    if HEADS[name][4]:
        return TEXTS, {}
    return [PROMPT + text for text in TEXTS], {"prompt": PROMPT}


def batch(folder: Path, model, texts: list[str]):
    return FolderTokenizer(folder, model.config).tokenize(texts)


def prompt_length(folder: Path, model) -> int:
    """The client's rule: the prompt's tokens less a trailing special token ([SEP], </s>)."""
    return int(batch(folder, model, [PROMPT]).attention_mask.sum()) - 1


def torch_embed(model, b, prompt: int | None) -> np.ndarray:
    with torch.no_grad():
        ids, mask = torch.from_numpy(b.token_ids), torch.from_numpy(b.attention_mask)
        return model.embed(ids, attention_mask=mask, prompt_length=prompt).numpy()


@pytest.mark.parametrize("name", list(HEADS))
def test_tokenizer_matches_the_client(folders, name) -> None:
    folder = folders[name]
    reference = client(folder)
    texts, prompt_kwargs = texts_and_prompt(name)
    features = reference.preprocess(TEXTS, **prompt_kwargs)
    model = rosetta_torch.load(folder, on_note=lambda note: None)
    got = batch(folder, model, texts)
    np.testing.assert_array_equal(got.token_ids, features["input_ids"].numpy())
    np.testing.assert_array_equal(got.attention_mask, features["attention_mask"].numpy())


@pytest.mark.parametrize("name", list(HEADS))
def test_embed_matches_the_client_float32(folders, name) -> None:
    folder = folders[name]
    texts, prompt_kwargs = texts_and_prompt(name)
    expected = client_encode(client(folder), TEXTS, **prompt_kwargs)
    torch_model = rosetta_torch.load(folder, on_note=lambda note: None).eval()
    b = batch(folder, torch_model, texts)
    prompt = None if HEADS[name][4] else prompt_length(folder, torch_model)
    got_torch = torch_embed(torch_model, b, prompt)
    flax_model = rosetta_flax.load(folder, on_note=lambda note: None)
    flax_model.eval()
    got_flax = np.asarray(flax_model.embed(b.token_ids, attention_mask=b.attention_mask, prompt_length=prompt))
    assert got_torch.dtype == got_flax.dtype == expected.dtype == np.float32
    assert got_torch.shape == expected.shape == (len(texts), torch_model.sentence_head.head.output_dim)
    assert np.abs(got_torch - expected).max() <= F32_BOUND
    assert np.abs(got_flax - expected).max() <= F32_BOUND


@pytest.mark.parametrize("name", list(HEADS))
def test_embed_matches_the_client_and_the_oracle_float64(folders, name) -> None:
    folder = folders[name]
    texts, prompt_kwargs = texts_and_prompt(name)
    expected = client_encode(client(folder, torch.float64), TEXTS, **prompt_kwargs)
    assert expected.dtype == np.float64
    torch_model = rosetta_torch.load(folder, dtype="float64", on_note=lambda note: None).eval()
    b = batch(folder, torch_model, texts)
    prompt = None if HEADS[name][4] else prompt_length(folder, torch_model)
    flax_model = rosetta_flax.load(folder, dtype="float64", on_note=lambda note: None)
    flax_model.eval()
    checkpoint = layouts.load_checkpoint(folder, dtype="float64")
    hidden = encoder_forward(checkpoint.config, checkpoint.tensors, b.token_ids, attention_mask=b.attention_mask)
    oracle = sentence_embedding(checkpoint.head, checkpoint.head_tensors, hidden["output"], b.attention_mask, prompt)
    for got in (
        torch_embed(torch_model, b, prompt),
        np.asarray(flax_model.embed(b.token_ids, attention_mask=b.attention_mask, prompt_length=prompt)),
        oracle,
    ):
        assert got.dtype == np.float64
        assert np.abs(got - expected).max() <= F64_BOUND


@pytest.mark.parametrize("name", ["bert-cls+mean-dense-dense-normalize", "xlmr-max-dense-gelu"])
def test_rosetta_embed_is_the_models_embed_bit_for_bit(folders, name, tmp_path, capsys) -> None:
    """`rosetta embed --out` writes what model.embed gives on the same batch (torch: eager; flax: the checked
    jit the command runs, which is within the float32 bound of the client too)."""
    folder = folders[name]
    torch_model = rosetta_torch.load(folder, on_note=lambda note: None).eval()
    b = batch(folder, torch_model, TEXTS)
    flax_model = rosetta_flax.load(folder, on_note=lambda note: None)
    flax_model.eval()
    expected = {
        "torch": torch_embed(torch_model, b, None),
        "flax": np.asarray(
            rosetta_flax.checked_jit(flax_model, method="embed")(b.token_ids, attention_mask=b.attention_mask)
        ),
    }
    reference = client_encode(client(folder), TEXTS)
    for framework, vectors in expected.items():
        out = tmp_path / f"{framework}.npy"
        code = main(["embed", str(folder), *TEXTS, "--framework", framework, "--out", str(out), "--batch-size", "64"])
        printed = capsys.readouterr().out
        assert code == 0
        written = np.load(out)
        assert written.dtype == np.float32 and written.shape == vectors.shape
        np.testing.assert_array_equal(written, vectors)
        assert np.abs(written - reference).max() <= F32_BOUND
        assert "cosine similarity" in printed  # up to TABLE_MAX texts: the table
        assert f"{len(TEXTS)} texts -> [{len(TEXTS)}, {vectors.shape[1]}]" in printed


def test_rosetta_embed_batches_a_file_and_prints_similarities(folders, tmp_path, capsys) -> None:
    """--file with --batch-size 2 (three batches, each padded to its own longest text) gives the client's
    vectors; a few texts print the cosine table, whose values are the vectors' own cosines."""
    folder = folders["bert-mean-normalize"]
    listing = tmp_path / "texts.txt"
    listing.write_text("\n".join(TEXTS) + "\n\n")  # a blank line is not a text
    out = tmp_path / "file.npy"
    assert main(["embed", str(folder), "--file", str(listing), "--out", str(out), "--batch-size", "2"]) == 0
    assert np.abs(np.load(out) - client_encode(client(folder), TEXTS)).max() <= F32_BOUND
    capsys.readouterr()
    assert main(["embed", str(folder), *TEXTS[:3], "--framework", "flax"]) == 0
    printed = capsys.readouterr().out
    assert "cosine similarity" in printed
    vectors = client_encode(client(folder), TEXTS[:3])
    assert f"{float(vectors[0] @ vectors[1]):.3f}" in printed


def test_the_head_survives_convert_both_ways(folders, tmp_path, capsys) -> None:
    """sentence-transformers folder -> canonical file (head in its metadata and `sentence_head.*` tensors) ->
    sentence-transformers folder: the client loads what rosetta wrote and encodes bit for bit as before."""
    folder = folders["bert-cls+mean-dense-dense-normalize"]
    canonical = tmp_path / "model.safetensors"
    assert main(["convert", str(folder), str(canonical), "--to", "rosetta"]) == 0
    assert (
        "note: sentence-transformers head: cls+mean pooling, dense 32 -> 12 (tanh), dense 12 -> 8 (identity), normalize"
        in capsys.readouterr().out
    )
    assert HEAD_KEY in read_metadata(canonical)
    from_file, from_folder = (
        rosetta_torch.load(path, on_note=lambda note: None).eval() for path in (canonical, folder)
    )
    b = batch(folder, from_folder, TEXTS)
    np.testing.assert_array_equal(torch_embed(from_file, b, None), torch_embed(from_folder, b, None))
    back = tmp_path / "st-again"
    assert main(["convert", str(canonical), str(back), "--to", "sentence-transformers"]) == 0
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):  # rosetta writes weights
        shutil.copy(folder / name, back / name)
    np.testing.assert_array_equal(client_encode(client(back), TEXTS), client_encode(client(folder), TEXTS))
    saved = tmp_path / "saved.safetensors"
    rosetta_flax.save(rosetta_flax.load(canonical), saved)  # a model's own save keeps its head
    assert layouts.load_checkpoint(saved).head == layouts.load_checkpoint(canonical).head


def test_a_layout_without_a_place_for_the_head_says_it_left_it_out(folders, tmp_path, capsys) -> None:
    assert main(["convert", str(folders["bert-mean-normalize"]), str(tmp_path / "hf"), "--to", "hf-bert"]) == 0
    assert (
        "note: the sentence head (mean pooling, normalize) is not written: the hf-bert layout"
        in capsys.readouterr().out
    )
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "st"), "--to", "sentence-transformers"]) == 2
    assert "the weights have no sentence head" in capsys.readouterr().err


def test_older_pooling_configs_read_the_same(folders, tmp_path) -> None:
    """sentence-transformers < 5 wrote one boolean per mode and word_embedding_dimension."""
    folder = tmp_path / "legacy"
    shutil.copytree(folders["bert-mean-normalize"], folder)
    legacy = {"word_embedding_dimension": 16, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
              "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}  # fmt: skip
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(legacy))
    assert layouts.load_checkpoint(folder).head == layouts.load_checkpoint(folders["bert-mean-normalize"]).head


def test_load_reads_every_layout_convert_reads(folders, tmp_path) -> None:
    """An HF folder, a torch state_dict file with its config, an Orbax directory, a canonical file: each framework's
    load gives the same canonical tensors as `rosetta convert` reads."""
    source = folders["hf-bert"]
    expected = layouts.load(source)[1]
    paths = {"hf": source}
    for layout, name in (("torch", "torch.safetensors"), ("orbax", "orbax"), ("rosetta", "canonical.safetensors")):
        paths[layout] = tmp_path / name
        assert main(["convert", str(source), str(paths[layout]), "--to", layout]) == 0
    for path in paths.values():
        for module in (rosetta_torch, rosetta_flax):
            tensors = module.to_canonical(module.load(path, on_note=lambda note: None))
            assert tensors.keys() == expected.keys()
            for key, value in expected.items():
                np.testing.assert_array_equal(tensors[key], value)


def test_a_folder_without_modules_json_has_no_head(folders, capsys) -> None:
    folder = folders["hf-bert"]
    model = rosetta_torch.load(folder, on_note=lambda note: None)
    ids = torch.tensor([[2, 7, 3]])
    with pytest.raises(NoSentenceHeadError, match=r"no sentence-embedding head.*without modules\.json"):
        model.embed(ids)
    flax_model = rosetta_flax.load(folder, on_note=lambda note: None)
    with pytest.raises(NoSentenceHeadError, match="no sentence-embedding head"):
        flax_model.embed(ids.numpy())
    assert model.pooled(model(ids)).shape == (1, 16)  # BERT's own pooler stays
    assert main(["embed", str(folder), "a cat"]) == 2
    assert "no sentence-embedding head (no modules.json)" in capsys.readouterr().err


def test_unreadable_paths_say_what_they_are(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("not weights\n")
    for module in (rosetta_torch, rosetta_flax):
        with pytest.raises(WeightFormatError, match="a directory, but not an Orbax checkpoint") as err:
            module.load(tmp_path / "empty")
        assert "no such file" not in str(err.value)
        with pytest.raises(WeightFormatError, match="not a safetensors file"):
            module.load(tmp_path / "notes.txt")
        with pytest.raises(WeightFormatError, match="no such file"):
            module.load(tmp_path / "missing.safetensors")


def test_modules_rosetta_does_not_read_are_refused_by_name(folders, tmp_path) -> None:
    folder = tmp_path / "layernorm"
    shutil.copytree(folders["bert-mean-normalize"], folder)
    entries = json.loads((folder / "modules.json").read_text())
    entries.insert(2, {"idx": 2, "name": "2", "path": "2_LayerNorm", "type": "sentence_transformers.models.LayerNorm"})
    for i, entry in enumerate(entries):
        entry["idx"] = i
    (folder / "modules.json").write_text(json.dumps(entries))
    with pytest.raises(
        WeightFormatError, match=re.escape("module 'sentence_transformers.models.LayerNorm' is not one rosetta reads")
    ):
        rosetta_torch.load(folder)
    dense = tmp_path / "swish"
    shutil.copytree(folders["xlmr-max-dense-gelu"], dense)
    config_path = dense / "2_Dense" / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "activation_function": "torch.nn.modules.activation.SiLU"}))
    with pytest.raises(WeightFormatError, match=re.escape("activation_function 'torch.nn.modules.activation.SiLU'")):
        rosetta_flax.load(dense)


def test_rosetta_embed_refuses_what_it_cannot_embed(folders, tmp_path, capsys) -> None:
    folder = folders["bert-mean-normalize"]
    assert main(["embed", str(folder)]) == 2
    assert "no texts to embed: give them as arguments or with --file texts.txt" in capsys.readouterr().err
    assert main(["embed", str(folder), "--file", str(tmp_path / "absent.txt")]) == 2
    assert "absent.txt: cannot read the texts" in capsys.readouterr().err
    weights_only = tmp_path / "weights-only"  # what convert writes: the weights and the head, no tokenizer
    assert main(["convert", str(folder), str(weights_only), "--to", "sentence-transformers"]) == 0
    capsys.readouterr()
    assert main(["embed", str(weights_only), "a cat"]) == 2
    assert "no tokenizer.json (rosetta embed tokenizes with the folder's own)" in capsys.readouterr().err


def pack_texts(b) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """The tokenized texts of batch `b` packed two or three to a row (in order, rows as long as `b`'s):
    token ids, segment ids, and each text's (row, start)."""
    lengths = b.attention_mask.sum(axis=1)
    row_length, pad = b.token_ids.shape[1], int(b.token_ids[b.attention_mask == 0][0])
    token_ids, segment_ids, places = [], [], []
    row_ids, row_segments = [], []
    for i, length in enumerate(lengths.tolist()):
        if len(row_ids) + length > row_length:
            token_ids.append(row_ids + [pad] * (row_length - len(row_ids)))
            segment_ids.append(row_segments + [0] * (row_length - len(row_segments)))
            row_ids, row_segments = [], []
        places.append((len(token_ids), len(row_ids)))
        row_ids += b.token_ids[i, :length].tolist()
        row_segments += [max(row_segments, default=0) + 1] * length
    token_ids.append(row_ids + [pad] * (row_length - len(row_ids)))
    segment_ids.append(row_segments + [0] * (row_length - len(row_segments)))
    return np.asarray(token_ids), np.asarray(segment_ids), places


PACKED_HEADS = (
    "bert-cls+mean-dense-dense-normalize",
    "xlmr-max-dense-gelu",
    "bert-lasttoken-normalize",
    "bert-mean-without-prompt",
    "bert-weightedmean",
)


@pytest.mark.parametrize("name", PACKED_HEADS)
def test_packed_embed_is_the_padded_embed(folders, name) -> None:
    """float64: `embed(..., segment_ids=...)` on the texts packed several to a row gives each text's embedding of
    the padded batch within F64_BOUND (measured ~1e-16), in both frameworks (flax jitted; eager too for the first
    head), every pooling mode there is (cls, mean, max, lasttoken, weightedmean, the prompt left out); one per
    text, in row then segment order."""
    folder = folders[name]
    texts, _ = texts_and_prompt(name)
    torch_model = rosetta_torch.load(folder, dtype="float64", on_note=lambda note: None).eval()
    flax_model = rosetta_flax.load(folder, dtype="float64", on_note=lambda note: None)
    flax_model.eval()
    b = batch(folder, torch_model, texts)
    prompt = None if HEADS[name][4] else prompt_length(folder, torch_model)
    token_ids, segment_ids, places = pack_texts(b)
    assert token_ids.shape[0] < len(texts)  # several texts share a row
    expected = torch_embed(torch_model, b, prompt)
    with torch.no_grad():
        got_torch = torch_model.embed(
            torch.from_numpy(token_ids), segment_ids=torch.from_numpy(segment_ids), prompt_length=prompt
        ).numpy()
    hidden = rosetta_flax.checked_jit(flax_model)(token_ids, segment_ids=segment_ids)
    got_flax = np.asarray(flax_model.embed_sequences(hidden, segment_ids, prompt))
    runs = [got_torch, got_flax]
    if name == PACKED_HEADS[0]:  # flax's eager embed (its own check, op by op: slower), once
        runs.append(np.asarray(flax_model.embed(token_ids, segment_ids=segment_ids, prompt_length=prompt)))
    order = sorted(range(len(texts)), key=lambda i: places[i])  # row order, then segment order
    for got in runs:
        assert got.shape == expected.shape
        assert np.abs(got - expected[order]).max() <= F64_BOUND


@pytest.mark.parametrize("framework", ["torch", "flax"])
def test_rosetta_embed_packs(folders, framework, tmp_path) -> None:
    """`rosetta embed --pack` (18 texts packed into 4 rows of the tokenizer's max length, 64; three rows per pass,
    the second pass filled up with two empty rows) writes each text's vector, in the texts' order, within the
    float32 bound of the padded run's (measured <= 3e-7: different GEMM shapes, the same maths)."""
    folder = folders["bert-cls+mean-dense-dense-normalize"]
    texts = TEXTS * 3  # more texts than one row holds, so several rows and passes
    padded, packed = tmp_path / "padded.npy", tmp_path / "packed.npy"
    common = ["embed", str(folder), *texts, "--framework", framework]
    assert main([*common, "--out", str(padded)]) == 0
    assert main([*common, "--out", str(packed), "--pack", "--batch-size", "3"]) == 0
    assert np.load(packed).shape == np.load(padded).shape == (len(texts), 8)
    assert np.abs(np.load(packed) - np.load(padded)).max() <= F32_BOUND
