"""Peak memory of the timed calls, per implementation and case.

On a CPU: the worker process's resident-set high-water mark (`VmHWM` in /proc/self/status), reset before each block
of timed calls by writing 5 to /proc/self/clear_refs (Linux), so the figure is the steady-state calls' peak
(weights, activations, the framework's buffers and the runtime itself), not the compilation's. On a GPU the
backends report their device allocator's peak instead. None where the platform does not say.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak_rss() -> None:
    """Start a new high-water mark at the current resident set (no-op where /proc does not allow it)."""
    with contextlib.suppress(OSError):
        CLEAR_REFS.write_text("5")


def peak_rss_bytes() -> int | None:
    """The process's resident-set high-water mark since the last reset, in bytes; None off Linux."""
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # reported in kB
    except (OSError, ValueError, IndexError):
        return None
    return None
