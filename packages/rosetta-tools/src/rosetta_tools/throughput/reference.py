"""The float64 reference every implementation is checked against before it is timed.

`python -m rosetta_tools.throughput.reference FRAMEWORK DEVICE WEIGHTS ADAMW INPUTS OUT [INPUTS OUT ...]` runs
rosetta_torch (FRAMEWORK "torch") or rosetta_flax under JAX x64 ("flax") in float64, in its own process, and
writes per input file: the output `[B, S, D]` and the masked mean-square losses before and after one AdamW step
(ADAMW: `AdamWConfig.to_json()`; `none` for a forward-only run: the output only, losses NaN, and none of a
gradient's memory, which for ModernBERT-base at 8,192 tokens was more than 20 GiB). The test suite holds both
packages to 1e-10 of the NumPy oracle in float64, gradients and AdamW steps included, so either is the reference;
rosetta_torch is used where it is installed.
"""

from __future__ import annotations

import importlib
import sys

import numpy as np

from rosetta_common.training import AdamWConfig
from rosetta_tools import frameworks

NO_TRAINING = "none"
"""The ADAMW argument of a forward-only run."""


def framework() -> str:
    """The framework the reference runs in: "torch" where rosetta_torch is installed, else "flax".

    Raises FrameworkMissing when neither is: `rosetta bench` has nothing to run.
    """
    return frameworks.require_any("rosetta bench")[0]


def main(argv: list[str]) -> int:
    name, device, weights, adamw, *pairs = argv
    module = importlib.import_module(f"rosetta_tools.throughput.reference_{name}")
    optimizer = None if adamw == NO_TRAINING else AdamWConfig.from_json(adamw)
    for inputs, out in zip(pairs[::2], pairs[1::2], strict=True):
        np.savez(out, **module.reference(weights, inputs, device, optimizer))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
