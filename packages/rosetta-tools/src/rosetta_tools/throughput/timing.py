"""Wall-clock timing of one call at a time (synchronised inside the timed region) and its summary."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Timing:
    """Every timed call of one implementation in one case and mode, and their median, quartiles and range (s)."""

    times_s: tuple[float, ...]
    median_s: float
    p25_s: float
    p75_s: float
    min_s: float
    max_s: float
    n: int


def time_calls(call: Callable[[], Any], sync: Callable[[Any], None], reps: int) -> list[float]:
    """Seconds per call for `reps` calls; `sync` waits for the call's result (device work included)."""
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        sync(call())
        times.append(time.perf_counter() - start)
    return times


def summarise(times: list[float]) -> Timing:
    """Median, quartiles, min and max of the per-call times, in seconds."""
    ordered = sorted(times)
    if len(ordered) >= 2:
        p25, _, p75 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        p25 = p75 = ordered[0]
    return Timing(
        times_s=tuple(times),
        median_s=statistics.median(ordered),
        p25_s=p25,
        p75_s=p75,
        min_s=ordered[0],
        max_s=ordered[-1],
        n=len(ordered),
    )
