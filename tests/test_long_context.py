"""Attention in query blocks (`rosetta_common.attention_blocks`): the same maths as the unblocked computation.

Every test here sets `query_block` small on a built model, so that short inputs cross several blocks, the last
one partial, and a local layer reads only its band of keys (block + 2 * max_distance < S). Each is held to the
float64 oracle (outputs and every activation), to the same model unblocked (gradients, float64 and under the
bfloat16 policy), and across the frameworks. The inputs include a sequence that is all padding and one whose
padded tail is longer than the window, so that both kinds of query with no key to attend to occur inside blocks.

That the blocks keep memory linear and skip a local layer's far keys is checked from what is computed, not timed:
no intermediate of flax's attention holds `[S, S]` (its jaxpr), torch's FLOPs of a local layer grow with
S * band, and the tensors torch saves for the policy's backward grow linearly with S. The speed and the peak
memory are the benchmark's (docs/pages/performance.md, "Long inputs").
"""

from __future__ import annotations

import re
from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from runners import max_abs_diff
from torch.utils.flop_counter import FlopCounterMode

import rosetta_flax
import rosetta_torch
from rosetta_common import EncoderConfig, encoder_forward
from rosetta_common.attention_blocks import QueryBlocks
from rosetta_common.precision import POLICIES
from rosetta_common.tolerances import (
    BFLOAT16_CROSS_FRACTION,
    FLOAT32_CROSS,
    FLOAT32_ORACLE,
    FLOAT64,
    GRADIENT_FLOAT64_RELATIVE,
    relative_l2,
)
from rosetta_common.vectors import CASES, random_inputs, random_tensors
from rosetta_flax import training as flax_training
from rosetta_torch import training as torch_training

SEQ, PADS = 37, (0, 5, 20, 37)  # 20 pads: positions deep in the tail see no key in a local window; 37: no key at all
BASE = {case.name: case.config for case in CASES}
CONFIGS = {
    "seeds": replace(BASE["seed_smallest"], max_len=64),
    "bert_front": replace(BASE["bert_front"], max_len=64),
    "modernbert": replace(BASE["modernbert_front"], max_len=64, n_layers=3, local_window=8),  # max_distance 4
}
BLOCKS = (5, 8, 512)  # 5 and 8: several blocks (the last partial), a local band; 512: one block, no band


def set_query_block(model: rosetta_torch.Encoder | rosetta_flax.Encoder, block: int) -> None:
    """`block` queries per block; in flax, also `block + 1` keys per online-softmax step (several steps, the last
    one partial, wherever a block reads more keys than that)."""
    for layer in model.layers:
        layer.attn.query_block = block
        if isinstance(model, rosetta_flax.Encoder):
            layer.attn.key_block = block + 1


def models(config: EncoderConfig, weights: dict[str, np.ndarray], block: int, **kinds):
    torch_model = rosetta_torch.from_canonical(config, weights, **kinds)
    flax_model = rosetta_flax.from_canonical(config, weights, **kinds)
    set_query_block(torch_model, block)
    set_query_block(flax_model, block)
    return torch_model, flax_model


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def case(request):
    config = CONFIGS[request.param]
    token_ids, mask = random_inputs(config, SEQ, PADS, seed=4)
    return request.param, config, random_tensors(config, seed=3), token_ids, mask


def test_the_inputs_cross_blocks_and_bands() -> None:
    """The plans these tests run: several blocks with a partial last one, a band narrower than the sequence."""
    local = CONFIGS["modernbert"].layer(1).max_distance
    assert local == 4 and CONFIGS["modernbert"].layer(0).max_distance is None
    banded = QueryBlocks.plan(SEQ, local, 8)
    assert (banded.count, banded.keys, banded.banded, banded.padded_queries) == (5, 16, True, 40)
    assert QueryBlocks.plan(SEQ, None, 5).count == 8 and not QueryBlocks.plan(SEQ, local, 512).banded


