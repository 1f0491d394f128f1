"""`rosetta train`'s output folder: an earlier run's folder is replaced only with `--force`, and an interrupted run
says what it kept there."""

from __future__ import annotations

import json
from pathlib import Path

from rosetta_tools.cli.errors import CommandError, Interrupted

LOG_FILE, CHECKPOINT_FILE, SWITCH_DIR = "log.jsonl", "checkpoint.safetensors", "switch"


def check_output_folder(out: Path | None, force: bool, resume: Path | None = None) -> None:
    """CommandError before any work for an `--out` that is a file, lies under a file, or holds files (an earlier
    run) without `--force`; resuming from a checkpoint inside `out` continues that run there (its log grows)."""
    if out is None:
        return
    if not out.exists():
        existing = next(folder for folder in out.absolute().parents if folder.exists())
        if not existing.is_dir():
            raise CommandError(f"train: --out {out}: {existing} is a file, not a folder")
        return
    if not out.is_dir():
        raise CommandError(f"train: --out {out} is a file, not a folder")
    held = sorted(entry.name for entry in out.iterdir())
    if not held or force or (resume is not None and out.resolve() in (resume.resolve(), *resume.resolve().parents)):
        return
    shown = ", ".join(held[:4]) + (", ..." if len(held) > 4 else "")
    raise CommandError(
        f"train: --out {out} holds an earlier run ({shown}); pass --force to replace it, or name a new folder"
    )


def interrupted(out_dir: Path, total_steps: int) -> Interrupted:
    """What an interrupted run kept in `out_dir`: the steps its log holds and the last complete checkpoint."""
    steps = _logged_steps(out_dir / LOG_FILE)
    where = f"after {steps[1] + 1} of {total_steps} steps" if steps else "before its first step was logged"
    kept = [f"{out_dir / LOG_FILE} (steps {steps[0]}..{steps[1]})" if steps else "no step logged"]
    if (out_dir / CHECKPOINT_FILE).is_file():
        kept.append(f"the last complete checkpoint {out_dir / CHECKPOINT_FILE}")
    else:
        kept.append("no checkpoint (a run writes its checkpoint at its end)")
    switched = sorted((out_dir / SWITCH_DIR).glob("lane-*")) if (out_dir / SWITCH_DIR).is_dir() else []
    if switched:
        kept.append(f"the switch's weights and AdamW state in {out_dir / SWITCH_DIR}")
    return Interrupted(f"training stopped {where}; kept {', '.join(kept)}")


def _logged_steps(log: Path) -> tuple[int, int] | None:
    """(first, last) step of the complete lines of a run's log, None when it holds none."""
    if not log.is_file():
        return None
    steps = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            steps.append(int(json.loads(line)["step"]))
        except (ValueError, KeyError, TypeError):
            break  # a line cut short by the interrupt
    return (steps[0], steps[-1]) if steps else None
