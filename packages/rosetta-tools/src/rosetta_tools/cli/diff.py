"""`rosetta diff A [B]`: run the installed frameworks and the float64 oracle on one input; max difference per
component.

With one file, torch and flax both run A. With two, torch runs A, flax runs B and the oracle runs A, so a
difference introduced by a conversion shows at the first component it reaches. With one framework installed it
runs B (or A) against the oracle running A, and the output names the package that would add the other.

`--dtype bfloat16-mixed` or `--dtype bfloat16` runs the frameworks under that precision policy on the weights
rounded to bfloat16 (the oracle runs the same values in float64) and compares relative L2 per component against
`rosetta_common.tolerances.bfloat16_bound`, torch vs flax against `BFLOAT16_CASCADE_FRACTION` of the smaller
distance (rounding flips of the two GEMM libraries cascade through a run: see there).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from rosetta_common import EncoderConfig, encoder_forward, tolerances
from rosetta_common.precision import POLICIES, Precision, cast_tensors
from rosetta_common.vectors import random_inputs
from rosetta_tools import frameworks, layouts
from rosetta_tools.cli import terminal
from rosetta_tools.cli.errors import EXIT_CHECK_FAILED, EXIT_OK
from rosetta_tools.cli.options import add_config_option, given_config, positive_int

HELP = "run both frameworks on the same weights and print the max difference per component"
Activations = dict[str, np.ndarray]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", metavar="A", type=Path, help="weight file or Orbax directory (any layout)")
    parser.add_argument("b", metavar="B", type=Path, nargs="?", help="second weights, run by flax (default: A)")
    add_config_option(parser)
    parser.add_argument("--batch", type=positive_int, default=2, help="sequences in the random input (default 2)")
    parser.add_argument("--seq", type=positive_int, help="sequence length (default: 16, or max_len if smaller)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random token ids and padding")
    parser.add_argument(
        "--dtype",
        choices=["float64", "float32", *POLICIES],
        default="float64",
        help="precision of both runs: a dtype, or a bfloat16 policy (bfloat16-mixed: float32 weights, bfloat16 "
        "compute; bfloat16: bfloat16 weights too), run on the weights rounded to bfloat16 (default float64)",
    )


def make_inputs(config: EncoderConfig, batch: int, seq: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random token ids int64 `[batch, seq]` and padding mask: the first row full, the others random padding."""
    rng = np.random.default_rng(seed)
    pads = tuple(0 if row == 0 else int(rng.integers(0, seq + 1)) for row in range(batch))
    return random_inputs(config, seq, pads, seed)


def framework_activations(
    framework: str,
    config: EncoderConfig,
    tensors: Mapping[str, np.ndarray],
    ids: np.ndarray,
    mask: np.ndarray,
    precision: Precision | None = None,
) -> Activations:
    """One framework's activations through its NumPy runner (Flax compiled, inputs checked before)."""
    if framework == "flax":
        import jax

        jax.config.update("jax_enable_x64", True)
        from rosetta_flax import Runner

        return Runner(config, tensors, precision=precision, jit=True).activations(ids, mask)
    from rosetta_torch import Runner

    return Runner(config, tensors, precision=precision).activations(ids, mask)