@pytest.mark.parametrize("block", BLOCKS)
def test_blocked_activations_equal_the_oracle(case, block: int) -> None:
    """float64, every boundary activation of both frameworks within FLOAT64 of the oracle (measured ~1e-14)."""
    name, config, weights, token_ids, mask = case
    expected = encoder_forward(config, weights, token_ids, mask)
    torch_model, flax_model = models(config, weights, block)
    with torch.no_grad():
        got_torch = torch_model.eval().activations(torch.as_tensor(token_ids), torch.as_tensor(mask))
    flax_model.eval()
    got_flax = nnx.jit(lambda m, ids, pad: m.activations(ids, pad))(flax_model, jnp.asarray(token_ids), mask)
    for key, value in expected.items():
        assert max_abs_diff(got_torch[key].numpy(), value) <= FLOAT64, (name, block, key)
        assert max_abs_diff(np.asarray(got_flax[key]), value) <= FLOAT64, (name, block, key)


def test_blocked_float32_within_the_float32_bounds(case) -> None:
    """float32 with 5-query blocks (flax: 6-key online-softmax steps): the output within FLOAT32_ORACLE of the
    oracle and torch within FLOAT32_CROSS of flax, the bounds of the unblocked models (the online softmax rescales
    each row's running sums once per step: a few float32 roundings, far inside them)."""
    name, config, weights, token_ids, mask = case
    expected = encoder_forward(config, weights, token_ids, mask)["output"]
    torch_model, flax_model = models(config, {k: v.astype(np.float32) for k, v in weights.items()}, 5)
    with torch.no_grad():
        got_torch = torch_model.eval()(torch.as_tensor(token_ids), torch.as_tensor(mask)).numpy()
    flax_model.eval()
    got_flax = np.asarray(flax_model(jnp.asarray(token_ids), jnp.asarray(mask)))
    assert max_abs_diff(got_torch, expected) <= FLOAT32_ORACLE, name
    assert max_abs_diff(got_flax, expected) <= FLOAT32_ORACLE, name
    assert max_abs_diff(got_torch, got_flax) <= FLOAT32_CROSS, name


