"""The results as rich tables in the terminal, a table per case, then what did not run and how it was measured."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rosetta_tools.throughput.check import OutputErrors
from rosetta_tools.throughput.impls import Model, baseline_of
from rosetta_tools.throughput.results import BenchResults, CaseResult, ImplResult, Rates
from rosetta_tools.throughput.torch_compile import compile_settings

# A row whose interquartile range is wider than this fraction of its median was timed on a machine whose speed
# changed under it (other jobs, a throttled host): its ratios are shown with "?" and the report says so.
UNSTABLE_SPREAD = 0.5


def spread(rates: Rates) -> float:
    """Width of the tokens/s IQR relative to the median."""
    low, high = rates.tokens_per_s_iqr
    return abs(high - low) / rates.tokens_per_s


def unstable_rows(case: CaseResult) -> list[ImplResult]:
    """The timed encoder rows of a case whose spread exceeds UNSTABLE_SPREAD."""
    return [
        row
        for row in case.results
        if row.rates is not None and not row.impl.ceiling and spread(row.rates) > UNSTABLE_SPREAD
    ]


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _compact(value: float) -> str:
    return f"{value / 1e3:.1f}k" if value >= 1e3 else f"{value:.0f}"


def _check_cell(row: ImplResult) -> str:
    """Short form of the correctness check: the error the verdict was taken on."""
    if row.check is None:
        return "-"
    errors = row.check.errors
    if isinstance(errors, OutputErrors):
        return f"ok {errors.max_abs:.0e} abs"
    return f"ok {errors.loss:.0e}/{errors.loss_drop:.0e}"


def _ceiling_row(row: ImplResult, gpu: bool) -> list[str]:
    first_call_s = row.setup.first_call_s if row.setup else None
    return [
        row.impl.name,
        "gemm",
        "",
        "",
        "",
        _fmt(row.gflops, ",.0f"),
        "ceiling" if row.is_machine_ceiling else "",
        "",
        *([""] if gpu else []),
        "",
        "",
        _fmt(first_call_s, ".1f"),
        "-" if row.status == "ok" else row.status,
    ]


def _row(row: ImplResult, gpu: bool, unsure: bool) -> tuple[list[str], str | None]:
    """The table cells of one row and their style; `unsure`: its ratio rests on an unstable timing."""
    if row.impl.ceiling:
        return _ceiling_row(row, gpu), "dim"
    blank = [""] * (10 if gpu else 9)
    if row.status != "ok" or row.rates is None or row.setup is None:
        return [row.impl.name, row.mode, *blank, f"{row.status.upper()}: {row.reason}"], "red"
    rates = row.rates
    low, high = rates.tokens_per_s_iqr
    fraction, own, mfu, ratio = (
        rates.fraction_of_ceiling,
        rates.fraction_of_framework_ceiling,
        rates.mfu,
        rates.vs_baseline,
    )
    cells = [
        row.impl.name,
        row.mode,
        _fmt(rates.tokens_per_s, ",.0f"),
        f"{_compact(low)}-{_compact(high)}",
        _compact(rates.tokens_per_s_best),
        _fmt(row.gflops, ",.0f"),
        _fmt(fraction and 100 * fraction, ".0f"),
        _fmt(own and 100 * own, ".0f"),
        *([_fmt(mfu and 100 * mfu, ".1f")] if gpu else []),
        "-" if ratio is None else f"{ratio:.2f}x" + ("?" if unsure else ""),
        _fmt(row.peak_memory_bytes and row.peak_memory_bytes / 2**20, ",.0f"),
        _fmt(row.setup.first_call_s, ".1f"),
        _check_cell(row),
    ]
    return cells, "bold" if row.impl.model is Model.ROSETTA else None


def case_table(results: BenchResults, case: CaseResult) -> Table:
    """One case: a row per implementation and mode (skipped ones left out), each mode's GEMM probes last."""
    config = results.config
    gpu = config.device == "cuda"
    title = (
        f"{config.preset}  batch {case.case.batch} x seq {case.case.seq}  padding {case.padded_fraction:.0%}  "
        f"{config.precision} on {config.device}"
    )
    if case.workload is not None:
        title = (
            f"{config.preset}  lengths {case.workload['name']}: .packed rows {case.case.batch} x {case.case.seq}, "
            f"the others padded ({case.padded_fraction:.0%} padding)  real tokens/s  {config.precision} on "
            f"{config.device}"
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
        "peak MiB",
        "1st call s",
        "check",
    ]
    for header in headers:
        justify = "left" if header in ("implementation", "mode", "check") else "right"
        table.add_column(header, justify=justify, no_wrap=True)
    unstable = unstable_rows(case)
    unstable_modes = {row.mode for row in unstable if row.impl.name == case_baseline(case)}
    for row in sorted(case.results, key=lambda r: (r.ceiling_of or r.mode, r.impl.ceiling)):
        if row.status != "skipped":
            cells, style = _row(row, gpu, unsure=row in unstable or row.mode in unstable_modes)
            table.add_row(*cells, style=style)
    return table


