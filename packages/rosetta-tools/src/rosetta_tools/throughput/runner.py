"""One `rosetta bench` run: workers up, reference computed, every implementation checked, then timed.

Timing is interleaved: each round gives every implementation (and each framework's GEMM probe) a block of
calls in turn, so a change in background load shows in every row alike instead of in one. Only one worker
runs at a time; the others wait on their stdin. A row whose framework package is not installed is skipped,
saying which package to install; the float64 reference runs in whichever framework is installed.
"""

from __future__ import annotations

import datetime
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from rosetta_common import save_canonical
from rosetta_common.vectors import random_tensors
from rosetta_tools.throughput import check, figures, flops, reference
from rosetta_tools.throughput.impls import ALL, CEILINGS, Impl
from rosetta_tools.throughput.inputs import make_inputs
from rosetta_tools.throughput.lengths import Workload, case_workload, write_workload
from rosetta_tools.throughput.machine import load_average, machine_info
from rosetta_tools.throughput.processes import BenchError, Worker, framework_env
from rosetta_tools.throughput.protocol import CommandFailed, SetupSpec
from rosetta_tools.throughput.results import BenchResults, CaseResult, ImplResult
from rosetta_tools.throughput.settings import BenchConfig, Case
from rosetta_tools.throughput.timing import summarise


class Reporter(Protocol):
    """Progress sink (the command line draws a rich progress bar)."""

    def start(self, total: int) -> None: ...
    def step(self, description: str, advance: int = 1) -> None: ...
    def note(self, text: str) -> None: ...


class QuietReporter:
    """A Reporter that shows nothing."""

    def start(self, total: int) -> None: ...
    def step(self, description: str, advance: int = 1) -> None: ...
    def note(self, text: str) -> None: ...


@dataclass(frozen=True)
class CaseFiles:
    """Where one case's inputs are, and where the reference writes its output and losses; the lengths case's
    workload too, and the plain batches whose reference its check is assembled from."""

    inputs: Path
    reference: Path
    workload: Workload | None = None
    reference_batches: tuple[tuple[str, Path, Path], ...] = ()  # (layout, inputs, reference) of each first batch


def runnable_impls(config: BenchConfig) -> list[Impl]:
    """The chosen implementations that run in at least one mode here, then the ceiling probes that run here."""
    chosen = [ALL[name] for name in config.impls if any(config.skip_reason(name, m) is None for m in config.modes)]
    return chosen + [impl for impl in CEILINGS.values() if config.skip_reason(impl.name, "gemm") is None]


def total_steps(config: BenchConfig) -> int:
    """Progress units: per case and mode, one setup and `rounds` timing blocks per implementation."""
    ceilings = sum(config.skip_reason(name, "gemm") is None for name in CEILINGS)
    total = 0
    for case in config.cases:
        for mode in config.modes:
            runnable = [name for name in config.impls if config.skip_reason(name, mode, case) is None]
            total += (len(runnable) + ceilings) * (1 + config.rounds)
    return total


def run(config: BenchConfig, reporter: Reporter | None = None) -> BenchResults:
    """Measure everything `config` asks for. Raises FrameworkMissing when neither framework is installed."""
    reporter = reporter or QuietReporter()
    reference_framework = reference.framework()
    started = datetime.datetime.now(datetime.timezone.utc)
    machine = machine_info()
    with tempfile.TemporaryDirectory(prefix="rosetta-bench-") as scratch_dir:
        scratch = Path(scratch_dir)
        weights = save_canonical(
            scratch / "weights.safetensors", config.model, random_tensors(config.model, config.seed, np.float32)
        )
        workers: dict[str, Worker] = {}
        try:
            reporter.step("starting workers", advance=0)
            for impl in runnable_impls(config):
                workers[impl.name] = Worker(impl, config, scratch)
            for worker in workers.values():
                worker.wait_ready()
            files = _write_inputs(config, scratch, packed=_packed_available(workers))
            reporter.step("float64 reference", advance=0)
            _reference(config, reference_framework, weights, files, scratch)
            reporter.start(total_steps(config))
            cases = tuple(_run_case(config, case, workers, weights, files[case], reporter) for case in config.cases)
            if config.lengths is not None:
                cases = (cases[0], figures.packed_ratios(cases[0], cases[1]))
        finally:
            for worker in workers.values():
                worker.close()
    return BenchResults(
        started=started.isoformat(timespec="seconds"),
        config=config,
        machine=replace(machine, load_average_end=load_average()),
        workers={name: worker.info for name, worker in workers.items()},
        cases=cases,
    )


def _packed_available(workers: dict[str, Worker]) -> bool:
    """Whether every packed row's framework takes `segment_ids` (their workers say so in their hello)."""
    packed = [worker for worker in workers.values() if worker.impl.packed]
    return bool(packed) and all(worker.info.get("segment_ids") for worker in packed)


