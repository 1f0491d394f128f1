"""Real checkpoints: Hugging Face BERT and RoBERTa folders into rosetta and back, proven equal to transformers.

Nothing is downloaded: small random-initialised `BertModel` / `RobertaModel` (and task models) are built from a
config, in float64, saved with `save_pretrained`, converted with `rosetta convert`, and run in the float64 oracle,
rosetta_torch and rosetta_flax: `last_hidden_state` and `pooler_output` within 1e-10 of transformers, with padding
and token types. Back to the HF layout the tensors are bit-exact and `from_pretrained` loads them.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertModel, RobertaConfig, RobertaModel

import rosetta_flax
import rosetta_torch
from rosetta_common import EncoderConfig, encoder_forward, load_canonical
from rosetta_tools import layouts
from rosetta_tools.cli import main

F64_BOUND = 1e-10  # common/DESIGN.md: float64 across implementations (measured below: ~1e-15)
SMALL = {
    "vocab_size": 41,
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 24,
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
}


def bert(**changes: object) -> BertModel:
    torch.manual_seed(0)
    config = BertConfig(**{**SMALL, "max_position_embeddings": 20, "type_vocab_size": 3, **changes})
    return _randomised(BertModel(config).double().eval())


def roberta(**changes: object) -> RobertaModel:
    torch.manual_seed(1)
    config = RobertaConfig(**{**SMALL, "max_position_embeddings": 22, "type_vocab_size": 1, **changes})
    return _randomised(RobertaModel(config).double().eval())


def _randomised(model: torch.nn.Module) -> torch.nn.Module:
    """Every weight of order 1 (HF's init leaves biases at 0 and LayerNorms at 1, which would hide a mix-up)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(torch.randn_like(param) * (0.3 if "weight" in name and param.ndim == 2 else 0.1))
            if "LayerNorm.weight" in name:
                param.add_(1.0)
    return model


def inputs(model: torch.nn.Module, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token ids with padding at the ends of rows (pad_token_id there), the HF attention mask, token types."""
    config = model.config
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, config.vocab_size, size=(3, 9))
    keep = np.ones_like(ids)
    keep[1, 6:], keep[2, 3:] = 0, 0
    ids[keep == 0] = config.pad_token_id
    types = np.zeros_like(ids) if config.type_vocab_size == 1 else (np.arange(9)[None, :] >= 4).astype(np.int64) * 2
    types = np.broadcast_to(types, ids.shape).copy()
    return ids, keep, types


def hf_outputs(model: torch.nn.Module, ids: np.ndarray, keep: np.ndarray, types: np.ndarray) -> tuple:
    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(ids),
            attention_mask=torch.from_numpy(keep),
            token_type_ids=torch.from_numpy(types),
        )
    return out.last_hidden_state.numpy(), out.pooler_output.numpy()


def converted(model: torch.nn.Module, tmp_path: Path, **save: object) -> tuple[EncoderConfig, dict[str, np.ndarray]]:
    model.save_pretrained(tmp_path / "hf", **save)
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "rosetta.safetensors"), "--to", "rosetta"]) == 0
    return load_canonical(tmp_path / "rosetta.safetensors")


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


@pytest.mark.parametrize("build", [bert, roberta], ids=["bert", "roberta"])
def test_the_oracle_computes_what_transformers_computes(build, tmp_path: Path) -> None:
    model = build()
    config, tensors = converted(model, tmp_path)
    ids, keep, types = inputs(model)
    hidden, pooled = hf_outputs(model, ids, keep, types)
    oracle = encoder_forward(config, tensors, ids, attention_mask=keep, token_type_ids=types)
    real = keep.astype(bool)  # HF's padded positions follow another convention for what they attend to
    assert max_diff(oracle["output"][real], hidden[real]) <= F64_BOUND
    assert max_diff(oracle["pooler"], pooled) <= F64_BOUND


@pytest.mark.parametrize("framework", ["torch", "flax"])
@pytest.mark.parametrize("build", [bert, roberta], ids=["bert", "roberta"])
def test_both_frameworks_compute_what_transformers_computes(build, framework: str, tmp_path: Path) -> None:
    """The converted file, loaded with rosetta_torch.load / rosetta_flax.load, run with HF's attention_mask and
    token types: the hidden states and the pooler output."""
    model = build()
    converted(model, tmp_path)
    ids, keep, types = inputs(model)
    hidden, pooled = hf_outputs(model, ids, keep, types)
    if framework == "torch":
        encoder = rosetta_torch.load(tmp_path / "rosetta.safetensors").eval()
        with torch.no_grad():
            arguments = {"attention_mask": torch.from_numpy(keep), "token_type_ids": torch.from_numpy(types)}
            ours = encoder(torch.from_numpy(ids), **arguments)
            ours_pooled = encoder.pooled(ours).numpy()
        ours = ours.numpy()
    else:
        encoder = rosetta_flax.load(tmp_path / "rosetta.safetensors")
        encoder.eval()
        ours = encoder(jnp.asarray(ids), attention_mask=jnp.asarray(keep), token_type_ids=jnp.asarray(types))
        ours, ours_pooled = np.asarray(ours), np.asarray(encoder.pooled(ours))
    real = keep.astype(bool)
    assert max_diff(ours[real], hidden[real]) <= F64_BOUND
    assert max_diff(ours_pooled, pooled) <= F64_BOUND


@pytest.mark.parametrize("build", [bert, roberta], ids=["bert", "roberta"])
def test_hf_config_maps_onto_rosetta(build, tmp_path: Path) -> None:
    model = build()
    config, _ = converted(model, tmp_path)
    hf = model.config
    assert (config.vocab_size, config.d_model, config.n_layers) == (hf.vocab_size, hf.hidden_size, 2)
    assert config.positions == "learned" and config.embedding_norm and config.pooler and not config.scale_embedding
    assert config.position_table_size == hf.max_position_embeddings
    assert config.position_ids == ("after_padding" if hf.model_type == "roberta" else "sequential")
    assert config.padding_idx == hf.pad_token_id and config.type_vocab_size == hf.type_vocab_size


@pytest.mark.parametrize("build, kind", [(bert, "hf-bert"), (roberta, "hf-roberta")], ids=["bert", "roberta"])
def test_back_to_the_hf_layout_is_bit_exact_and_loads(build, kind: str, tmp_path: Path) -> None:
    model = build()
    converted(model, tmp_path)
    out = tmp_path / "back"
    assert main(["convert", str(tmp_path / "rosetta.safetensors"), str(out), "--to", kind]) == 0
    loaded = type(model).from_pretrained(out, dtype="auto").eval()  # config.json says float64
    original, back = model.state_dict(), loaded.state_dict()
    assert original.keys() == back.keys()
    for name, value in original.items():
        assert torch.equal(value, back[name]), name
    ids, keep, types = inputs(model)
    for ours, theirs in zip(hf_outputs(loaded, ids, keep, types), hf_outputs(model, ids, keep, types), strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_a_task_model_keeps_its_encoder_and_says_what_it_drops(tmp_path: Path, capsys) -> None:
    torch.manual_seed(2)
    task = BertForMaskedLM(BertConfig(**SMALL, max_position_embeddings=20)).double()
    task.save_pretrained(tmp_path / "mlm")
    code = main(["convert", str(tmp_path / "mlm"), str(tmp_path / "enc.safetensors"), "--to", "rosetta"])
    out = capsys.readouterr().out
    assert code == 0
    assert "note: dropped" in out and "cls.predictions.*" in out
    config, tensors = load_canonical(tmp_path / "enc.safetensors")
    assert not config.pooler  # BertForMaskedLM has no pooler
    np.testing.assert_array_equal(
        tensors["embedding.weight"], task.bert.embeddings.word_embeddings.weight.detach().numpy()
    )


def test_a_sharded_checkpoint_reads_like_one_file(tmp_path: Path) -> None:
    model = bert()
    _, whole = converted(model, tmp_path / "one")
    _, sharded = converted(model, tmp_path / "shards", max_shard_size="20KB")
    assert (tmp_path / "shards" / "hf" / "model.safetensors.index.json").is_file()
    assert whole.keys() == sharded.keys()
    for name, value in whole.items():
        np.testing.assert_array_equal(sharded[name], value, err_msg=name)


def test_bfloat16_checkpoint_stays_bfloat16_and_float32_holds_it_exactly(tmp_path: Path, capsys) -> None:
    model = bert().to(torch.bfloat16)
    model.save_pretrained(tmp_path / "hf")
    expected = model.embeddings.word_embeddings.weight.detach().float().numpy()
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "x.safetensors"), "--to", "rosetta"]) == 0
    _, tensors = load_canonical(tmp_path / "x.safetensors")
    assert tensors["embedding.weight"].dtype.name == "bfloat16"
    np.testing.assert_array_equal(tensors["embedding.weight"].astype(np.float32), expected)
    capsys.readouterr()
    code = main(
        ["convert", str(tmp_path / "hf"), str(tmp_path / "y.safetensors"), "--to", "rosetta", "--dtype", "float32"]
    )
    assert code == 0 and "to float32: exact" in capsys.readouterr().out
    _, tensors = load_canonical(tmp_path / "y.safetensors")
    assert tensors["embedding.weight"].dtype == np.float32
    np.testing.assert_array_equal(tensors["embedding.weight"], expected)


def test_float32_checkpoint_keeps_float32(tmp_path: Path) -> None:
    model = bert().float()
    _, tensors = converted(model, tmp_path)
    assert {value.dtype for value in tensors.values()} == {np.dtype(np.float32)}
    np.testing.assert_array_equal(
        tensors["layers.1.attn.q.kernel"], model.encoder.layer[1].attention.self.query.weight.detach().numpy().T
    )


def test_a_pickle_checkpoint_is_refused_with_the_resave_line(tmp_path: Path, capsys) -> None:
    model = bert()
    model.save_pretrained(tmp_path / "hf", safe_serialization=False)
    assert (tmp_path / "hf" / "pytorch_model.bin").is_file()
    code = main(["convert", str(tmp_path / "hf"), str(tmp_path / "x.safetensors"), "--to", "rosetta"])
    err = capsys.readouterr().err
    assert code == 2 and "refusing to unpickle pytorch_model.bin" in err and "safe_serialization=True" in err


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"position_embedding_type": "relative_key"}, "position_embedding_type='relative_key'"),
        ({"is_decoder": True}, "is_decoder=True"),
        ({"add_cross_attention": True, "is_decoder": False}, "add_cross_attention=True"),
        ({"hidden_act": "silu"}, "hidden_act='silu'"),
        ({"model_type": "albert"}, "model_type='albert'"),
        ({"attention_probs_dropout_prob": 0.2}, "attention_probs_dropout_prob=0.2"),
    ],
)
def test_variants_rosetta_cannot_represent_are_refused_by_field(
    change: dict, field: str, tmp_path: Path, capsys
) -> None:
    bert().save_pretrained(tmp_path / "hf")
    config_file = tmp_path / "hf" / "config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), **change}))
    code = main(["convert", str(tmp_path / "hf"), str(tmp_path / "x.safetensors"), "--to", "rosetta"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("rosetta: error: ") and field in err, err


def test_an_encoder_hf_cannot_hold_is_refused_naming_why(tmp_path: Path, capsys) -> None:
    config = EncoderConfig(vocab_size=11, d_model=8, n_heads=2, n_layers=1, d_ff=12)  # sinusoidal, scaled: not BERT
    from rosetta_common import save_canonical
    from rosetta_common.vectors import random_tensors

    save_canonical(tmp_path / "m.safetensors", config, random_tensors(config, seed=0))
    code = main(["convert", str(tmp_path / "m.safetensors"), str(tmp_path / "hf"), "--to", "hf-bert"])
    err = capsys.readouterr().err
    assert code == 2 and "the hf-bert layout cannot hold this encoder: positions='sinusoidal'" in err
    assert not (tmp_path / "hf").exists()


def test_inspect_reads_a_checkpoint_folder(tmp_path: Path, capsys) -> None:
    bert().save_pretrained(tmp_path / "hf")
    assert main(["inspect", str(tmp_path / "hf")]) == 0
    out = capsys.readouterr().out
    assert "Hugging Face BERT checkpoint folder" in out and "embeddings.word_embeddings.weight" in out
    assert "check: every tensor matches the config" in out
    assert layouts.read(tmp_path / "hf").layout.name == "hf-bert"
