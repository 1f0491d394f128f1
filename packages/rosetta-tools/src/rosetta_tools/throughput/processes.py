"""The parent's handle on one worker process: start it, send a command, read its typed reply."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from rosetta_tools.throughput.impls import Impl
from rosetta_tools.throughput.protocol import CommandFailed, SetupReply, SetupSpec, decode, encode
from rosetta_tools.throughput.settings import BenchConfig


class BenchError(RuntimeError):
    """The run cannot go on (no such device, a worker died); the message says why."""


def framework_env(framework: str, device: str, inductor_dir: Path) -> dict[str, str]:
    """The environment of a process running `framework` ("torch" or "jax"): JAX must not grab the whole GPU, nor
    look for one on a CPU run; torch compiles into an empty inductor cache of its own (`inductor_dir`), so
    first-call times include a cold compilation."""
    env = dict(os.environ)
    if framework == "jax":
        env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        if device == "cpu":
            env["JAX_PLATFORMS"] = "cpu"
    else:
        env["TORCHINDUCTOR_CACHE_DIR"] = str(inductor_dir)
    return env


class Worker:
    """A running `rosetta_tools.throughput.worker` process for one implementation; its stderr goes to a log file.

    Workers start (import their framework) side by side; call `wait_ready` before the first request.
    """

    def __init__(self, impl: Impl, config: BenchConfig, log_dir: Path) -> None:
        self.impl = impl
        self.log_path = log_dir / f"{impl.name}.log"
        self._log = self.log_path.open("w")
        args = [
            sys.executable,
            "-m",
            "rosetta_tools.throughput.worker",
            impl.name,
            config.device,
            config.dtype,
            "on" if config.tf32 else "off",
        ]
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=framework_env(impl.framework, config.device, log_dir / f"inductor-{impl.name}"),
        )
        self.info: dict[str, Any] = {}  # the worker's hello: its framework's versions, threads, device (JSON)

    def wait_ready(self) -> None:
        """Read the hello (the worker has imported its framework and set up the device) or raise its error."""
        hello = self._receive()
        if not hello["ok"]:
            raise BenchError(f"{self.impl.name}: {hello['error']}")
        self.info = hello["info"]

    def setup(self, spec: SetupSpec) -> SetupReply:
        """Build and check the implementation for `spec`; raises CommandFailed with the worker's error."""
        return SetupReply.from_message(self._request(spec.to_message()), spec.mode)

    def time(self, reps: int) -> tuple[list[float], int | None]:
        """Seconds of each of `reps` calls of the last setup, and the peak memory during them (bytes, None where
        unknown: `memory`); raises CommandFailed with the worker's error."""
        reply = self._request({"cmd": "time", "reps": reps})
        return reply["times"], reply.get("peak_bytes")

    def _request(self, message: dict[str, Any]) -> dict[str, Any]:
        if self.process.stdin is None or self.process.poll() is not None:
            raise BenchError(f"{self.impl.name} worker is not running\n{self.log_tail()}")
        self.process.stdin.write(encode(message))
        self.process.stdin.flush()
        reply = self._receive()
        if not reply["ok"]:
            raise CommandFailed(reply["error"], reply.get("traceback"))
        return reply

    def _receive(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait()
            raise BenchError(f"{self.impl.name} worker exited with code {code}\n{self.log_tail()}")
        return decode(line)

    def log_tail(self, lines: int = 20) -> str:
        """The last `lines` lines the worker wrote to stderr."""
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def close(self) -> None:
        """Ask the worker to quit (kill it if it does not within 30 s) and close its log."""
        if self.process.poll() is None:
            try:
                if self.process.stdin is not None:
                    self.process.stdin.write(encode({"cmd": "quit"}))
                    self.process.stdin.close()
                self.process.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self._log.close()
