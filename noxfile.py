"""nox sessions: `tests` (CPU; `-- --device=cuda` for the GPU), `lint`, `docs`, `fuzz`, `lock`, `bench`, `train`.

Every session installs the packages from this repo into its own virtualenv, every package at the exact version
in constraints.txt (the lock: what main was tested with). `nox -s lock` moves the pins forward and runs the
suite on them. On a machine that is already provisioned (the GPU machine has no registry) run with
`nox --no-venv ...`: nothing is installed and the packages are imported from their source folders instead.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import nox

ROOT = Path(__file__).parent
PACKAGES = {
    "common": ROOT / "common",
    "torch": ROOT / "packages" / "rosetta-torch",
    "flax": ROOT / "packages" / "rosetta-flax",
    "tools": ROOT / "packages" / "rosetta-tools",
}
SOURCE_DIRS = [path / "src" for path in PACKAGES.values()]
LOCK = ROOT / "constraints.txt"
TORCH = "torch==2.13.0"  # the CPU build this machine carries; an unpinned torch pulls several GB of CUDA packages
TEST_TOOLS = ["pytest>=8", "hypothesis>=6.100", "pytest-xdist>=3"]
DEV_TOOLS = ["ruff>=0.6", "nox>=2024.4"]
SUITES = ["cross", "torch-only", "flax-only", "common-only"]
DOCS_TOOLS = ["mkdocs", "mkdocs-material", "mkdocstrings[python]", "playwright", "ruff"]  # ruff formats signatures
CHROMIUM = Path("/usr/bin/chromium")  # Debian's; the browser check never uses one a tool downloads
CLIENTS = ["sentence-transformers"]  # the real client the cross suite proves `embed` against (pinned in the lock)

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True


def provisioned(session: nox.Session) -> bool:
    """True under `nox --no-venv`: use the interpreter's packages and the repo's sources as they are."""
    return session.venv_backend == "none" or not getattr(session.virtualenv, "location", None)


def install(session: nox.Session, *names: str, extras: tuple[str, ...] = ()) -> None:
    """Install rosetta packages (by key of PACKAGES, with `[extra]` allowed, e.g. "tools[hf]") and extra
    requirements from the repo, or point PYTHONPATH at their sources under `--no-venv`.

    rosetta-tools' `hf` extra is transformers < 5: the HF BERT peers of `rosetta bench`, PyTorch and Flax; its
    `embed` extra is the tokenizers library (`rosetta embed` reads a folder's tokenizer.json).
    """
    if provisioned(session):
        inherited = [os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []
        session.env["PYTHONPATH"] = os.pathsep.join([*map(str, SOURCE_DIRS), *inherited])
        return
    packages = []
    for name in ("common", *names):
        key, bracket, extra = name.partition("[")
        packages.append(f"{PACKAGES[key]}{bracket}{extra}")
    session.install("-c", str(LOCK), "--build-constraint", str(LOCK), *packages, *extras)


def cpu_count_args() -> list[str]:
    """pytest-xdist workers: one per core, at most 8 (2 on CI's two cores, none on one core)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = min(usable, 8)
    return ["-n", str(workers)] if workers >= 2 else []


def assert_not_installed(session: nox.Session, own: str, others: tuple[str, ...]) -> None:
    """Fail unless `rosetta_{own}` imports in this venv while none of `others` is installed."""
    checks = "; ".join(f"assert u.find_spec('{o}') is None, '{o} must not be installed here'" for o in others)
    session.run("python", "-c", f"import importlib.util as u; {checks}; import rosetta_{own}; print('ok')")


@nox.session
@nox.parametrize("suite", SUITES)
def tests(session: nox.Session, suite: str) -> None:
    """Cross-framework tests with both frameworks; each package's own tests in a venv without what it does not need
    (rosetta-torch without JAX, rosetta-flax without torch, rosetta-common with neither), each time with the
    `rosetta` command line (rosetta-tools) beside it and its tests, which check what that installation can do.

    `nox -s tests -- --device=cuda` runs the same tests on a CUDA GPU (TF32 off), skipping where none exists.
    """
    wants_gpu = any(arg in ("--device=cuda", "cuda") for arg in session.posargs)
    if wants_gpu and suite != "cross":
        session.skip("the single-framework suites run on the CPU; the GPU variant runs the cross-framework suite")
    if wants_gpu and shutil.which("nvidia-smi") is None:
        session.skip("--device=cuda asked for, but this machine has no CUDA GPU (no nvidia-smi on PATH)")
    tools_tests = str(PACKAGES["tools"] / "tests")
    if suite == "cross":
        install(session, "torch", "flax", "tools[hf,embed]", extras=(*TEST_TOOLS, *CLIENTS))
        session.run("pytest", *cpu_count_args(), "tests", tools_tests, *session.posargs)
        return
    own = suite.removesuffix("-only")
    install(session, *([own] if own != "common" else []), "tools", extras=tuple(TEST_TOOLS))
    if not provisioned(session):
        assert_not_installed(session, own, {"torch": ("jax",), "flax": ("torch",), "common": ("torch", "jax")}[own])
    session.run("pytest", str(PACKAGES[own] / "tests"), tools_tests, *session.posargs)


@nox.session
def fuzz(session: nox.Session) -> None:
    """Explore new Hypothesis draws for the property tests and the file fuzzer: `nox -s fuzz -- --examples 2000`
    (default 200 each).

    Not part of `nox -s tests`, which runs fixed cases only. A falsifying case is printed as a `Case(...)`
    expression to paste into `FOUND_CASES` in tests/test_property.py, or a `Mutation(...)` of a weight file to
    add to packages/rosetta-tools/tests/test_hostile_files.py (tests/test_file_fuzz.py). Other arguments go to
    pytest.
    """
    args, examples = list(session.posargs), "200"
    if "--examples" in args:
        at = args.index("--examples")
        if at + 1 >= len(args) or not args[at + 1].isdigit():
            session.error("--examples takes a positive number, e.g. `nox -s fuzz -- --examples 2000`")
        examples = args.pop(at + 1)
        args.pop(at)
    install(session, "torch", "flax", "tools", extras=tuple(TEST_TOOLS))
    fuzzed = ["tests/test_property.py", "tests/test_file_fuzz.py"]
    session.run("pytest", *cpu_count_args(), *fuzzed, "-m", "fuzz", f"--fuzz-examples={examples}", "-s", *args)


@nox.session(reuse_venv=False)
def lock(session: nox.Session) -> None:
    """Move every pin forward: resolve the newest releases (torch stays at TORCH) of everything any session, CI or
    the README installs, in one fresh environment; write them to constraints.txt; then run `tests` and `lint`."""
    if provisioned(session):
        session.error("nox -s lock resolves in a fresh virtualenv; run it without --no-venv")
    session.install("--upgrade", "pip", "setuptools")
    packages = [f"{path}[hf,embed]" if name == "tools" else str(path) for name, path in PACKAGES.items()]  # all
    session.install(TORCH, *packages, *TEST_TOOLS, *CLIENTS, *DEV_TOOLS, *DOCS_TOOLS)
    frozen = session.run("python", "-m", "pip", "freeze", "--all", silent=True)
    pins = sorted(
        (re.sub(r"\+cpu$", "", line) for line in frozen.splitlines() if "==" in line and " @ " not in line),
        key=str.lower,
    )
    header = [
        "# The lock: the exact version of every package a nox session, .ci/run or the README's set-up installs.",
        "# Written by `nox -s lock` (which then runs the suite on it); edit by hand only to pin torch (noxfile.py).",
        f"# {TORCH} resolves to the CPU build on this machine; an unpinned torch pulls several GB of CUDA packages.",
    ]
    tmp = LOCK.with_suffix(".txt.tmp")
    tmp.write_text("\n".join([*header, *pins]) + "\n")
    tmp.replace(LOCK)
    session.log(f"wrote {len(pins)} pins to {LOCK.name}; now running the suite on them")
    for suite in SUITES:
        session.notify(f"tests(suite='{suite}')")
    session.notify("lint")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the whole repo."""
    if not provisioned(session):
        session.install("-c", str(LOCK), "ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site: `mkdocs build --strict` (a broken link, anchor, page or reference fails), then every
    page rendered in Debian's headless Chromium (docs/check_site.py), with a screenshot of each. The API reference
    is read from the source, so neither framework is installed."""
    install(session, "tools", extras=tuple(DOCS_TOOLS))
    site, screenshots = ROOT / ".nox" / "docs-site", ROOT / ".nox" / "docs-screenshots"
    session.run("mkdocs", "build", "--strict", "-f", str(ROOT / "docs" / "mkdocs.yml"), "-d", str(site),
                env={"NO_MKDOCS_2_WARNING": "1"})  # fmt: skip
    if not CHROMIUM.exists():
        session.log(f"browser check skipped: no {CHROMIUM} (Debian: apt-get install chromium); the site is in {site}")
        return
    session.run("python", str(ROOT / "docs" / "check_site.py"), str(site), "--screenshots", str(screenshots))
    session.log(f"site: {site}; screenshots of every page: {screenshots}")


@nox.session
def bench(session: nox.Session) -> None:
    """Throughput comparison; arguments after `--` go to `rosetta bench` (e.g. `-- --preset paper-base`)."""
    install(session, "torch", "flax", "tools[hf]")
    session.run("python", "-m", "rosetta_tools", "bench", *session.posargs)


@nox.session
def train(session: nox.Session) -> None:
    """The side-by-side training run; arguments after `--` go to `rosetta train`."""
    install(session, "torch", "flax", "tools[hf]")
    session.run("python", "-m", "rosetta_tools", "train", *session.posargs)
