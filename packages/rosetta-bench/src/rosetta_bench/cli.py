"""The `rosetta` command line: a thin dispatcher over `rosetta_bench.commands.<name>` modules.

Each command module defines `HELP` (one line), `add_arguments(parser)` and `run(args) -> int` (the exit code).
Modules are imported only when their command runs, so `rosetta inspect` does not pay for importing JAX.
Errors a user can cause (bad files, bad inputs) print one `rosetta: error: ...` line and exit with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from rosetta_bench.errors import guarded

COMMANDS = {
    "demo": "build an encoder in PyTorch, convert it, run it in Flax, print the max difference",
    "bench": "throughput comparison of the encoders and their peers",
    "train": "side-by-side training run in both frameworks",
    "convert": "convert weights between rosetta, torch state_dict and Flax/Orbax formats",
    "inspect": "print a weight file's config, tensors and parameter count",
    "diff": "run both frameworks on the same weights and print the max difference per component",
}


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rosetta", description="One Transformer encoder in PyTorch and JAX/Flax.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((arg for arg in argv if arg in COMMANDS), None)
    for name, help_text in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            importlib.import_module(f"rosetta_bench.commands.{name}").add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    command = importlib.import_module(f"rosetta_bench.commands.{args.command}")
    return guarded(lambda: command.run(args))  # a user's mistake: one `rosetta: error:` line, exit code 2
