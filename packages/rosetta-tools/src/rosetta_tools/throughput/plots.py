"""PNG plots of a results document (matplotlib, Agg backend): one line or bar group per implementation."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from rosetta_tools.throughput.impls import BASELINE


def _points(results: dict[str, Any], mode: str, axis: str) -> dict[str, list[tuple[int, float, float, float, float]]]:
    """impl -> [(x, tokens/s, low, high, vs baseline)] along `axis` ("seq" or "batch"), the other axis at the
    run's base value. Only the first padding level is drawn; vs baseline is NaN where the baseline did not run.
    """
    fixed = "batch" if axis == "seq" else "seq"
    fixed_value, padding = results["settings"][fixed], results["settings"]["paddings"][0]
    lines: dict[str, list[tuple[int, float, float, float, float]]] = {}
    for case in results["cases"]:
        if case[fixed] != fixed_value or case["padding"] != padding:
            continue
        for entry in case["results"]:
            if entry["mode"] == mode and entry["status"] == "ok" and not entry["ceiling"]:
                low, high = entry["tokens_per_s_iqr"]
                ratio = entry["vs_baseline"] if entry["vs_baseline"] is not None else math.nan
                lines.setdefault(entry["impl"], []).append((case[axis], entry["tokens_per_s"], low, high, ratio))
    return {impl: sorted(points) for impl, points in lines.items() if len(points) > 1}


def _wide_range(lines: dict[str, list[tuple[int, float, float, float]]]) -> bool:
    """Whether the medians span more than 20x (then a log scale keeps every line readable)."""
    values = [point[1] for points in lines.values() for point in points]
    return bool(values) and max(values) > 20 * min(values)


def _style(impl: str) -> dict[str, Any]:
    if impl.startswith("rosetta"):
        return {"linewidth": 2.5, "marker": "o"}
    return {"linewidth": 1.5, "marker": "s", "linestyle": "--"}


def sweep_plot(results: dict[str, Any], axis: str, path: Path) -> Path | None:
    """tokens/s against `axis` ("seq" or "batch"), one column per mode; None if the run did not sweep it.

    The lower row is each implementation's speed relative to the baseline timed in the same rounds: on a shared
    machine the absolute rates drift with background load, the ratios do not.
    """
    modes = results["settings"]["modes"]
    per_mode = {mode: _points(results, mode, axis) for mode in modes}
    if not any(per_mode.values()):
        return None
    figure, axes = plt.subplots(2, len(modes), figsize=(6.5 * len(modes), 8), squeeze=False, sharex="col")
    for column, mode in enumerate(modes):
        rates, ratios = axes[0][column], axes[1][column]
        for impl, points in per_mode[mode].items():
            xs, ys, lows, highs, vs_baseline = zip(*points, strict=True)
            rates.plot(xs, ys, label=impl, **_style(impl))
            rates.fill_between(xs, lows, highs, alpha=0.15)
            ratios.plot(xs, vs_baseline, label=impl, **_style(impl))
        if _wide_range(per_mode[mode]):
            rates.set_yscale("log")
        rates.set_ylabel("tokens/s (median, IQR shaded)")
        rates.set_title(mode)
        rates.legend(fontsize=8)
        ratios.axhline(1.0, color="grey", linewidth=0.8)
        ratios.set_ylabel(f"speed vs {BASELINE}")
        ratios.set_xlabel("sequence length" if axis == "seq" else "batch size")
        for ax in (rates, ratios):
            ax.set_xscale("log", base=2)
            ax.grid(True, alpha=0.3)
    return _save(figure, results, path)


def bar_plot(results: dict[str, Any], path: Path) -> Path:
    """tokens/s per implementation for the first shape, a bar per padding level, one panel per mode."""
    modes = results["settings"]["modes"]
    first = results["cases"][0]
    cases = [c for c in results["cases"] if (c["batch"], c["seq"]) == (first["batch"], first["seq"])]
    figure, axes = plt.subplots(1, len(modes), figsize=(6.5 * len(modes), 4.5), squeeze=False)
    for ax, mode in zip(axes[0], modes, strict=True):
        impls = list(
            dict.fromkeys(
                e["impl"]
                for c in cases
                for e in c["results"]
                if e["mode"] == mode and e["status"] == "ok" and not e["ceiling"]
            )
        )
        width = 0.8 / len(cases)
        for offset, case in enumerate(cases):
            by_impl = {e["impl"]: e for e in case["results"] if e["mode"] == mode and e["status"] == "ok"}
            values, low, high = [], [], []
            for impl in impls:
                entry = by_impl.get(impl)
                value = entry["tokens_per_s"] if entry else 0.0
                values.append(value)
                low.append(value - entry["tokens_per_s_iqr"][0] if entry else 0.0)
                high.append(entry["tokens_per_s_iqr"][1] - value if entry else 0.0)
            positions = [i + offset * width for i in range(len(impls))]
            ax.bar(
                positions, values, width, yerr=[low, high], capsize=3, label=f"padding {case['padded_fraction']:.0%}"
            )
        ax.set_xticks([i + width * (len(cases) - 1) / 2 for i in range(len(impls))])
        ax.set_xticklabels(impls, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("tokens/s (median, IQR bars)")
        ax.set_title(f"{mode}, batch {first['batch']} x seq {first['seq']}")
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    return _save(figure, results, path)


def _save(figure: plt.Figure, results: dict[str, Any], path: Path) -> Path:
    """Title the figure with the run (preset, precision, device, CPU), write it as PNG and free it."""
    settings, machine = results["settings"], results["machine"]
    figure.suptitle(f"{settings['preset']}, {results['precision']} on {settings['device']} ({machine['cpu_model']})")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def make_plots(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """Every plot that applies to this run: the bar chart, and the seq / batch sweeps when swept."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [bar_plot(results, out_dir / "throughput.png")]
    for axis in ("seq", "batch"):
        path = sweep_plot(results, axis, out_dir / f"tokens_vs_{axis}.png")
        if path is not None:
            paths.append(path)
    return paths