def _write_inputs(config: BenchConfig, scratch: Path, packed: bool) -> dict[Case, CaseFiles]:
    files = {}
    for case in config.cases:
        if case.lengths is not None:
            files[case] = _write_workload(config, case, scratch, packed)
            continue
        token_ids, padding_mask = make_inputs(config.model, case.batch, case.seq, case.padding, config.seed)
        inputs = scratch / f"inputs-{case.label}.npz"
        np.savez(inputs, token_ids=token_ids, padding_mask=padding_mask)
        files[case] = CaseFiles(inputs, scratch / f"reference-{case.label}.npz")
    return files


def _write_workload(config: BenchConfig, case: Case, scratch: Path, packed: bool) -> CaseFiles:
    """The lengths case's workload, and its first padded (and, when the packed rows can run, packed) batch as plain
    inputs for the reference."""
    workload = case_workload(config, case)
    assert workload is not None
    inputs = write_workload(workload, scratch / f"inputs-{case.label}.npz")
    batches = []
    for layout in ("padded", "packed") if packed else ("padded",):
        first = workload.batches(layout)[0]
        path = scratch / f"inputs-{case.label}-{layout}0.npz"
        packed_inputs = {"segment_ids": first.segment_ids} if layout == "packed" else {}
        np.savez(path, token_ids=first.token_ids, padding_mask=first.padding_mask, **packed_inputs)
        batches.append((layout, path, scratch / f"reference-{case.label}-{layout}0.npz"))
    return CaseFiles(inputs, scratch / f"reference-{case.label}.npz", workload, tuple(batches))


def _assemble_reference(files: CaseFiles) -> None:
    """The lengths case's reference: the first padded batch's output at its real tokens `[T, D]` (the check
    sequences), and each layout's first-batch losses (NaN where the layout has none)."""
    assert files.workload is not None
    saved = {layout: np.load(reference) for layout, _, reference in files.reference_batches}
    first = files.workload.padded[0]
    arrays = {"output": np.concatenate(first.unpack(saved["padded"]["output"]))}
    for layout in ("padded", "packed"):
        arrays[f"losses_{layout}"] = saved[layout]["losses"] if layout in saved else np.full(2, np.nan)
    np.savez(files.reference, **arrays)


def _reference(config: BenchConfig, framework: str, weights: Path, files: dict[Case, CaseFiles], scratch: Path) -> None:
    """Run the float64 reference (its own process, in `framework`) for every case."""
    pairs = []
    for paths in files.values():
        if paths.workload is None:
            pairs += [str(paths.inputs), str(paths.reference)]
        for _, inputs, output in paths.reference_batches:
            pairs += [str(inputs), str(output)]
    module = "rosetta_tools.throughput.reference"
    adamw = config.adamw.to_json() if "train" in config.modes else reference.NO_TRAINING  # forward: no gradients
    command = [sys.executable, "-m", module, framework, config.device, str(weights), adamw, *pairs]
    env = framework_env("jax" if framework == "flax" else "torch", config.device, scratch / "inductor-reference")
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        raise BenchError(f"the float64 reference failed:\n{done.stderr[-3000:]}")
    for paths in files.values():
        if paths.workload is not None:
            _assemble_reference(paths)


def _run_case(
    config: BenchConfig,
    case: Case,
    workers: dict[str, Worker],
    weights: Path,
    files: CaseFiles,
    reporter: Reporter,
) -> CaseResult:
    workload = files.workload
    gemm_shape = flops.gemm_shape(config.model, case.batch, case.seq)
    device_name = next((w.info["device_name"] for w in workers.values() if w.info.get("device_name")), None)
    results: list[ImplResult] = []
    for mode in config.modes:
        spec = SetupSpec(
            mode=mode,
            config=config.model,
            weights=str(weights),
            inputs=str(files.inputs),
            reference=str(files.reference),
            adamw=config.adamw,
            warmup=config.warmup,
            gemm_shape=gemm_shape,
            torch_compile=config.torch_compile,
        )
        rows = [
            _setup(config, case, ALL[name], _spec_for(spec, ALL[name], workload), workers.get(name), reporter)
            for name in config.impls
        ]
        gemm = replace(spec, mode="gemm")
        rows += [_setup(config, case, impl, gemm, workers.get(impl.name), reporter, mode) for impl in CEILINGS.values()]
        rows = _time_rounds(config, case, mode, rows, workers, reporter, workload)
        results.extend(figures.derive(config, case, rows, device_name, workload))
    if workload is not None:
        return CaseResult(
            case=case,
            padded_fraction=1 - workload.real_tokens / workload.positions("padded"),
            real_tokens=workload.real_tokens,
            flops={mode: workload.step_flops(config.model, "padded", mode) for mode in config.modes},
            gemm_shape=gemm_shape,
            results=tuple(results),
            workload={
                **workload.summary(),
                "flops": {
                    layout: {mode: workload.step_flops(config.model, layout, mode) for mode in config.modes}
                    for layout in ("packed", "padded")
                },
            },
        )
    padding_mask = np.load(files.inputs)["padding_mask"]
    return CaseResult(
        case=case,
        padded_fraction=float(padding_mask.mean()),
        real_tokens=int((~padding_mask).sum()),
        flops={mode: flops.step_flops(config.model, case.batch, case.seq, mode) for mode in config.modes},
        gemm_shape=gemm_shape,
        results=tuple(results),
    )


