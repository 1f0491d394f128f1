"""The parent's handle on one worker process: start it, send a command, read its JSON reply."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from rosetta_tools.throughput.impls import ALL
from rosetta_tools.throughput.settings import BenchConfig


class BenchError(RuntimeError):
    """The run cannot go on (no such device, a worker died); the message says why."""


def worker_env(impl: str, device: str, scratch: Path) -> dict[str, str]:
    """The worker's environment: JAX must not grab the whole GPU, nor look for one on a CPU run; torch
    compiles into an empty inductor cache of its own, so first-call times include a cold compilation."""
    env = dict(os.environ)
    if ALL[impl].framework == "jax":
        env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        if device == "cpu":
            env["JAX_PLATFORMS"] = "cpu"
    else:
        env["TORCHINDUCTOR_CACHE_DIR"] = str(scratch / f"inductor-{impl}")
    return env


class Worker:
    """A running `rosetta_tools.throughput.worker` process for one implementation; its stderr goes to a log file.

    Workers start (import their framework) side by side; call `wait_ready` before the first request.
    """

    def __init__(self, impl: str, config: BenchConfig, log_dir: Path) -> None:
        self.impl = impl
        self.log_path = log_dir / f"{impl}.log"
        self._log = self.log_path.open("w")
        args = [
            sys.executable,
            "-m",
            "rosetta_tools.throughput.worker",
            impl,
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
            env=worker_env(impl, config.device, log_dir),
        )
        self.info: dict[str, Any] = {}

    def wait_ready(self) -> None:
        """Read the hello (the worker has imported its framework and set up the device) or raise its error."""
        hello = self._receive()
        if not hello["ok"]:
            raise BenchError(f"{self.impl}: {hello['error']}")
        self.info = hello["info"]

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send one command, wait for its reply (`ok` False carries `error` and `traceback`)."""
        if self.process.stdin is None or self.process.poll() is not None:
            raise BenchError(f"{self.impl} worker is not running\n{self.log_tail()}")
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()
        return self._receive()

    def _receive(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait()
            raise BenchError(f"{self.impl} worker exited with code {code}\n{self.log_tail()}")
        return json.loads(line)

    def log_tail(self, lines: int = 20) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                if self.process.stdin is not None:
                    self.process.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                    self.process.stdin.close()
                self.process.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self._log.close()
