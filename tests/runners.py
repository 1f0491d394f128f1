"""Run a stored vector (or any canonical weights) through each framework's NumPy runner; compare activations."""

from __future__ import annotations

import functools

import numpy as np

import rosetta_flax
import rosetta_torch
from rosetta_common import EncoderConfig

DTYPES = {"float64": np.float64, "float32": np.float32}


def cast(weights: dict[str, np.ndarray], dtype: str) -> dict[str, np.ndarray]:
    return {name: value.astype(DTYPES[dtype]) for name, value in weights.items()}


def activations(
    framework: str,
    config: EncoderConfig,
    weights: dict[str, np.ndarray],
    token_ids: np.ndarray,
    mask: np.ndarray | None,
    dtype: str,
    *,
    token_type_ids: np.ndarray | None = None,
    attention_mask: np.ndarray | None = None,
    **options: str,
) -> dict[str, np.ndarray]:
    """Every boundary's activations from `framework`'s NumPy runner, weights cast to `dtype` (options: torch's
    `device`); `token_type_ids` and `attention_mask` go to the call (a stored vector's `token_type_ids`)."""
    runner = RUNNERS[framework](config, cast(weights, dtype), **options)
    return runner.activations(token_ids, mask, token_type_ids=token_type_ids, attention_mask=attention_mask)


RUNNERS = {"torch": rosetta_torch.Runner, "flax": rosetta_flax.Runner}
torch_activations = functools.partial(activations, "torch")  # device="cuda" as a keyword
flax_activations = functools.partial(activations, "flax")


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def first_divergence(
    got: dict[str, np.ndarray], expected: dict[str, np.ndarray], bound: float
) -> tuple[str, float] | None:
    """The first boundary (in forward order) whose max difference exceeds `bound`, or None."""
    assert set(got) == set(expected), f"activation names differ: {sorted(got)} vs {sorted(expected)}"
    for name in got:  # forward order: the first name reported is where the divergence starts
        diff = max_abs_diff(got[name], expected[name])
        if not diff <= bound:
            return name, diff
    return None
