"""What the parent process can say about the machine without importing a framework."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

PACKAGES = (
    "numpy",
    "torch",
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "rich",
    "matplotlib",
    "rosetta-common",
    "rosetta-torch",
    "rosetta-flax",
    "rosetta-tools",
)


@dataclass(frozen=True)
class MachineInfo:
    """The machine a run measured: CPU, cores, memory, load at the start and the end, OS, Python, libraries."""

    cpu_model: str
    physical_cores: int | None
    logical_cpus: int | None
    usable_cpus: int | None
    memory_gib: float | None
    load_average: tuple[float, ...] | None
    platform: str
    python: str
    thread_env: dict[str, str | None]
    versions: dict[str, str | None]
    load_average_end: tuple[float, ...] | None = None
    bfloat16_hardware: str = "unknown"  # "AMX-BF16", "AVX512-BF16", "ARM BF16" or "none": see bfloat16_hardware()


def load_average() -> tuple[float, ...] | None:
    """The 1, 5 and 15 minute load averages, where the OS has them."""
    return tuple(os.getloadavg()) if hasattr(os, "getloadavg") else None


def bfloat16_hardware(flags: set[str]) -> str:
    """The CPU's bfloat16 matrix hardware from its feature flags: AMX tiles (Sapphire Rapids and later), AVX-512
    BF16 dot products (Cooper Lake, Zen 4), Arm's BF16 extension, or none (bfloat16 then runs through float32)."""
    if "amx_bf16" in flags:
        return "AMX-BF16"
    if "avx512_bf16" in flags:
        return "AVX512-BF16"
    if "bf16" in flags:  # aarch64 /proc/cpuinfo "Features"
        return "ARM BF16"
    return "none"


def _cpu_flags() -> set[str] | None:
    """The feature flags of the first CPU in /proc/cpuinfo (x86 "flags", aarch64 "Features"), None elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key in ("flags", "Features"):
            return set(value.split())
    return None


def _cpuinfo() -> tuple[str, int | None]:
    """CPU model and physical core count from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), None
    model, cores, physical = None, set(), None
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "model name" and model is None:
            model = value
        elif key == "physical id":
            physical = value
        elif key == "core id":
            cores.add((physical, value))
    return model or platform.machine(), len(cores) or None


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def machine_info() -> MachineInfo:
    """CPU model, core counts, memory, load, OS, Python and library versions (the end load still unset)."""
    cpu_model, physical_cores = _cpuinfo()
    flags = _cpu_flags()
    return MachineInfo(
        cpu_model=cpu_model,
        physical_cores=physical_cores,
        logical_cpus=os.cpu_count(),
        usable_cpus=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        memory_gib=_memory_gib(),
        load_average=load_average(),
        platform=platform.platform(),
        python=sys.version.split()[0],
        thread_env={name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS")},
        versions={package: _version(package) for package in PACKAGES},
        bfloat16_hardware="unknown" if flags is None else bfloat16_hardware(flags),
    )
