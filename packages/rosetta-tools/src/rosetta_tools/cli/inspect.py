"""`rosetta inspect FILE`: a weight file's layout, config, tensors (shape, dtype, size) and parameter count."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from rich.table import Table

from rosetta_common.io import VERSION_KEY
from rosetta_tools import layouts
from rosetta_tools.cli import terminal
from rosetta_tools.cli.errors import EXIT_OK
from rosetta_tools.cli.options import add_config_option, given_config

HELP = "print a weight file's config, tensors and parameter count"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="weight file or Orbax directory (any layout `rosetta convert` reads)")
    add_config_option(parser)


def tensor_order(name: str) -> tuple[bool, list]:
    """Embedding, layers in numeric order (`layers.10` after `layers.9`), the final norm last."""
    return name.startswith("final_norm"), [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def run(args: argparse.Namespace) -> int:
    given = given_config(args)
    weights = layouts.read(args.file, given)
    console = terminal.console()
    version = weights.metadata.get(VERSION_KEY)
    console.print(f"{weights.path}: {weights.description}" + (f", format version {version}" if version else ""))
    if weights.layout.table is not None:
        console.print(
            f"tensor names: the {weights.layout.name} layout's own (`rosetta convert {weights.path} OUT.safetensors "
            "--to rosetta` gives the canonical names)"
        )

    if weights.config is None:
        console.print("config: not stored in the file (pass --config config.json to check the tensors against one)")
    else:
        console.print(f"config: {weights.config}")

    table = Table("tensor", "shape", "dtype", "parameters", show_edge=False)
    table.columns[3].justify = "right"
    for name in sorted(weights.tensors, key=tensor_order):
        value = weights.tensors[name]
        table.add_row(name, str(tuple(value.shape)), str(value.dtype), f"{value.size:,}")
    console.print(table)
    parameters = sum(value.size for value in weights.tensors.values())
    size = sum(value.nbytes for value in weights.tensors.values())
    dtypes = ", ".join(sorted({str(value.dtype) for value in weights.tensors.values()}))
    console.print(f"total: {len(weights.tensors)} tensors, {parameters:,} parameters ({dtypes}, {_bytes(size)})")

    if weights.config is not None:
        weights.layout.to_canonical(weights)  # raises, listing every problem, when the tensors do not match the config
        console.print("check: every tensor matches the config")
    return EXIT_OK


def _bytes(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    size, unit = count / 1024, "KiB"
    for bigger in ("MiB", "GiB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{size:.1f} {unit}"
