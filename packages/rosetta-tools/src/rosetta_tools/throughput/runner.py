"""One `rosetta bench` run: workers up, reference computed, every implementation checked, then timed.

Timing is interleaved: each round gives every implementation (and each framework's GEMM probe) a block of
calls in turn, so a change in background load shows in every row alike instead of in one. Only one worker
runs at a time; the others wait on their stdin.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rosetta_common import save_canonical
from rosetta_common.vectors import random_tensors
from rosetta_tools.throughput import check, flops
from rosetta_tools.throughput.impls import ALL, BASELINE, CEILINGS
from rosetta_tools.throughput.inputs import make_inputs
from rosetta_tools.throughput.machine import machine_info
from rosetta_tools.throughput.peaks import peak_tflops
from rosetta_tools.throughput.processes import BenchError, Worker
from rosetta_tools.throughput.settings import BenchConfig, Case
from rosetta_tools.throughput.timing import summarise

SCHEMA = "rosetta-bench/1"


class Reporter(Protocol):
    """Progress sink (the command line draws a rich progress bar)."""

    def start(self, total: int) -> None: ...
    def step(self, description: str, advance: int = 1) -> None: ...
    def note(self, text: str) -> None: ...


class QuietReporter:
    def start(self, total: int) -> None: ...
    def step(self, description: str, advance: int = 1) -> None: ...
    def note(self, text: str) -> None: ...


def runnable_impls(config: BenchConfig) -> list[str]:
    """The chosen implementations that apply to at least one mode on this device and dtype."""
    return [name for name in config.impls if any(config.skip_reason(name, mode) is None for mode in config.modes)]


def total_steps(config: BenchConfig) -> int:
    """Progress units: per case and mode, one setup and `rounds` timing blocks per implementation."""
    total = 0
    for _ in config.cases:
        for mode in config.modes:
            runnable = [n for n in config.impls if config.skip_reason(n, mode) is None]
            total += (len(runnable) + len(CEILINGS)) * (1 + config.rounds)
    return total


def run(config: BenchConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    """Measure everything `config` asks for; return the results document (see `report.write_json`)."""
    reporter = reporter or QuietReporter()
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
            for name in (*runnable_impls(config), *CEILINGS):
                workers[name] = Worker(name, config, scratch)
            for worker in workers.values():
                worker.wait_ready()
            files = _write_inputs(config, scratch)
            reporter.step("float64 reference", advance=0)
            _reference(config, weights, files)
            reporter.start(total_steps(config))
            cases = [_run_case(config, case, workers, weights, files[case], reporter) for case in config.cases]
        finally:
            for worker in workers.values():
                worker.close()
    machine["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return {
        "schema": SCHEMA,
        "started": started.isoformat(timespec="seconds"),
        "settings": config.to_dict(),
        "precision": config.precision,
        "conventions": flops.CONVENTIONS,
        "tolerances": check.TOLERANCES[config.precision],
        "machine": machine,
        "workers": {name: worker.info for name, worker in workers.items()},
        "cases": cases,
    }


def _write_inputs(config: BenchConfig, scratch: Path) -> dict[Case, dict[str, Path]]:
    files = {}
    for case in config.cases:
        token_ids, padding_mask = make_inputs(config.model, case.batch, case.seq, case.padding, config.seed)
        inputs = scratch / f"inputs-{case.label}.npz"
        np.savez(inputs, token_ids=token_ids, padding_mask=padding_mask)
        files[case] = {"inputs": inputs, "reference": scratch / f"reference-{case.label}.npz"}
    return files


def _reference(config: BenchConfig, weights: Path, files: dict[Case, dict[str, Path]]) -> None:
    """Run the float64 reference (its own process) for every case."""
    pairs = [str(path) for paths in files.values() for path in (paths["inputs"], paths["reference"])]
    command = [sys.executable, "-m", "rosetta_tools.throughput.reference", config.device, str(weights), str(config.lr)]
    done = subprocess.run([*command, *pairs], capture_output=True, text=True)
    if done.returncode:
        raise BenchError(f"the float64 reference failed:\n{done.stderr[-3000:]}")


def _run_case(
    config: BenchConfig,
    case: Case,
    workers: dict[str, Worker],
    weights: Path,
    files: dict[str, Path],
    reporter: Reporter,
) -> dict[str, Any]:
    padding_mask = np.load(files["inputs"])["padding_mask"]
    gemm_shape = flops.gemm_shape(config.model, case.batch, case.seq)
    results: list[dict[str, Any]] = []
    for mode in config.modes:
        spec = {
            "mode": mode,
            "config": config.model.to_dict(),
            "weights": str(weights),
            "inputs": str(files["inputs"]),
            "reference": str(files["reference"]),
            "lr": config.lr,
            "warmup": config.warmup,
            "gemm_shape": list(gemm_shape),
            "torch_compile": config.torch_compile,
        }
        entries = {}
        for name in config.impls:
            entries[name] = _setup(config, case, name, mode, spec, workers.get(name), reporter)
        for name in CEILINGS:
            gemm_spec = {**spec, "mode": "gemm"}
            entries[name] = {
                **_setup(config, case, name, "gemm", gemm_spec, workers[name], reporter),
                "ceiling_of": mode,
            }
        _time_rounds(config, case, mode, entries, workers, reporter)
        _derive(config, case, mode, entries, workers)
        results.extend(entries.values())
    valid = ~padding_mask
    return {
        "batch": case.batch,
        "seq": case.seq,
        "padding": case.padding,
        "label": case.label,
        "padded_fraction": float(padding_mask.mean()),
        "real_tokens": int(valid.sum()),
        "flops": {mode: flops.step_flops(config.model, case.batch, case.seq, mode) for mode in config.modes},
        "gemm_shape": list(gemm_shape),
        "results": results,
    }


def _setup(
    config: BenchConfig,
    case: Case,
    name: str,
    mode: str,
    spec: dict[str, Any],
    worker: Worker | None,
    reporter: Reporter,
) -> dict[str, Any]:
    """Build and check one implementation; the entry's status says whether it will be timed."""
    impl = ALL[name]
    entry: dict[str, Any] = {
        "impl": name,
        "framework": impl.framework,
        "mode": mode,
        "peer": impl.peer,
        "ceiling": impl.ceiling,
        "description": impl.description,
        "attention": worker and worker.info.get("attention"),
        "precision": worker and worker.info.get("precision"),
        "status": "ok",
    }
    reason = None if impl.ceiling else config.skip_reason(name, mode)
    if reason or worker is None:
        return {**entry, "status": "skipped", "reason": reason}
    reporter.step(f"{case.label} {mode}: compile + check {name}")
    reply = worker.request({"cmd": "setup", "spec": spec})
    if not reply["ok"]:
        reporter.note(f"[red]{name} {mode} failed:[/red] {reply['error']}")
        return {**entry, "status": "error", "reason": reply["error"], "traceback": reply.get("traceback")}
    entry.update(first_call_s=reply["first_call_s"], warmup_s=reply["warmup_s"], **reply["details"])
    if "errors" in reply:
        ok, summary = check.verdict(reply["errors"], config.precision, mode)
        entry["check"] = {**reply["errors"], "summary": summary, "ok": ok, "losses": reply.get("losses")}
        if not ok:
            reporter.note(f"[red]{name} {mode} disagrees with the float64 reference, not timed:[/red] {summary}")
            entry.update(status="wrong", reason=f"disagrees with the float64 reference: {summary}")
    return entry


