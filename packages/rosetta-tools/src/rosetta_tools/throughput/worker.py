"""One implementation's process: `python -m rosetta_tools.throughput.worker IMPL DEVICE DTYPE TF32`.

It speaks JSON lines: a hello with its framework's info, then one reply per command from the parent:
`setup` (build, first call, check against the reference, warm-up), `time` (reps of the prepared call), `quit`.
Anything the libraries print goes to stderr: stdout carries only the protocol.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from rosetta_tools.throughput import check
from rosetta_tools.throughput.impls import ALL
from rosetta_tools.throughput.timing import time_calls


@dataclass
class Prepared:
    """What a framework backend builds for one setup: the call to time and how to read its result."""

    call: Callable[[], Any]
    sync: Callable[[Any], None]
    to_numpy: Callable[[Any], np.ndarray]  # forward: the output [B, S, D]; train: the loss (a scalar)
    details: dict[str, Any] = field(default_factory=dict)  # how it was built (compile options...), for the JSON


def _claim_stdout() -> TextIO:
    """A private copy of stdout for the protocol; file descriptor 1 then points at stderr."""
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return channel


def _send(channel: TextIO, message: dict[str, Any]) -> None:
    channel.write(json.dumps(message) + "\n")
    channel.flush()


def setup(backend: Any, spec: dict[str, Any]) -> tuple[Prepared, dict[str, Any]]:
    """Build, time the first call (compilation included), check against the reference, warm up."""
    prepared = backend.prepare(spec)
    start = time.perf_counter()
    first = prepared.call()
    prepared.sync(first)
    reply: dict[str, Any] = {"first_call_s": time.perf_counter() - start, "details": prepared.details}
    mode = spec["mode"]
    if mode == "forward":
        inputs, reference = np.load(spec["inputs"]), np.load(spec["reference"])
        reply["errors"] = check.output_errors(prepared.to_numpy(first), reference["output"], inputs["padding_mask"])
    elif mode == "train":
        second = prepared.call()  # the loss after one optimizer step
        prepared.sync(second)
        losses = [float(prepared.to_numpy(first)), float(prepared.to_numpy(second))]
        reply["losses"] = losses
        reply["errors"] = check.loss_errors(losses, list(np.load(spec["reference"])["losses"]))
    start = time.perf_counter()
    for _ in range(spec["warmup"]):
        prepared.sync(prepared.call())
    reply["warmup_s"] = time.perf_counter() - start
    return prepared, reply


def main(argv: list[str]) -> int:
    impl_name, device, dtype, tf32 = argv
    channel = _claim_stdout()
    impl = ALL[impl_name]
    try:
        module = importlib.import_module(f"rosetta_tools.throughput.workers_{impl.framework}")
        backend = module.Backend(impl_name, device, dtype, tf32 == "on")
        _send(channel, {"ok": True, "info": backend.info()})
    except Exception as err:  # reported to the parent, which stops with the message
        _send(channel, {"ok": False, "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()})
        return 1
    prepared: Prepared | None = None
    for line in sys.stdin:
        message = json.loads(line)
        try:
            if message["cmd"] == "quit":
                break
            if message["cmd"] == "setup":
                prepared = None
                backend.release()
                prepared, reply = setup(backend, message["spec"])
            elif message["cmd"] == "time":
                if prepared is None:
                    raise RuntimeError("time before a successful setup")
                reply = {"times": time_calls(prepared.call, prepared.sync, message["reps"])}
            else:
                raise ValueError(f"unknown command {message['cmd']!r}")
            _send(channel, {"ok": True, **reply})
        except Exception as err:  # one failed setup must not end the other cases
            prepared = None
            _send(channel, {"ok": False, "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
