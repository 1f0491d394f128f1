"""The `rosetta` command line: a thin dispatcher over one module per subcommand in this folder.

Each command module defines `HELP` (one line, the only copy), `add_arguments(parser)` and `run(args) -> int`
(an exit code from `rosetta_tools.cli.errors`). Command modules import the frameworks only inside `run`, so
`rosetta inspect` does not pay for importing JAX or torch (nor needs them). Errors a user can cause (bad files,
bad inputs, a framework that is not installed) print one `rosetta: error: ...` line and exit with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import NoReturn

from rosetta_tools.cli.errors import EXIT_BAD_INPUT, EXIT_OK, guarded
from rosetta_tools.cli.terminal import silence_stdout

COMMANDS = ("demo", "bench", "train", "convert", "inspect", "diff", "embed")


def command_module(name: str) -> ModuleType:
    return importlib.import_module(f"rosetta_tools.cli.{name}")


class OneLineParser(argparse.ArgumentParser):
    """argparse with usage errors as one `rosetta: error: ...` line (exit code 2) instead of a usage block."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("rosetta").strip()
        where = f"{command}: " if command else ""
        self.exit(EXIT_BAD_INPUT, f"rosetta: error: {where}{message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="rosetta", description="One Transformer encoder in PyTorch and JAX/Flax.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = command_module(name)
        sub = subparsers.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    except KeyboardInterrupt:  # Ctrl-C while the command modules import
        return guarded(_interrupted)
    try:
        return guarded(lambda: args.run(args))  # a user's mistake: one `rosetta: error:` line, exit code 2
    except BrokenPipeError:  # the reader of stdout went away (`| head`): output cut short, nothing failed
        silence_stdout()
        return EXIT_OK


def _interrupted() -> int:
    raise KeyboardInterrupt
