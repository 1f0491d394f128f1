"""How the compiled torch rows (rosetta's and the peer's alike) call torch.compile; decided without importing torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CHOICES = ("auto", "default", "freeze", "freeze-dynamic", "max-autotune", "aot-eager")


@dataclass(frozen=True)
class CompileSettings:
    """One setup's torch.compile: the choice `auto` resolved to, inductor freezing, torch.compile's arguments."""

    choice: str
    freezing: bool
    kwargs: dict[str, Any] = field(default_factory=dict)


def compile_settings(choice: str, mode: str, device: str) -> CompileSettings:
    """The settings of `choice` (one of CHOICES) for a `mode` setup on `device`.

    "auto" is "freeze-dynamic" for a CPU forward, else "default". Freezing (weights as constants) applies to
    inference graphs only; with a dynamic batch dimension inductor packs frozen float32 weights for oneDNN,
    with static shapes for MKL, whose sgemm ran at half oneDNN's rate on the AMD CPU this was tuned on.
    "aot-eager" traces through dynamo and AOTAutograd (forward and backward graphs) but runs them eagerly instead of
    generating inductor kernels: the same harness path at a fraction of the compile time, for smoke tests only.
    """
    if choice == "auto":
        choice = "freeze-dynamic" if device == "cpu" and mode == "forward" else "default"
    kwargs: dict[str, Any] = {}
    if choice == "freeze-dynamic":
        kwargs["dynamic"] = True
    elif choice == "max-autotune":
        kwargs["mode"] = "max-autotune"
    elif choice == "aot-eager":
        kwargs["backend"] = "aot_eager"
    return CompileSettings(choice, choice.startswith("freeze") and mode == "forward", kwargs)
