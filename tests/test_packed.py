"""Packed rows (`segment_ids`): several sequences in one row, each packed token's output its sequence's alone.

The claim, in float64, for the oracle, rosetta_torch and rosetta_flax, on the seeds' encoder, the BERT, RoBERTa
and DistilBERT fronts and ModernBERT (rotary positions, a local window narrower than the row): every boundary
activation at every packed token equals the oracle's on that sequence run alone (batch 1, no padding), within
PACKED_FLOAT64; the gradients of a packed batch equal those of the same sequences one per row; the bfloat16 policy
keeps its whole-run bound packed; bad segment ids are an InputError with the same words in all three; the keys a
query block's segments leave out are not computed (torch's FLOPs, flax's online-softmax steps).

The rows mix what packing produces: several segments of different lengths, padding between two segments and at a
row's end, a row that is all padding (its queries have no key: the oracle's uniform rule), a segment longer than
a local window, and token types per token. Both frameworks run with 5-query blocks (several blocks per row, a band
narrower than the row, segment boundaries inside blocks) and with one block.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from torch.utils.flop_counter import FlopCounterMode

import rosetta_flax
import rosetta_torch
from rosetta_common import EncoderConfig, InputError, encoder_forward, oracle
from rosetta_common.precision import POLICIES
from rosetta_common.tolerances import (
    BFLOAT16_CASCADE_FRACTION,
    GRADIENT_FLOAT64_RELATIVE,
    PACKED_FLOAT64,
    relative_l2,
)
from rosetta_common.training import AdamWConfig
from rosetta_common.vectors import CASES, random_tensors
from rosetta_flax import training as flax_training
from rosetta_torch import training as torch_training

BASE = {case.name: case.config for case in CASES}
CONFIGS = {
    "seeds": replace(BASE["seed_smallest"], max_len=64),
    "bert_front": replace(BASE["bert_front"], max_len=64),
    "roberta_front": replace(BASE["roberta_front"], max_len=70),
    "distilbert_front": replace(BASE["distilbert_front"], max_len=64),
    "modernbert": replace(BASE["modernbert_front"], max_len=64, n_layers=3, local_window=8),  # max_distance 4
}
ROW = 32
LAYOUT = (  # (row, start, length) of each packed sequence; the rest of each row is padding
    (0, 0, 7),
    (0, 7, 12),
    (0, 21, 9),  # two padding positions before it, two after
    (1, 0, 3),
    (1, 3, 20),  # longer than the local window
    (1, 23, 1),
)
ROWS = 3  # row 2 is all padding
BLOCKS = (5, 512)


@dataclass(frozen=True)
class Packed:
    """The packed batch and its sequences: token_ids / segment_ids / token_type_ids `[ROWS, ROW]`."""

    token_ids: np.ndarray
    segment_ids: np.ndarray
    token_type_ids: np.ndarray | None
    sequences: tuple[np.ndarray, ...]
    types: tuple[np.ndarray | None, ...]
    pad: int  # the token id at padding positions

    def one_per_row(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The same sequences one per row, padded at the end: token ids, padding mask, token types."""
        ids = np.full((len(self.sequences), ROW), self.pad, dtype=np.int64)
        mask = np.ones(ids.shape, dtype=bool)
        types = None if self.token_type_ids is None else np.zeros(ids.shape, dtype=np.int64)
        for i, (sequence, sequence_types) in enumerate(zip(self.sequences, self.types, strict=True)):
            ids[i, : len(sequence)], mask[i, : len(sequence)] = sequence, False
            if types is not None:
                types[i, : len(sequence)] = sequence_types
        return ids, mask, types


def pack(config: EncoderConfig, seed: int) -> Packed:
    """LAYOUT filled with random token ids (never padding_idx) and token types."""
    rng = np.random.default_rng(seed)
    pad = 0 if config.padding_idx is None else config.padding_idx
    token_ids = np.full((ROWS, ROW), pad, dtype=np.int64)
    segment_ids = np.zeros((ROWS, ROW), dtype=np.int64)
    token_type_ids = np.zeros((ROWS, ROW), dtype=np.int64) if config.type_vocab_size else None
    sequences, types = [], []
    for row, start, length in LAYOUT:
        sequence = rng.integers(0, config.vocab_size, length)
        if config.padding_idx is not None:
            sequence[sequence == config.padding_idx] = (config.padding_idx + 1) % config.vocab_size
        token_ids[row, start : start + length] = sequence
        segment_ids[row, start : start + length] = segment_ids[row].max() + 1
        sequences.append(sequence)
        if token_type_ids is None:
            types.append(None)
        else:
            types.append(rng.integers(0, config.type_vocab_size, length))
            token_type_ids[row, start : start + length] = types[-1]
    return Packed(token_ids, segment_ids, token_type_ids, tuple(sequences), tuple(types), pad)


