"""results.json: the typed results as the "rosetta-bench/1" document; the one place they become JSON.

Keys a row has depend on how far it got: every row names itself and its status; a row that is not "ok" has a
`reason`; a built row has its setup times, how it was built and its check; a timed row its times and figures.
NaN never appears: unknowns are null.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from rosetta_tools.throughput import check, flops
from rosetta_tools.throughput.results import BenchResults, CaseResult, ImplResult
from rosetta_tools.throughput.settings import BenchConfig

SCHEMA = "rosetta-bench/1"


def write_json(results: BenchResults, path: Path) -> Path:
    """Every figure of the run, machine and library info included."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_document(results), indent=1, allow_nan=False) + "\n")
    return path


def to_document(results: BenchResults) -> dict[str, Any]:
    """The whole run as the JSON document."""
    precision = results.config.precision
    return {
        "schema": SCHEMA,
        "started": results.started,
        "settings": _settings(results.config),
        "precision": precision,
        "conventions": flops.CONVENTIONS,
        "tolerances": check.TOLERANCES[precision],
        "machine": dataclasses.asdict(results.machine),
        "workers": results.workers,
        "cases": [_case(case) for case in results.cases],
    }


def _settings(config: BenchConfig) -> dict[str, Any]:
    data = dataclasses.asdict(config)
    data["model"] = config.model.to_dict()
    data["out_dir"] = str(config.out_dir)
    data["lengths"] = None if config.lengths is None else str(config.lengths)
    return data


def _case(result: CaseResult) -> dict[str, Any]:
    case = result.case
    return {
        "batch": case.batch,
        "seq": case.seq,
        "padding": case.padding,
        "label": case.label,
        "padded_fraction": result.padded_fraction,
        "real_tokens": result.real_tokens,
        "flops": result.flops,
        "gemm_shape": list(result.gemm_shape),
        "results": [_row(row) for row in result.results],
        **({"lengths": result.case.lengths, "workload": result.workload} if result.workload is not None else {}),
    }


def _row(row: ImplResult) -> dict[str, Any]:
    impl = row.impl
    data: dict[str, Any] = {
        "impl": impl.name,
        "framework": impl.framework,
        "mode": row.mode,
        "peer": impl.peer,
        "ceiling": impl.ceiling,
        "description": impl.description,
        "attention": row.attention,
        "precision": row.precision,
        "status": row.status,
    }
    if row.status != "ok":
        data["reason"] = row.reason
    if row.traceback is not None:
        data["traceback"] = row.traceback
    if row.setup is not None:
        data.update(first_call_s=row.setup.first_call_s, warmup_s=row.setup.warmup_s, **row.setup.details)
    if row.check is not None:
        data["check"] = {
            **dataclasses.asdict(row.check.errors),
            "summary": row.check.summary,
            "ok": row.check.ok,
            "losses": list(row.check.losses) if row.check.losses is not None else None,
        }
    if impl.ceiling:
        data["ceiling_of"] = row.ceiling_of
    if row.timing is not None:
        data.update(dataclasses.asdict(row.timing), times_s=list(row.timing.times_s))
        data["peak_memory_bytes"] = row.peak_memory_bytes
    if row.gflops is not None:
        data.update(flops=row.flops, gflops=row.gflops)
    if row.rates is not None:
        rates = dataclasses.asdict(row.rates)
        data.update(rates, tokens_per_s_iqr=list(row.rates.tokens_per_s_iqr))
    if row.is_machine_ceiling is not None:
        data["is_machine_ceiling"] = row.is_machine_ceiling
    return data
