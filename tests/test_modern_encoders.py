"""ModernBERT and DistilBERT: Hugging Face folders into rosetta and back, proven equal to transformers.

Nothing is downloaded: small random-initialised `ModernBertModel` / `DistilBertModel` (and their MLM task models)
are built from a config, in float64, saved with `save_pretrained`, converted with `rosetta convert`, and run in the
float64 oracle, rosetta_torch and rosetta_flax on inputs longer than the local window, with padding: the hidden
states within 1e-10 of transformers (measured ~5e-15). Back to the HF layout the tensors are bit-exact and
`from_pretrained` loads them.

transformers computes ModernBERT's rotary cos / sin in float32 even in a float64 model
(`ModernBertRotaryEmbedding.forward` casts `inv_freq` and the positions with `.float()` under autocast-off), which
alone moves its float64 output ~4e-7 from exact maths. The float64 comparisons therefore run transformers with
that one method computing in float64 (`exact_rotary`); `test_transformers_rotary_tables_are_float32` measures the
unpatched difference, so the reason for the patch is itself tested. Its eager attention also takes the softmax in
float32 (`dtype=torch.float32`), which turns float64's finfo.min mask into -inf and padded rows into NaN: the
float64 runs use sdpa (the default), the float32 run below uses eager.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hf_patches import patch_exact_rotary
from transformers import (
    DistilBertConfig,
    DistilBertForMaskedLM,
    DistilBertModel,
    ModernBertConfig,
    ModernBertForMaskedLM,
    ModernBertModel,
)

import rosetta_flax
import rosetta_torch
from rosetta_common import encoder_forward, load_canonical
from rosetta_tools.cli import main

F64_BOUND = 1e-10  # common/DESIGN.md: float64 across implementations (measured here: <= 5e-15)
SEQ, WINDOW = 20, 6  # a local layer sees keys within WINDOW // 2 = 3 positions: SEQ is well past it

MODERNBERT = {
    "vocab_size": 53,
    "hidden_size": 16,
    "intermediate_size": 12,
    "num_hidden_layers": 4,  # layers 0 and 3 global, 1 and 2 local
    "num_attention_heads": 2,
    "max_position_embeddings": 64,
    "local_attention": WINDOW,
    "global_attn_every_n_layers": 3,
    "global_rope_theta": 160000.0,
    "local_rope_theta": 10000.0,
    "pad_token_id": 0,
    "attention_dropout": 0.0,
    "mlp_dropout": 0.0,
    "embedding_dropout": 0.0,
    "reference_compile": False,
}
DISTILBERT = {
    "vocab_size": 41,
    "dim": 16,
    "hidden_dim": 24,
    "n_layers": 2,
    "n_heads": 4,
    "max_position_embeddings": 30,
    "dropout": 0.0,
    "attention_dropout": 0.0,
    "pad_token_id": 0,
}


def _randomised(model: torch.nn.Module) -> torch.nn.Module:
    """Every weight of order 1 (HF's init leaves biases at 0 and LayerNorms at 1, which would hide a mix-up); a
    frozen sinusoidal table (DistilBERT's option) stays as transformers made it."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            param.copy_(torch.randn_like(param) * (0.3 if param.ndim == 2 else 0.1))
            if "norm" in name.lower() and param.ndim == 1 and name.endswith("weight"):
                param.add_(1.0)
    return model


def modernbert(model_class: type = ModernBertModel, **changes: object) -> torch.nn.Module:
    torch.manual_seed(3)
    config = ModernBertConfig(**{**MODERNBERT, **changes}, attn_implementation="sdpa")
    return _randomised(model_class(config).double().eval())


def distilbert(model_class: type = DistilBertModel, **changes: object) -> torch.nn.Module:
    torch.manual_seed(4)
    return _randomised(model_class(DistilBertConfig(**{**DISTILBERT, **changes})).double().eval())


BUILDS = {
    "modernbert": modernbert,
    "modernbert_biases": lambda: modernbert(attention_bias=True, mlp_bias=True, norm_bias=True),
    "modernbert_one_base": lambda: modernbert(local_rope_theta=None, global_attn_every_n_layers=2),
    "distilbert": distilbert,
    "distilbert_sinusoidal": lambda: distilbert(sinusoidal_pos_embds=True),
}


@pytest.fixture
def exact_rotary(monkeypatch: pytest.MonkeyPatch) -> None:
    """transformers' ModernBERT rotary tables computed in the model's dtype (float64) instead of float32."""
    patch_exact_rotary(monkeypatch)


def inputs(model: torch.nn.Module, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Token ids `[3, SEQ]` with padding at the ends of two rows (pad_token_id there) and the HF attention mask."""
    config = model.config
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, config.vocab_size, size=(3, SEQ))
    keep = np.ones_like(ids)
    keep[1, 14:], keep[2, 5:] = 0, 0
    ids[keep == 0] = config.pad_token_id
    return ids, keep


def hf_hidden(model: torch.nn.Module, ids: np.ndarray, keep: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(keep))
    return out.last_hidden_state.numpy()


def converted(model: torch.nn.Module, tmp_path: Path, capsys=None) -> tuple:
    model.save_pretrained(tmp_path / "hf")
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "rosetta.safetensors"), "--to", "rosetta"]) == 0
    return load_canonical(tmp_path / "rosetta.safetensors")


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


@pytest.mark.usefixtures("exact_rotary")
@pytest.mark.parametrize("build", BUILDS.values(), ids=BUILDS.keys())
def test_the_oracle_computes_what_transformers_computes(build, tmp_path: Path) -> None:
    """Every position, padded ones included: a padded query attends to the real keys in reach (its window, in a
    local layer), and one with none in reach attends uniformly, in both (transformers through finfo.min)."""
    model = build()
    config, tensors = converted(model, tmp_path)
    ids, keep = inputs(model)
    assert (
        max_diff(encoder_forward(config, tensors, ids, attention_mask=keep)["output"], hf_hidden(model, ids, keep))
        <= F64_BOUND
    )


@pytest.mark.usefixtures("exact_rotary")
@pytest.mark.parametrize("framework", ["torch", "flax"])
@pytest.mark.parametrize("build", BUILDS.values(), ids=BUILDS.keys())
def test_both_frameworks_compute_what_transformers_computes(build, framework: str, tmp_path: Path) -> None:
    model = build()
    converted(model, tmp_path)
    ids, keep = inputs(model)
    if framework == "torch":
        encoder = rosetta_torch.load(tmp_path / "rosetta.safetensors").eval()
        with torch.no_grad():
            ours = encoder(torch.from_numpy(ids), attention_mask=torch.from_numpy(keep)).numpy()
    else:
        encoder = rosetta_flax.load(tmp_path / "rosetta.safetensors")
        encoder.eval()
        ours = np.asarray(encoder(jnp.asarray(ids), attention_mask=jnp.asarray(keep)))
    assert max_diff(ours, hf_hidden(model, ids, keep)) <= F64_BOUND


def test_transformers_rotary_tables_are_float32(tmp_path: Path) -> None:
    """Unpatched, transformers' float64 ModernBERT is float32-close to exact maths, not float64-close: the one
    reason the comparisons above patch its rotary tables."""
    model = modernbert()
    config, tensors = converted(model, tmp_path)
    ids, keep = inputs(model)
    gap = max_diff(encoder_forward(config, tensors, ids, attention_mask=keep)["output"], hf_hidden(model, ids, keep))
    assert 1e-9 < gap < 1e-5, gap  # measured 3.8e-7


def test_float32_eager_transformers_within_the_float32_bound(tmp_path: Path) -> None:
    """transformers' eager attention (softmax in float32) in a float32 model, against rosetta_torch in float32."""
    model = modernbert()
    converted(model, tmp_path)
    model = model.float()
    model.config._attn_implementation = "eager"
    ids, keep = inputs(model)
    encoder = rosetta_torch.load(tmp_path / "rosetta.safetensors").float().eval()
    with torch.no_grad():
        ours = encoder(torch.from_numpy(ids), attention_mask=torch.from_numpy(keep)).numpy()
    assert max_diff(ours, hf_hidden(model, ids, keep)) <= 1e-4  # DESIGN: float32 vs float64-exact maths


@pytest.mark.parametrize("build", BUILDS.values(), ids=BUILDS.keys())
def test_hf_config_maps_onto_rosetta(build, tmp_path: Path) -> None:
    model = build()
    config, _ = converted(model, tmp_path)
    hf = model.config
    if hf.model_type == "modernbert":
        assert (config.positions, config.feed_forward, config.norm_first) == ("rotary", "glu", True)
        assert (config.attention_bias, config.mlp_bias, config.norm_bias) == (
            hf.attention_bias,
            hf.mlp_bias,
            hf.norm_bias,
        )
        assert config.rope_theta == hf.global_rope_theta and config.local_rope_theta == hf.local_rope_theta
        assert (config.local_window, config.global_every) == (hf.local_attention, hf.global_attn_every_n_layers)
        assert not config.first_attention_norm and config.has_final_norm and config.max_len == 64
        assert [spec.is_local for spec in config.layers] == [i % hf.global_attn_every_n_layers != 0 for i in range(4)]
    else:
        assert (config.positions, config.position_ids, config.norm_first) == ("learned", "sequential", False)
        assert config.type_vocab_size == 0 and not config.pooler and config.layer_norm_eps == 1e-12
        assert (config.d_model, config.d_ff, config.max_len) == (hf.dim, hf.hidden_dim, hf.max_position_embeddings)
    assert config.padding_idx == hf.pad_token_id and config.embedding_norm and not config.scale_embedding


@pytest.mark.usefixtures("exact_rotary")
@pytest.mark.parametrize("build", BUILDS.values(), ids=BUILDS.keys())
def test_back_to_the_hf_layout_is_bit_exact_and_loads(build, tmp_path: Path) -> None:
    model = build()
    converted(model, tmp_path)
    layout = f"hf-{model.config.model_type}"
    out = tmp_path / "back"
    assert main(["convert", str(tmp_path / "rosetta.safetensors"), str(out), "--to", layout]) == 0
    loaded = type(model).from_pretrained(out, dtype="auto").eval()  # config.json says float64
    original, back = model.state_dict(), loaded.state_dict()
    assert original.keys() == back.keys()
    for name, value in original.items():
        assert torch.equal(value, back[name]), name
    ids, keep = inputs(model)
    np.testing.assert_array_equal(hf_hidden(loaded, ids, keep), hf_hidden(model, ids, keep))


@pytest.mark.parametrize(
    "build, dropped",
    [
        (lambda: modernbert(ModernBertForMaskedLM), ("decoder.*", "head.dense.*", "head.norm.*")),
        (lambda: distilbert(DistilBertForMaskedLM), ("vocab_layer_norm.*", "vocab_projector.*", "vocab_transform.*")),
    ],
    ids=["modernbert_mlm", "distilbert_mlm"],
)
def test_a_task_model_keeps_its_encoder_and_says_what_it_drops(build, dropped, tmp_path: Path, capsys) -> None:
    task = build()
    task.save_pretrained(tmp_path / "mlm")
    code = main(["convert", str(tmp_path / "mlm"), str(tmp_path / "enc.safetensors"), "--to", "rosetta"])
    out = capsys.readouterr().out
    assert code == 0 and "note: dropped" in out and all(part in out for part in dropped), out
    _, tensors = load_canonical(tmp_path / "enc.safetensors")
    base = task.model if hasattr(task, "model") else task.distilbert
    word = base.embeddings.tok_embeddings if hasattr(task, "model") else base.embeddings.word_embeddings
    np.testing.assert_array_equal(tensors["embedding.weight"], word.weight.detach().numpy())


def test_the_sinusoidal_distilbert_table_is_read_with_a_note(tmp_path: Path, capsys) -> None:
    model = distilbert(sinusoidal_pos_embds=True)
    model.save_pretrained(tmp_path / "hf")
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "r.safetensors"), "--to", "rosetta"]) == 0
    assert "sinusoidal_pos_embds: the stored position table is read as a learned table" in capsys.readouterr().out
    _, tensors = load_canonical(tmp_path / "r.safetensors")
    stored = model.embeddings.position_embeddings.weight.detach().numpy()
    np.testing.assert_array_equal(tensors["position_embedding.weight"], stored)


