"""Dropout, in both frameworks: parity is proven with dropout off; here what can be tested with it on.

- train mode changes the output, and two train-mode calls differ; a fixed seed reproduces a call;
- eval mode is deterministic and bit-identical to the same weights with dropout=0;
- every dropout site keeps a fraction 1 - p of its inputs and scales the kept ones by exactly 1/(1 - p).

The fraction is measured on N Bernoulli draws from fixed seeds (so the test is deterministic) and must lie
within 5 standard deviations sqrt(p (1 - p) / N) of 1 - p: a correct implementation fails with probability
6e-7 per new seed, a wrong rate (e.g. keeping p instead of 1 - p, or p = 0.2) misses by hundreds of sigmas.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from jax.test_util import check_grads

import rosetta_flax
import rosetta_torch
from rosetta_common import EncoderConfig
from rosetta_common.training import AdamWConfig
from rosetta_common.vectors import random_inputs, random_tensors
from rosetta_flax import training as flax_training
from rosetta_flax.attention import MultiHeadSelfAttention as FlaxAttention
from rosetta_torch.attention import MultiHeadSelfAttention as TorchAttention

RATE = 0.1
CONFIG = EncoderConfig(vocab_size=23, d_model=16, n_heads=2, n_layers=2, d_ff=32, dropout=RATE)
MODERNBERT_LIKE = CONFIG.replace(
    n_layers=3, norm_first=True, positions="rotary", embedding_norm=True, scale_embedding=False, feed_forward="glu",
    attention_bias=False, mlp_bias=False, norm_bias=False, local_window=4, global_every=2, first_attention_norm=False,
)  # fmt: skip
CONFIGS = {"classic": CONFIG, "modernbert": MODERNBERT_LIKE}  # the same dropout sites in both
SIGMAS = 5.0


def check_rate(kept: int, draws: int, rate: float = RATE) -> None:
    fraction = kept / draws
    sigma = math.sqrt(rate * (1 - rate) / draws)
    assert abs(fraction - (1 - rate)) <= SIGMAS * sigma, f"kept {fraction:.5f} of {draws}, expected {1 - rate}"


def inputs() -> tuple[np.ndarray, np.ndarray]:
    return random_inputs(CONFIG, 9, (0, 3, 5), seed=3)


def torch_pair(device: str, config: EncoderConfig = CONFIG) -> tuple[rosetta_torch.Encoder, rosetta_torch.Encoder]:
    weights = random_tensors(config, seed=1)
    return (
        rosetta_torch.from_canonical(config, weights, device=device),
        rosetta_torch.from_canonical(config.replace(dropout=0.0), weights, device=device),
    )


def flax_pair(config: EncoderConfig = CONFIG) -> tuple[rosetta_flax.Encoder, rosetta_flax.Encoder]:
    weights = random_tensors(config, seed=1)
    return (
        rosetta_flax.from_canonical(config, weights, rngs=nnx.Rngs(0)),
        rosetta_flax.from_canonical(config.replace(dropout=0.0), weights),
    )


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_torch_train_and_eval_modes(device: str, config: EncoderConfig) -> None:
    model, no_dropout = torch_pair(device, config)
    token_ids = torch.from_numpy(inputs()[0]).to(device)
    reference = no_dropout.train()(token_ids)  # dropout=0 is the identity even in train mode
    model.eval()
    first, second = model(token_ids), model(token_ids)
    assert torch.equal(first, second) and torch.equal(first, reference)
    model.train()
    torch.manual_seed(123)
    train_a = model(token_ids)
    train_b = model(token_ids)
    torch.manual_seed(123)
    train_a_again = model(token_ids)
    assert (train_a - reference).abs().max() > 1e-2
    assert (train_a - train_b).abs().max() > 1e-2
    assert torch.equal(train_a, train_a_again)


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_flax_train_and_eval_modes(config: EncoderConfig) -> None:
    model, no_dropout = flax_pair(config)
    token_ids = jnp.asarray(inputs()[0])
    no_dropout.train()
    reference = no_dropout(token_ids)
    model.eval()
    first, second = model(token_ids), model(token_ids)
    assert np.array_equal(first, second) and np.array_equal(first, reference)
    model.train()
    train_a, train_b = model(token_ids), model(token_ids)
    assert float(jnp.abs(train_a - reference).max()) > 1e-2
    assert float(jnp.abs(train_a - train_b).max()) > 1e-2
    # The same RNG state reproduces a call.
    again, _ = flax_pair(config)
    again.train()
    assert np.array_equal(again(token_ids), train_a)


def test_flax_jitted_train_step_threads_the_dropout_rng() -> None:
    """Under jax.jit over nnx.split state, the RNG counters come back out: new masks at every step."""
    config = CONFIG.replace(n_layers=1)  # a smaller step to compile
    model = rosetta_flax.from_canonical(config, random_tensors(config, seed=1), rngs=nnx.Rngs(0))
    model.train()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    step = flax_training.make_train_step(graphdef, flax_training.build_optimizer(AdamWConfig(), model))
    token_ids, padding = inputs()
    batch = (jnp.asarray(token_ids), jnp.asarray(token_ids), jnp.asarray(~padding))
    opt_state = flax_training.build_optimizer(AdamWConfig(), model).init(params)
    _, rest_1, _, loss_a = step(params, rest, opt_state, *batch)
    _, _, _, loss_a_again = step(params, rest, opt_state, *batch)
    _, _, _, loss_b = step(params, rest_1, opt_state, *batch)
    assert float(loss_a) == float(loss_a_again)
    assert abs(float(loss_a) - float(loss_b)) > 1e-4


def test_torch_dropout_modules_keep_and_scale(device: str) -> None:
    model, _ = torch_pair(device)
    model.train()
    sites = [module for module in model.modules() if isinstance(module, torch.nn.Dropout)]
    assert len(sites) == 1 + 3 * CONFIG.n_layers  # embedding, per layer: 2 residual + feed-forward hidden
    torch.manual_seed(0)
    for module in sites:
        assert module.p == RATE
        out = module(torch.ones(200_000, dtype=torch.float64, device=device)).cpu().numpy()
        kept = out != 0
        assert np.all(out[kept] == 1 / (1 - RATE))
        check_rate(int(kept.sum()), out.size)


def test_flax_dropout_modules_keep_and_scale() -> None:
    model, _ = flax_pair()
    model.train()
    sites = [module for _, module in nnx.iter_modules(model) if isinstance(module, nnx.Dropout)]
    assert len(sites) == 1 + 4 * CONFIG.n_layers  # as torch, plus the attention weights' dropout module
    for module in sites:
        assert module.rate == RATE
        out = np.asarray(module(jnp.ones(200_000, dtype=jnp.float64)))
        kept = out != 0
        assert np.all(out[kept] == 1 / (1 - RATE))
        check_rate(int(kept.sum()), out.size)


# Attention-weight dropout, isolated: q = k = 0 gives uniform weights 1/S; v = 1 (bias) and out = identity
# make each output entry (kept weights) / S / (1 - p), so S (1 - p) * output counts the kept keys exactly.
BATCH, SEQ = 64, 32


def isolating_attention_weights(d_model: int) -> dict[str, np.ndarray]:
    zero_kernel, zero_bias = np.zeros((d_model, d_model)), np.zeros(d_model)
    return {
        "q": (zero_kernel, zero_bias),
        "k": (zero_kernel, zero_bias),
        "v": (zero_kernel, np.ones(d_model)),
        "out": (np.eye(d_model), zero_bias),
    }


def check_attention_counts(out: np.ndarray, n_heads: int) -> None:
    """out `[B, S, D]`: per head, kept-key counts; each is an integer in [0, S] (the 1/(1-p) scaling)."""
    per_head = out.reshape(BATCH, SEQ, n_heads, -1)
    assert np.all(per_head == per_head[..., :1])  # every column of a head sees the same weights
    counts = per_head[..., 0] * SEQ * (1 - RATE)
    assert np.allclose(counts, np.round(counts), atol=1e-9)
    assert counts.min() >= 0 and counts.max() <= SEQ
    check_rate(int(np.round(counts).sum()), counts.size * SEQ)


def test_torch_attention_dropout_keeps_and_scales(device: str) -> None:
    module = TorchAttention(CONFIG, dtype=torch.float64, device=device)
    with torch.no_grad():
        for name, (kernel, bias) in isolating_attention_weights(CONFIG.d_model).items():
            getattr(module, name).weight.copy_(torch.from_numpy(kernel.T))
            getattr(module, name).bias.copy_(torch.from_numpy(bias))
    x = torch.randn(BATCH, SEQ, CONFIG.d_model, dtype=torch.float64, device=device)
    no_padding = torch.zeros(BATCH, SEQ, dtype=torch.bool, device=device)
    module.eval()
    assert torch.allclose(module(x, no_padding), torch.ones_like(x), atol=1e-12)
    module.train()
    torch.manual_seed(0)
    check_attention_counts(module(x, no_padding).detach().cpu().numpy(), CONFIG.n_heads)


def test_flax_attention_dropout_keeps_and_scales() -> None:
    module = FlaxAttention(CONFIG, dtype=jnp.float64, rngs=nnx.Rngs(0))
    for name, (kernel, bias) in isolating_attention_weights(CONFIG.d_model).items():
        getattr(module, name).kernel.set_value(jnp.asarray(kernel))
        getattr(module, name).bias.set_value(jnp.asarray(bias))
    x = jax.random.normal(jax.random.key(0), (BATCH, SEQ, CONFIG.d_model), jnp.float64)
    no_padding = jnp.zeros((BATCH, SEQ), bool)
    module.eval()
    assert np.allclose(module(x, no_padding), 1.0, atol=1e-12)
    module.train()
    check_attention_counts(np.asarray(module(x, no_padding)), CONFIG.n_heads)


@pytest.mark.parametrize("rate", [0.0, 0.3])
def test_rate_is_the_configured_one(rate: float, device: str) -> None:
    """A different configured rate is measured as such in both (0 keeps everything, unscaled)."""
    config = CONFIG.replace(dropout=rate)
    torch_model = rosetta_torch.Encoder(config, dtype=torch.float64, device=device).train()
    flax_model = rosetta_flax.Encoder(config, dtype=jnp.float64, rngs=nnx.Rngs(1))
    flax_model.train()
    torch.manual_seed(1)
    torch_out = torch_model.dropout(torch.ones(100_000, dtype=torch.float64, device=device)).cpu().numpy()
    flax_out = np.asarray(flax_model.dropout(jnp.ones(100_000, dtype=jnp.float64)))
    for out in (torch_out, flax_out):
        kept = out != 0
        assert np.all(out[kept] == 1 / (1 - rate))
        if rate == 0.0:
            assert kept.all()
        else:
            check_rate(int(kept.sum()), out.size, rate)


@pytest.mark.parametrize("key_block", [64, 3], ids=["one step", "three steps"])
def test_flax_attention_dropout_gradient_reapplies_the_forward_masks(key_block: int) -> None:
    """With attention dropout on, `online_softmax`'s backward recomputes each key step's probabilities and applies
    that step's forward mask again: for a fixed dropout key the float64 gradients of q, k and v agree with finite
    differences of the forward (`check_grads`), in one key step and in three (the last partial), with a padding
    key and a row whose keys are all masked but one. A backward drawing any other mask misses by the dropped
    entries' share."""
    module = FlaxAttention(CONFIG, dtype=jnp.float64, rngs=nnx.Rngs(0), key_block=key_block)
    module.train()
    q, k, v = (jax.random.normal(jax.random.key(seed), (2, 2, 7, 8), jnp.float64) for seed in (1, 2, 3))
    allowed = jnp.ones((2, 1, 1, 7), bool).at[0, ..., 4].set(False).at[1, ..., 1:].set(False)
    bias = jnp.where(allowed, 0.0, jnp.finfo(jnp.float64).min)
    dropout_key = jax.random.key(5)

    def attend(q, k, v, dropout_key=dropout_key):
        return module.online_softmax_attention(q, k, v, bias, dropout_key, attended=allowed)

    assert float(jnp.abs(attend(q, k, v) - attend(q, k, v, None)).max()) > 1e-2  # the masks drop entries
    check_grads(attend, (q, k, v), order=1, modes=["rev"])
