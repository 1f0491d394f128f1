"""How `rosetta train` stops (issue 27): at the first non-finite loss (one line, exit code 2, nothing logged past
the last finite step, no checkpoint), on Ctrl-C (one line saying what was kept, exit code 130, no traceback), and
before any work when `--out` holds an earlier run and `--force` is not given."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rosetta_tools.cli import main
from rosetta_tools.sidebyside.task import ReversalTask

SMALL = ["--d-model", "16", "--n-heads", "2", "--d-ff", "16", "--n-layers", "1", "--batch-size", "8", "--no-progress"]
FRAMEWORKS = {"both": [], "torch": ["--framework", "torch"], "flax": ["--framework", "flax"]}
DIVERGING = ["--lr", "1e30", "--warmup", "0", "--clip-norm", "0"]


def train(*options: object) -> list[str]:
    return ["train", *SMALL, *map(str, options)]


def logged_steps(folder: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (folder / "log.jsonl").read_text().splitlines()]


def one_line(err: str, start: str) -> str:
    assert err.startswith(start) and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_diverging_run_stops_at_its_first_non_finite_loss(tmp_path: Path, capsys, framework: str) -> None:
    out = tmp_path / "run"
    assert main(train(*FRAMEWORKS[framework], "--steps", "20", *DIVERGING, "--out", out)) == 2
    captured = capsys.readouterr()
    err = one_line(captured.err, "rosetta: error: train: training diverged at step 1 (loss ")
    assert "nan" in err and "nothing written past step 0" in err
    assert "NNX state" not in captured.out + captured.err
    assert logged_steps(out) == [0]
    assert sorted(path.name for path in out.iterdir()) == ["log.jsonl"]  # no checkpoint, no summary


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("at_step", [0, 2])
def test_ctrl_c_says_what_was_kept(tmp_path: Path, capsys, monkeypatch, framework: str, at_step: int) -> None:
    """Interrupted while the first step compiles (step 0) or mid-run: exit code 130, one line, the log kept."""
    batch = ReversalTask.batch

    def interrupting(self: ReversalTask, step: int):
        if step == at_step:
            raise KeyboardInterrupt
        return batch(self, step)

    monkeypatch.setattr(ReversalTask, "batch", interrupting)
    out = tmp_path / "run"
    assert main(train(*FRAMEWORKS[framework], "--steps", "5", "--out", out)) == 130
    err = one_line(capsys.readouterr().err, "rosetta: interrupted: training stopped ")
    if at_step:
        assert f"after {at_step} of 5 steps; kept {out / 'log.jsonl'} (steps 0..{at_step - 1})" in err
        assert logged_steps(out) == list(range(at_step))
    else:
        assert "before its first step was logged; kept no step logged" in err
    assert "no checkpoint" in err and not (out / "checkpoint.safetensors").exists()


@pytest.mark.skipif(not hasattr(signal, "SIGINT") or os.name != "posix", reason="POSIX signals")
def test_a_real_ctrl_c_is_one_line_and_exit_code_130(tmp_path: Path) -> None:
    out = tmp_path / "run"
    # Python raises KeyboardInterrupt on SIGINT as in a terminal, even where this test runs as a background job
    # (which starts its children with SIGINT ignored)
    code = "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    code += "from rosetta_tools.cli import main; sys.exit(main(sys.argv[1:]))"
    argv = [str(arg) for arg in train("--framework", "torch", "--steps", "10000000", "--out", out)]
    process = subprocess.Popen([sys.executable, "-c", code, *argv], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300  # a hang guard
    while time.monotonic() < deadline and process.poll() is None:
        if (out / "log.jsonl").is_file() and len((out / "log.jsonl").read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    one_line(err, "rosetta: interrupted: training stopped after ")
    last = logged_steps(out)[-1]
    assert f"(steps 0..{last})" in err


@pytest.mark.parametrize("framework", ["both", "torch"])
def test_out_over_an_earlier_run_asks_for_force(tmp_path: Path, capsys, framework: str) -> None:
    out = tmp_path / "run"
    assert main(train(*FRAMEWORKS[framework], "--steps", "2", "--out", out)) == 0
    before = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}
    capsys.readouterr()
    assert main(train(*FRAMEWORKS[framework], "--steps", "3", "--out", out)) == 2
    err = one_line(capsys.readouterr().err, f"rosetta: error: train: --out {out} holds an earlier run (")
    assert "pass --force to replace it" in err
    assert {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()} == before
    assert main(train(*FRAMEWORKS[framework], "--steps", "3", "--out", out, "--force")) == 0
    assert logged_steps(out) == [0, 1, 2]


def test_resuming_a_run_in_its_own_folder_continues_it(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(train("--framework", "torch", "--steps", "4", "--stop-at", "2", "--out", out)) == 0
    resume = ["--resume", out / "checkpoint.safetensors", "--out", out]
    assert main(train("--framework", "torch", "--steps", "4", *resume)) == 0
    assert logged_steps(out) == [0, 1, 2, 3]


@pytest.mark.parametrize("framework", ["both", "torch"])
def test_out_that_is_or_lies_under_a_file(tmp_path: Path, capsys, framework: str) -> None:
    (tmp_path / "afile").write_text("x")
    for out, message in (
        (tmp_path / "afile", "is a file, not a folder"),
        (tmp_path / "afile" / "run", "afile is a file"),
    ):
        assert main(train(*FRAMEWORKS[framework], "--steps", "2", "--out", out)) == 2
        err = one_line(capsys.readouterr().err, f"rosetta: error: train: --out {out}")
        assert f"{tmp_path / 'afile'} is a file, not a folder" in err or message in err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["afile"]
