"""Options several commands share, written once: `--config` and positive sizes."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path

from rosetta_common import EncoderConfig, read_config_file

CONFIG_HELP = (
    "config JSON, for weights that do not store their config: an object with EncoderConfig's fields, e.g. "
    '{"vocab_size": 1000, "d_model": 64, "n_heads": 4, "n_layers": 2, "d_ff": 256}; the fields left out take '
    "their defaults (max_len 512, padding_idx 1, activation relu, norm_first false, layer_norm_eps 1e-5, ...), "
    "as `EncoderConfig(...).to_json()` writes it"
)


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="CONFIG.json", help=CONFIG_HELP)


def given_config(args: argparse.Namespace) -> EncoderConfig | None:
    """The config `--config` names, or None."""
    return read_config_file(args.config) if args.config else None


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= `minimum` (the message names the bound and the value)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


positive_int = int_at_least(1)


def in_option_names(message: str, owner: str) -> str:
    """A library's ValueError in the command line's words: `EncoderConfig.d_model` -> `--d-model`."""
    return re.sub(rf"{owner}\.(\w+)", lambda field: "--" + field[1].replace("_", "-"), message)