def alone(config: EncoderConfig, weights: dict[str, np.ndarray], packed: Packed) -> list[dict[str, np.ndarray]]:
    """The oracle's activations of each sequence run alone: batch 1, no padding."""
    runs = []
    for sequence, types in zip(packed.sequences, packed.types, strict=True):
        kinds = {} if types is None else {"token_type_ids": types[None]}
        acts = encoder_forward(config, weights, sequence[None], np.zeros((1, len(sequence)), dtype=bool), **kinds)
        runs.append({name: value[0] for name, value in acts.items() if name != "pooler"})
    return runs


def worst_packed_difference(acts: dict[str, np.ndarray], runs: list[dict[str, np.ndarray]]) -> tuple[float, str]:
    """Max |packed - alone| over every activation at every packed token, and where it is."""
    worst, where = 0.0, ""
    for (row, start, length), run in zip(LAYOUT, runs, strict=True):
        for name, expected in run.items():
            difference = float(np.abs(np.asarray(acts[name])[row, start : start + length] - expected).max())
            if difference > worst:
                worst, where = difference, f"{name} of the sequence at row {row}, {start}"
    return worst, where


def set_query_block(model: rosetta_torch.Encoder | rosetta_flax.Encoder, block: int) -> None:
    for layer in model.layers:
        layer.attn.query_block = block
        if isinstance(model, rosetta_flax.Encoder):
            layer.attn.key_block = block + 1


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def case(request):
    config = CONFIGS[request.param]
    weights = random_tensors(config, seed=3)
    packed = pack(config, seed=8)
    torch_model = rosetta_torch.from_canonical(config, weights).eval()
    flax_model = rosetta_flax.from_canonical(config, weights)
    flax_model.eval()
    return request.param, config, weights, packed, alone(config, weights, packed), torch_model, flax_model


def kinds(packed: Packed, convert) -> dict:
    types = {} if packed.token_type_ids is None else {"token_type_ids": convert(packed.token_type_ids)}
    return {"segment_ids": convert(packed.segment_ids), **types}


def test_the_layout_packs_what_packing_produces() -> None:
    """Segments numbered 1, 2, ... per row, padding between segments and at the ends, an all-padding row, a
    segment longer than the local window, blocks of 5 that cross segment boundaries."""
    packed = pack(CONFIGS["modernbert"], seed=8)
    assert packed.segment_ids[0].tolist() == [1] * 7 + [2] * 12 + [0] * 2 + [3] * 9 + [0] * 2
    assert packed.segment_ids[1].tolist() == [1] * 3 + [2] * 20 + [3] + [0] * 8
    assert not packed.segment_ids[2].any()
    assert CONFIGS["modernbert"].layer(1).max_distance == 4 < max(length for _, _, length in LAYOUT)


def test_oracle_packed_equals_alone(case) -> None:
    """The oracle's packed run: every activation at every packed token within PACKED_FLOAT64 of the sequence's
    run alone (measured <= 4e-15)."""
    name, config, weights, packed, runs, *_ = case
    acts = encoder_forward(config, weights, packed.token_ids, **kinds(packed, np.asarray))
    worst, where = worst_packed_difference(acts, runs)
    assert worst <= PACKED_FLOAT64, (name, where, worst)


@pytest.mark.parametrize("block", BLOCKS)
def test_frameworks_packed_equal_alone(case, block: int) -> None:
    """Both frameworks' packed runs, 5-query blocks and one block: every activation at every packed token within
    PACKED_FLOAT64 of the oracle's run of that sequence alone (measured <= 4e-15)."""
    name, _, _, packed, runs, torch_model, flax_model = case
    set_query_block(torch_model, block)
    set_query_block(flax_model, block)
    with torch.no_grad():
        got_torch = torch_model.activations(torch.as_tensor(packed.token_ids), **kinds(packed, torch.as_tensor))
    got_flax = nnx.jit(lambda m, ids, extra: m.activations(ids, **extra))(
        flax_model, jnp.asarray(packed.token_ids), kinds(packed, jnp.asarray)
    )
    for framework, acts in (("torch", got_torch), ("flax", got_flax)):
        worst, where = worst_packed_difference({k: np.asarray(v) for k, v in acts.items()}, runs)
        assert worst <= PACKED_FLOAT64, (name, framework, block, where, worst)


