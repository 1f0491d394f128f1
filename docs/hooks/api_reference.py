"""MkDocs hook: the API reference pages list every public module of their package, found on disk, so a module
added to a package appears without editing a page. `<!-- api-modules: rosetta_torch -->` becomes one
mkdocstrings block (`::: rosetta_torch.attention`) per module, in path order, the package's `__init__` first."""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import Files
from mkdocs.structure.pages import Page

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [ROOT / "common" / "src", *sorted((ROOT / "packages").glob("*/src"))]
MARKER = re.compile(r"<!-- api-modules: (\w+) -->")


def modules(package: str) -> list[str]:
    folder = next(src / package for src in SOURCES if (src / package / "__init__.py").is_file())
    names = []
    for path in sorted(folder.rglob("*.py")):
        parts = path.relative_to(folder.parent).with_suffix("").parts
        if any(part.startswith("_") and part != "__init__" for part in parts):
            continue  # private modules and __main__
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return sorted(names, key=lambda name: (name != package, name))


def blocks(package: str) -> str:
    """The package's own docstring (its re-exports are documented where they are defined), then each module."""
    own = f"::: {package}\n    options:\n      members: false"
    return "\n\n".join([own, *(f"::: {name}" for name in modules(package) if name != package)])


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    return MARKER.sub(lambda m: blocks(m[1]), markdown)