@pytest.mark.parametrize(
    ("build", "change", "field"),
    [
        (modernbert, {"mlp_dropout": 0.2}, "mlp_dropout=0.2"),
        (modernbert, {"hidden_activation": "silu"}, "hidden_activation='silu'"),
        (modernbert, {"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "rope_scaling="),
        (distilbert, {"attention_dropout": 0.3}, "attention_dropout=0.3"),
        (distilbert, {"model_type": "deberta-v2"}, "model_type='deberta-v2'"),
        (distilbert, {"model_type": "electra"}, "model_type='electra'"),
        (distilbert, {"model_type": "mpnet"}, "model_type='mpnet'"),
    ],
)
def test_variants_rosetta_cannot_represent_are_refused_by_field(build, change, field, tmp_path: Path, capsys) -> None:
    build().save_pretrained(tmp_path / "hf")
    config_file = tmp_path / "hf" / "config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), **change}))
    code = main(["convert", str(tmp_path / "hf"), str(tmp_path / "x.safetensors"), "--to", "rosetta"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("rosetta: error: ") and field in err, err
    assert not (tmp_path / "x.safetensors").exists()


@pytest.mark.parametrize(
    "layout, needs",
    [
        ("hf-modernbert", "positions='learned' (needs 'rotary')"),
        ("hf-distilbert", "type_vocab_size=2 (needs 0)"),
        ("hf-bert", "feed_forward='glu' (needs 'mlp')"),
    ],
)
def test_an_encoder_a_family_cannot_hold_is_refused_naming_why(layout: str, needs: str, tmp_path: Path, capsys):
    from rosetta_common import EncoderConfig, save_canonical
    from rosetta_common.vectors import random_tensors

    bert_like = EncoderConfig(
        vocab_size=11, d_model=8, n_heads=2, n_layers=1, d_ff=12, positions="learned", scale_embedding=False,
        embedding_norm=True, type_vocab_size=2, padding_idx=0,
        feed_forward="glu" if layout == "hf-bert" else "mlp",
    )  # fmt: skip
    save_canonical(tmp_path / "m.safetensors", bert_like, random_tensors(bert_like, seed=0))
    code = main(["convert", str(tmp_path / "m.safetensors"), str(tmp_path / "hf"), "--to", layout])
    err = capsys.readouterr().err
    assert code == 2 and f"the {layout} layout cannot hold this encoder" in err and needs in err, err
    assert not (tmp_path / "hf").exists()
