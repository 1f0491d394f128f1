"""The training run: its task, the canonical optimizer-state file, switching framework mid-run (float64: the
loss continues exactly as in the uninterrupted run), and `rosetta train` end to end (float32, small)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

import rosetta_flax
import rosetta_torch
from rosetta_common import EncoderConfig, WeightFormatError, load_canonical
from rosetta_common.precision import POLICIES
from rosetta_common.training import AdamWConfig, OptimizerState, load_optimizer_state, save_optimizer_state
from rosetta_common.vectors import random_tensors
from rosetta_flax import training as flax_training
from rosetta_tools.cli import main
from rosetta_tools.sidebyside.lanes import OPTIMIZER_FILE, WEIGHTS_FILE, load_lane, new_lane
from rosetta_tools.sidebyside.loop import LOSS_BOUNDS
from rosetta_tools.sidebyside.task import ReversalTask, accuracy

TASK = ReversalTask(vocab_size=11, min_len=2, max_len=6, batch_size=8, seed=3)
CONFIG = EncoderConfig(vocab_size=11, d_model=16, n_heads=2, n_layers=2, d_ff=32, max_len=6, padding_idx=0, dropout=0.0)
ADAMW = AdamWConfig(lr=1e-2, weight_decay=0.1, warmup_steps=2, total_steps=10, end_factor=0.1)


def test_reversal_task_batches() -> None:
    token_ids, targets, mask = TASK.batch(5)
    assert token_ids.shape == targets.shape == mask.shape == (8, 6)
    for ids, target, valid in zip(token_ids, targets, mask, strict=True):
        n = int(valid.sum())
        assert TASK.min_len <= n <= TASK.max_len and valid[:n].all()
        assert np.array_equal(target[:n], ids[:n][::-1])
        assert np.all(ids[n:] == TASK.pad) and np.all(target[n:] == TASK.pad) and np.all(ids[:n] != TASK.pad)
    again = TASK.batch(5)
    assert all(np.array_equal(a, b) for a, b in zip(again, (token_ids, targets, mask), strict=True))
    assert not np.array_equal(TASK.batch(6)[0], token_ids)
    assert accuracy(targets, targets, mask) == (1.0, 1.0)
    wrong = np.where(mask, (targets % 10) + 1, targets)
    assert accuracy(wrong, targets, mask) == (0.0, 0.0)


def test_packed_reversal_batches() -> None:
    """A packed batch holds the padded batch's sequences, each reversed within its own segment, in fewer rows of
    max_len; the loss mask is exactly the packed tokens."""
    packed_task = replace(TASK, pack=True, batch_size=32)
    token_ids, targets, mask = packed_task._batch(np.random.default_rng((3, 1, 5)), 32)
    ids, packed_targets, loss_mask, segments = packed_task.batch(5)
    assert ids.shape[1] == 6 and ids.shape[0] < 32 and ids.shape[0] >= packed_task.packed_rows
    assert np.array_equal(loss_mask, segments != 0) and int(loss_mask.sum()) == int(mask.sum())
    found = sorted(
        (tuple(ids[r][segments[r] == k]), tuple(packed_targets[r][segments[r] == k]))
        for r in range(ids.shape[0])
        for k in range(1, segments[r].max() + 1)
    )
    expected = sorted((tuple(i[m]), tuple(t[m])) for i, t, m in zip(token_ids, targets, mask, strict=True))
    assert found == expected and all(target == source[::-1] for source, target in found)


def test_train_command_packs(tmp_path) -> None:
    """`rosetta train --pack`: torch and flax side by side on packed batches, float64 without clipping: their
    losses agree to the float64 bound at every step, across a switch too, and it learns."""
    out = tmp_path / "packed"
    code = main([
        "train", "--steps", "20", "--warmup", "2", "--d-model", "16", "--n-heads", "2", "--d-ff", "32",
        "--vocab-size", "8", "--max-len", "12", "--min-len", "2", "--batch-size", "16", "--eval-every", "20",
        "--switch-at", "10", "--out", str(out), "--no-progress", "--pack", "--dtype", "float64", "--clip-norm", "0",
        "--lr", "3e-3",
    ])  # fmt: skip
    assert code == 0
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert max(r["rel_diff"] for r in records) <= LOSS_BOUNDS["float64"]
    assert records[-1]["loss"]["a"] < records[0]["loss"]["a"]
    summary = json.loads((out / "summary.json").read_text())
    assert all(summary["checks"].values()) and summary["switch"]["max_rel_diff"] <= LOSS_BOUNDS["float64"]


def test_optimizer_state_file_round_trip(tmp_path) -> None:
    rng = np.random.default_rng(0)
    weights = random_tensors(CONFIG, seed=0)
    mu = {name: rng.normal(size=value.shape) for name, value in weights.items()}
    nu = {name: rng.random(size=value.shape) for name, value in weights.items()}
    path = save_optimizer_state(tmp_path / "opt.safetensors", OptimizerState(CONFIG, ADAMW, 7, mu, nu))
    loaded = load_optimizer_state(path)
    assert (loaded.config, loaded.adamw, loaded.step) == (CONFIG, ADAMW, 7)
    assert all(np.array_equal(loaded.mu[name], mu[name]) and np.array_equal(loaded.nu[name], nu[name]) for name in mu)
    rosetta_torch.save(rosetta_torch.from_canonical(CONFIG, weights), tmp_path / "weights.safetensors")
    with pytest.raises(WeightFormatError, match="not a rosetta optimizer-state file"):
        load_optimizer_state(tmp_path / "weights.safetensors")
    del nu["layers.1.ffn.in.kernel"]
    with pytest.raises(WeightFormatError, match=r"missing tensors: layers\.1\.ffn\.in\.kernel"):
        save_optimizer_state(tmp_path / "bad.safetensors", OptimizerState(CONFIG, ADAMW, 7, mu, nu))


def lane_params(lane) -> dict[str, np.ndarray]:
    if lane.framework == "torch":
        return {name: value.copy() for name, value in rosetta_torch.to_canonical(lane.trainer.model).items()}
    return flax_training.params_to_canonical(CONFIG, lane.trainer.params)


@pytest.mark.parametrize(("source", "target"), [("torch", "flax"), ("flax", "torch")])
def test_switching_framework_mid_run_continues_the_run(source: str, target: str, tmp_path) -> None:
    """float64: k steps in one framework, save (weights + Adam state), load in the other, continue: every
    later loss equals the uninterrupted run's to 1e-12 and every parameter (key biases aside, whose
    gradient is zero, see test_optimizer.py) to 1e-9; without the Adam state the run would visibly differ."""
    weights, switch, steps = random_tensors(CONFIG, seed=4), 4, 9
    uninterrupted = new_lane(source, CONFIG, weights, ADAMW)
    reference = [uninterrupted.step(TASK.batch(step)) for step in range(steps)]

    first = new_lane(source, CONFIG, weights, ADAMW)
    for step in range(switch):
        assert first.step(TASK.batch(step)) == reference[step]
    first.save(tmp_path)
    assert (tmp_path / WEIGHTS_FILE).is_file() and (tmp_path / OPTIMIZER_FILE).is_file()
    second = load_lane(target, tmp_path)
    assert second.framework == target and second.trainer.steps_done == switch
    for step in range(switch, steps):
        loss = second.step(TASK.batch(step))
        assert abs(loss - reference[step]) <= 1e-12 * reference[step], f"step {step}"

    expected, got = lane_params(uninterrupted), lane_params(second)
    for name, value in expected.items():
        if not name.endswith(".attn.k.bias"):
            assert np.abs(got[name] - value).max() <= 1e-9 * np.abs(value).max(), name

    # Control: the same weights with a fresh optimizer (no moments, step 0) give a different run.
    fresh = new_lane(target, CONFIG, load_weights(tmp_path), ADAMW)
    fresh.step(TASK.batch(switch))
    later = fresh.step(TASK.batch(switch + 1))
    assert abs(later - reference[switch + 1]) > 1e-6 * reference[switch + 1]


def load_weights(directory) -> dict[str, np.ndarray]:
    return rosetta_flax.to_canonical(rosetta_flax.load(directory / WEIGHTS_FILE))


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16-mixed", "bfloat16"])
def test_train_command_end_to_end(dtype: str, tmp_path) -> None:
    """float32 (clipping on): the curves lie on top of each other over the first steps and across the switch.
    float64 without clipping: they agree to 1e-10 over the whole run. The bfloat16 policies: within their bound
    over the first steps (rosetta_tools.sidebyside.loop.LOSS_BOUNDS) and across the switch, and the switched run
    keeps the policy's dtypes."""
    out = tmp_path / "run"
    options = ["--dtype", dtype] + (["--clip-norm", "0"] if dtype == "float64" else [])
    code = main([
        "train", "--steps", "40", "--warmup", "5", "--d-model", "16", "--n-heads", "2", "--d-ff", "32",
        "--vocab-size", "8", "--max-len", "6", "--min-len", "2", "--batch-size", "16", "--eval-every", "20",
        "--switch-at", "20", "--out", str(out), "--no-progress", *options,
    ])  # fmt: skip
    assert code == 0
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(40))
    assert records[0]["framework"] == {"a": "torch", "b": "flax"}
    assert records[-1]["framework"] == {"a": "flax", "b": "torch"}
    assert sum("accuracy" in r for r in records) == 2
    bound = LOSS_BOUNDS[dtype]
    assert max(r["rel_diff"] for r in (records[:20] if dtype != "float64" else records)) <= bound
    assert records[-1]["loss"]["a"] < 0.8 * records[0]["loss"]["a"]  # it learns
    summary = json.loads((out / "summary.json").read_text())
    assert all(summary["checks"].values()) and summary["switch"]["max_rel_diff"] <= bound
    png = out / "loss_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    for lane in ("a", "b"):
        assert (out / "switch" / f"lane-{lane}-step-20" / OPTIMIZER_FILE).is_file()
    if dtype in POLICIES:  # the saved weights are the policy's parameters (float32 masters, or bfloat16)
        _, saved = load_canonical(out / "switch" / "lane-a-step-20" / WEIGHTS_FILE)
        assert saved["embedding.weight"].dtype == np.dtype(POLICIES[dtype].params)


def test_train_command_rejects_bad_arguments(tmp_path, capsys) -> None:
    assert main(["train", "--steps", "10", "--switch-at", "10", "--out", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rosetta: error: train:") and "--switch-at (10) must be below --steps (10)" in err
