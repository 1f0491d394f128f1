"""Each component on its own, both frameworks against the oracle's functions (float64, 1e-10):
token embedding, positional encoding, layer norm, attention (with padding), feed-forward, one layer."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from runners import max_abs_diff

import rosetta_flax
import rosetta_torch
from rosetta_common import EncoderConfig, oracle, sinusoidal_table
from rosetta_common.tolerances import FLOAT64
from rosetta_common.vectors import random_tensors

CONFIGS = {
    "post_relu": EncoderConfig(vocab_size=29, d_model=12, n_heads=3, n_layers=1, d_ff=20, dropout=0.0),
    "pre_gelu": EncoderConfig(
        vocab_size=29,
        d_model=10,
        n_heads=2,
        n_layers=1,
        d_ff=14,
        activation="gelu",
        norm_first=True,
        layer_norm_eps=1e-6,
        dropout=0.0,
    ),
    "gelu_tanh": EncoderConfig(
        vocab_size=29, d_model=9, n_heads=3, n_layers=1, d_ff=7, activation="gelu_tanh", padding_idx=None, dropout=0.0
    ),
}


@pytest.fixture(params=list(CONFIGS))
def setup(request, device):
    """(config, canonical float64 weights, torch model, flax model, x [B, S, D], padding mask [B, S])."""
    config = CONFIGS[request.param]
    weights = random_tensors(config, seed=3)
    torch_model = rosetta_torch.from_canonical(config, weights, device=device).eval()
    flax_model = rosetta_flax.from_canonical(config, weights)
    flax_model.eval()
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 7, config.d_model))
    mask = np.zeros((3, 7), dtype=bool)
    mask[1, 4:] = True  # partly padded
    mask[2, :] = True  # entirely padded
    return config, weights, torch_model, flax_model, x, mask


def layer_weights(weights, i=0):
    prefix = f"layers.{i}."
    return {name[len(prefix) :]: value for name, value in weights.items() if name.startswith(prefix)}


def torch_np(fn, *args, device="cpu"):
    with torch.no_grad():
        return fn(*(torch.from_numpy(a).to(device) for a in args)).cpu().numpy()


def test_positional_table_is_the_formula():
    """PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(...), written out element by element."""
    for length, d in ((7, 6), (5, 9)):
        table = sinusoidal_table(length, d)
        for pos in range(length):
            for j in range(d):
                angle = pos / 10000 ** ((j - j % 2) / d)
                assert table[pos, j] == pytest.approx(math.sin(angle) if j % 2 == 0 else math.cos(angle), abs=1e-15)


def test_positional_encoding(setup, device):
    config, _, torch_model, flax_model, x, _ = setup
    expected = x + sinusoidal_table(config.max_len, config.d_model)[: x.shape[1]]
    assert max_abs_diff(torch_np(torch_model.positional, x, device=device), expected) <= FLOAT64
    assert max_abs_diff(flax_model.positional(jnp.asarray(x)), expected) <= FLOAT64
    assert "positional.table" not in torch_model.state_dict()  # derived from the config, never stored
    assert torch_model.positional.table.requires_grad is False


def test_token_embedding(setup, device):
    config, weights, torch_model, flax_model, _, _ = setup
    ids = np.random.default_rng(5).integers(0, config.vocab_size, (2, 6))
    scale = math.sqrt(config.d_model)
    expected = weights["embedding.weight"][ids] * scale
    got_torch = torch_np(torch_model.embedding, ids, device=device)
    assert max_abs_diff(got_torch, expected) <= FLOAT64
    assert max_abs_diff(flax_model.embedding(jnp.asarray(ids)), expected) <= FLOAT64


@pytest.mark.parametrize("framework", ["torch", "flax"])
def test_padding_row_is_zero_at_init(framework):
    config = CONFIGS["post_relu"]
    if framework == "torch":
        weight = rosetta_torch.Encoder(config).embedding.weight.detach().numpy()
    else:
        weight = np.asarray(rosetta_flax.Encoder(config, rngs=nnx.Rngs(0)).embedding.weight[...])
    assert np.all(weight[config.padding_idx] == 0.0)
    assert np.abs(np.delete(weight, config.padding_idx, axis=0)).min(axis=1).max() > 0


def test_layer_norm(setup, device):
    config, weights, torch_model, flax_model, x, _ = setup
    w = layer_weights(weights)
    expected = oracle.layer_norm(x, w["norm1.scale"], w["norm1.bias"], config.layer_norm_eps)
    torch_norm, flax_norm = torch_model.layers[0].norm1, flax_model.layers[0].norm1
    assert max_abs_diff(torch_np(torch_norm, x, device=device), expected) <= FLOAT64
    assert max_abs_diff(flax_norm(jnp.asarray(x)), expected) <= FLOAT64
    # Flax's defaults (epsilon 1e-6, E[x^2]-E[x]^2) are overridden: eps and the two-pass variance are torch's.
    assert flax_norm.epsilon == config.layer_norm_eps and flax_norm.use_fast_variance is False


def test_attention_with_padding(setup, device):
    config, weights, torch_model, flax_model, x, mask = setup
    expected = oracle.attention(x, layer_weights(weights), config.n_heads, mask)
    assert np.isfinite(expected).all()
    got_torch = torch_np(
        lambda t, m: torch_model.layers[0].attn(t, rosetta_torch.attention_bias(m, t.dtype)), x, mask, device=device
    )
    flax_attn = flax_model.layers[0].attn
    got_flax = flax_attn(jnp.asarray(x), rosetta_flax.attention_bias(jnp.asarray(mask), jnp.float64))
    assert max_abs_diff(got_torch, expected) <= FLOAT64
    assert max_abs_diff(got_flax, expected) <= FLOAT64


def test_feed_forward(setup, device):
    config, weights, torch_model, flax_model, x, _ = setup
    expected = oracle.feed_forward(x, layer_weights(weights), config.activation)
    assert max_abs_diff(torch_np(torch_model.layers[0].ffn, x, device=device), expected) <= FLOAT64
    assert max_abs_diff(flax_model.layers[0].ffn(jnp.asarray(x)), expected) <= FLOAT64


def test_encoder_layer(setup, device):
    config, weights, torch_model, flax_model, x, mask = setup
    expected = oracle.encoder_layer(config, layer_weights(weights), x, mask)[1]
    got_torch = torch_np(
        lambda t, m: torch_model.layers[0](t, rosetta_torch.attention_bias(m, t.dtype)), x, mask, device=device
    )
    got_flax = flax_model.layers[0](jnp.asarray(x), rosetta_flax.attention_bias(jnp.asarray(mask), jnp.float64))
    assert max_abs_diff(got_torch, expected) <= FLOAT64
    assert max_abs_diff(got_flax, expected) <= FLOAT64


@pytest.mark.parametrize("name", ["relu", "gelu", "gelu_tanh"])
def test_activations_are_the_named_functions(name):
    """gelu is exact (erf) in both; gelu_tanh is the tanh approximation (jax.nn.gelu's default)."""
    x = np.linspace(-6, 6, 101)
    expected = oracle.activation(name, x)
    got_torch = rosetta_torch.feedforward.ACTIVATIONS[name](torch.from_numpy(x)).numpy()
    got_flax = np.asarray(rosetta_flax.feedforward.ACTIVATIONS[name](jnp.asarray(x)))
    assert max_abs_diff(got_torch, expected) <= 1e-14
    assert max_abs_diff(got_flax, expected) <= 1e-14
    if name != "relu":
        other = oracle.activation("gelu_tanh" if name == "gelu" else "gelu", x)
        assert max_abs_diff(other, expected) > 1e-4  # the two gelus really differ: mixing them is caught
