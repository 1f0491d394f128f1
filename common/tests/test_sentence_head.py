"""The sentence head on its own (NumPy only): its config and checks, the canonical file that stores it, and the
float64 pooling maths on inputs whose answer follows from the definition."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rosetta_common import EncoderConfig, WeightFormatError, load_canonical, save_canonical
from rosetta_common.io import load_canonical_with_head
from rosetta_common.pooling import pool, pooling_mask, sentence_embedding
from rosetta_common.sentence_head import DenseSpec, HeadConfig
from rosetta_common.vectors import random_tensors

CONFIG = EncoderConfig(vocab_size=13, d_model=6, n_heads=2, n_layers=1, d_ff=8)
TENSORS = random_tensors(CONFIG, seed=3)
HEAD = HeadConfig(6, ("cls", "mean"), True, (DenseSpec(12, 5, True, "tanh"), DenseSpec(5, 4, False, "identity")), True)


def head_tensors(dtype=np.float64) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {name: rng.standard_normal(shape).astype(dtype) for name, shape in HEAD.shapes().items()}


def test_head_config_round_trips_and_checks_its_widths() -> None:
    assert HeadConfig.from_json(HEAD.to_json()) == HEAD
    assert HEAD.output_dim == 4 and HEAD.pooled_dim == 12
    assert list(HEAD.shapes()) == [
        "sentence_head.dense.0.kernel", "sentence_head.dense.0.bias", "sentence_head.dense.1.kernel",
    ]  # fmt: skip
    with pytest.raises(ValueError, match=r"dense\[0\]: in_features 6, but its input has width 12"):
        HeadConfig(6, ("cls", "mean"), dense=(DenseSpec(6, 4),))
    with pytest.raises(ValueError, match="unknown mode 'sum'"):
        HeadConfig(6, ("sum",))
    with pytest.raises(ValueError, match="activation 'swish'"):
        HeadConfig(6, dense=(DenseSpec(6, 4, activation="swish"),))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_canonical_file_keeps_the_head_bit_for_bit(tmp_path: Path, dtype) -> None:
    tensors = {name: value.astype(dtype) for name, value in TENSORS.items()}
    path = save_canonical(tmp_path / "m.safetensors", CONFIG, tensors, head=HEAD, head_tensors=head_tensors(dtype))
    config, back, head, back_head = load_canonical_with_head(path)
    assert config == CONFIG and head == HEAD
    for name, value in {**tensors, **head_tensors(dtype)}.items():
        np.testing.assert_array_equal({**back, **back_head}[name], value)
    assert load_canonical(path)[1].keys() == tensors.keys()  # the encoder alone, for every other reader


def test_a_head_of_another_dtype_or_shape_is_refused(tmp_path: Path) -> None:
    with pytest.raises(WeightFormatError, match="the sentence head is float32, the encoder float64"):
        save_canonical(tmp_path / "a.safetensors", CONFIG, TENSORS, head=HEAD, head_tensors=head_tensors(np.float32))
    wrong = {**head_tensors(), "sentence_head.dense.1.kernel": np.zeros((4, 5))}
    with pytest.raises(WeightFormatError, match=r"sentence_head.dense.1.kernel: shape \(4, 5\), expected \(5, 4\)"):
        save_canonical(tmp_path / "b.safetensors", CONFIG, TENSORS, head=HEAD, head_tensors=wrong)


def test_pooling_follows_its_definitions() -> None:
    """Each mode against what it means, computed another way (per row, over the kept positions only)."""
    rng = np.random.default_rng(1)
    hidden = rng.standard_normal((3, 5, 4))
    keep = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    for row in range(3):
        kept = hidden[row, keep[row] == 1]
        weights = np.arange(1, 6)[keep[row] == 1]
        np.testing.assert_array_equal(pool("cls", hidden, keep)[row], kept[0])
        np.testing.assert_array_equal(pool("lasttoken", hidden, keep)[row], kept[-1])
        np.testing.assert_array_equal(pool("max", hidden, keep)[row], kept.max(axis=0))
        np.testing.assert_allclose(pool("mean", hidden, keep)[row], kept.mean(axis=0), rtol=1e-14)
        np.testing.assert_allclose(
            pool("mean_sqrt_len_tokens", hidden, keep)[row], kept.sum(axis=0) / np.sqrt(len(kept)), rtol=1e-14
        )
        np.testing.assert_allclose(
            pool("weightedmean", hidden, keep)[row], (kept * weights[:, None]).sum(0) / weights.sum(), rtol=1e-14
        )
    prompt = HeadConfig(4, include_prompt=False)
    np.testing.assert_array_equal(pooling_mask(prompt, keep, 2), [[0, 0, 1, 0, 0], [0, 0, 1, 1, 1], [0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(pooling_mask(HeadConfig(4), keep, 2), keep)  # include_prompt: nothing cleared
    out = sentence_embedding(HEAD, head_tensors(), rng.standard_normal((3, 5, 6)), keep)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-14)  # Normalize
