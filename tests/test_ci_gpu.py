"""`.ci/gpu --dry-run`: the GPU script's every step on the CPU at smoke size, so that on a lent GPU machine it runs
once as it is. Each step must finish with status 0 and leave its log (and the tables their results) in OUT."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("preflight", "suite", "long-float32", "long-bfloat16", "dense-bfloat16")


def test_gpu_script_dry_run(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    run = subprocess.run(
        [str(ROOT / ".ci" / "gpu"), "--dry-run", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=1200, check=False,
    )  # fmt: skip
    summary = (tmp_path / "summary.txt").read_text().splitlines()
    assert [line.split()[0] for line in summary] == list(STEPS), run.stdout + run.stderr
    assert all(" rc=0 " in line for line in summary), (summary, run.stdout[-4000:])
    assert run.returncode == 0
    for step in STEPS:
        assert (tmp_path / f"{step}.log").stat().st_size > 0, step
    for table in ("long-float32", "long-bfloat16", "dense-bfloat16"):
        results = json.loads((tmp_path / table / "results.json").read_text())
        assert results["cases"], table
    assert "test_long_context.py" in (tmp_path / "suite.log").read_text()
