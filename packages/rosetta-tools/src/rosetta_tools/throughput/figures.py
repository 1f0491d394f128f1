"""The figures derived from one mode's timings: FLOPs, GFLOP/s, tokens/s, fractions of the ceilings, MFU, ratios."""

from __future__ import annotations

from dataclasses import replace

from rosetta_tools.throughput import flops
from rosetta_tools.throughput.impls import baseline_of
from rosetta_tools.throughput.peaks import peak_tflops
from rosetta_tools.throughput.results import ImplResult, Rates
from rosetta_tools.throughput.settings import BenchConfig, Case


def derive(config: BenchConfig, case: Case, rows: list[ImplResult], device_name: str | None) -> list[ImplResult]:
    """`rows` (one mode of `case`, its ceiling probes included) with the figures of each timed row filled in."""
    rows = [_with_rate(config, case, row) for row in rows]
    ceilings = [row for row in rows if row.impl.ceiling and row.gflops is not None]
    ceiling = max((row.gflops for row in ceilings), default=None)
    peak = peak_tflops(device_name, config.precision) if config.device == "cuda" else None
    timed = {row.impl.name: row.timing.median_s for row in rows if row.timing and not row.impl.ceiling}
    baseline_s = timed.get(baseline_of(set(timed)))
    derived = []
    for row in rows:
        if row.gflops is None:
            derived.append(row)
        elif row.impl.ceiling:
            derived.append(replace(row, is_machine_ceiling=row.gflops == ceiling))
        else:
            own = next((c.gflops for c in ceilings if c.impl.framework == row.impl.framework), None)
            rates = _rates(case, row, ceiling, own, peak, baseline_s)
            derived.append(replace(row, rates=rates))
    return derived


def _with_rate(config: BenchConfig, case: Case, row: ImplResult) -> ImplResult:
    """A timed row with its FLOPs per call and GFLOP/s."""
    if row.status != "ok" or row.timing is None:
        return row
    work = flops.step_flops(config.model, case.batch, case.seq, row.mode)
    return replace(row, flops=work, gflops=work / row.timing.median_s / 1e9)


def _rates(
    case: Case,
    row: ImplResult,
    ceiling: float | None,
    own: float | None,
    peak: float | None,
    baseline_s: float | None,
) -> Rates:
    """tokens/s (median, quartiles, best) and GFLOP/s over the machine's and its framework's ceiling, MFU, ratio."""
    assert row.timing is not None and row.gflops is not None
    tokens, timing, gflops = case.batch * case.seq, row.timing, row.gflops
    return Rates(
        tokens_per_s=tokens / timing.median_s,
        tokens_per_s_iqr=(tokens / timing.p75_s, tokens / timing.p25_s),
        tokens_per_s_best=tokens / timing.min_s,
        ceiling_gflops=ceiling,
        fraction_of_ceiling=gflops / ceiling if ceiling else None,
        fraction_of_framework_ceiling=gflops / own if own else None,
        mfu=gflops / (peak * 1e3) if peak else None,
        peak_tflops=peak,
        vs_baseline=baseline_s / timing.median_s if baseline_s else None,
    )
