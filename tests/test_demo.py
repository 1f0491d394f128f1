"""The README's main command, `rosetta demo`, runs and reports agreement within the bounds."""

from __future__ import annotations

import re

import pytest

from rosetta_tools.cli import main


@pytest.mark.parametrize("dtype, exponent_at_most", [("float64", -13), ("float32", -5)])
def test_demo_reports_agreement(capsys, dtype, exponent_at_most):
    assert main(["demo", "--dtype", dtype]) == 0
    out = capsys.readouterr().out
    assert "identical within the stated bounds" in out
    diffs = [float(d) for d in re.findall(r"max \|difference\| .*?(\d\.\d+e[-+]\d+)", out)]
    assert len(diffs) == 3 and all(d < 10.0**exponent_at_most for d in diffs)
