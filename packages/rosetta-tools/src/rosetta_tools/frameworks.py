"""Which frameworks this installation has: the tools run with torch, with JAX, with both or with neither.

`rosetta inspect` and `rosetta convert` between safetensors layouts need rosetta-common only; the Orbax layout
needs rosetta-flax; `diff`, `train` and `bench` run what is installed and name the package to add for the rest.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

PACKAGES = {"torch": "rosetta_torch", "flax": "rosetta_flax"}
INSTALL = {"torch": "pip install ./packages/rosetta-torch", "flax": "pip install ./packages/rosetta-flax"}


class FrameworkMissing(Exception):
    """A command needs a framework package that is not installed."""


def installed(framework: str) -> bool:
    return importlib.util.find_spec(PACKAGES[framework]) is not None


def available() -> tuple[str, ...]:
    """The installed frameworks, in the order torch, flax."""
    return tuple(framework for framework in PACKAGES if installed(framework))


def require_any(needed_for: str) -> tuple[str, ...]:
    """The installed frameworks (torch first); FrameworkMissing naming both packages when there is none."""
    present = available()
    if not present:
        raise FrameworkMissing(
            f"{needed_for} runs rosetta-torch and/or rosetta-flax and neither is installed "
            f"({INSTALL['torch']}; {INSTALL['flax']})"
        )
    return present


def missing_message(framework: str, needed_for: str) -> str:
    return f"{needed_for} needs {_package(framework)}, which is not installed ({INSTALL[framework]})"


def _package(framework: str) -> str:
    return PACKAGES[framework].replace("_", "-")


def require(framework: str, needed_for: str, module: str = "") -> ModuleType:
    """Import `rosetta_{framework}` (or its submodule `module`), or raise FrameworkMissing naming the package."""
    if not installed(framework):
        raise FrameworkMissing(missing_message(framework, needed_for))
    return importlib.import_module(PACKAGES[framework] + (f".{module}" if module else ""))


def require_all(needed: tuple[str, ...], needed_for: str) -> tuple[ModuleType, ...]:
    """`require` for several frameworks; one FrameworkMissing names every package that is missing."""
    missing = [framework for framework in needed if not installed(framework)]
    if len(missing) == 1:
        raise FrameworkMissing(missing_message(missing[0], needed_for))
    if missing:
        packages = " and ".join(_package(framework) for framework in missing)
        commands = "; ".join(INSTALL[framework] for framework in missing)
        raise FrameworkMissing(f"{needed_for} needs {packages}, which are not installed ({commands})")
    return tuple(require(framework, needed_for) for framework in needed)
