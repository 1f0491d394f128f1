"""What the parent and a worker say to each other, as typed records; JSON lines on the pipe in between.

A worker's first line is a hello (`{"ok": true, "info": {...}}`); then it answers each command the parent sends:
`setup` (a SetupSpec) with a SetupReply, `time` (a number of calls) with the seconds of each, `quit`.
A failed command answers `{"ok": false, "error": ..., "traceback": ...}`, which the parent raises as CommandFailed.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from rosetta_common import EncoderConfig
from rosetta_common.training import AdamWConfig
from rosetta_tools.throughput.check import Errors, LossErrors, OutputErrors


class CommandFailed(Exception):
    """A worker could not do one command (the run goes on without that implementation for this setup)."""

    def __init__(self, error: str, traceback: str | None = None) -> None:
        super().__init__(error)
        self.error, self.traceback = error, traceback


@dataclass(frozen=True)
class SetupSpec:
    """Everything a worker needs to build and check one implementation for one case and mode."""

    mode: str  # "forward", "train" or "gemm"
    config: EncoderConfig
    weights: str  # canonical safetensors, float32
    inputs: str  # .npz: token_ids, padding_mask
    reference: str  # .npz: output, losses (float64)
    adamw: AdamWConfig
    warmup: int
    gemm_shape: tuple[int, int, int]
    torch_compile: str
    layout: str | None = None  # a lengths case: "packed" or "padded" (`lengths.read_layout`); inputs is then its .npz

    def to_message(self) -> dict[str, Any]:
        return {
            "cmd": "setup",
            "spec": {
                **dataclasses.asdict(self),
                "config": self.config.to_dict(),
                "adamw": self.adamw.to_json(),
                "gemm_shape": list(self.gemm_shape),
            },
        }

    @classmethod
    def from_message(cls, spec: dict[str, Any]) -> SetupSpec:
        return cls(
            **{
                **spec,
                "config": EncoderConfig.from_dict(spec["config"]),
                "adamw": AdamWConfig.from_json(spec["adamw"]),
                "gemm_shape": tuple(spec["gemm_shape"]),
            }
        )


@dataclass(frozen=True)
class Setup:
    """How one setup went: the first call (compilation included), the warm-up, and how it was built."""

    first_call_s: float
    warmup_s: float
    details: dict[str, Any]  # as its backend reports it (torch.compile settings, GEMM candidates): arbitrary JSON


@dataclass(frozen=True)
class SetupReply:
    """A worker's answer to `setup`; forward and train setups carry their errors against the reference."""

    setup: Setup
    errors: Errors | None = None
    losses: tuple[float, float] | None = None  # train: the loss before and after one optimizer step

    def to_message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"ok": True, **dataclasses.asdict(self.setup)}
        if self.errors is not None:
            message["errors"] = dataclasses.asdict(self.errors)
        if self.losses is not None:
            message["losses"] = list(self.losses)
        return message

    @classmethod
    def from_message(cls, message: dict[str, Any], mode: str) -> SetupReply:
        """The reply to a `mode` setup."""
        setup = Setup(message["first_call_s"], message["warmup_s"], message["details"])
        errors, losses = message.get("errors"), message.get("losses")
        if errors is None:
            return cls(setup)
        kind = OutputErrors if mode == "forward" else LossErrors
        return cls(setup, kind(**errors), tuple(losses) if losses is not None else None)


def failure_message(err: BaseException, traceback: str) -> dict[str, Any]:
    """The answer to a command that raised `err`."""
    return {"ok": False, "error": f"{type(err).__name__}: {err}", "traceback": traceback}


def encode(message: dict[str, Any]) -> str:
    """One protocol line."""
    return json.dumps(message) + "\n"


def decode(line: str) -> dict[str, Any]:
    return json.loads(line)
