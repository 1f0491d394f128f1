"""The documentation site's pages stay true to the repo: the nav of docs/mkdocs.yml and the pages on disk are
the same set; the house page (docs/pages/layout.md) names every package folder, and its import claims hold,
checked on the source with `ast`. (`nox -s docs` builds the site strictly and renders it in a browser; the pages'
commands run in tests/test_readme.py.)"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = DOCS / "pages"
LAYOUT = (PAGES / "layout.md").read_text()
SOURCES = {
    "rosetta_common": ROOT / "common" / "src" / "rosetta_common",
    "rosetta_torch": ROOT / "packages" / "rosetta-torch" / "src" / "rosetta_torch",
    "rosetta_flax": ROOT / "packages" / "rosetta-flax" / "src" / "rosetta_flax",
    "rosetta_tools": ROOT / "packages" / "rosetta-tools" / "src" / "rosetta_tools",
}
FRAMEWORKS = {"torch", "jax", "flax", "optax", "orbax", "rosetta_torch", "rosetta_flax"}


def nav_pages() -> set[str]:
    """Every `.md` the nav of docs/mkdocs.yml names (read as text: it is a plain list of `title: page.md`)."""
    nav = (DOCS / "mkdocs.yml").read_text().split("\nnav:\n", 1)[1]
    return set(re.findall(r"([\w/-]+\.md)\s*$", nav, re.M))


def test_every_page_is_in_the_nav_and_every_nav_entry_is_a_page() -> None:
    on_disk = {path.relative_to(PAGES).as_posix() for path in PAGES.rglob("*.md")}
    assert nav_pages() == on_disk


def package_folders() -> set[str]:
    """The top-level packages (common/, packages/*/) and every Python package folder under their src/ trees, as
    paths from the repo root with a trailing slash."""
    tops = [ROOT / "common", *sorted(p for p in (ROOT / "packages").iterdir() if p.is_dir())]
    folders = {f"{top.relative_to(ROOT).as_posix()}/" for top in tops}
    for top in tops:
        for init in (top / "src").rglob("__init__.py"):
            folders.add(f"{init.parent.relative_to(ROOT).as_posix()}/")
    return folders


def test_the_house_page_names_every_package_folder() -> None:
    named = set(re.findall(r"^\| `([\w./-]+/)` \|", LAYOUT, re.M))
    folders = package_folders()
    assert folders - named == set(), "package folders the house page does not name: add them to docs/pages/layout.md"
    gone = {name for name in named if not (ROOT / name).is_dir()}
    assert gone == set(), "the house page names folders that are not there"


def imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    """The root package names a module imports (at module level only, or anywhere in it)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def modules(package: str, folder: str = "") -> list[Path]:
    return sorted((SOURCES[package] / folder).rglob("*.py") if folder else SOURCES[package].rglob("*.py"))


@pytest.mark.parametrize(("package", "never"), [
    ("rosetta_torch", {"jax", "flax", "optax", "orbax", "rosetta_flax", "rosetta_tools"}),
    ("rosetta_flax", {"torch", "rosetta_torch", "rosetta_tools"}),
    ("rosetta_common", FRAMEWORKS | {"rosetta_tools"}),
])  # fmt: skip
def test_the_packages_import_what_the_house_page_says(package: str, never: set[str]) -> None:
    """The frameworks never import each other; rosetta_common imports neither (its one reach up to rosetta_tools
    is `importlib` at call time in checkpoints.py, which no import statement shows)."""
    for path in modules(package):
        assert imports(path) & never == set(), f"{path.relative_to(ROOT)} imports {imports(path) & never}"
    reach_up = (SOURCES["rosetta_common"] / "checkpoints.py").read_text()
    assert 'importlib.import_module("rosetta_tools.layouts")' in reach_up


def test_the_command_line_and_the_layouts_import_no_framework_at_module_level() -> None:
    """So `rosetta inspect` and `rosetta convert` run where neither torch nor JAX is installed."""
    paths = [
        *modules("rosetta_tools", "cli"),
        *modules("rosetta_tools", "layouts"),
        *SOURCES["rosetta_tools"].glob("*.py"),
    ]
    for path in paths:
        found = imports(path, top_level_only=True) & FRAMEWORKS
        assert found == set(), f"{path.relative_to(ROOT)} imports {found} at module level"


def test_the_readme_is_short_and_links_every_page() -> None:
    """A newcomer reads the README to the end (at most 200 lines) and reaches every page of the site in one click."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    linked = set(re.findall(r"\]\(docs/pages/([\w/-]+\.md)", readme))
    if "](common/DESIGN.md)" in readme:  # design.md renders the contract; on GitHub the contract is read in place
        linked.add("design.md")
    assert nav_pages() - linked == set(), "pages the README does not link"
