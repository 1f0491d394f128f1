"""The correctness gate before timing: error metrics against the float64 reference and their tolerances.

Outputs are compared at the real (non-padded) positions only: torch's inference fast path returns zeros at
padded positions by design. The training check compares the loss before and after one AdamW step.
"""

from __future__ import annotations

import numpy as np

# Per precision: bound on the forward output (max abs error for float32, relative L2 otherwise), on the
# loss (relative), and on the loss decrease of one optimizer step (relative to the reference decrease).
TOLERANCES: dict[str, dict[str, float]] = {
    "float32": {"output": 1e-3, "loss": 1e-4, "loss_drop": 1e-3},
    "tf32": {"output": 2e-2, "loss": 1e-2, "loss_drop": 0.25},
    "bfloat16": {"output": 6e-2, "loss": 3e-2, "loss_drop": 0.5},
}


def masked_mean_square(output: np.ndarray, padding_mask: np.ndarray) -> float:
    """The training loss every implementation uses: mean of output^2 over real positions and features."""
    valid = ~padding_mask
    return float((output.astype(np.float64) ** 2 * valid[..., None]).sum() / (valid.sum() * output.shape[-1]))


def output_errors(output: np.ndarray, reference: np.ndarray, padding_mask: np.ndarray) -> dict[str, float]:
    valid = ~padding_mask
    got, want = output[valid].astype(np.float64), reference[valid].astype(np.float64)
    diff = got - want
    return {
        "max_abs": float(np.abs(diff).max()) if diff.size else 0.0,
        "rel_l2": float(np.linalg.norm(diff) / max(np.linalg.norm(want), 1e-300)),
        "finite": bool(np.isfinite(got).all()),
    }


def loss_errors(losses: list[float], reference: list[float]) -> dict[str, float]:
    """Relative error of the first loss and of the decrease after one optimizer step."""
    drop, reference_drop = losses[0] - losses[1], reference[0] - reference[1]
    return {
        "loss": float(abs(losses[0] - reference[0]) / abs(reference[0])),
        "loss_drop": float(abs(drop - reference_drop) / max(abs(reference_drop), 1e-300)),
        "finite": bool(np.isfinite(losses).all()),
    }


def verdict(errors: dict[str, float], precision: str, mode: str) -> tuple[bool, str]:
    """(ok, one-line summary) for the errors of `mode` at `precision`."""
    bounds = TOLERANCES[precision]
    if not errors.get("finite", False):
        return False, "non-finite output"
    if mode == "forward":
        key = "max_abs" if precision == "float32" else "rel_l2"
        ok = errors[key] <= bounds["output"]
        return ok, f"{key} {errors[key]:.1e} (bound {bounds['output']:.0e})"
    ok = errors["loss"] <= bounds["loss"] and errors["loss_drop"] <= bounds["loss_drop"]
    return ok, (
        f"loss {errors['loss']:.1e} (bound {bounds['loss']:.0e}), "
        f"step {errors['loss_drop']:.1e} (bound {bounds['loss_drop']:.0e})"
    )
