"""`rosetta demo`: build an encoder in PyTorch, carry it to Flax through a canonical file, compare outputs."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from rosetta_tools.cli.errors import EXIT_CHECK_FAILED, EXIT_OK
from rosetta_tools.frameworks import require_all

HELP = "build an encoder in PyTorch, convert it, run it in Flax, print the max difference"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dtype",
        choices=["float64", "float32"],
        default="float64",
        help="precision of both models and of the comparison's bounds (default %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seeds torch's initialisation and the random tokens (default %(default)s)"
    )


def run(args: argparse.Namespace) -> int:
    rosetta_torch, rosetta_flax = require_all(("torch", "flax"), "rosetta demo")
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import torch

    from rosetta_common import EncoderConfig, encoder_forward, tolerances

    config = EncoderConfig(vocab_size=1000, d_model=64, n_heads=4, n_layers=2, d_ff=256, dropout=0.0)
    torch.manual_seed(args.seed)
    torch_model = rosetta_torch.Encoder(config, dtype=getattr(torch, args.dtype)).eval()
    rng = np.random.default_rng(args.seed)
    token_ids = rng.integers(2, config.vocab_size, size=(2, 10))
    token_ids[1, 6:] = config.padding_idx  # the second sequence ends in padding

    with tempfile.TemporaryDirectory() as tmp:
        path = rosetta_torch.save(torch_model, Path(tmp) / "encoder.safetensors")
        flax_model = rosetta_flax.load(path)
    flax_model.eval()

    with torch.no_grad():
        torch_out = torch_model(torch.from_numpy(token_ids)).numpy()
    flax_out = np.asarray(flax_model(jnp.asarray(token_ids)))
    oracle_out = encoder_forward(config, rosetta_torch.to_canonical(torch_model), token_ids)["output"]

    print(f"config: {config}")
    print(f"PyTorch -> canonical safetensors file -> Flax NNX, {args.dtype}, input {token_ids.shape} with padding")
    diffs = {
        "torch vs flax": float(np.abs(torch_out - flax_out).max()),
        "torch vs float64 oracle": float(np.abs(torch_out - oracle_out).max()),
        "flax vs float64 oracle": float(np.abs(flax_out - oracle_out).max()),
    }
    worst = 0.0
    for label, diff in diffs.items():
        bound = tolerances.output_bound(args.dtype, against_oracle="oracle" in label)
        worst = max(worst, diff / bound)
        print(f"  max |difference| {label:<24} {diff:.3e}   (bound {bound:.0e})")
    print("identical within the stated bounds" if worst <= 1 else "DIFFERENCE OVER BOUND")
    return EXIT_OK if worst <= 1 else EXIT_CHECK_FAILED