def test_one_segment_per_row_is_the_padded_run(case) -> None:
    """Segment ids 1 where a right-padded row has tokens and 0 at its padding give the padded run's output at
    every position, padding included (padding keeps its unpacked positions and keys): within PACKED_FLOAT64."""
    name, config, weights, packed, _, torch_model, flax_model = case
    ids, mask, types = packed.one_per_row()
    segments = (~mask).astype(np.int64)
    extra = {} if types is None else {"token_type_ids": types}
    expected = encoder_forward(config, weights, ids, mask, **extra)["output"]
    got = encoder_forward(config, weights, ids, segment_ids=segments, **extra)["output"]
    assert np.abs(got - expected).max() <= PACKED_FLOAT64, name
    set_query_block(torch_model, 5)
    with torch.no_grad():
        extra_torch = {k: torch.as_tensor(v) for k, v in extra.items()}
        got_torch = torch_model(torch.as_tensor(ids), segment_ids=torch.as_tensor(segments), **extra_torch).numpy()
    got_flax = np.asarray(flax_model(jnp.asarray(ids), segment_ids=jnp.asarray(segments), **extra))
    assert np.abs(got_torch - expected).max() <= PACKED_FLOAT64, name
    assert np.abs(got_flax - expected).max() <= PACKED_FLOAT64, name


def packed_and_separate_gradients(framework: str, model, packed: Packed, targets: np.ndarray):
    """Canonical gradients of the training loss (mean over tokens) packed and one per row, each times its number
    of counted tokens: the summed losses' gradients, which must agree (the sequences are independent)."""
    training = torch_training if framework == "torch" else flax_training
    convert = torch.as_tensor if framework == "torch" else jnp.asarray
    row_targets = np.zeros((len(packed.sequences), ROW), dtype=np.int64)
    packed_targets = np.zeros(packed.token_ids.shape, dtype=np.int64)
    for i, ((row, start, length), sequence_targets) in enumerate(zip(LAYOUT, targets, strict=True)):
        row_targets[i, :length] = sequence_targets
        packed_targets[row, start : start + length] = sequence_targets
    ids, mask, types = packed.one_per_row()
    counted = int((~mask).sum())
    types_kind = {} if types is None else {"token_type_ids": convert(types)}
    _, separate = training.loss_and_gradients(model, convert(ids), convert(row_targets), convert(mask), **types_kind)
    _, together = training.loss_and_gradients(
        model, convert(packed.token_ids), convert(packed_targets), **kinds(packed, convert)
    )
    return {k: v * counted for k, v in together.items()}, {k: v * counted for k, v in separate.items()}


GRADIENT_CASES = ("seeds", "roberta_front", "modernbert")  # sinusoidal; learned after-padding + types; rotary, local


@pytest.mark.parametrize("name", GRADIENT_CASES)
def test_packed_gradients_equal_separate(name: str) -> None:
    """float64 gradients of the summed training loss, every parameter: packed == the sequences one per row
    (5-query blocks) within PACKED_FLOAT64 of the largest gradient entry, and torch's packed gradients == flax's
    within GRADIENT_FLOAT64_RELATIVE of it."""
    config = CONFIGS[name]
    weights, packed = random_tensors(config, seed=3), pack(config, seed=8)
    torch_model = rosetta_torch.from_canonical(config, weights).eval()
    flax_model = rosetta_flax.from_canonical(config, weights)
    flax_model.eval()
    rng = np.random.default_rng(11)
    targets = [rng.integers(0, config.vocab_size, length) for _, _, length in LAYOUT]
    results = {}
    for framework, model in (("torch", torch_model), ("flax", flax_model)):
        set_query_block(model, 5)
        results[framework] = packed_and_separate_gradients(framework, model, packed, targets)
    # relative to the largest entry of any parameter's: some are exactly 0 in exact arithmetic (the key bias)
    largest = max(float(np.abs(g).max()) for g in results["torch"][1].values())
    for framework, (together, separate) in results.items():
        for key, expected in separate.items():
            assert np.abs(together[key] - expected).max() <= PACKED_FLOAT64 * largest, (name, framework, key)
    for key, expected in results["flax"][0].items():
        difference = np.abs(results["torch"][0][key] - expected).max()
        assert difference <= GRADIENT_FLOAT64_RELATIVE * largest, (name, key)