def _time_rounds(
    config: BenchConfig,
    case: Case,
    mode: str,
    entries: dict[str, dict[str, Any]],
    workers: dict[str, Worker],
    reporter: Reporter,
) -> None:
    """`rounds` rounds; in each, every checked implementation times a block of calls (order rotates).

    A GEMM probe call does a fraction of an encoder call's work, so its block has proportionally more calls:
    every block then lasts about as long, and the ceiling's median sees the same stretch of background noise
    as the encoders' medians (a 0.1 s block of GEMMs swung by +-10% between rounds on a shared 2-core VM).
    """
    active = [name for name, entry in entries.items() if entry["status"] == "ok"]
    gemms = flops.gemms_per_call(config.model, case.batch, case.seq, mode)
    reps = {name: config.reps_per_round * (gemms if name in CEILINGS else 1) for name in active}
    times: dict[str, list[float]] = {name: [] for name in active}
    for round_index in range(config.rounds):
        shift = round_index % max(len(active), 1)
        for name in active[shift:] + active[:shift]:
            if entries[name]["status"] != "ok":
                continue
            reporter.step(f"{case.label} {mode}: round {round_index + 1}/{config.rounds} {name}")
            reply = workers[name].request({"cmd": "time", "reps": reps[name]})
            if not reply["ok"]:
                entries[name].update(status="error", reason=reply["error"])
                continue
            times[name].extend(reply["times"])
    for name in active:
        if entries[name]["status"] == "ok":
            entries[name]["times_s"] = times[name]
            entries[name].update(summarise(times[name]))


def _derive(
    config: BenchConfig, case: Case, mode: str, entries: dict[str, dict[str, Any]], workers: dict[str, Worker]
) -> None:
    """tokens/s (median and quartiles), GFLOP/s, fraction of the ceiling, MFU, ratio to the baseline."""
    tokens = case.batch * case.seq
    for entry in entries.values():
        if entry["status"] != "ok":
            continue
        work = flops.step_flops(config.model, case.batch, case.seq, entry["mode"])
        entry["flops"] = work
        entry["gflops"] = work / entry["median_s"] / 1e9
        if not entry["ceiling"]:
            entry["tokens_per_s"] = tokens / entry["median_s"]
            entry["tokens_per_s_iqr"] = [tokens / entry["p75_s"], tokens / entry["p25_s"]]
            entry["tokens_per_s_best"] = tokens / entry["min_s"]
    ceilings = {n: entries[n]["gflops"] for n in CEILINGS if entries[n]["status"] == "ok"}
    ceiling = max(ceilings.values(), default=None)
    device_name = next((w.info.get("device_name") for w in workers.values() if w.info.get("device_name")), None)
    peak = peak_tflops(device_name, config.precision) if config.device == "cuda" else None
    baseline = entries.get(BASELINE)
    baseline_s = baseline["median_s"] if baseline and baseline["status"] == "ok" else None
    for entry in entries.values():
        if entry["status"] != "ok" or entry["ceiling"]:
            continue
        entry["ceiling_gflops"] = ceiling
        entry["fraction_of_ceiling"] = entry["gflops"] / ceiling if ceiling else None
        own = ceilings.get(f"matmul.{entry['framework']}")
        entry["fraction_of_framework_ceiling"] = entry["gflops"] / own if own else None
        entry["mfu"] = entry["gflops"] / (peak * 1e3) if peak else None
        entry["peak_tflops"] = peak
        entry["vs_baseline"] = baseline_s / entry["median_s"] if baseline_s else None
    for name, value in ceilings.items():
        entries[name]["is_machine_ceiling"] = value == ceiling
