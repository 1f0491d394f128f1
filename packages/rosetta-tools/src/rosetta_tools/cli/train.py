"""`rosetta train`: the same encoder trained side by side in PyTorch and JAX/Flax on a sequence-reversal task
(`--framework torch|flax`: one framework alone, on one device or, with `--parallel`, on a mesh: see
`rosetta_tools.cli.train_one`).

Both start from the same weights (torch's initialisation, converted through the canonical format) and see the
same batches; the per-step losses, their difference and the accuracy go to `log.jsonl`, the two loss curves
to `loss_curves.png`, the totals to `summary.json`. `--switch-at N` hands each run over to the other framework
after N steps (weights and Adam state through canonical safetensors files). Exit code 1 if the losses of the
first steps (or across the switch) differ by more than the dtype's bound.
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from rosetta_tools.cli.errors import EXIT_CHECK_FAILED, EXIT_OK, CommandError
from rosetta_tools.cli.options import in_option_names, int_at_least, positive_int
from rosetta_tools.cli.terminal import wide_console
from rosetta_tools.cli.train_folder import check_output_folder, interrupted
from rosetta_tools.frameworks import require_all

if TYPE_CHECKING:
    from rosetta_tools.sidebyside.loop import RunConfig, RunResult

HELP = "side-by-side training run in both frameworks"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    model = parser.add_argument_group("model")
    model.add_argument("--d-model", type=positive_int, default=64, help="default %(default)s")
    model.add_argument("--n-heads", type=positive_int, default=4, help="default %(default)s")
    model.add_argument("--n-layers", type=positive_int, default=2, help="default %(default)s")
    model.add_argument("--d-ff", type=positive_int, default=128, help="default %(default)s")
    model.add_argument("--pre-norm", action="store_true", help="norm_first=True (default: post-norm)")
    task = parser.add_argument_group("task (reverse sequences of random tokens)")
    task.add_argument(
        "--vocab-size", type=int_at_least(3), default=16, help="including the padding token 0 (default %(default)s)"
    )
    task.add_argument("--min-len", type=positive_int, default=4, help="default %(default)s")
    task.add_argument(
        "--max-len", type=positive_int, default=12, help="also the padded sequence length (default %(default)s)"
    )
    task.add_argument("--batch-size", type=positive_int, default=64, help="default %(default)s")
    task.add_argument(
        "--pack",
        action="store_true",
        help="pack each batch's sequences into rows of --max-len (first-fit decreasing, segment ids) instead of one "
        "padded row each (on a mesh, --parallel, as many rows as a multiple of its data axis)",
    )
    optim = parser.add_argument_group("optimizer (AdamW, linear warm-up, cosine decay, clipping)")
    optim.add_argument("--steps", type=positive_int, default=1200, help="default %(default)s")
    optim.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default %(default)s)")
    optim.add_argument("--warmup", type=int_at_least(0), default=100, help="warm-up steps (default %(default)s)")
    optim.add_argument("--weight-decay", type=float, default=0.01, help="default %(default)s")
    optim.add_argument(
        "--clip-norm", type=float, default=1.0, help="global gradient norm (0: no clipping) (default %(default)s)"
    )
    add_parallel_arguments(parser)
    run = parser.add_argument_group("run")
    run.add_argument(
        "--dtype",
        choices=("float32", "float64", "bfloat16-mixed", "bfloat16"),
        default="float32",
        help="float32, float64, or a bfloat16 policy (bfloat16-mixed: float32 master weights and AdamW moments; "
        "bfloat16: those in bfloat16 too; common/DESIGN.md) (default %(default)s)",
    )
    run.add_argument(
        "--seed", type=int, default=0, help="seeds the initial weights and the batches (default %(default)s)"
    )
    run.add_argument(
        "--eval-every",
        type=positive_int,
        default=100,
        help="accuracy on a held-out batch every N steps (default %(default)s)",
    )
    run.add_argument(
        "--switch-at", type=positive_int, metavar="N", help="after N steps continue each run in the other framework"
    )
    run.add_argument(
        "--check-steps",
        type=positive_int,
        default=20,
        help="steps over which the losses must agree (default %(default)s)",
    )
    run.add_argument("--threads", type=positive_int, default=1, help="torch intra-op threads (default 1: tiny ops)")
    run.add_argument("--out", type=Path, help="output folder (default results/train-<timestamp>/)")
    run.add_argument("--force", action="store_true", help="replace an earlier run's files in --out")
    run.add_argument("--no-progress", action="store_true", help="no progress bar (e.g. in CI logs)")


def add_parallel_arguments(parser: argparse.ArgumentParser) -> None:
    from rosetta_common.parallel import STRATEGIES

    group = parser.add_argument_group("one framework, on one device or many (common/DESIGN.md, 'Parallel training')")
    group.add_argument(
        "--framework",
        choices=("both", "torch", "flax"),
        default="both",
        help="both: the side-by-side run; torch or flax: that framework alone (default %(default)s)",
    )
    group.add_argument(
        "--parallel",
        choices=STRATEGIES,
        metavar="STRATEGY",
        help=f"shard the training over a mesh: {', '.join(STRATEGIES)} (torch: under torchrun, one process per "
        "device; flax: the process's devices)",
    )
    group.add_argument("--mesh", type=mesh_option, metavar="data=N,model=M", help="the mesh's axis sizes")
    group.add_argument(
        "--devices", type=positive_int, metavar="N", help="flax: simulate N devices on the CPU (set before JAX starts)"
    )
    group.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        help="flax on several processes or hosts: process 0's address (jax.distributed.initialize)",
    )
    group.add_argument("--num-processes", type=positive_int, metavar="N", help="flax: how many processes join")
    group.add_argument("--process-id", type=int_at_least(0), metavar="I", help="flax: this process's index")
    group.add_argument(
        "--resume",
        type=Path,
        metavar="PATH",
        help="continue from a checkpoint: either framework's checkpoint.safetensors (weights + AdamW state), or "
        "this framework's sharded/ folder (onto any strategy and mesh), or a --switch-at folder",
    )
    group.add_argument(
        "--stop-at",
        type=positive_int,
        metavar="N",
        help="stop after step N and write the checkpoints (the schedule still runs to --steps; --resume continues)",
    )


def mesh_option(text: str) -> Any:
    from rosetta_common.parallel import Mesh, PlanError

    try:
        return Mesh.parse(text)
    except PlanError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def run_config_from_args(args: argparse.Namespace) -> RunConfig:
    """The RunConfig the arguments describe; ValueError names a bad value."""
    from rosetta_common import EncoderConfig
    from rosetta_common.training import AdamWConfig
    from rosetta_tools.sidebyside.loop import RunConfig
    from rosetta_tools.sidebyside.task import ReversalTask

    task = ReversalTask(
        args.vocab_size,
        args.min_len,
        args.max_len,
        args.batch_size,
        args.seed,
        pack=args.pack,
        row_multiple=1 if args.mesh is None else args.mesh.data,  # a mesh's data axis splits the packed rows
    )
    encoder = EncoderConfig(
        vocab_size=args.vocab_size,
        d_model=args.d_model,
        n_heads=args.n_heads,
        n_layers=args.n_layers,
        d_ff=args.d_ff,
        max_len=args.max_len,
        padding_idx=task.pad,
        dropout=0.0,
        norm_first=args.pre_norm,
    )
    adamw = AdamWConfig(
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup,
        total_steps=args.steps if args.steps > args.warmup else None,
        end_factor=0.0,
        clip_norm=args.clip_norm or None,
    )
    return RunConfig(
        encoder=encoder,
        adamw=adamw,
        task=task,
        steps=args.steps,
        dtype=args.dtype,
        init_seed=args.seed,
        eval_every=args.eval_every,
        switch_at=args.switch_at,
        check_steps=args.check_steps,
    )


def check_option_pairs(args: argparse.Namespace) -> None:
    """The constraints between options (each option's own range is argparse's job)."""
    if args.min_len > args.max_len:
        raise CommandError(f"train: --min-len ({args.min_len}) must not exceed --max-len ({args.max_len})")
    if args.switch_at is not None and args.switch_at >= args.steps:
        raise CommandError(f"train: --switch-at ({args.switch_at}) must be below --steps ({args.steps})")


def lane_labels(summary: dict[str, Any]) -> dict[str, str]:
    """What each run is called in the output: its framework, or "torch->flax" for a run that switched."""
    from rosetta_tools.sidebyside.lanes import FRAMEWORKS
    from rosetta_tools.sidebyside.loop import LANES

    if not summary["switch"]:
        return dict(zip(LANES, FRAMEWORKS, strict=True))
    return {lane: f"{start}->{end}" for lane, start, end in zip(LANES, FRAMEWORKS, FRAMEWORKS[::-1], strict=True)}


def status_line(record: dict[str, Any]) -> str:
    loss = record["loss"]
    text = f"loss {record['framework']['a']} {loss['a']:.4f}  {record['framework']['b']} {loss['b']:.4f}"
    return text + f"  |diff| {record['abs_diff']:.1e}"


def summary_table(summary: dict[str, Any]) -> Table:
    table = Table(title="rosetta train: torch and flax side by side", show_header=False)
    config = summary["config"]
    table.add_row("steps, dtype", f"{config['steps']}, {config['dtype']}")
    table.add_row("wall time", f"{summary['wall_seconds']:.1f} s")
    for framework, ms in summary["train_step_ms_median"].items():
        first = summary["first_step_ms"].get(framework, 0.0)
        table.add_row(f"{framework} step", f"{ms:.2f} ms median (first step {first:.0f} ms)")
    label = lane_labels(summary)
    table.add_row(
        "final loss", ", ".join(f"{label[lane]}: {value:.5f}" for lane, value in summary["final_loss"].items())
    )
    if summary["final_accuracy"]:
        table.add_row(
            "final accuracy",
            ", ".join(
                f"{label[lane]}: {acc['token']:.1%} tokens, {acc['sequence']:.1%} sequences"
                for lane, acc in summary["final_accuracy"].items()
            ),
        )
    table.add_row(
        f"max rel. loss diff, first {config['check_steps']} steps",
        f"{summary['max_rel_diff_first_steps']:.2e} (bound {summary['loss_bound']:.0e})",
    )
    whole_run = f"{summary['max_rel_diff']:.2e}"
    if config["dtype"] != "float64":
        whole_run += (
            f" (not checked: {config['dtype']} runs drift apart by design, rounding differences grow over hundreds "
            "of Adam steps; float64 without clipping agrees over the whole run)"
        )
    table.add_row("max rel. loss diff, whole run", whole_run)
    if summary["switch"]:
        table.add_row(
            f"switch at step {summary['switch']['step']}",
            f"loss before/after in the other framework: max rel. diff {summary['switch']['max_rel_diff']:.2e}",
        )
    for check, passed in summary["checks"].items():
        table.add_row(check, "[green]yes[/green]" if passed else "[red]NO[/red]")
    return table


def train_with_progress(config: RunConfig, args: argparse.Namespace, console: Console) -> tuple[RunResult, Path]:
    """Run the training loop behind a rich progress bar; returns (RunResult, output folder). Interrupted (Ctrl-C)
    says what the folder kept; a diverging run is a CommandError."""
    from rosetta_tools.sidebyside.divergence import TrainingDiverged
    from rosetta_tools.sidebyside.loop import run as run_training

    out_dir = args.out or Path("results") / f"train-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    try:
        return _train_with_progress(config, args, console, out_dir, run_training), out_dir
    except KeyboardInterrupt:
        raise interrupted(out_dir, config.steps) from None
    except TrainingDiverged as err:
        raise CommandError(f"train: {err}") from None


def _train_with_progress(
    config: RunConfig, args: argparse.Namespace, console: Console, out_dir: Path, run_training: Any
) -> RunResult:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, console=console, disable=args.no_progress) as progress:
        bar = progress.add_task("training", total=config.steps, status="compiling")

        def on_step(record: dict[str, Any]) -> None:
            progress.update(bar, advance=1, status=status_line(record))
            if "accuracy" in record:
                accuracy = ", ".join(
                    f"{record['framework'][k]} {v['sequence']:.0%}" for k, v in record["accuracy"].items()
                )
                progress.console.print(
                    f"step {record['step'] + 1}: {status_line(record)}; sequences reversed: {accuracy}"
                )

        return run_training(config, out_dir, on_step)


def run(args: argparse.Namespace) -> int:
    if args.framework != "both":
        from rosetta_tools.cli.train_one import run_one_framework

        return run_one_framework(args)
    for option in ("parallel", "mesh", "devices", "resume", "stop_at", "coordinator", "num_processes", "process_id"):
        if getattr(args, option) is not None:
            flag = option.replace("_", "-")
            raise CommandError(f"train: --{flag} needs --framework torch or --framework flax")
    require_all(("torch", "flax"), "rosetta train (torch and flax side by side)")
    import torch

    from rosetta_tools.sidebyside.plot import plot_losses

    console = wide_console(120)
    check_option_pairs(args)
    check_output_folder(args.out, args.force)
    try:
        config = run_config_from_args(args)
    except ValueError as err:  # what is left: the model's own constraints, e.g. d_model divisible by n_heads
        raise CommandError(f"train: {in_option_names(str(err), 'EncoderConfig')}") from err
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        result, out_dir = train_with_progress(config, args, console)
    finally:
        torch.set_num_threads(threads)  # leave the process as found (the command also runs inside tests)
    summary = result.summary()
    shape = config.encoder
    title = (
        f"reversal, d_model={shape.d_model} layers={shape.n_layers} heads={shape.n_heads}, "
        f"{config.dtype}, batch {config.task.batch_size}"
    )
    summary["plot"] = str(plot_losses(result.records, out_dir / "loss_curves.png", title, config.switch_at))
    summary["log"] = str(out_dir / "log.jsonl")
    summary["torch_threads"] = args.threads
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    console.print(summary_table(summary))
    console.print(f"log: {summary['log']}; plot: {summary['plot']}; summary: {out_dir / 'summary.json'}")
    return EXIT_OK if all(summary["checks"].values()) else EXIT_CHECK_FAILED
