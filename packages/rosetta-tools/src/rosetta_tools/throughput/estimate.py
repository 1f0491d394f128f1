"""A rough duration of a `rosetta bench` run, printed before it starts, so nobody waits 14 minutes unwarned.

Per worker process a start-up; per implementation, case and mode a first call (compilation) and then
`1 + warmup + repeats` calls, each taking the call's FLOPs at this machine's NumPy float32 GEMM rate, measured in
a fraction of a second. The constants were fitted on a 2-core AMD EPYC: `torch.compile` took 13 s per mode at
tiny (2 layers) and 22-26 s at paper-base (6 layers); the encoders ran at 80-94% of the GEMM ceiling; the tiny
run took 1 min 24 s and the performance page's paper-base run (two paddings, 30 repeats in 6 rounds) 14 minutes. An
estimate to plan by, not a measurement.
"""

from __future__ import annotations

import time

import numpy as np

from rosetta_tools.throughput.flops import gemm_flops, step_flops
from rosetta_tools.throughput.impls import ALL, Impl
from rosetta_tools.throughput.lengths import case_workload
from rosetta_tools.throughput.settings import BenchConfig

WORKER_START_S = 5.0  # importing torch or JAX, building the model, loading the weights
COMPILE_S_PER_LAYER = {"compiled": 3.5, "jit": 0.3, "eager": 0.0}  # the first call's compilation, per mode
FIRST_CALL_S = {"compiled": 4.0, "jit": 0.5, "eager": 0.1}  # plus this, per implementation and mode
ENCODER_EFFICIENCY = 0.8  # of NumPy's GEMM rate, end to end (attention, norms and the backward pass included)


def gemm_rate(size: int = 384, repeats: int = 5) -> float:
    """This machine's float32 GEMM rate with NumPy, FLOP/s (best of a few square products)."""
    a = np.ones((size, size), np.float32)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - start)
    return gemm_flops(size, size, size) / best


def first_call_s(impl: Impl, n_layers: int) -> float:
    kind = "compiled" if impl.compiled else "jit" if impl.framework == "jax" else "eager"
    return FIRST_CALL_S[kind] + COMPILE_S_PER_LAYER[kind] * n_layers


def estimate_seconds(config: BenchConfig, rate: float | None = None) -> float:
    """Seconds the run will take, roughly (`rate`: FLOP/s, measured when None)."""
    rate = rate or gemm_rate()
    seconds = 0.0
    for case in config.cases:
        workload = case_workload(config, case)
        for mode in config.modes:
            calls = 1 + config.warmup + config.repeats
            for name in config.impls:
                if config.skip_reason(name, mode, case) is not None:
                    continue
                impl, shapes = ALL[name], 1
                if workload is None:
                    work = step_flops(config.model, case.batch, case.seq, mode)
                else:  # a pass over the layout's batches, each distinct padded shape compiled
                    layout = "packed" if impl.packed else "padded"
                    work = workload.step_flops(config.model, layout, mode)
                    shapes = len({batch.token_ids.shape for batch in workload.batches(layout)})
                call_s = work / (rate * ENCODER_EFFICIENCY)
                seconds += first_call_s(impl, config.model.n_layers) * shapes + calls * call_s
    workers = sum(any(config.skip_reason(name, mode) is None for mode in config.modes) for name in config.impls)
    return seconds + WORKER_START_S * workers


def describe(seconds: float) -> str:
    return f"about {seconds / 60:.0f} minutes" if seconds >= 90 else f"about {seconds:.0f} seconds"