SKIP_ROW, SKIP_BLOCK = 64, 16
SKIP_LENGTHS = ((16, 16, 16, 16), (8, 24, 32))  # row 0 cut at every block boundary; row 1 not
# Per 16-query block, the keys its queries' segments span in either row: [0, 32), [8, 32), [32, 64), [32, 64)
SKIP_SPANS = (32, 24, 32, 32)
SKIP_STEPS = (2, 2, 2, 2)  # 16-key steps holding those spans: 0-1, 0-1, 2-3, 2-3 of 4


def skip_inputs(config: EncoderConfig) -> tuple[np.ndarray, np.ndarray]:
    """x `[2, SKIP_ROW, D]` (random) and the segment ids of SKIP_LENGTHS."""
    segments = np.zeros((2, SKIP_ROW), dtype=np.int64)
    for row, lengths in enumerate(SKIP_LENGTHS):
        segments[row] = np.repeat(np.arange(1, len(lengths) + 1), lengths)
    return np.random.default_rng(5).standard_normal((2, SKIP_ROW, config.d_model)), segments


def skip_flops(query_shape, key_shape, *args, **kwargs) -> int:  # the CPU flash kernel: q.k and p @ v, 4 Q K D
    batch, heads, queries, d_head = query_shape
    return 4 * batch * heads * queries * key_shape[2] * d_head


def test_torch_skips_the_keys_of_other_segments() -> None:
    """rosetta_torch, eager, float64: a packed 16-query block computes scores and p @ v only against the span of
    keys its queries' segments cover in either row (SKIP_SPANS), by torch's own FLOP counter: four projections
    (2 B S D^2 each), the uniform stand-in (4 B S D) and 4 B Q K D per block, K its span instead of the row. The
    output is the oracle's attention within PACKED_FLOAT64."""
    config = replace(CONFIGS["seeds"], max_len=SKIP_ROW)
    weights = random_tensors(config, seed=3)
    attention, (x, segments) = rosetta_torch.from_canonical(config, weights).eval().layers[0].attn, skip_inputs(config)
    attention.query_block = SKIP_BLOCK
    batch, d = x.shape[0], config.d_model
    cpu_flash = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: skip_flops}
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=cpu_flash) as counter:
        got = attention(torch.as_tensor(x), torch.as_tensor(segments == 0), None, torch.as_tensor(segments))
    fixed = 4 * 2 * batch * SKIP_ROW * d * d + 4 * batch * SKIP_ROW * d
    assert counter.get_total_flops() == fixed + sum(4 * batch * SKIP_BLOCK * span * d for span in SKIP_SPANS)
    assert np.abs(got.numpy() - oracle_attention(config, weights, x, segments)).max() <= PACKED_FLOAT64


def test_flax_skips_the_key_steps_of_other_segments(monkeypatch) -> None:
    """rosetta_flax, float64, 16-query blocks and 16-key online-softmax steps: of each block's 4 steps only those
    holding a key of its queries' segments in either row run (counted as each branch runs, through a
    `jax.debug.callback` this test wraps round the step): SKIP_STEPS, 2 + 2 + 2 + 2 of 16, plus the 4 of the
    uniform stand-in (one zero query against every key, computed once per layer). The output is the oracle's
    attention within PACKED_FLOAT64."""
    config = replace(CONFIGS["seeds"], max_len=SKIP_ROW)
    weights = random_tensors(config, seed=3)
    model = rosetta_flax.from_canonical(config, weights)
    model.eval()
    attention, (x, segments) = model.layers[0].attn, skip_inputs(config)
    attention.query_block, attention.key_block = SKIP_BLOCK, SKIP_BLOCK
    steps_run, real_cond = [], jax.lax.cond

    def counting_cond(needed, update, keep, *operands):
        def counted(*args):
            jax.debug.callback(lambda: steps_run.append(1))
            return update(*args)

        return real_cond(needed, counted, keep, *operands)

    monkeypatch.setattr(jax.lax, "cond", counting_cond)
    got = np.asarray(attention(jnp.asarray(x), jnp.asarray(segments == 0), None, jnp.asarray(segments)))
    jax.effects_barrier()
    stand_in = SKIP_ROW // SKIP_BLOCK  # the uniform row for queries without keys reads every key (module docstring)
    assert len(steps_run) == stand_in + sum(SKIP_STEPS) == 4 + 8
    assert np.abs(got - oracle_attention(config, weights, x, segments)).max() <= PACKED_FLOAT64


