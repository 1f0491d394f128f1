"""Each component on its own, both frameworks against the oracle's functions (float64, 1e-10):
token embedding, positional encoding, layer norm, attention (with padding), feed-forward, one layer; BERT's and
RoBERTa's embedding front (learned positions, token types, embedding LayerNorm) and the pooler."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from jax.test_util import check_grads
from runners import max_abs_diff

import rosetta_flax
import rosetta_torch
from rosetta_common import EncoderConfig, oracle, positional, sinusoidal_table
from rosetta_common.tolerances import FLOAT64
from rosetta_common.vectors import random_tensors
from rosetta_flax.precision import layer_norm_maths

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
    got_torch = torch_np(lambda t, m: torch_model.layers[0].attn(t, m), x, mask, device=device)
    flax_attn = flax_model.layers[0].attn
    got_flax = flax_attn(jnp.asarray(x), jnp.asarray(mask))
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
    got_torch = torch_np(lambda t, m: torch_model.layers[0](t, m), x, mask, device=device)
    got_flax = flax_model.layers[0](jnp.asarray(x), jnp.asarray(mask))
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


# --- the embedding front of BERT and RoBERTa: learned positions, token types, embedding LayerNorm, pooler ------

FRONT_CONFIG = EncoderConfig(
    vocab_size=29,
    d_model=8,
    n_heads=2,
    n_layers=1,
    d_ff=12,
    max_len=9,
    padding_idx=2,
    dropout=0.0,
    scale_embedding=False,
    positions="learned",
    type_vocab_size=3,
    embedding_norm=True,
    embedding_norm_eps=1e-12,
    pooler=True,
)


@pytest.fixture(params=["sequential", "after_padding"])
def front(request, device):
    """(config, weights, torch model, flax model, ids [B, S] with padding tokens anywhere, token types [B, S])."""
    config = FRONT_CONFIG.replace(position_ids=request.param)
    weights = random_tensors(config, seed=5)
    torch_model = rosetta_torch.from_canonical(config, weights, device=device).eval()
    flax_model = rosetta_flax.from_canonical(config, weights)
    flax_model.eval()
    rng = np.random.default_rng(6)
    ids = rng.integers(0, config.vocab_size, (3, 7))
    ids[0, 2], ids[1, 5:], ids[2, :] = config.padding_idx, config.padding_idx, config.padding_idx
    types = rng.integers(0, config.type_vocab_size, ids.shape)
    return config, weights, torch_model, flax_model, ids, types


def test_learned_positions(front, device):
    """x + table[position_ids(token_ids)], the ids as rosetta_common.positional computes them (RoBERTa's too)."""
    config, weights, torch_model, flax_model, ids, _ = front
    x = np.random.default_rng(7).normal(size=(*ids.shape, config.d_model))
    rows = positional.position_ids(config, ids)
    expected = x + weights["position_embedding.weight"][rows]
    assert max_abs_diff(torch_np(torch_model.positional, x, ids, device=device), expected) <= FLOAT64
    assert max_abs_diff(flax_model.positional(jnp.asarray(x), jnp.asarray(ids)), expected) <= FLOAT64
    torch_rows = torch_np(torch_model.positional.position_ids, ids, device=device)
    assert np.array_equal(torch_rows, rows)
    assert np.array_equal(np.asarray(flax_model.positional.position_ids(jnp.asarray(ids))), rows)
    assert rows.max() < config.position_table_size


def test_token_types(front, device):
    _, weights, torch_model, flax_model, _, types = front
    expected = weights["token_type_embedding.weight"][types]
    assert max_abs_diff(torch_np(torch_model.token_type, types, device=device), expected) <= FLOAT64
    assert max_abs_diff(flax_model.token_type(jnp.asarray(types)), expected) <= FLOAT64


def test_embedding_norm(front, device):
    """The embedding LayerNorm has its own epsilon (BERT's 1e-12) and torch's two-pass variance."""
    config, weights, torch_model, flax_model, ids, _ = front
    x = np.random.default_rng(8).normal(size=(*ids.shape, config.d_model))
    scale, bias = weights["embedding_norm.scale"], weights["embedding_norm.bias"]
    expected = oracle.layer_norm(x, scale, bias, config.embedding_norm_epsilon)
    assert max_abs_diff(torch_np(torch_model.embedding_norm, x, device=device), expected) <= FLOAT64
    assert max_abs_diff(flax_model.embedding_norm(jnp.asarray(x)), expected) <= FLOAT64
    assert torch_model.embedding_norm.eps == flax_model.embedding_norm.epsilon == 1e-12
    assert flax_model.embedding_norm.use_fast_variance is False


def test_embedding_front(front, device):
    """Token embedding + positions + token types, then the LayerNorm: the oracle's `embedding_front`, by name."""
    config, weights, torch_model, flax_model, ids, types = front
    expected = oracle.embedding_front(config, weights, ids, types)
    assert list(expected) == ["embedding", "positional", "embedding_norm"]
    with torch.no_grad():
        got_torch = torch_model.embedding_front(torch.from_numpy(ids).to(device), torch.from_numpy(types).to(device))
    got_flax = flax_model.embedding_front(jnp.asarray(ids), jnp.asarray(types))
    assert list(got_torch) == list(got_flax) == list(expected)
    for name, value in expected.items():
        assert max_abs_diff(got_torch[name].cpu().numpy(), value) <= FLOAT64, name
        assert max_abs_diff(got_flax[name], value) <= FLOAT64, name


def test_pooler(front, device):
    """tanh(hidden[:, 0] @ kernel + bias): the module and the Encoder's `pooled`."""
    config, weights, torch_model, flax_model, ids, _ = front
    hidden = np.random.default_rng(9).normal(size=(*ids.shape, config.d_model))
    expected = np.tanh(hidden[:, 0] @ weights["pooler.kernel"] + weights["pooler.bias"])
    assert expected.shape == (ids.shape[0], config.d_model)
    for got in (
        torch_np(torch_model.pooler, hidden, device=device),
        torch_np(torch_model.pooled, hidden, device=device),
        flax_model.pooler(jnp.asarray(hidden)),
        flax_model.pooled(jnp.asarray(hidden)),
    ):
        assert max_abs_diff(got, expected) <= FLOAT64


def test_pooled_without_a_pooler_is_a_clear_error(setup):
    _, _, torch_model, flax_model, x, _ = setup
    with pytest.raises(ValueError, match=r"this encoder has no pooler \(EncoderConfig\.pooler=False\)"):
        torch_model.pooled(torch.from_numpy(x))
    with pytest.raises(ValueError, match=r"this encoder has no pooler \(EncoderConfig\.pooler=False\)"):
        flax_model.pooled(jnp.asarray(x))


@pytest.mark.parametrize("framework", ["torch", "flax"])
@pytest.mark.parametrize("position_ids", ["sequential", "after_padding"])
def test_learned_tables_init_as_bert(framework, position_ids):
    """Position and token-type tables start N(0, 0.02) (BERT); RoBERTa's padding row of positions starts at 0."""
    config = FRONT_CONFIG.replace(max_len=1000, d_model=16, type_vocab_size=1000, position_ids=position_ids)
    if framework == "torch":
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = rosetta_torch.Encoder(config)
        positions, types = (m.weight.detach().numpy() for m in (model.positional, model.token_type))
    else:
        model = rosetta_flax.Encoder(config, rngs=nnx.Rngs(0))
        positions, types = (np.asarray(m.weight[...]) for m in (model.positional, model.token_type))
    assert positions.shape == (config.position_table_size, config.d_model)
    assert types.shape == (config.type_vocab_size, config.d_model)
    frozen = config.padding_idx if position_ids == "after_padding" else None
    if frozen is not None:
        assert np.all(positions[frozen] == 0.0)
        positions = np.delete(positions, frozen, axis=0)
    for table in (positions, types):  # 16,000 draws: the sample std is within 3% of 0.02 (5 sigma)
        assert abs(table.mean()) < 0.002 and 0.0194 < table.std() < 0.0206
        assert np.abs(table).min(axis=1).max() > 0


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
def test_flax_layer_norm_gradient_is_the_expressions(with_bias: bool) -> None:
    """rosetta_flax's LayerNorm backward (torch's residuals: x and each row's mean and 1/std, the normalised rows
    recomputed) against autodiff through the same expression and against finite differences, float64."""
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.standard_normal((2, 5, 16)) * 3 + 1)
    scale = jnp.asarray(rng.standard_normal(16))
    bias = jnp.asarray(rng.standard_normal(16)) if with_bias else None
    cotangent = jnp.asarray(rng.standard_normal((2, 5, 16)))

    def expression(x, scale, bias):  # the forward's maths, differentiated by JAX itself
        mean = x.mean(axis=-1, keepdims=True)
        centred = x - mean
        scaled = centred * jax.lax.rsqrt((centred * centred).mean(axis=-1, keepdims=True) + 1e-5) * scale
        return scaled if bias is None else scaled + bias

    ours = jax.vjp(lambda *a: layer_norm_maths(*a, 1e-5), x, scale, bias)
    theirs = jax.vjp(expression, x, scale, bias)
    np.testing.assert_array_equal(np.asarray(ours[0]), np.asarray(theirs[0]))
    for mine, reference in zip(ours[1](cotangent), theirs[1](cotangent), strict=True):
        if reference is None:
            assert mine is None
            continue
        assert max_abs_diff(mine, reference) <= FLOAT64
    check_grads(lambda x, scale: layer_norm_maths(x, scale, bias, 1e-5), (x, scale), order=1, modes=["rev"])
