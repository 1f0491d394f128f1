"""`rosetta bench --lengths` end to end on the tiny preset: the dense case, then the shipped lengths file packed
(the .packed rows, where the encoders take segment_ids) and padded (every other row), real numbers in the JSON.

Asserts that the harness works, never a speed. Compiled torch rows use `--torch-compile aot-eager` (as
test_bench_smoke.py does), and a few rows only, to stay quick on two cores.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

import rosetta_flax
import rosetta_torch
from rosetta_tools.throughput.lengths import takes_segment_ids

LENGTHS = Path(__file__).resolve().parents[1] / "packages/rosetta-tools/reports/lengths/stdlib-docstrings.json"
PADDED = [
    "rosetta_torch",
    "rosetta_flax.jit",
    "nn.TransformerEncoder",
]  # the packed rows' dense twins; a peer in both modes
PACKED = ["rosetta_torch.packed", "rosetta_flax.jit.packed"]
HANG_GUARD_S = 1800  # a hang guard only: about 90 s on two cores with another job running


@pytest.fixture(scope="module")
def lengths_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("bench-lengths")
    command = [sys.executable, "-m", "rosetta_tools", "bench", "--preset", "tiny", "--lengths", str(LENGTHS)]
    command += ["--lengths-batches", "2", "--padded-batch", "16", "--repeats", "2", "--rounds", "1", "--warmup", "0"]
    command += ["--torch-compile", "aot-eager", "--impl", *PADDED, *PACKED, "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=HANG_GUARD_S)
    return done, out


def test_both_encoders_take_segment_ids() -> None:
    """What the workers' feature check reads: both encoders' signatures name `segment_ids`."""
    assert takes_segment_ids(rosetta_torch.Encoder.forward) and takes_segment_ids(rosetta_flax.Encoder.__call__)


@pytest.mark.slow
def test_lengths_case_has_every_row_and_real_numbers(lengths_run) -> None:
    done, out = lengths_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "lengths stdlib-docstrings" in done.stdout and "distinct shapes" in done.stdout
    results = json.loads((out / "results.json").read_text())
    dense, lengths = results["cases"]
    assert dense["label"] == "B4-S128-pad0" and "workload" not in dense
    assert lengths["label"] == "B4-S128-lengths-stdlib-docstrings"
    work = lengths["workload"]
    assert work["packed_shape"] == [4, 128] and work["packed_batches"] == 2
    assert work["padded_batch_size"] == 16 and 0 < work["padded_fill"] < work["packed_fill"] <= 1
    assert lengths["real_tokens"] == work["real_tokens"] > 0
    assert all(shape[1] % 8 == 0 for shape in work["padded_shapes"])
    rows = {(row["impl"], row["mode"]): row for row in lengths["results"]}
    for impl in PADDED:
        for mode in ("forward", "train"):
            row = rows[(impl, mode)]
            assert row["status"] == "ok", row
            assert row["check"]["ok"] and math.isfinite(row["tokens_per_s"]) and row["tokens_per_s"] > 0
            assert row["flops"] == work["flops"]["padded"][mode]
            assert row["vs_fastest_padded_peer"] is None and row["vs_dense"] is None
    for impl in PACKED:
        for mode in ("forward", "train"):
            row = rows[(impl, mode)]
            assert row["status"] == "ok", row
            assert row["check"]["ok"] and row["tokens_per_s"] > 0
            assert row["flops"] == work["flops"]["packed"][mode]
            assert row["vs_fastest_padded_peer"] > 0 and row["vs_dense"] > 0
    # packed rows never run in the dense case
    assert all(row["status"] == "skipped" for row in dense["results"] if row["impl"] in PACKED)
    assert (out / "throughput.png").stat().st_size > 0
