"""The figures derived from one mode's timings: FLOPs, GFLOP/s, tokens/s, fractions of the ceilings, MFU, ratios."""

from __future__ import annotations

from dataclasses import replace

from rosetta_tools.throughput import flops
from rosetta_tools.throughput.impls import baseline_of
from rosetta_tools.throughput.lengths import Workload
from rosetta_tools.throughput.peaks import peak_tflops
from rosetta_tools.throughput.results import CaseResult, ImplResult, Rates
from rosetta_tools.throughput.settings import BenchConfig, Case


def derive(
    config: BenchConfig, case: Case, rows: list[ImplResult], device_name: str | None, workload: Workload | None = None
) -> list[ImplResult]:
    """`rows` (one mode of `case`, its ceiling probes included) with the figures of each timed row filled in; in
    the lengths case (`workload`) a call is a pass over its layout's batches and tokens are its real tokens."""
    rows = [_with_rate(config, case, row, workload) for row in rows]
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
            tokens = case.batch * case.seq if workload is None else workload.real_tokens
            rates = _rates(tokens, row, ceiling, own, peak, baseline_s)
            derived.append(replace(row, rates=rates))
    return derived


def layout_of(row: ImplResult) -> str:
    """The lengths case's layout a row runs."""
    return "packed" if row.impl.packed else "padded"


def _with_rate(config: BenchConfig, case: Case, row: ImplResult, workload: Workload | None) -> ImplResult:
    """A timed row with its FLOPs per call and GFLOP/s."""
    if row.status != "ok" or row.timing is None:
        return row
    if workload is not None and not row.impl.ceiling:
        work = workload.step_flops(config.model, layout_of(row), row.mode)
    else:
        work = flops.step_flops(config.model, case.batch, case.seq, row.mode)
    return replace(row, flops=work, gflops=work / row.timing.median_s / 1e9)


def _rates(
    tokens: int,
    row: ImplResult,
    ceiling: float | None,
    own: float | None,
    peak: float | None,
    baseline_s: float | None,
) -> Rates:
    """tokens/s (median, quartiles, best) and GFLOP/s over the machine's and its framework's ceiling, MFU, ratio."""
    assert row.timing is not None and row.gflops is not None
    timing, gflops = row.timing, row.gflops
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


def packed_ratios(dense: CaseResult, packed: CaseResult) -> CaseResult:
    """The lengths case with its packed rows' ratios: real tokens/s over the fastest padded peer's (same mode), and
    over the same implementation's rate on the dense batch x seq case (the row without `.packed`)."""
    rows = []
    for row in packed.results:
        if row.impl.packed and row.rates is not None:
            peers = [
                r.rates.tokens_per_s
                for r in packed.results
                if r.mode == row.mode and r.impl.peer and r.rates is not None and not r.impl.ceiling
            ]
            twin = row.impl.name.removesuffix(".packed")
            dense_rate = next(
                (r.rates.tokens_per_s for r in dense.results if r.impl.name == twin and r.mode == row.mode and r.rates),
                None,
            )
            rates = replace(
                row.rates,
                vs_fastest_padded_peer=row.rates.tokens_per_s / max(peers) if peers else None,
                vs_dense=row.rates.tokens_per_s / dense_rate if dense_rate else None,
            )
            row = replace(row, rates=rates)
        rows.append(row)
    return replace(packed, results=tuple(rows))
