"""nox sessions: `tests` (CPU; `-- --device=cuda` for the GPU), `lint`, `bench`, `train`.

Every session installs the packages from this repo into its own virtualenv, pinned by constraints.txt.
On a machine that is already provisioned (the GPU machine has no registry) run with `nox --no-venv ...`:
nothing is installed and the packages are imported from their source folders instead.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nox

ROOT = Path(__file__).parent
PACKAGES = {
    "common": ROOT / "common",
    "torch": ROOT / "packages" / "rosetta-torch",
    "flax": ROOT / "packages" / "rosetta-flax",
    "bench": ROOT / "packages" / "rosetta-bench",
}
SOURCE_DIRS = [path / "src" for path in PACKAGES.values()]
TEST_TOOLS = ["pytest>=8", "hypothesis>=6.100", "pytest-xdist>=3"]

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True


def provisioned(session: nox.Session) -> bool:
    """True under `nox --no-venv`: use the interpreter's packages and the repo's sources as they are."""
    return session.venv_backend == "none" or not getattr(session.virtualenv, "location", None)


def install(session: nox.Session, *names: str, extras: tuple[str, ...] = ()) -> None:
    """Install rosetta packages (and extra requirements) from the repo, or point PYTHONPATH at them.

    rosetta-bench comes with its `hf` extra (transformers < 5: the HF BERT peers, PyTorch and Flax).
    """
    if provisioned(session):
        inherited = [os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []
        session.env["PYTHONPATH"] = os.pathsep.join([*map(str, SOURCE_DIRS), *inherited])
        return
    packages = [f"{PACKAGES[n]}[hf]" if n == "bench" else str(PACKAGES[n]) for n in ("common", *names)]
    session.install("-c", str(ROOT / "constraints.txt"), *packages, *extras)


def cpu_count_args() -> list[str]:
    """pytest-xdist workers: one per core, at most 8 (2 on CI's two cores, none on one core)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = min(usable, 8)
    return ["-n", str(workers)] if workers >= 2 else []


@nox.session
@nox.parametrize("suite", ["cross", "torch-only", "flax-only"])
def tests(session: nox.Session, suite: str) -> None:
    """Cross-framework tests with both frameworks; each framework's own tests in a venv without the other.

    `nox -s tests -- --device=cuda` runs the same tests on a CUDA GPU (TF32 off), skipping where none exists.
    """
    wants_gpu = any(arg in ("--device=cuda", "cuda") for arg in session.posargs)
    if wants_gpu and suite != "cross":
        session.skip("the single-framework suites run on the CPU; the GPU variant runs the cross-framework suite")
    if wants_gpu and shutil.which("nvidia-smi") is None:
        session.skip("--device=cuda asked for, but this machine has no CUDA GPU (no nvidia-smi on PATH)")
    if suite == "cross":
        install(session, "torch", "flax", "bench", extras=tuple(TEST_TOOLS))
        session.run("pytest", *cpu_count_args(), "tests", *session.posargs)
        return
    own, other = ("torch", "jax") if suite == "torch-only" else ("flax", "torch")
    install(session, own, extras=tuple(TEST_TOOLS))
    if not provisioned(session):
        session.run(
            "python",
            "-c",
            f"import importlib.util as u; assert u.find_spec('{other}') is None, "
            f"'{other} must not be installed with rosetta-{own} alone'; import rosetta_{own}; "
            f"print('rosetta-{own} imports without {other}')",
        )
    session.run("pytest", str(PACKAGES[own] / "tests"), *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the whole repo."""
    if not provisioned(session):
        session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def bench(session: nox.Session) -> None:
    """Throughput comparison; arguments after `--` go to `rosetta bench` (e.g. `-- --preset paper-base`)."""
    install(session, "torch", "flax", "bench")
    session.run("python", "-m", "rosetta_bench", "bench", *session.posargs)


@nox.session
def train(session: nox.Session) -> None:
    """The side-by-side training run; arguments after `--` go to `rosetta train`."""
    install(session, "torch", "flax", "bench")
    session.run("python", "-m", "rosetta_bench", "train", *session.posargs)