def gradients(torch_model, flax_model, token_ids, mask) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Canonical gradients of the training loss (`training.loss_and_gradients`) from torch and from flax."""
    targets = np.random.default_rng(5).integers(0, torch_model.config.vocab_size, token_ids.shape)
    _, torch_grads = torch_training.loss_and_gradients(
        torch_model, torch.as_tensor(token_ids), torch.as_tensor(targets), torch.as_tensor(mask)
    )
    _, flax_grads = flax_training.loss_and_gradients(flax_model, jnp.asarray(token_ids), targets, jnp.asarray(mask))
    return torch_grads, flax_grads


def test_blocked_gradients_equal_unblocked(case) -> None:
    """float64 gradients of the training loss, every parameter, with 5-query blocks and 6-key steps (flax's backward
    recomputing each step's probabilities, `online_softmax`) against one block, in both frameworks, and torch's
    blocked ones against flax's: within GRADIENT_FLOAT64_RELATIVE of the largest gradient entry."""
    name, config, weights, token_ids, mask = case
    grads = {block: gradients(*models(config, weights, block), token_ids, mask) for block in (5, 512)}
    (torch_blocked, flax_blocked), (torch_whole, flax_whole) = grads[5], grads[512]
    for blocked, whole in ((torch_blocked, torch_whole), (flax_blocked, flax_whole), (torch_blocked, flax_blocked)):
        assert blocked.keys() == whole.keys()
        largest = max(np.abs(g).max() for g in whole.values())
        for key in whole:
            assert np.abs(blocked[key] - whole[key]).max() <= GRADIENT_FLOAT64_RELATIVE * largest, (name, key)


def test_policy_blocks_change_nothing() -> None:
    """Under the bfloat16 policy each query row is whole inside its block: its scores, softmax, one rounding of the
    probabilities and p @ v are the unblocked ones, so outputs with 5-query blocks equal one block's bit for bit
    in both frameworks. The gradients of k and v are sums over the query blocks, accumulated in float32 and
    rounded once as unblocked, but in another order: like torch against flax (same rounding points, own
    accumulation orders), blocked against unblocked is held to BFLOAT16_CROSS_FRACTION of the smaller distance to
    the float64 gradient, per tensor (torch recomputing each block in the backward: activation checkpointing)."""
    config = CONFIGS["modernbert"]
    weights = random_tensors(config, seed=3, dtype=np.float32)
    token_ids, mask = random_inputs(config, SEQ, PADS, seed=4)
    exact = gradients(*models(config, {k: v.astype(np.float64) for k, v in weights.items()}, 512), token_ids, mask)[0]
    results = {}
    for block in (5, 512):
        torch_model, flax_model = models(config, weights, block, precision=POLICIES["bfloat16-mixed"])
        flax_model.eval()
        with torch.no_grad():
            torch_out = torch_model.eval()(torch.as_tensor(token_ids), torch.as_tensor(mask)).float().numpy()
        flax_out = np.asarray(flax_model(jnp.asarray(token_ids), jnp.asarray(mask)), dtype=np.float32)
        results[block] = (torch_out, flax_out, *gradients(torch_model, flax_model, token_ids, mask))
    (torch_b, flax_b, *blocked), (torch_w, flax_w, *whole) = results[5], results[512]
    np.testing.assert_array_equal(torch_b, torch_w)
    np.testing.assert_array_equal(flax_b, flax_w)
    for framework in (0, 1):
        for name, reference in exact.items():
            if name.endswith(".attn.k.bias"):  # exactly zero in exact arithmetic (tests/test_gradients.py)
                continue
            to_blocked = relative_l2(blocked[framework][name], reference, reference)
            to_whole = relative_l2(whole[framework][name], reference, reference)
            between = relative_l2(blocked[framework][name], whole[framework][name], reference)
            assert between <= BFLOAT16_CROSS_FRACTION * min(to_blocked, to_whole), (framework, name, between)


def shapes_in(jaxpr) -> list[tuple[int, ...]]:
    """Every intermediate's shape in a jaxpr, its sub-jaxprs (the block loop, checkpoints) included."""
    found = []
    for eqn in jaxpr.eqns:
        found += [tuple(v.aval.shape) for v in eqn.outvars if hasattr(v.aval, "shape")]
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else [param]:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    found += shapes_in(inner)
    return found


@pytest.mark.parametrize("layer", [0, 1])
def test_flax_attention_never_holds_seq_by_seq(layer: int) -> None:
    """rosetta_flax at S = 256 with 32-query blocks and 64-key online-softmax steps, forward and gradient: no
    intermediate has a [.., S, S] pair of axes; the widest scores are the global layer's [.., 32, 64] and the local
    layer's [.., 32, 40] (its band, 32 + 2 * 4, in one step)."""
    config = replace(CONFIGS["modernbert"], max_len=256)
    seq, block = 256, 32
    model = rosetta_flax.from_canonical(config, random_tensors(config, seed=3, dtype=np.float32))
    set_query_block(model, block)
    attn = model.layers[layer].attn
    attn.key_block = 64
    x = jnp.ones((1, seq, config.d_model))
    mask = jnp.zeros((1, seq), bool)
    tables = model.rotary.tables(seq, x.dtype)[config.layer(layer).rope_theta]

    def loss(attention, x):
        return attention(x, mask, tables).sum()

    graph, state, rest = nnx.split(attn, nnx.Param, ...)
    jaxpr = jax.make_jaxpr(lambda s, x: jax.grad(lambda s: loss(nnx.merge(graph, s, rest), x))(s))(state, x).jaxpr
    shapes = shapes_in(jaxpr)
    assert not [s for s in shapes if len(s) >= 2 and s[-2:] == (seq, seq)]
    widest = max(s[-1] for s in shapes if len(s) == 4 and s[-2] == block)
    assert widest == (64 if layer == 0 else block + 2 * 4)


def fused_attention_flops(query_shape, key_shape, *args, **kwargs) -> int:
    batch, heads, queries, d_head = query_shape
    return 4 * batch * heads * queries * key_shape[2] * d_head


def attention_flops(config: EncoderConfig, seq: int, layer: int) -> int:
    model = rosetta_torch.from_canonical(config, random_tensors(config, seed=3, dtype=np.float32)).eval()
    set_query_block(model, 32)
    x = torch.ones((1, seq, config.d_model))
    tables = model.rotary.tables(seq)[config.layer(layer).rope_theta]
    # torch's counter has no formula for the CPU flash kernel: its q.k and p @ v, 4 Q K D, are added here
    cpu_flash = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: fused_attention_flops}
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=cpu_flash) as counter:
        model.layers[layer].attn(x, torch.zeros((1, seq), dtype=torch.bool), tables)
    return counter.get_total_flops()