def oracle_attention(
    config: EncoderConfig, weights: dict[str, np.ndarray], x: np.ndarray, segments: np.ndarray
) -> np.ndarray:
    """Layer 0's self-attention of the float64 oracle on packed rows x `[B, S, D]` -> `[B, S, D]`."""
    layer = {name.removeprefix("layers.0."): value for name, value in weights.items() if name.startswith("layers.0.")}
    return oracle.attention(x, layer, config.n_heads, segments == 0, segment_ids=segments)


def test_bfloat16_policy_packed() -> None:
    """Under the bfloat16 policy a packed run is held where the unpacked whole run is: its distance to the
    float64 oracle at the packed tokens and the one-per-row run's differ by at most BFLOAT16_CASCADE_FRACTION of
    the smaller (the same rounding points; packing changes the GEMM shapes, so their float32 accumulation order,
    and now and then a rounding flips), in both frameworks; torch vs flax packed likewise."""
    config = CONFIGS["modernbert"]
    weights = random_tensors(config, seed=3, dtype=np.float32)
    packed = pack(config, seed=8)
    runs = alone(config, {k: v.astype(np.float64) for k, v in weights.items()}, packed)
    expected = np.concatenate([run["output"] for run in runs])
    ids, mask, _ = packed.one_per_row()
    policy = POLICIES["bfloat16-mixed"]
    torch_model = rosetta_torch.from_canonical(config, weights, precision=policy).eval()
    flax_model = rosetta_flax.from_canonical(config, weights, precision=policy)
    flax_model.eval()

    def tokens(output: np.ndarray, packed_rows: bool) -> np.ndarray:  # [tokens, D], in LAYOUT's order
        places = LAYOUT if packed_rows else [(i, 0, length) for i, (_, _, length) in enumerate(LAYOUT)]
        return np.concatenate([output[row, start : start + length] for row, start, length in places])

    outputs = {}
    with torch.no_grad():
        outputs["torch packed"] = torch_model(
            torch.as_tensor(packed.token_ids), segment_ids=torch.as_tensor(packed.segment_ids)
        )
        outputs["torch rows"] = torch_model(torch.as_tensor(ids), torch.as_tensor(mask))
    outputs["flax packed"] = flax_model(jnp.asarray(packed.token_ids), segment_ids=jnp.asarray(packed.segment_ids))
    outputs["flax rows"] = flax_model(jnp.asarray(ids), jnp.asarray(mask))
    got = {
        key: tokens(
            np.asarray(value.float() if isinstance(value, torch.Tensor) else value, np.float32), "packed" in key
        )
        for key, value in outputs.items()
    }
    distance = {key: relative_l2(value, expected, expected) for key, value in got.items()}
    for a, b in (
        ("torch packed", "torch rows"),
        ("flax packed", "flax rows"),
        ("torch packed", "flax packed"),
    ):
        between = relative_l2(got[a], got[b], expected)
        assert between <= BFLOAT16_CASCADE_FRACTION * min(distance[a], distance[b]), (a, b, between, distance)


