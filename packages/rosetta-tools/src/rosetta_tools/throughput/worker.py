"""One implementation's process: `python -m rosetta_tools.throughput.worker IMPL DEVICE DTYPE TF32`.

It speaks the JSON lines of `protocol`: a hello with its framework's info, then one reply per command from the
parent: `setup` (build, first call, check against the reference, warm-up), `time` (reps of the prepared call),
`quit`. Anything the libraries print goes to stderr: stdout carries only the protocol.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

import numpy as np

from rosetta_tools.throughput import check
from rosetta_tools.throughput.impls import ALL, Impl
from rosetta_tools.throughput.protocol import Setup, SetupReply, SetupSpec, decode, encode, failure_message
from rosetta_tools.throughput.timing import time_calls


class DeviceUnavailable(RuntimeError):
    """The requested device does not exist on this machine."""


@dataclass
class Prepared:
    """What a framework backend builds for one setup: the call to time and how to read its result."""

    call: Callable[[], Any]
    sync: Callable[[Any], None]
    to_numpy: Callable[[Any], np.ndarray]  # forward: the output [B, S, D]; train: the loss (a scalar)
    details: dict[str, Any] = field(default_factory=dict)  # how it was built (compile options...), for the JSON
    # a lengths case's training step: two steps on its first batch (the loss before and after one AdamW step),
    # taken before the first call, from the reference's weights; None: the call is one step, called twice
    check_losses: Callable[[], tuple[float, float]] | None = None


class Backend(Protocol):
    """A framework's side of the harness (`workers_torch.Backend`, `workers_jax.Backend`)."""

    def __init__(self, impl: Impl, device: str, dtype: str, tf32: bool) -> None: ...
    def info(self) -> dict[str, Any]: ...
    def release(self) -> None: ...
    def prepare(self, spec: SetupSpec) -> Prepared: ...
    def reset_peak_memory(self) -> None: ...
    def peak_memory_bytes(self) -> int | None: ...


def _claim_stdout() -> TextIO:
    """A private copy of stdout for the protocol; file descriptor 1 then points at stderr."""
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return channel


def _send(channel: TextIO, message: dict[str, Any]) -> None:
    channel.write(encode(message))
    channel.flush()


def setup(backend: Backend, spec: SetupSpec) -> tuple[Prepared, SetupReply]:
    """Build, time the first call (compilation included), check against the reference, warm up."""
    prepared = backend.prepare(spec)
    losses: tuple[float, float] | None = None
    if spec.mode == "train" and prepared.check_losses is not None:
        losses = prepared.check_losses()
    start = time.perf_counter()
    first = prepared.call()
    prepared.sync(first)
    first_call_s = time.perf_counter() - start
    errors: check.Errors | None = None
    if spec.mode == "forward":
        inputs, reference = np.load(spec.inputs), np.load(spec.reference)
        errors = check.output_errors(prepared.to_numpy(first), reference["output"], inputs["padding_mask"])
    elif spec.mode == "train":
        if losses is None:
            second = prepared.call()  # the loss after one optimizer step
            prepared.sync(second)
            losses = (float(prepared.to_numpy(first)), float(prepared.to_numpy(second)))
        before, after = np.load(spec.reference)["losses" if spec.layout is None else f"losses_{spec.layout}"]
        errors = check.loss_errors(losses, (float(before), float(after)))
    start = time.perf_counter()
    for _ in range(spec.warmup):
        prepared.sync(prepared.call())
    timings = Setup(first_call_s, time.perf_counter() - start, prepared.details)
    return prepared, SetupReply(timings, errors, losses)


def main(argv: list[str]) -> int:
    impl_name, device, dtype, tf32 = argv
    channel = _claim_stdout()
    impl = ALL[impl_name]
    try:
        module = importlib.import_module(f"rosetta_tools.throughput.workers_{impl.framework}")
        backend: Backend = module.Backend(impl, device, dtype, tf32 == "on")
        _send(channel, {"ok": True, "info": backend.info()})
    except Exception as err:  # reported to the parent, which stops with the message
        _send(channel, failure_message(err, traceback.format_exc()))
        return 1
    prepared: Prepared | None = None
    for line in sys.stdin:
        message = decode(line)
        try:
            if message["cmd"] == "quit":
                break
            if message["cmd"] == "setup":
                prepared = None
                backend.release()
                prepared, reply = setup(backend, SetupSpec.from_message(message["spec"]))
                _send(channel, reply.to_message())
            elif message["cmd"] == "time":
                if prepared is None:
                    raise RuntimeError("time before a successful setup")
                backend.reset_peak_memory()
                times = time_calls(prepared.call, prepared.sync, message["reps"])
                _send(channel, {"ok": True, "times": times, "peak_bytes": backend.peak_memory_bytes()})
            else:
                raise ValueError(f"unknown command {message['cmd']!r}")
        except Exception as err:  # one failed setup must not end the other cases
            prepared = None
            _send(channel, failure_message(err, traceback.format_exc()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
