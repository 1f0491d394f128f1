"""Exploration, not a test: one packed row of 8,192 tokens (paper-base, float32) with and without skipping what
packing leaves out, in both frameworks, against the same model on one dense 8,192-token sequence.

Run alone on a quiet machine: `python packages/rosetta-tools/reports/packed-skipping/explore.py [SEGMENT_LENGTH]`.
The numbers on docs/pages/packed-rows.md came from one run of it with segments of 512.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

import rosetta_flax
import rosetta_torch
import rosetta_torch.attention as torch_attention
from rosetta_common import EncoderConfig
from rosetta_common.vectors import random_tensors

SEQ = 8192


def fastest(call: Callable[[], object], repeats: int = 3) -> float:
    """Seconds of the fastest of `repeats` calls, after one warm-up call."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def report(name: str, segment: int, skip: float, no_skip: float, dense: float) -> None:
    rates = ", ".join(
        f"{label} {SEQ / s:,.0f}" for label, s in (("skip", skip), ("no skip", no_skip), ("dense", dense))
    )
    print(f"{name}, S={SEQ}, segments of {segment}: tokens/s {rates}; skip / no skip {no_skip / skip:.2f}x")


def main(segment: int) -> None:
    config = EncoderConfig(vocab_size=1000, d_model=512, n_heads=8, n_layers=6, d_ff=2048, max_len=SEQ, dropout=0.0)
    weights = random_tensors(config, seed=0, dtype=np.float32)
    ids = np.random.default_rng(0).integers(2, 1000, (1, SEQ))
    segments = np.repeat(np.arange(1, SEQ // segment + 1), segment)[None]
    torch.set_num_threads(2)

    model = rosetta_torch.from_canonical(config, weights).eval()
    torch_ids, torch_segments = torch.as_tensor(ids), torch.as_tensor(segments)
    with torch.no_grad():
        skip = fastest(lambda: model(torch_ids, segment_ids=torch_segments))
        cut = torch_attention.only_needed_keys
        torch_attention.only_needed_keys = lambda k, v, allowed: (k, v, allowed)  # every key, as compiled
        no_skip = fastest(lambda: model(torch_ids, segment_ids=torch_segments))
        torch_attention.only_needed_keys = cut
        dense = fastest(lambda: model(torch_ids))
    report("rosetta_torch eager", segment, skip, no_skip, dense)

    flax_model = rosetta_flax.from_canonical(config, weights)
    flax_model.eval()
    flax_ids, flax_segments = jnp.asarray(ids), jnp.asarray(segments)

    def packed() -> Callable[[], object]:  # traced anew, so that the patched cond below takes effect
        forward = nnx.jit(lambda m, i, s: m(i, segment_ids=s))
        return lambda: forward(flax_model, flax_ids, flax_segments).block_until_ready()

    skip = fastest(packed())
    cond = jax.lax.cond
    jax.lax.cond = lambda needed, update, keep, *operands: update(*operands)  # every step computed
    no_skip = fastest(packed())
    jax.lax.cond = cond
    forward = nnx.jit(lambda m, i: m(i))
    dense = fastest(lambda: forward(flax_model, flax_ids).block_until_ready())
    report("rosetta_flax.jit", segment, skip, no_skip, dense)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 512)
