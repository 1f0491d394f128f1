"""The correctness gate before timing: error metrics against the float64 reference and their tolerances.

Outputs are compared at the real (non-padded) positions only: torch's inference fast path returns zeros at
padded positions by design. The training check compares the loss before and after one AdamW step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Per precision: bound on the forward output (max abs error for float32, relative L2 otherwise), on the
# loss (relative), and on the loss decrease of one optimizer step (relative to the reference decrease).
TOLERANCES: dict[str, dict[str, float]] = {
    "float32": {"output": 1e-3, "loss": 1e-4, "loss_drop": 1e-3},
    "tf32": {"output": 2e-2, "loss": 1e-2, "loss_drop": 0.25},
    "bfloat16": {"output": 6e-2, "loss": 3e-2, "loss_drop": 0.5},
}


@dataclass(frozen=True)
class OutputErrors:
    """A forward output against the reference's, at the real positions."""

    max_abs: float
    rel_l2: float
    finite: bool


@dataclass(frozen=True)
class LossErrors:
    """A training step's losses against the reference's: the first loss and the decrease after one step."""

    loss: float
    loss_drop: float
    finite: bool


Errors = OutputErrors | LossErrors


@dataclass(frozen=True)
class Check:
    """The verdict on one implementation's errors at the run's precision."""

    errors: Errors
    losses: tuple[float, float] | None  # train: the loss before and after one AdamW step
    ok: bool
    summary: str  # one line: the error the verdict was taken on and its bound


def output_errors(output: np.ndarray, reference: np.ndarray, padding_mask: np.ndarray) -> OutputErrors:
    """Max abs and relative L2 error of `output` at the real positions, and whether it is finite there."""
    valid = ~padding_mask
    got, want = output[valid].astype(np.float64), reference[valid].astype(np.float64)
    diff = got - want
    return OutputErrors(
        max_abs=float(np.abs(diff).max()) if diff.size else 0.0,
        rel_l2=float(np.linalg.norm(diff) / max(np.linalg.norm(want), 1e-300)),
        finite=bool(np.isfinite(got).all()),
    )


def loss_errors(losses: tuple[float, float], reference: tuple[float, float]) -> LossErrors:
    """Relative error of the first loss and of the decrease after one optimizer step."""
    drop, reference_drop = losses[0] - losses[1], reference[0] - reference[1]
    return LossErrors(
        loss=float(abs(losses[0] - reference[0]) / abs(reference[0])),
        loss_drop=float(abs(drop - reference_drop) / max(abs(reference_drop), 1e-300)),
        finite=bool(np.isfinite(losses).all()),
    )


def judge(errors: Errors, losses: tuple[float, float] | None, precision: str) -> Check:
    """The verdict on `errors` at `precision`, with a one-line summary."""
    bounds = TOLERANCES[precision]
    if not errors.finite:
        return Check(errors, losses, False, "non-finite output")
    if isinstance(errors, OutputErrors):
        key = "max_abs" if precision == "float32" else "rel_l2"
        value = errors.max_abs if precision == "float32" else errors.rel_l2
        return Check(errors, losses, value <= bounds["output"], f"{key} {value:.1e} (bound {bounds['output']:.0e})")
    ok = errors.loss <= bounds["loss"] and errors.loss_drop <= bounds["loss_drop"]
    summary = (
        f"loss {errors.loss:.1e} (bound {bounds['loss']:.0e}), "
        f"step {errors.loss_drop:.1e} (bound {bounds['loss_drop']:.0e})"
    )
    return Check(errors, losses, ok, summary)
