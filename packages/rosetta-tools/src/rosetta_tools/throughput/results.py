"""The typed results of one `rosetta bench` run: per implementation and mode, per case, the whole run.

The runner builds them, `report` and `plots` read them, `results_json` writes them (the only place they become JSON).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from rosetta_tools.throughput.check import Check
from rosetta_tools.throughput.impls import Impl
from rosetta_tools.throughput.machine import MachineInfo
from rosetta_tools.throughput.protocol import Setup
from rosetta_tools.throughput.settings import BenchConfig, Case
from rosetta_tools.throughput.timing import Timing

# ok: checked and timed; skipped: not run here (reason); error: failed to build or run (reason);
# wrong: disagrees with the float64 reference, so not timed (reason).
Status = Literal["ok", "skipped", "error", "wrong"]


@dataclass(frozen=True)
class Rates:
    """An encoder row's speed: tokens/s, and its GFLOP/s against the ceilings, the datasheet peak, the baseline."""

    tokens_per_s: float
    tokens_per_s_iqr: tuple[float, float]  # from the 75th and the 25th percentile of the call times
    tokens_per_s_best: float
    ceiling_gflops: float | None  # the best GEMM rate of either framework, same rounds
    fraction_of_ceiling: float | None
    fraction_of_framework_ceiling: float | None  # against its own framework's GEMM
    mfu: float | None  # against the datasheet peak (known GPUs only)
    peak_tflops: float | None
    vs_baseline: float | None  # speed relative to the baseline row, same case and mode
    # the lengths case's packed rows: real tokens/s over the fastest padded peer's, and over the same row's
    # unpacked (dense batch x seq) rate in the dense case
    vs_fastest_padded_peer: float | None = None
    vs_dense: float | None = None


@dataclass(frozen=True)
class ImplResult:
    """One implementation in one mode of one case, from setup to derived figures (None where it did not get there)."""

    impl: Impl
    mode: str  # "forward", "train", or "gemm" for a ceiling probe
    status: Status
    attention: str | None = None  # as its worker reports it
    precision: str | None = None
    reason: str | None = None  # why it is not "ok"
    traceback: str | None = None  # the worker's, when its setup failed
    setup: Setup | None = None
    check: Check | None = None
    ceiling_of: str | None = None  # a ceiling probe: the mode whose rounds it was timed in
    timing: Timing | None = None
    flops: int | None = None  # per call
    gflops: float | None = None
    rates: Rates | None = None  # encoder rows
    is_machine_ceiling: bool | None = None  # ceiling probes: the best GEMM of the case and mode
    peak_memory_bytes: int | None = None  # during the timed calls: process RSS on a CPU, the allocator's on a GPU


@dataclass(frozen=True)
class CaseResult:
    """One input shape: its padding as drawn, the FLOPs per call in each mode, every row."""

    case: Case
    padded_fraction: float
    real_tokens: int
    flops: dict[str, int]  # per mode
    gemm_shape: tuple[int, int, int]
    results: tuple[ImplResult, ...]
    workload: dict[str, Any] | None = None  # the lengths case: `lengths.Workload.summary()`


@dataclass(frozen=True)
class BenchResults:
    """The whole run: what was asked, where it ran, what every worker reported, every case."""

    started: str  # ISO 8601, UTC
    config: BenchConfig
    machine: MachineInfo
    workers: dict[str, dict[str, Any]]  # per implementation: its hello (versions, threads, device): arbitrary JSON
    cases: tuple[CaseResult, ...]

    def rows(self) -> Iterator[tuple[CaseResult, ImplResult]]:
        """Every (case, row) of the run, in order."""
        for case in self.cases:
            for row in case.results:
                yield case, row
