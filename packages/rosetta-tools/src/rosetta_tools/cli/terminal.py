"""The rich console the commands print through."""

from __future__ import annotations

from rich.console import Console


def wide_console(min_width: int) -> Console:
    """A console for stdout; when stdout is no terminal (logs, CI), at least `min_width` columns wide, so that
    tables are not squeezed into 80."""
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, min_width))
    return console