def max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def weight_changes(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Max |a - b| of each canonical tensor that differs between two weight sets."""
    changes = {name: max_abs(a[name], b[name]) for name in a}
    return {name: value for name, value in changes.items() if value > 0}


def run(args: argparse.Namespace) -> int:
    present = frameworks.require_any("rosetta diff")
    console = terminal.console()
    given = given_config(args)
    config, tensors_a, _ = layouts.load(args.a, given)
    tensors_b = tensors_a
    if args.b is not None:
        config_b, tensors_b, _ = layouts.load(args.b, given)
        if config_b != config:
            fields = [name for name, value in config.to_dict().items() if config_b.to_dict()[name] != value]
            console.print(f"A and B have different configs: they differ on {fields}")
            return EXIT_CHECK_FAILED
        changes = weight_changes(tensors_a, tensors_b)
        if changes:
            worst = max(changes, key=changes.get)
            console.print(
                f"weights: {len(changes)} of {len(tensors_a)} tensors differ between A and B "
                f"(largest |difference| {changes[worst]:.1e}, in {worst})"
            )
        else:
            console.print(f"weights: A and B hold the same {len(tensors_a)} tensors")

    seq = args.seq or min(16, config.max_len)
    ids, mask = make_inputs(config, args.batch, seq, args.seed)
    precision = POLICIES.get(args.dtype)
    dtype = "bfloat16" if precision is not None else args.dtype
    cast_a, report = cast_tensors(tensors_a, dtype)
    cast_b, _ = cast_tensors(tensors_b, dtype)
    if precision is not None:
        console.print(f"weights: {report.describe()}")
    # torch runs A, flax runs B; a framework alone runs B, so that a conversion's difference meets the oracle
    runs = {"torch": cast_a if len(present) == 2 else cast_b, "flax": cast_b}
    acts = {
        framework: framework_activations(framework, config, runs[framework], ids, mask, precision)
        for framework in present
    }
    exact = {name: value.astype(np.float64) for name, value in cast_a.items()}
    acts["oracle"] = encoder_forward(config, exact, ids, mask)  # float64, from the same (cast) weights
    pairs = [(x, y) for x, y in (("torch", "flax"), ("torch", "oracle"), ("flax", "oracle")) if x in acts and y in acts]
    columns = [f"{x} vs {y}" for x, y in pairs]
    if len(present) == 2:
        who = "torch and flax run A" if args.b is None else "torch runs A, flax runs B, the oracle runs A"
    else:
        who = f"{present[0]} runs {'A' if args.b is None else 'B'}, the oracle runs A"
    how = args.dtype if precision is None else f"{args.dtype} policy on the weights rounded to bfloat16"
    console.print(
        f"{how}, {who}; input batch {args.batch} x seq {seq} (seed {args.seed}), "
        f"{int(mask.sum())} of {mask.size} positions are padding"
    )
    for framework in set(frameworks.PACKAGES) - set(present):
        console.print(f"{framework}: not run ({frameworks.missing_message(framework, 'its column')})")
    if precision is None:
        bounds = [tolerances.output_bound(args.dtype, against_oracle=y == "oracle") for _, y in pairs]
        bound_text = ", ".join(f"{column} {bound:.0e}" for column, bound in zip(columns, bounds, strict=True))
        console.print(f"max |difference| per component; bounds: {bound_text}")

        def measure(name: str) -> tuple[list[float], list[float]]:
            return [max_abs(acts[x][name], acts[y][name]) for x, y in pairs], bounds

    else:
        console.print(
            "relative L2 per component; bounds: vs oracle 1e-6 in the float32 front, 1e-2 x sqrt(layers passed) "
            "after it; torch vs flax 1e-6 in the front, 1.5 x the smaller distance to the oracle after it (the "
            "GEMMs' rounding flips cascade: rosetta_common.tolerances.BFLOAT16_CASCADE_FRACTION)"
        )

        def measure(name: str) -> tuple[list[float], list[float]]:
            return _policy_row(config, acts, pairs, name)

    return _verdict_table(console, acts["oracle"], columns, measure)


def _policy_row(
    config: EncoderConfig, acts: dict[str, Activations], pairs: list[tuple[str, str]], name: str
) -> tuple[list[float], list[float]]:
    """One component under a bfloat16 policy: the relative L2 of each pair and its bound,
    `tolerances.bfloat16_bound` against the oracle, `BFLOAT16_CASCADE_FRACTION` of the smaller oracle distance
    between the frameworks (`BFLOAT16_ISLAND` in the float32 front)."""
    exact = acts["oracle"][name]
    values, bounds = [], []
    for x, y in pairs:
        values.append(tolerances.relative_l2(acts[x][name], acts[y][name], exact))
        if y == "oracle":
            bounds.append(tolerances.bfloat16_bound(name, config.n_layers))
        elif name in tolerances.FLOAT32_ISLAND_COMPONENTS:
            bounds.append(tolerances.BFLOAT16_ISLAND)
        else:
            to_oracle = [tolerances.relative_l2(acts[z][name], exact, exact) for z in (x, y)]
            bounds.append(tolerances.BFLOAT16_CASCADE_FRACTION * min(to_oracle))
    return values, bounds


def _verdict_table(
    console: Console,
    components: Activations,
    columns: list[str],
    measure: Callable[[str], tuple[list[float], list[float]]],
) -> int:
    """A row per component (`measure(name)`: each column's value and bound), over-bound cells marked `!`; the exit
    code says whether every value is within its bound (NaN never is)."""
    table = Table("component", *columns, show_edge=False)
    first_over = None
    for name in components:
        row, bounds = measure(name)
        over = [not value <= bound for value, bound in zip(row, bounds, strict=True)]
        if any(over) and first_over is None:
            first_over = (name, [column for column, is_over in zip(columns, over, strict=True) if is_over])
        table.add_row(
            name, *(f"{value:.1e}" + (" !" if is_over else "") for value, is_over in zip(row, over, strict=True))
        )
    console.print(table)
    if first_over is None:
        console.print("every component within its bound")
        return EXIT_OK
    name, failing = first_over
    console.print(f"DIFFERENCE OVER BOUND, first at {name} ({', '.join(failing)})")
    return EXIT_CHECK_FAILED
