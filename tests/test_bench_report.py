"""The report says how sure its numbers are: a row timed on a machine whose speed changed under it is flagged, its
ratios marked, and the advice printed; skip reasons print as written (no rich markup eaten)."""

from __future__ import annotations

import argparse
import io
from types import SimpleNamespace

from rich.console import Console

from rosetta_tools.cli import bench
from rosetta_tools.throughput import estimate, report
from rosetta_tools.throughput.impls import BASELINE, IMPLS
from rosetta_tools.throughput.protocol import Setup
from rosetta_tools.throughput.results import CaseResult, ImplResult, Rates
from rosetta_tools.throughput.settings import BenchConfig, Case

SETUP = Setup(first_call_s=1.0, warmup_s=0.1, details={})


def rates(median: float, low: float, high: float, vs_baseline: float) -> Rates:
    return Rates(median, (low, high), high, None, None, None, None, None, vs_baseline)


def case_with(baseline_iqr: tuple[float, float]) -> CaseResult:
    """rosetta_torch steady at 155,000 tokens/s; the baseline at 1,003 with the given IQR (the issue's numbers)."""
    rows = (
        ImplResult(IMPLS["rosetta_torch"], "forward", "ok", setup=SETUP, rates=rates(155_000, 150_000, 158_000, 155)),
        ImplResult(IMPLS[BASELINE], "forward", "ok", setup=SETUP, rates=rates(1_003, *baseline_iqr, 1.0)),
        ImplResult(IMPLS["hf.BertEncoder"], "forward", "skipped", reason="pip install './packages/rosetta-tools[hf]'"),
    )
    return CaseResult(Case(2, 16, 0.0), 0.0, 32, {"forward": 1}, (32, 8, 16), rows)


def test_a_wide_spread_marks_the_ratios_and_says_what_to_do() -> None:
    case = case_with((570, 127_100))
    assert [row.impl.name for row in report.unstable_rows(case)] == [BASELINE]
    note = report.instability_note(case)
    assert note is not None
    assert f"worst: {BASELINE} forward, 570-127.1k around 1.0k tokens/s" in note
    assert "Rerun on a quiet machine (nothing else running) with more --repeats and --rounds" in note


def test_a_steady_run_prints_its_ratios_as_they_are() -> None:
    case = case_with((990, 1_010))
    assert report.unstable_rows(case) == [] and report.instability_note(case) is None


def test_skip_reasons_keep_their_brackets() -> None:
    console = Console(file=io.StringIO(), width=200)
    reason = case_with((990, 1_010)).results[2].reason
    console.print(f"[dim]not run: hf.BertEncoder: {report.escape(reason)}[/dim]")
    assert "pip install './packages/rosetta-tools[hf]'" in console.file.getvalue()


def rendered(case: CaseResult) -> str:
    results = SimpleNamespace(config=SimpleNamespace(preset="tiny", device="cpu", precision="float32"))
    console = Console(file=io.StringIO(), width=250)
    console.print(report.case_table(results, case))
    return console.file.getvalue()


def test_ratios_on_an_unstable_baseline_carry_a_question_mark() -> None:
    assert "155.00x?" in rendered(case_with((570, 127_100)))
    steady = rendered(case_with((990, 1_010)))
    assert "155.00x" in steady and "155.00x?" not in steady


def bench_config(*argv: str) -> BenchConfig:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return bench.config_from_args(parser.parse_args(list(argv)))


def test_the_duration_estimate_grows_with_the_work_and_skips_what_does_not_run() -> None:
    rate = 1e11  # FLOP/s, fixed so that the comparison does not depend on this machine
    tiny = estimate.estimate_seconds(bench_config("--preset", "tiny"), rate)
    assert 0 < tiny < estimate.estimate_seconds(bench_config("--preset", "tiny", "--repeats", "200"), rate)
    assert tiny < estimate.estimate_seconds(bench_config("--preset", "paper-base"), rate)
    forward = estimate.estimate_seconds(bench_config("--preset", "tiny", "--mode", "forward"), rate)
    assert forward < tiny
    # the cuDNN row does not run on a CPU, so naming it adds nothing
    with_cudnn = bench_config("--preset", "tiny", "--impl", "rosetta_torch", "rosetta_flax.jit.cudnn")
    alone = bench_config("--preset", "tiny", "--impl", "rosetta_torch")
    assert estimate.estimate_seconds(with_cudnn, rate) == estimate.estimate_seconds(alone, rate)
    assert estimate.describe(30) == "about 30 seconds" and estimate.describe(840) == "about 14 minutes"


def test_the_machines_bfloat16_hardware_is_named_from_its_cpu_flags() -> None:
    from rosetta_tools.throughput.machine import bfloat16_hardware, machine_info

    assert bfloat16_hardware({"avx512f", "amx_tile", "amx_bf16", "avx512_bf16"}) == "AMX-BF16"
    assert bfloat16_hardware({"avx2", "avx512f", "avx512_bf16"}) == "AVX512-BF16"
    assert bfloat16_hardware({"fp", "asimd", "bf16"}) == "ARM BF16"
    assert bfloat16_hardware({"sse2", "avx2", "fma"}) == "none"
    assert machine_info().bfloat16_hardware in ("AMX-BF16", "AVX512-BF16", "ARM BF16", "none", "unknown")
