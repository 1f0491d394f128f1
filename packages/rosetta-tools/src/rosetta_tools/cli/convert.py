"""`rosetta convert SRC DST --to LAYOUT`: weights between rosetta, torch state_dict, Flax NNX / Orbax and Hugging Face
BERT / RoBERTa checkpoint layouts."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from rosetta_common.io import PICKLE_SUFFIXES
from rosetta_tools import layouts
from rosetta_tools.cli.errors import EXIT_OK, CommandError
from rosetta_tools.cli.options import add_config_option, given_config

HELP = "convert weights between rosetta, torch state_dict, Flax/Orbax and Hugging Face BERT/RoBERTa layouts"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source", type=Path, help="weight file, Orbax directory or HF checkpoint folder to read (layout detected)"
    )
    parser.add_argument(
        "destination",
        type=Path,
        help="file (safetensors layouts) or directory (orbax, hf-*, sentence-transformers) to write",
    )
    parser.add_argument(
        "--to",
        required=True,
        choices=tuple(layouts.LAYOUTS),
        help="layout to write: "
        + "; ".join(f"{name}: {layout.description}" for name, layout in layouts.LAYOUTS.items()),
    )
    add_config_option(parser)
    parser.add_argument(
        "--dtype",
        choices=["float64", "float32", "float16", "bfloat16"],
        help="cast the weights, rounding to nearest even; a note says whether the cast was exact or how much it "
        "rounded away (default: keep the stored dtype; bfloat16 -> float32 is exact)",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing destination")


def run(args: argparse.Namespace) -> int:
    destination: Path = args.destination
    if destination.suffix.lower() in PICKLE_SUFFIXES:
        raise CommandError(f"{destination}: rosetta never writes pickles; name the output *.safetensors")
    if destination.exists() and not args.force:
        raise CommandError(f"{destination} exists (pass --force to replace it)")
    given = given_config(args)
    checkpoint = layouts.load_checkpoint(args.source, given, args.dtype, on_note=_print_note)
    config, tensors, layout = checkpoint.config, checkpoint.tensors, checkpoint.layout
    written = layouts.save(
        destination,
        args.to,
        config,
        tensors,
        force=args.force,
        head=checkpoint.head,
        head_tensors=checkpoint.head_tensors,
        on_note=_print_note,
    )
    parameters = sum(int(np.prod(value.shape)) for value in tensors.values())
    dtype = next(iter(tensors.values())).dtype
    print(
        f"{args.source} ({layouts.LAYOUTS[layout].description}) -> {written} "
        f"({layouts.LAYOUTS[args.to].description}): "
        f"{len(tensors)} tensors, {parameters:,} parameters, {dtype}"
    )
    return EXIT_OK


def _print_note(note: str) -> None:
    print(f"note: {note}")
