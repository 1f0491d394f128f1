"""The rich console the commands print through."""

from __future__ import annotations

import os
import sys

from rich.console import Console


class PipeTolerantConsole(Console):
    """A console whose reader may go away (`rosetta diff ... | head -1`): further output is dropped and the
    command still ends with its own exit code (rich's default is exit code 1, which reads as a failed check)."""

    def on_broken_pipe(self) -> None:
        silence_stdout()


def silence_stdout() -> None:
    """Point stdout at /dev/null (its reader closed the pipe); Python's recipe for SIGPIPE-free exits."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def console() -> Console:
    """A console for stdout, without rich's highlighting (numbers and paths print as they are)."""
    return PipeTolerantConsole(highlight=False, soft_wrap=True)


def wide_console(min_width: int) -> Console:
    """A console for stdout; when stdout is no terminal (logs, CI), at least `min_width` columns wide, so that
    tables are not squeezed into 80."""
    terminal = PipeTolerantConsole()
    if not terminal.is_terminal:
        terminal = PipeTolerantConsole(width=max(terminal.width, min_width))
    return terminal
