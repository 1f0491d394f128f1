"""The HF transformers BERT peers of `rosetta bench` compute rosetta's encoder: the float64 oracle, every post-norm
stored vector, padded positions included (bound: common/DESIGN.md's float64 1e-10), and they skip with a reason where
they cannot run."""

from __future__ import annotations

import importlib.metadata
import importlib.util

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from runners import cast, max_abs_diff

import rosetta_torch
from rosetta_common import EncoderConfig, tolerances
from rosetta_common.vectors import CASES, Vector, stored_vector
from rosetta_tools.throughput import hf_bert
from rosetta_tools.throughput.hf_bert_jax import hf_flax_bert_peer
from rosetta_tools.throughput.hf_bert_torch import hf_bert_peer

# The peers put HF's encoder stack behind rosetta's token embedding + sinusoidal positions (rosetta_tools'
# hf_bert_torch / hf_bert_jax): a vector with the BERT/RoBERTa embedding front is not theirs to run.
SEEDS_FRONT = {"positions": "sinusoidal", "type_vocab_size": 0, "embedding_norm": False, "pooler": False}
POST_NORM = [
    case.name
    for case in CASES
    if not case.config.norm_first
    and not case.config.has_final_norm
    and all(getattr(case.config, name) == value for name, value in SEEDS_FRONT.items())
]


@pytest.fixture(scope="module", params=POST_NORM)
def post_norm_vector(request: pytest.FixtureRequest) -> Vector:
    """Each stored vector whose config BERT can express (post-norm, no final norm) with the seeds' embedding front."""
    return stored_vector(request.param)


def test_there_are_post_norm_vectors_with_padding() -> None:
    assert {"post_norm_relu", "gelu_tanh_eps", "varied_padding", "all_padding_row"} <= set(POST_NORM)


def test_torch_bert_peer_matches_the_oracle(post_norm_vector, device) -> None:
    vector = post_norm_vector
    model = rosetta_torch.from_canonical(vector.config, cast(vector.weights, "float64"), device=device).eval()
    _, forward = hf_bert_peer(vector.config, model)
    with torch.no_grad():
        ids, mask = (torch.from_numpy(a).to(device) for a in (vector.token_ids, vector.padding_mask))
        output = forward(ids, mask).cpu().numpy()
    assert output.dtype == np.float64
    assert max_abs_diff(output, vector.oracle["output"]) <= tolerances.FLOAT64


def test_flax_bert_peer_matches_the_oracle(post_norm_vector) -> None:
    vector = post_norm_vector
    if reason := hf_bert.skip_reason(vector.config, "jax"):
        pytest.skip(reason)  # transformers 5 (a provisioned GPU machine's) has no Flax BERT to compare
    apply, params = hf_flax_bert_peer(vector.config, cast(vector.weights, "float64"), jnp.float64)
    output = np.asarray(apply(params, jnp.asarray(vector.token_ids), jnp.asarray(vector.padding_mask)))
    assert output.dtype == np.float64
    assert max_abs_diff(output, vector.oracle["output"]) <= tolerances.FLOAT64


def test_bert_names_cover_every_layer_tensor() -> None:
    config = EncoderConfig(vocab_size=10, d_model=8, n_heads=2, n_layers=2, d_ff=16)
    tensors = {name: np.zeros(1) for name in rosetta_torch.to_canonical(rosetta_torch.Encoder(config))}
    names = hf_bert.encoder_tensors(tensors)
    assert len(names) == len(tensors) - 1  # all but the embedding table
    assert "layer.1.attention.output.LayerNorm.scale" in names and "layer.0.intermediate.dense.kernel" in names


def test_a_final_norm_has_no_bert_counterpart() -> None:
    with pytest.raises(ValueError, match=r"final_norm\.scale"):
        hf_bert.encoder_tensors({"final_norm.scale": np.zeros(4)})


def test_skips_pre_norm_and_missing_transformers(monkeypatch) -> None:
    post = EncoderConfig(vocab_size=10, d_model=8, n_heads=2, n_layers=1, d_ff=16)
    pre = EncoderConfig(vocab_size=10, d_model=8, n_heads=2, n_layers=1, d_ff=16, norm_first=True)
    assert hf_bert.skip_reason(post, "torch") is None and hf_bert.skip_reason(post, "jax") is None
    assert "post-norm" in hf_bert.skip_reason(pre, "torch")
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "5.0.0")
    assert hf_bert.skip_reason(post, "torch") is None
    assert "no Flax models" in hf_bert.skip_reason(post, "jax")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert "not installed" in hf_bert.skip_reason(post, "torch")


def test_torch_modernbert_peer_matches_the_oracle(device, monkeypatch) -> None:
    """transformers' ModernBertModel holding the modernbert_front vector's weights: float64-equal to the oracle with
    its rotary tables computed in float64 (tests/test_modern_encoders.py says why), float32-close without."""
    from hf_patches import patch_exact_rotary

    from rosetta_tools.throughput.hf_modernbert_torch import hf_modernbert_peer

    vector = stored_vector("modernbert_front")
    model = rosetta_torch.from_canonical(vector.config, cast(vector.weights, "float64"), device=device).eval()
    _, forward = hf_modernbert_peer(vector.config, model)
    ids, mask = (torch.from_numpy(a).to(device) for a in (vector.token_ids, vector.padding_mask))
    with torch.no_grad():
        unpatched = forward(ids, mask).cpu().numpy()
    assert 1e-12 < max_abs_diff(unpatched, vector.oracle["output"]) <= 1e-5

    patch_exact_rotary(monkeypatch)
    with torch.no_grad():
        output = forward(ids, mask).cpu().numpy()
    assert output.dtype == np.float64
    assert max_abs_diff(output, vector.oracle["output"]) <= tolerances.FLOAT64


def test_the_modernbert_peer_skips_what_it_cannot_hold() -> None:
    from rosetta_tools.throughput import hf_modernbert

    assert hf_modernbert.skip_reason(stored_vector("modernbert_front").config) is None
    plain = EncoderConfig(vocab_size=10, d_model=8, n_heads=2, n_layers=1, d_ff=16)
    assert "positions='sinusoidal' (needs 'rotary')" in hf_modernbert.skip_reason(plain)
