"""The README and every page of the documentation site (docs/pages/**/*.md) run as written: every code block of
a document, in order, in one scratch folder of its own, as a newcomer would paste it.

Python blocks run with this interpreter, bash blocks with bash, and `$ command` lines of a block marked
`<!-- readme-test: session -->` run one by one with their printed output compared to the README's. A block
marked `<!-- readme-test: output of: CMD -->` is compared with what CMD prints, `<!-- readme-test: output of the
block above -->` with what the block before it printed. A block may be left out only with a reason,
`<!-- readme-test: not run: REASON -->` (installs, the test suite itself, benchmarks, a GPU). A folder the README
names as the reader's own (`my-st-model`) is built first, small and random (`build_folders`).

Compared output: numbers are masked (they differ by machine and seed), runs of spaces collapse, `...` stands
for lines left out, and the README's lines must appear in that order in what the command printed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs" / "pages").rglob("*.md"))]
BLOCK = re.compile(r"(?:<!-- readme-test: (?P<what>[^>]*?) -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)```", re.S)
NUMBER = re.compile(r"[-+]?\d[\d,]*(\.\d+)?(e[-+]?\d+)?")
HANG_GUARD_S = 900  # a hang guard only: the slowest block builds a 32000 x 512 vocabulary model in both frameworks


@dataclass(frozen=True)
class Block:
    what: str  # the marker's text ("" when unmarked)
    lang: str
    body: str
    line: int


def blocks(document: Path) -> list[Block]:
    text = document.read_text()
    return [
        Block(m["what"] or "", m["lang"], m["body"], text.count("\n", 0, m.start()) + 1) for m in BLOCK.finditer(text)
    ]


def normalised(line: str) -> str:
    return " ".join(NUMBER.sub("N", line).split())


def assert_printed(expected: str, printed: str, where: str) -> None:
    """The README's lines (numbers masked, `...` skipping) appear in this order among the printed ones."""
    got = [normalised(line) for line in printed.splitlines()]
    position = 0
    for line in expected.splitlines():
        if line.strip() in ("...", ""):
            continue
        want = normalised(line)
        while position < len(got) and got[position] != want:
            position += 1
        assert position < len(got), f"{where}: the document shows\n  {line}\nbut the command printed\n{printed}"
        position += 1


def environment() -> dict[str, str]:
    """This interpreter's bin folder first on PATH (for `python3` and `rosetta`), wide tables, no warnings."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "200",
            "PYTHONWARNINGS": "ignore", "JAX_PLATFORMS": "cpu"}  # fmt: skip


def run(command: list[str], cwd: Path) -> tuple[str, int]:
    """(stdout and stderr interleaved as a terminal shows them, the exit code)."""
    done = subprocess.run(
        command,
        cwd=cwd,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=HANG_GUARD_S,
        check=False,
    )
    return done.stdout, done.returncode


def name(document: Path) -> str:
    return str(document.relative_to(ROOT))


def runnable(document: Path) -> bool:
    return any(not block.what.startswith("not run") for block in blocks(document))


@pytest.mark.parametrize("document", DOCUMENTS, ids=name)
def test_every_block_is_run_or_says_why_not(document: Path) -> None:
    for block in blocks(document):
        where = f"{name(document)} line {block.line}"
        if block.what.startswith("not run"):
            assert re.fullmatch(r"not run: \S.*", block.what), f"{where}: say why it is not run"
        elif block.lang == "":
            assert block.what, f"{where}: an output block must say what printed it"


def build_folders(where: Path) -> None:
    """The folders the README's commands name as the reader's own, built offline: `my-st-model`, a small random
    sentence-transformers folder (BERT, mean pooling, Normalize, as all-MiniLM-L6-v2 is; `st_folders`)."""
    import st_folders

    hf = st_folders.hf_folder("bert", where / ".my-st-model-hf")
    st_folders.st_folder(hf, where / "my-st-model", "mean", normalize=True)
    shutil.rmtree(hf)


@pytest.mark.slow
@pytest.mark.parametrize("document", [d for d in DOCUMENTS if runnable(d)], ids=name)
def test_the_document_runs_as_written(document: Path, tmp_path: Path) -> None:
    if "my-st-model" in document.read_text():
        build_folders(tmp_path)
    previous_output = ""
    for block in blocks(document):
        where = f"{name(document)} line {block.line}"
        if block.what.startswith("not run"):
            continue  # left out, with its reason
        if block.lang == "python":
            script = tmp_path / f"block_{block.line}.py"
            script.write_text(block.body)
            previous_output, code = run([sys.executable, script.name], tmp_path)
            assert code == 0, f"{where} failed:\n{previous_output}"
        elif block.lang == "bash":
            previous_output, code = run(["bash", "-euo", "pipefail", "-c", block.body], tmp_path)
            assert code == 0, f"{where} failed:\n{previous_output}"
        elif block.what == "session":
            for command, expected in sessions(block.body):
                printed, _ = run(["bash", "-c", command], tmp_path)
                assert_printed(expected, printed, f"{where}, `$ {command}`")
        elif block.what.startswith("output of: "):
            command = block.what.removeprefix("output of: ")
            printed, code = run(["bash", "-c", command], tmp_path)
            assert code == 0, f"{where}: `{command}` failed:\n{printed}"
            assert_printed(block.body, printed, f"{where}, `{command}`")
        elif block.what == "output of the block above":
            assert_printed(block.body, previous_output, where)
        else:
            raise AssertionError(f"{where}: unknown block {block.lang!r} / {block.what!r}")


def sessions(body: str) -> list[tuple[str, str]]:
    """`$ command` lines, each with the output lines that follow it."""
    pairs: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            pairs.append((line[2:], []))
        else:
            pairs[-1][1].append(line)
    return [(command, "\n".join(output)) for command, output in pairs]
