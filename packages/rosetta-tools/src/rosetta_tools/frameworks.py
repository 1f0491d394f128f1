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


def missing_message(framework: str, needed_for: str) -> str:
    package = PACKAGES[framework].replace("_", "-")
    return f"{needed_for} needs {package}, which is not installed ({INSTALL[framework]})"


def require(framework: str, needed_for: str, module: str = "") -> ModuleType:
    """Import `rosetta_{framework}` (or its submodule `module`), or raise FrameworkMissing naming the package."""
    if not installed(framework):
        raise FrameworkMissing(missing_message(framework, needed_for))
    return importlib.import_module(PACKAGES[framework] + (f".{module}" if module else ""))
