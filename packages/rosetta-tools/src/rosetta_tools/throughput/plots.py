"""PNG plots of a run's results (matplotlib, Agg backend): one line or bar group per implementation."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from rosetta_tools.throughput.impls import ALL, Model
from rosetta_tools.throughput.report import run_baseline
from rosetta_tools.throughput.results import BenchResults, CaseResult, ImplResult

Point = tuple[int, float, float, float, float, float]  # x, tokens/s, IQR low, IQR high, vs the baseline, peak MiB


def _points(results: BenchResults, mode: str, axis: str) -> dict[str, list[Point]]:
    """impl -> [(x, tokens/s, low, high, vs baseline, peak memory MiB)] along `axis` ("seq" or "batch"), the other
    axis at the run's base value. Only the first padding level is drawn; vs baseline and memory are NaN where the
    baseline did not run or the platform gave no peak.
    """
    fixed = "batch" if axis == "seq" else "seq"
    config = results.config
    fixed_value, padding = getattr(config, fixed), config.paddings[0]
    lines: dict[str, list[Point]] = {}
    for case_result in results.cases:
        case = case_result.case
        if getattr(case, fixed) != fixed_value or case.padding != padding or case.lengths is not None:
            continue
        for row in _timed_encoders(case_result, mode):
            rates = row.rates
            low, high = rates.tokens_per_s_iqr
            ratio = rates.vs_baseline if rates.vs_baseline is not None else math.nan
            peak = row.peak_memory_bytes / 2**20 if row.peak_memory_bytes is not None else math.nan
            point = (getattr(case, axis), rates.tokens_per_s, low, high, ratio, peak)
            lines.setdefault(row.impl.name, []).append(point)
    return {impl: sorted(points) for impl, points in lines.items() if len(points) > 1}


def _timed_encoders(case: CaseResult, mode: str) -> list[ImplResult]:
    """The encoder rows (not the GEMM probes) of `case` timed in `mode`."""
    return [r for r in case.results if r.mode == mode and r.status == "ok" and not r.impl.ceiling and r.rates]


def _wide_range(lines: dict[str, list[Point]]) -> bool:
    """Whether the medians span more than 20x (then a log scale keeps every line readable)."""
    values = [point[1] for points in lines.values() for point in points]
    return bool(values) and max(values) > 20 * min(values)


def _style(impl: str) -> dict[str, Any]:
    """rosetta's own rows bold with round markers, the peers dashed."""
    if ALL[impl].model is Model.ROSETTA:
        return {"linewidth": 2.5, "marker": "o"}
    return {"linewidth": 1.5, "marker": "s", "linestyle": "--"}


def sweep_plot(results: BenchResults, axis: str, path: Path) -> Path | None:
    """tokens/s against `axis` ("seq" or "batch"), one column per mode; None if the run did not sweep it.

    The middle row is each implementation's speed relative to the baseline timed in the same rounds (on a shared
    machine the absolute rates drift with background load, the ratios do not); the lower row its peak memory
    during the timed calls (`memory`: process RSS on a CPU, the device allocator's on a GPU).
    """
    modes = results.config.modes
    per_mode = {mode: _points(results, mode, axis) for mode in modes}
    if not any(per_mode.values()):
        return None
    figure, axes = plt.subplots(3, len(modes), figsize=(6.5 * len(modes), 11), squeeze=False, sharex="col")
    for column, mode in enumerate(modes):
        rates, ratios, peaks = axes[0][column], axes[1][column], axes[2][column]
        for impl, points in per_mode[mode].items():
            xs, ys, lows, highs, vs_baseline, peak_mib = zip(*points, strict=True)
            rates.plot(xs, ys, label=impl, **_style(impl))
            rates.fill_between(xs, lows, highs, alpha=0.15)
            ratios.plot(xs, vs_baseline, label=impl, **_style(impl))
            peaks.plot(xs, peak_mib, label=impl, **_style(impl))
        if _wide_range(per_mode[mode]):
            rates.set_yscale("log")
        rates.set_ylabel("tokens/s (median, IQR shaded)")
        rates.set_title(mode)
        rates.legend(fontsize=8)
        ratios.axhline(1.0, color="grey", linewidth=0.8)
        ratios.set_ylabel(f"speed vs {run_baseline(results)}")
        peaks.set_ylabel("peak memory, MiB (timed calls)")
        peaks.set_xlabel("sequence length" if axis == "seq" else "batch size")
        for ax in (rates, ratios, peaks):
            ax.set_xscale("log", base=2)
            ax.grid(True, alpha=0.3)
    return _save(figure, results, path)


def bar_plot(results: BenchResults, path: Path) -> Path:
    """tokens/s per implementation for the first shape, a bar per padding level, one panel per mode."""
    modes = results.config.modes
    first = results.cases[0].case
    cases = [c for c in results.cases if (c.case.batch, c.case.seq) == (first.batch, first.seq)]
    figure, axes = plt.subplots(1, len(modes), figsize=(6.5 * len(modes), 4.5), squeeze=False)
    for ax, mode in zip(axes[0], modes, strict=True):
        impls = list(dict.fromkeys(row.impl.name for case in cases for row in _timed_encoders(case, mode)))
        width = 0.8 / len(cases)
        for offset, case in enumerate(cases):
            by_impl = {row.impl.name: row.rates for row in _timed_encoders(case, mode)}
            values, low, high = [], [], []
            for impl in impls:
                rates = by_impl.get(impl)
                value = rates.tokens_per_s if rates else 0.0
                values.append(value)
                low.append(value - rates.tokens_per_s_iqr[0] if rates else 0.0)
                high.append(rates.tokens_per_s_iqr[1] - value if rates else 0.0)
            positions = [i + offset * width for i in range(len(impls))]
            label = f"padding {case.padded_fraction:.0%}"
            if case.workload is not None:
                label = f"{case.workload['name']} (real tokens/s; .packed rows packed, others padded)"
            ax.bar(positions, values, width, yerr=[low, high], capsize=3, label=label)
        ax.set_xticks([i + width * (len(cases) - 1) / 2 for i in range(len(impls))])
        ax.set_xticklabels(impls, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("tokens/s (median, IQR bars)")
        ax.set_title(f"{mode}, batch {first.batch} x seq {first.seq}")
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    return _save(figure, results, path)


def _save(figure: plt.Figure, results: BenchResults, path: Path) -> Path:
    """Title the figure with the run (preset, precision, device, CPU), write it as PNG and free it."""
    config = results.config
    figure.suptitle(f"{config.preset}, {config.precision} on {config.device} ({results.machine.cpu_model})")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def make_plots(results: BenchResults, out_dir: Path) -> list[Path]:
    """Every plot that applies to this run: the bar chart, and the seq / batch sweeps when swept."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [bar_plot(results, out_dir / "throughput.png")]
    for axis in ("seq", "batch"):
        path = sweep_plot(results, axis, out_dir / f"tokens_vs_{axis}.png")
        if path is not None:
            paths.append(path)
    return paths