def lengths_notes(case: CaseResult) -> list[str]:
    """The lengths case: what its workload was, and each packed row against the padded peers and its dense rate."""
    work = case.workload
    if work is None:
        return []
    notes = [
        f"{work['name']}: {work['sequences']} sequences per call (mean {work['mean_length']:g} tokens, longest "
        f"{work['max_length']}, {work['truncated_to_row']} truncated to the row), {work['real_tokens']:,} real tokens; "
        f"packed: {work['packed_batches']} batches of {work['packed_shape'][0]} x {work['packed_shape'][1]}, "
        f"{work['packed_fill']:.1%} real; padded: {work['padded_batches']} batches of {work['padded_batch_size']} "
        f"sequences, each to its longest rounded up to {work['padded_multiple_of']}: "
        f"{work['padded_distinct_shapes']} distinct shapes (each compiled and warmed before timing), "
        f"{work['padded_fill']:.1%} real"
    ]
    peers = [r for r in case.results if r.impl.peer and r.rates is not None]
    for row in case.results:
        if not row.impl.packed or row.rates is None:
            continue
        fastest = max((r for r in peers if r.mode == row.mode), key=lambda r: r.rates.tokens_per_s, default=None)
        versus = [f"{row.impl.name} {row.mode}: {row.rates.tokens_per_s:,.0f} real tokens/s"]
        if fastest is not None and row.rates.vs_fastest_padded_peer is not None:
            versus.append(f"{row.rates.vs_fastest_padded_peer:.2f}x the fastest padded peer ({fastest.impl.name})")
        if row.rates.vs_dense is not None:
            versus.append(
                f"{row.rates.vs_dense:.2f}x its dense rate ({row.impl.name.removesuffix('.packed')}, "
                f"{case.case.batch} x {case.case.seq} unpadded)"
            )
        notes.append(", ".join(versus))
    return notes


def instability_note(case: CaseResult) -> str | None:
    """What to say when a case's timings spread too wide for its ratios to be facts."""
    unstable = unstable_rows(case)
    if not unstable:
        return None
    worst = max(unstable, key=lambda row: spread(row.rates))
    low, high = worst.rates.tokens_per_s_iqr
    return (
        f"[yellow]UNSTABLE timings in batch {case.case.batch} x seq {case.case.seq}: {len(unstable)} row(s) have an "
        f"IQR wider than {UNSTABLE_SPREAD:.0%} of their median (worst: {worst.impl.name} {worst.mode}, "
        f"{_compact(low)}-{_compact(high)} around {_compact(worst.rates.tokens_per_s)} tokens/s); ratios marked ? "
        "are not reliable. Rerun on a quiet machine (nothing else running) with more --repeats and --rounds.[/yellow]"
    )


def run_baseline(results: BenchResults) -> str:
    """The row this run's ratios are against (`impls.baseline_of` the rows that ran)."""
    return baseline_of({row.impl.name for _, row in results.rows() if row.status == "ok"})


def case_baseline(case: CaseResult) -> str:
    """The row this case's ratios are against (`impls.baseline_of` the rows that ran)."""
    return baseline_of({row.impl.name for row in case.results if row.status == "ok"})


def print_report(results: BenchResults, console: Console) -> None:
    """Every case's table, the rows that did not run and why, the compile settings, the machine and a legend."""
    config, machine = results.config, results.machine
    for case in results.cases:
        console.print(case_table(results, case))
        for line in lengths_notes(case):
            console.print(line, highlight=False)
        note = instability_note(case)
        if note is not None:
            console.print(note)
    threads = {name: info.get("num_threads", info.get("visible_cpus")) for name, info in results.workers.items()}
    load = (
        [round(x, 1) for x in machine.load_average or []],
        [round(x, 1) for x in machine.load_average_end or []],
    )
    compiled = set()
    for _, row in results.rows():
        if row.impl.compiled and row.setup is not None:
            settings = compile_settings(config.torch_compile, row.mode, config.device)
            compiled.add((row.mode, settings.choice, settings.freezing, str(settings.kwargs)))
    skipped = {(row.impl.name, row.reason) for _, row in results.rows() if row.status == "skipped"}
    for impl, reason in sorted(skipped):
        console.print(f"[dim]not run: {impl}: {escape(reason)}[/dim]")  # escaped: "[hf]" is no markup
    if config.dtype == "bfloat16" and config.device == "cpu" and machine.bfloat16_hardware == "none":
        console.print(
            "[yellow]this CPU has no bfloat16 hardware (no AMX, no AVX512-BF16): the bfloat16 rows ran, their "
            "arithmetic going through float32, so their speed says nothing about a machine that has it[/yellow]"
        )
    for mode, choice, freezing, kwargs in sorted(compiled):
        console.print(f"[dim]torch.compile rows, {mode}: {choice} (freezing={freezing}, torch.compile{kwargs})[/dim]")
    console.print(
        f"[dim]{machine.cpu_model}, {machine.usable_cpus} usable CPUs, bfloat16 hardware: "
        f"{machine.bfloat16_hardware}; threads per worker: "
        f"{', '.join(f'{k}={v}' for k, v in threads.items())}; load average {load[0]} -> {load[1]}.\n"
        "tokens = B*S positions per call (padding included; in a lengths case the real tokens of its pass over "
        "every batch), median over calls, IQR, best = fastest call; "
        "train = forward + backward + AdamW, FLOPs 3x forward; "
        "1st call = compilation + one run; % ceil = GFLOP/s over the best GEMM measured in the same rounds (either "
        "framework), % own = over the implementation's own framework's GEMM; "
        f"vs peer = speed relative to {run_baseline(results)} (same case and mode); check = max abs error of the "
        "output, or relative errors of the loss / of its drop after one AdamW step, against the float64 "
        "reference.[/dim]"
    )
