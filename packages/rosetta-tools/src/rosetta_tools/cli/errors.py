"""How `rosetta` commands report bad input: one `rosetta: error: ...` line on stderr, exit code 2, no traceback.

Exit codes: 0 success, 1 a check that failed (e.g. a difference over its bound), 2 usage or bad input (a training
run that diverges too), 130 interrupted (Ctrl-C: one `rosetta: interrupted ...` line saying what was kept).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from rosetta_common import InputError, WeightFormatError
from rosetta_common.precision import CastOverflowError
from rosetta_tools.frameworks import FrameworkMissing

EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class CommandError(Exception):
    """Bad input to a command that is neither a weight-format nor an encoder-input problem (e.g. an existing output)."""


class Interrupted(Exception):
    """Ctrl-C during a command; the message says what was kept."""


def report(message: str) -> int:
    """Print `rosetta: error: message` on stderr, on one line, and return the bad-input exit code. A message that
    lists problems one per line (`check_tensors`' "  - ..." lines) has them joined with "; "."""
    first, *listed = [line.strip() for line in message.strip().splitlines() if line.strip()] or [""]
    items = "; ".join(line.removeprefix("- ") for line in listed)
    print(f"rosetta: error: {first}" + (f" {items}" if items else ""), file=sys.stderr)
    return EXIT_BAD_INPUT


def guarded(body: Callable[[], int]) -> int:
    """Run a command body, turning the errors a user can cause into `report(...)` instead of a traceback."""
    try:
        return body()
    except BrokenPipeError:  # an OSError, but the reader went away (`| head`): not the user's mistake
        raise
    except (CommandError, WeightFormatError, InputError, FrameworkMissing, CastOverflowError, OSError) as err:
        return report(str(err))
    except (Interrupted, KeyboardInterrupt) as err:
        said = str(err) if isinstance(err, Interrupted) else "no output was left half-written"
        print(f"rosetta: interrupted: {said}", file=sys.stderr)
        return EXIT_INTERRUPTED
