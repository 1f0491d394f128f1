"""The training run's chart: both loss curves on one panel, |loss difference| on a log scale below."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def plot_losses(records: Sequence[dict[str, Any]], path: Path, title: str, switch_at: int | None = None) -> Path:
    """Write a PNG of lane a's and lane b's loss per step and their absolute difference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [record["step"] for record in records]
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(9, 7), sharex=True, gridspec_kw={"height_ratios": [3, 2]}, constrained_layout=True
    )
    styles = {"a": {"color": "tab:orange", "linewidth": 2.5, "alpha": 0.6}, "b": {"color": "tab:blue", "linewidth": 1}}
    for lane, style in styles.items():
        first, last = records[0]["framework"][lane], records[-1]["framework"][lane]
        label = first if first == last else f"{first} -> {last} at step {switch_at}"
        top.plot(steps, [record["loss"][lane] for record in records], label=label, **style)
    top.set_yscale("log")
    top.set_ylabel("training loss (cross-entropy)")
    top.set_title(title)
    diffs = [record["abs_diff"] or float("nan") for record in records]  # log scale: identical losses leave gaps
    identical = sum(1 for record in records if record["abs_diff"] == 0)
    bottom.plot(steps, diffs, color="tab:red", linewidth=0.8, label=f"identical at {identical} steps (gaps)")
    bottom.legend(loc="lower right")
    bottom.set_yscale("log")
    bottom.set_ylabel("|loss difference|")
    bottom.set_xlabel("step")
    for axis in (top, bottom):
        axis.grid(True, which="both", alpha=0.3)
        if switch_at is not None:
            axis.axvline(switch_at, color="gray", linestyle="--", linewidth=1)
    top.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