def test_torch_local_layer_work_grows_with_the_band() -> None:
    """rosetta_torch's FLOPs (torch's own counter) at S = 256 and 1,024: four projections (2 S D^2 each), the
    uniform row for queries without keys (q.k and p @ v of one zero query: 4 S D), and the scores and p @ v of
    every query against the keys it reads (4 S K D): K = S in a global layer, K = 32 + 2 * 4 in a local one."""
    config = replace(CONFIGS["modernbert"], max_len=1024)
    d, band = config.d_model, 32 + 2 * 4
    for seq in (256, 1024):
        fixed = 4 * 2 * seq * d * d + 4 * seq * d
        assert attention_flops(config, seq, 0) == fixed + 4 * seq * seq * d
        assert attention_flops(config, seq, 1) == fixed + 4 * seq * band * d


def saved_bytes(config: EncoderConfig, seq: int) -> int:
    """Bytes of the tensors autograd saves for the backward of one policy attention at length `seq`."""
    model = rosetta_torch.from_canonical(
        config, random_tensors(config, seed=3, dtype=np.float32), precision=POLICIES["bfloat16-mixed"]
    ).eval()
    set_query_block(model, 32)
    x = torch.ones((1, seq, config.d_model), dtype=torch.bfloat16, requires_grad=True)
    tables = model.rotary.tables(seq)[config.layer(0).rope_theta]
    total = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.layers[0].attn(x, torch.zeros((1, seq), dtype=torch.bool), tables).sum().backward()
    return total


def test_torch_policy_backward_saves_linear_memory() -> None:
    """Under the bfloat16 policy, the tensors saved for the backward of a global layer at S = 512 and 2,048: 4x
    the length, at most 4x the bytes (with the [S, S] probabilities stored it would be 16x)."""
    config = replace(CONFIGS["modernbert"], max_len=2048)
    small, large = saved_bytes(config, 512), saved_bytes(config, 2048)
    assert large <= 4 * small, (small, large)


def test_torch_compiled_policy_blocks_run_one_after_another() -> None:
    """Under `torch.compile`, the policy's query blocks run in order: each block's score and `p @ v` GEMMs before
    the next block's, as in inductor's output code (without `attention.after_block` inductor's C++ backend fuses
    the blocks' softmaxes into one kernel, which holds every block's scores: S^2 memory, measured 2.7 GiB for
    paper-base at 8,192 tokens against 0.9 eager)."""
    from torch._inductor.utils import run_and_get_code

    config = EncoderConfig(vocab_size=20, d_model=16, n_heads=2, n_layers=1, d_ff=24, max_len=32, dropout=0.0)
    model = rosetta_torch.from_canonical(config, random_tensors(config, seed=8), precision=POLICIES["bfloat16-mixed"])
    set_query_block(model.eval(), 8)
    token_ids = torch.as_tensor(random_inputs(config, 32, (0,), seed=9)[0])
    torch._dynamo.reset()
    with torch.no_grad():
        compiled, codes = run_and_get_code(torch.compile(model), token_ids)
        eager = model(token_ids)
    torch._dynamo.reset()
    assert torch.equal(compiled.isfinite(), eager.isfinite()) and compiled.shape == eager.shape
    shapes = re.findall(r"extern_kernels\.bmm\(reinterpret_tensor\(\w+, \((\d+), (\d+), (\d+)\)", "\n".join(codes))
    blocks = [int(inner) for _, rows, inner in shapes if int(rows) == 8]  # the stand-in's single query left out
    assert blocks == [config.d_head, 32] * 4, shapes  # scores (inner d_head), then p @ v (inner: the 32 keys)
