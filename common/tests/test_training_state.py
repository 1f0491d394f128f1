"""One file for a run's whole state (rosetta_common.training.save_training_state): weights + AdamW moments, step,
config and AdamW settings; read back exactly, refused when incomplete or of another kind."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from rosetta_common import EncoderConfig, WeightFormatError
from rosetta_common.training import (
    AdamWConfig,
    OptimizerState,
    load_optimizer_state,
    load_training_state,
    save_optimizer_state,
    save_training_state,
)
from rosetta_common.vectors import random_tensors

CONFIG = EncoderConfig(vocab_size=11, d_model=8, n_heads=2, n_layers=1, d_ff=12, max_len=6)


def state() -> tuple[dict[str, np.ndarray], OptimizerState]:
    weights = random_tensors(CONFIG, seed=1)
    mu, nu = random_tensors(CONFIG, seed=2), {k: np.abs(v) for k, v in random_tensors(CONFIG, seed=3).items()}
    return weights, OptimizerState(CONFIG, AdamWConfig(lr=3e-4, clip_norm=1.0), 17, mu, nu)


def test_round_trip_is_exact(tmp_path) -> None:
    weights, saved = state()
    path = save_training_state(tmp_path / "checkpoint.safetensors", weights, saved)
    read_weights, read = load_training_state(path)
    assert (read.config, read.adamw, read.step) == (saved.config, saved.adamw, saved.step)
    for ours, theirs in ((read_weights, weights), (read.mu, saved.mu), (read.nu, saved.nu)):
        assert set(ours) == set(theirs)
        assert all(np.array_equal(ours[name], theirs[name]) for name in theirs)


def test_incomplete_or_other_files_are_refused(tmp_path) -> None:
    weights, saved = state()
    with pytest.raises(WeightFormatError, match=r"missing tensors: layers\.0\.ffn\.in\.bias"):
        save_training_state(
            tmp_path / "a.safetensors", {k: v for k, v in weights.items() if "ffn.in.bias" not in k}, saved
        )
    assert not (tmp_path / "a.safetensors").exists()
    path = save_training_state(tmp_path / "b.safetensors", weights, saved)
    tensors = load_file(str(path))
    del tensors["nu.embedding.weight"]
    from safetensors import safe_open

    with safe_open(str(path), "np") as handle:
        metadata = handle.metadata()
    save_file(tensors, str(tmp_path / "c.safetensors"), metadata=metadata)
    with pytest.raises(WeightFormatError, match=r"(?s)\(nu\).*missing tensors: embedding\.weight"):
        load_training_state(tmp_path / "c.safetensors")
    optimizer_only = save_optimizer_state(tmp_path / "d.safetensors", saved)
    with pytest.raises(WeightFormatError, match="not a rosetta training-state file"):
        load_training_state(optimizer_only)
    with pytest.raises(WeightFormatError, match="not a rosetta optimizer-state file"):
        load_optimizer_state(path)