def _spec_for(spec: SetupSpec, impl: Impl, workload: Workload | None) -> SetupSpec:
    """The setup of `impl`: in the lengths case, the layout it runs."""
    if workload is None:
        return spec
    return replace(spec, layout="packed" if impl.packed else "padded")


def _setup(
    config: BenchConfig,
    case: Case,
    impl: Impl,
    spec: SetupSpec,
    worker: Worker | None,
    reporter: Reporter,
    ceiling_of: str | None = None,
) -> ImplResult:
    """Build and check one implementation; the row's status says whether it will be timed."""
    info = worker.info if worker else {}
    row = ImplResult(
        impl=impl,
        mode=spec.mode,
        status="ok",
        attention=info.get("attention"),
        precision=info.get("precision"),
        ceiling_of=ceiling_of,
    )
    reason = config.skip_reason(impl.name, spec.mode, case)
    if reason is None and impl.packed and worker is not None and not worker.info.get("segment_ids"):
        reason = f"not available: this rosetta_{impl.package} has no segment_ids (packed inputs) yet"
    if reason or worker is None:
        return replace(row, status="skipped", reason=reason)
    reporter.step(f"{case.label} {spec.mode}: compile + check {impl.name}")
    try:
        reply = worker.setup(spec)
    except CommandFailed as failure:
        reporter.note(f"[red]{impl.name} {spec.mode} failed:[/red] {failure.error}")
        return replace(row, status="error", reason=failure.error, traceback=failure.traceback)
    row = replace(row, setup=reply.setup)
    if reply.errors is None:
        return row
    verdict = check.judge(reply.errors, reply.losses, config.precision)
    row = replace(row, check=verdict)
    if not verdict.ok:
        note = f"[red]{impl.name} {spec.mode} disagrees with the float64 reference, not timed:[/red] {verdict.summary}"
        reporter.note(note)
        row = replace(row, status="wrong", reason=f"disagrees with the float64 reference: {verdict.summary}")
    return row


def _time_rounds(
    config: BenchConfig,
    case: Case,
    mode: str,
    rows: list[ImplResult],
    workers: dict[str, Worker],
    reporter: Reporter,
    workload: Workload | None = None,
) -> list[ImplResult]:
    """`rounds` rounds; in each, every checked implementation times a block of calls (order rotates).

    A GEMM probe call does a fraction of an encoder call's work, so its block has proportionally more calls:
    every block then lasts about as long, and the ceiling's median sees the same stretch of background noise
    as the encoders' medians (a 0.1 s block of GEMMs swung by +-10% between rounds on a shared 2-core VM).
    """
    active = [row.impl for row in rows if row.status == "ok"]
    gemms = flops.gemms_per_call(config.model, case.batch, case.seq, mode)
    if workload is not None:  # a call is a pass over a layout: the packed one's FLOPs, the fewer
        probe = flops.gemm_flops(*flops.gemm_shape(config.model, case.batch, case.seq))
        gemms = max(1, round(workload.step_flops(config.model, "packed", mode) / probe))
    times: dict[str, list[float]] = {impl.name: [] for impl in active}
    peaks: dict[str, int] = {}
    failures: dict[str, str] = {}
    for round_index in range(config.rounds):
        shift = round_index % max(len(active), 1)
        for impl in active[shift:] + active[:shift]:
            if impl.name in failures:
                continue
            reporter.step(f"{case.label} {mode}: round {round_index + 1}/{config.rounds} {impl.name}")
            reps = config.reps_per_round * (gemms if impl.ceiling else 1)
            try:
                block, peak = workers[impl.name].time(reps)
                times[impl.name].extend(block)
                if peak is not None:
                    peaks[impl.name] = max(peak, peaks.get(impl.name, 0))
            except CommandFailed as failure:
                failures[impl.name] = failure.error
    timed = []
    for row in rows:
        if row.impl.name in failures:
            row = replace(row, status="error", reason=failures[row.impl.name])
        elif row.status == "ok":
            row = replace(row, timing=summarise(times[row.impl.name]), peak_memory_bytes=peaks.get(row.impl.name))
        timed.append(row)
    return timed
