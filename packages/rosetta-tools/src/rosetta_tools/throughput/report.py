"""The results document as a JSON file and as rich tables in the terminal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from rosetta_tools.throughput.impls import BASELINE


def write_json(results: dict[str, Any], path: Path) -> Path:
    """Every figure of the run, machine and library info included (NaN never appears: unknowns are null)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, allow_nan=False) + "\n")
    return path


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _compact(value: float) -> str:
    return f"{value / 1e3:.1f}k" if value >= 1e3 else f"{value:.0f}"


def _check_cell(entry: dict[str, Any]) -> str:
    """Short form of the correctness check: the error the verdict was taken on."""
    errors = entry.get("check")
    if not errors:
        return "-"
    if entry["mode"] == "forward":
        return f"ok {errors['max_abs']:.0e} abs"
    return f"ok {errors['loss']:.0e}/{errors['loss_drop']:.0e}"


def _row(entry: dict[str, Any], gpu: bool) -> tuple[list[str], str | None]:
    """The table cells of one entry and their style."""
    blank = [""] * (9 if gpu else 8)
    if entry["ceiling"]:
        cells = [
            "gemm",
            "",
            "",
            "",
            _fmt(entry.get("gflops"), ",.0f"),
            "ceiling" if entry.get("is_machine_ceiling") else "",
            "",
            *([""] if gpu else []),
            "",
            _fmt(entry.get("first_call_s"), ".1f"),
            "-" if entry["status"] == "ok" else entry["status"],
        ]
        return [entry["impl"], *cells], "dim"
    if entry["status"] != "ok":
        return [entry["impl"], entry["mode"], *blank, f"{entry['status'].upper()}: {entry['reason']}"], "red"
    low, high = entry["tokens_per_s_iqr"]
    fraction, mfu, ratio = entry["fraction_of_ceiling"], entry["mfu"], entry["vs_baseline"]
    own = entry.get("fraction_of_framework_ceiling")
    cells = [
        entry["impl"],
        entry["mode"],
        _fmt(entry["tokens_per_s"], ",.0f"),
        f"{_compact(low)}-{_compact(high)}",
        _compact(entry["tokens_per_s_best"]),
        _fmt(entry["gflops"], ",.0f"),
        _fmt(fraction and 100 * fraction, ".0f"),
        _fmt(own and 100 * own, ".0f"),
        *([_fmt(mfu and 100 * mfu, ".1f")] if gpu else []),
        "-" if ratio is None else f"{ratio:.2f}x",
        _fmt(entry["first_call_s"], ".1f"),
        _check_cell(entry),
    ]
    return cells, "bold" if entry["impl"].startswith("rosetta") else None


def case_table(results: dict[str, Any], case: dict[str, Any]) -> Table:
    """One case: a row per implementation and mode (skipped ones left out), each mode's GEMM probes last."""
    settings = results["settings"]
    gpu = settings["device"] == "cuda"
    title = (
        f"{settings['preset']}  batch {case['batch']} x seq {case['seq']}  padding {case['padded_fraction']:.0%}  "
        f"{results['precision']} on {settings['device']}"
    )
    table = Table(title=title, title_justify="left")
    gpu_columns = ["MFU %"] if gpu else []
    headers = [
        "implementation",
        "mode",
        "tokens/s",
        "IQR",
        "best",
        "GFLOP/s",
        "% ceil",
        "% own",
        *gpu_columns,
        "vs peer",
        "1st call s",
        "check",
    ]
    for header in headers:
        justify = "left" if header in ("implementation", "mode", "check") else "right"
        table.add_column(header, justify=justify, no_wrap=True)
    for entry in sorted(case["results"], key=lambda e: (e.get("ceiling_of", e["mode"]), e["ceiling"])):
        if entry["status"] != "skipped":
            cells, style = _row(entry, gpu)
            table.add_row(*cells, style=style)
    return table


def print_report(results: dict[str, Any], console: Console) -> None:
    for case in results["cases"]:
        console.print(case_table(results, case))
    machine = results["machine"]
    threads = {name: info.get("num_threads", info.get("visible_cpus")) for name, info in results["workers"].items()}
    load = (
        [round(x, 1) for x in machine["load_average"] or []],
        [round(x, 1) for x in machine["load_average_end"] or []],
    )
    compiled = {
        (e["mode"], e["torch_compile"]["choice"], e["torch_compile"]["freezing"], str(e["torch_compile"]["kwargs"]))
        for case in results["cases"]
        for e in case["results"]
        if "torch_compile" in e
    }
    skipped = {
        (e["impl"], e["reason"]) for case in results["cases"] for e in case["results"] if e["status"] == "skipped"
    }
    for impl, reason in sorted(skipped):
        console.print(f"[dim]not run: {impl}: {reason}[/dim]")
    for mode, choice, freezing, kwargs in sorted(compiled):
        console.print(f"[dim]torch.compile rows, {mode}: {choice} (freezing={freezing}, torch.compile{kwargs})[/dim]")
    console.print(
        f"[dim]{machine['cpu_model']}, {machine['usable_cpus']} usable CPUs; threads per worker: "
        f"{', '.join(f'{k}={v}' for k, v in threads.items())}; load average {load[0]} -> {load[1]}.\n"
        "tokens = B*S positions per call (padding included), median over calls, IQR, best = fastest call; "
        "train = forward + backward + AdamW, FLOPs 3x forward; "
        "1st call = compilation + one run; % ceil = GFLOP/s over the best GEMM measured in the same rounds (either "
        "framework), % own = over the implementation's own framework's GEMM; "
        f"vs peer = speed relative to {BASELINE} (same case and mode); check = max abs error of the output, or "
        "relative errors of the loss / of its drop after one AdamW step, against the float64 reference.[/dim]"
    )
