"""How far float32 rounding moves each component for one input: the float64 oracle run with random rounding.

A float32 framework rounds the result of every operation to 24 bits: it returns `x * (1 + d)` with
`|d| <= 2**-24` (the unit roundoff). Two frameworks (or two CPUs' kernels) make different roundings, so neither
their outputs nor their distance to the exact result has a fixed size: it is the input's own sensitivity to
rounding times u. The dominant amplifier here is LayerNorm: it divides the absolute error of its input by the
input's standard deviation, and that input is a residual sum whose terms can be much larger than the sum
(cancellation). A row of `[0.55, 0.38, ...]` with std 0.08, summed from terms of size ~2, carries an absolute
error ~2u and leaves the LayerNorm with ~25u, and the next layers carry it on.

`float32_error_estimate` measures that sensitivity directly (Monte Carlo arithmetic, as in Parker's MCA or
Verificarlo): it runs the oracle `runs` times with every intermediate array multiplied by `1 + u * xi`,
xi ~ Uniform(-1, 1) elementwise, and reports per component the largest deviation from the exact run. It is
deterministic (a fixed NumPy seed) and needs no framework.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from rosetta_common.config import EncoderConfig
from rosetta_common.oracle import encoder_forward

FLOAT32_UNIT_ROUNDOFF = 2.0**-24
"""u for float32 (round to nearest, 24-bit significand)."""


class RandomRounding:
    """A rounding for the oracle: every element times `1 + u * xi`, xi ~ Uniform(-1, 1) from `rng`."""

    def __init__(self, unit_roundoff: float, rng: np.random.Generator) -> None:
        self.unit_roundoff = unit_roundoff
        self.rng = rng

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return x * (1.0 + self.unit_roundoff * self.rng.uniform(-1.0, 1.0, np.shape(x)))


def float32_error_estimate(
    config: EncoderConfig,
    tensors: Mapping[str, np.ndarray],
    token_ids: np.ndarray,
    padding_mask: np.ndarray | None = None,
    *,
    token_type_ids: np.ndarray | None = None,
    runs: int = 8,
    seed: int = 0,
    unit_roundoff: float = FLOAT32_UNIT_ROUNDOFF,
) -> dict[str, float]:
    """Per component boundary (the oracle's names): max |randomly rounded - exact| over `runs` oracle runs.

    token_ids int `[B, S]`, padding_mask bool `[B, S]` or None (from padding_idx), token_type_ids as
    `encoder_forward`.
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    inputs = {"token_type_ids": token_type_ids}
    exact = encoder_forward(config, tensors, token_ids, padding_mask, **inputs)
    rng = np.random.default_rng(seed)
    estimate = dict.fromkeys(exact, 0.0)
    for _ in range(runs):
        rounding = RandomRounding(unit_roundoff, rng)
        rounded = encoder_forward(config, tensors, token_ids, padding_mask, rounding=rounding, **inputs)
        for name, value in rounded.items():
            estimate[name] = max(estimate[name], float(np.abs(value - exact[name]).max()))
    return estimate
