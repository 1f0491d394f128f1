"""MkDocs hook: the measured results (packages/rosetta-tools/reports/**, plots and JSON) join the site as
`reports/<path below reports/>`, so a page links `reports/bench/throughput.png` and `mkdocs build --strict` checks
the link. Nothing is copied into the repo."""

from __future__ import annotations

from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

REPORTS = Path(__file__).resolve().parents[2] / "packages" / "rosetta-tools" / "reports"
KINDS = {".png", ".json"}


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for path in sorted(REPORTS.rglob("*")):
        if path.suffix in KINDS and path.is_file():
            uri = "reports/" + path.relative_to(REPORTS).as_posix()
            files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files
