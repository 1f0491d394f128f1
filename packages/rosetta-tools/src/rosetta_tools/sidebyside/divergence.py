"""A training run stops at its first non-finite loss: nothing is written for that step or after it."""

from __future__ import annotations

import math
from collections.abc import Mapping


class TrainingDiverged(Exception):
    """A loss became NaN or infinite; the message says at which step and what was written before it."""


def check_finite(step: int, losses: Mapping[str, float], first_step: int = 0) -> None:
    """TrainingDiverged when any of `losses` (by framework) is not finite at `step` (the run began at `first_step`)."""
    bad = {name: loss for name, loss in losses.items() if not math.isfinite(loss)}
    if not bad:
        return
    shown = ", ".join(f"{name} {loss}" for name, loss in bad.items()) if len(losses) > 1 else next(iter(bad.values()))
    kept = f"nothing written past step {step - 1}" if step > first_step else "no step written"
    raise TrainingDiverged(
        f"training diverged at step {step} (loss {shown}); {kept} (no checkpoint: lower --lr, add --warmup or "
        "--clip-norm)"
    )
