"""The `rosetta` command line: `main.py` dispatches to one module per subcommand (`convert.py`, `inspect.py`,
`diff.py`, `demo.py`, `train.py`, `bench.py`); `errors.py` holds the exit codes and the one-line error report."""

from rosetta_tools.cli.main import main

__all__ = ["main"]