def test_trainer_steps_packed() -> None:
    """One AdamW step on a packed batch: torch's and flax's parameters after it agree within
    GRADIENT_FLOAT64_RELATIVE of each tensor's largest entry (float64), and the step moved them."""
    config = CONFIGS["roberta_front"]
    weights = random_tensors(config, seed=3)
    packed = pack(config, seed=8)
    targets = np.random.default_rng(2).integers(0, config.vocab_size, packed.token_ids.shape)
    adamw = AdamWConfig(lr=1e-2)
    after = {}
    for name, module, training in (("torch", rosetta_torch, torch_training), ("flax", rosetta_flax, flax_training)):
        trainer = training.Trainer(module.from_canonical(replace(config, dropout=0.0), weights), adamw)
        trainer.step(
            packed.token_ids,
            targets,
            packed.segment_ids != 0,
            token_type_ids=packed.token_type_ids,
            segment_ids=packed.segment_ids,
        )
        model = trainer.model
        after[name] = module.to_canonical(model)
    for key, value in after["flax"].items():
        if key.endswith(".attn.k.bias") or key.startswith("pooler."):  # gradients 0 in exact arithmetic (Adam
            continue  # steps on rounding noise; torch skips a parameter without gradient): tests/test_bfloat16.py
        scale = float(np.abs(value).max())
        assert np.abs(after["torch"][key] - value).max() <= GRADIENT_FLOAT64_RELATIVE * scale, key
    assert np.abs(after["torch"]["layers.0.attn.q.kernel"] - weights["layers.0.attn.q.kernel"]).max() > 1e-4


BAD_SEGMENTS = {
    "not contiguous": ([[1, 1, 2, 1, 0]], "segment 1 at position 3 is not contiguous"),
    "out of order": ([[2, 2, 1, 1, 0]], "segment 2 at position 0 comes where segment 1 should"),
    "skips a number": ([[1, 1, 3, 3, 0]], "segment 3 at position 2 comes where segment 2 should"),
    "negative": ([[1, 1, -1, 0, 0]], "segment id -1 is negative"),
    "wrong shape": ([[1, 1, 1, 1]], r"segment_ids shape \(1, 4\) does not match token_ids shape \(1, 5\)"),
}


@pytest.mark.parametrize("bad", sorted(BAD_SEGMENTS))
def test_bad_segment_ids_are_input_errors(bad: str) -> None:
    """The same InputError, the same words, from the oracle, rosetta_torch and rosetta_flax."""
    config = CONFIGS["seeds"]
    segments, words = BAD_SEGMENTS[bad]
    segments = np.asarray(segments, dtype=np.int64)
    ids = np.full((1, 5), 3, dtype=np.int64)
    weights = random_tensors(config, seed=0)
    with pytest.raises(InputError, match=words):
        encoder_forward(config, weights, ids, segment_ids=segments)
    with pytest.raises(InputError, match=words):
        rosetta_torch.from_canonical(config, weights)(torch.as_tensor(ids), segment_ids=torch.as_tensor(segments))
    with pytest.raises(InputError, match=words):
        rosetta_flax.from_canonical(config, weights)(jnp.asarray(ids), segment_ids=jnp.asarray(segments))


@pytest.mark.parametrize("mask_kind", ["padding_mask", "attention_mask"])
def test_segments_and_a_disagreeing_mask_are_an_input_error(mask_kind: str) -> None:
    """Padding is exactly where the segment id is 0: a padding_mask or attention_mask saying otherwise is refused
    (one that agrees is accepted), by the oracle and both frameworks; so are segment ids of another dtype than
    int32 / int64."""
    config = CONFIGS["seeds"]
    weights = random_tensors(config, seed=0)
    ids = np.full((1, 5), 3, dtype=np.int64)
    segments = np.asarray([[1, 1, 2, 0, 0]], dtype=np.int64)
    padding = np.asarray([[False, False, False, False, True]])
    agreeing = segments == 0
    mask = {"padding_mask": padding, "attention_mask": (~padding).astype(np.int64)}[mask_kind]
    good = {"padding_mask": agreeing, "attention_mask": (~agreeing).astype(np.int64)}[mask_kind]
    words = "segment_ids and the padding mask disagree at row 0, position 3"
    models = (
        lambda ids, **kw: encoder_forward(config, weights, ids, **kw)["output"],
        lambda ids, **kw: rosetta_torch.from_canonical(config, weights)(
            torch.as_tensor(ids), **{k: torch.as_tensor(v) for k, v in kw.items()}
        ).detach(),
        lambda ids, **kw: rosetta_flax.from_canonical(config, weights)(
            jnp.asarray(ids), **{k: jnp.asarray(v) for k, v in kw.items()}
        ),
    )
    for run in models:
        with pytest.raises(InputError, match=words):
            run(ids, segment_ids=segments, **{mask_kind: mask})
        with pytest.raises(InputError, match="segment_ids must be int32 or int64"):
            run(ids, segment_ids=segments.astype(np.int16))
        assert np.asarray(run(ids, segment_ids=segments, **{mask_kind: good})).shape[:2] == (1, 5)
