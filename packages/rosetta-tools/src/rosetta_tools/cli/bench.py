"""`rosetta bench`: throughput of rosetta_torch, rosetta_flax and their peers, against the matmul ceiling.

Runs the rows of whichever frameworks are installed (each missing one says what to install); with neither,
one `rosetta: error:` line and exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from rosetta_tools.cli.errors import EXIT_CHECK_FAILED, EXIT_OK, CommandError
from rosetta_tools.cli.options import in_option_names, positive_int
from rosetta_tools.cli.terminal import wide_console
from rosetta_tools.throughput.estimate import describe, estimate_seconds
from rosetta_tools.throughput.impls import IMPLS
from rosetta_tools.throughput.lengths import read_lengths
from rosetta_tools.throughput.presets import PRESETS
from rosetta_tools.throughput.settings import DEVICES, DTYPES, TORCH_COMPILE, BenchConfig

HELP = "throughput comparison of the encoders and their peers"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `rosetta bench`."""
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="paper-base",
        help="model size: tiny (a quick look), paper-base (512/8/6/2048, the performance page's tables), bert-base "
        "(768/12/12/3072), modernbert-base (768/12/22/1152 GeGLU, rotary, 128-token windows; peer: transformers' "
        "ModernBertModel), modernbert-base-global (the same, every layer global) (default %(default)s); the run "
        "prints its estimated duration before it starts",
    )
    parser.add_argument("--batch", type=positive_int, help="batch size (default: the preset's)")
    parser.add_argument("--seq", type=positive_int, help="sequence length (default: the preset's)")
    parser.add_argument("--sweep-seq", type=int, nargs="+", metavar="S", help="sequence lengths to sweep at --batch")
    parser.add_argument("--sweep-batch", type=int, nargs="+", metavar="B", help="batch sizes to sweep at --seq")
    parser.add_argument(
        "--max-len",
        type=positive_int,
        help="lengthen the preset's sinusoidal position table to N positions, for sequences past its max_len "
        "(paper-base, bert-base: 512); the weights and the timed work do not change (default: the preset's)",
    )
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        default="float32",
        help="float32, or bfloat16 compute (torch autocast; JAX casts the parameters in the step)",
    )
    parser.add_argument(
        "--device", choices=DEVICES, default="cpu", help="where every row runs: cpu, or cuda (a GPU) (default cpu)"
    )
    parser.add_argument("--tf32", choices=("on", "off"), default="off", help="TF32 matmuls for float32 on a GPU")
    parser.add_argument(
        "--torch-compile",
        choices=TORCH_COMPILE,
        default="auto",
        help="how both compiled torch rows are compiled: auto = freezing + dynamic batch for a CPU forward "
        "(oneDNN GEMMs), plain torch.compile otherwise; aot-eager = no inductor kernels (smoke tests, not speed)",
    )
    parser.add_argument(
        "--impl",
        nargs="+",
        choices=sorted(IMPLS),
        metavar="IMPL",
        help=f"implementations to time (default: all that apply): {', '.join(IMPLS)}",
    )
    parser.add_argument(
        "--mode",
        choices=("forward", "train", "both"),
        default="both",
        help="time the forward pass, the training step (forward + backward + AdamW), or both (default both)",
    )
    parser.add_argument(
        "--padding",
        type=float,
        nargs="+",
        default=[0.0],
        metavar="FRACTION",
        help="fractions of padded positions, each run as its own case, e.g. 0 0.25 (default 0)",
    )
    parser.add_argument(
        "--lengths",
        type=Path,
        metavar="FILE",
        help="real tokens/s on a length distribution (a lengths JSON such as the shipped "
        "reports/lengths/stdlib-docstrings.json): the file's sequences packed into --batch rows of --seq (default "
        "min(max_len, 512)) for the .packed rows, and padded, --padded-batch at a time, to each batch's longest "
        "(rounded up to 8) for every other row; plus the dense --batch x --seq case the packed rows are compared with",
    )
    parser.add_argument(
        "--padded-batch",
        type=positive_int,
        default=32,
        help="with --lengths: sequences per padded batch (default %(default)s)",
    )
    parser.add_argument(
        "--lengths-batches",
        type=positive_int,
        default=1,
        help="with --lengths: packed batches of --batch x --seq the timed sequences fill (default %(default)s)",
    )
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per implementation and case (default 20)")
    parser.add_argument(
        "--rounds", type=int, default=4, help="interleaved rounds the repeats are split into (default 4)"
    )
    parser.add_argument(
        "--warmup", type=int, default=2, help="untimed calls after the first, compiling one (default 2)"
    )
    parser.add_argument(
        "--lr", type=float, default=1e-4, help="AdamW learning rate of the training step (default 1e-4)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the weights and the inputs (default 0)")
    parser.add_argument("--out", type=Path, help="output folder (default results/bench-<timestamp>/)")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """The run the options describe (ValueError for options that do not make one)."""
    preset = PRESETS[args.preset]
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    # The presets' sinusoidal positions are a table computed from max_len, not weights: --max-len lengthens it.
    model = preset.config if args.max_len is None else dataclasses.replace(preset.config, max_len=args.max_len)
    seq = args.seq or (min(model.max_len, 512) if args.lengths is not None else preset.seq)
    if args.lengths is not None:
        read_lengths(args.lengths)  # a bad file is an error before anything starts
    return BenchConfig(
        preset=args.preset,
        model=model,
        impls=tuple(args.impl or IMPLS),
        batch=args.batch or preset.batch,
        seq=seq,
        sweep_batch=tuple(args.sweep_batch or ()),
        sweep_seq=tuple(args.sweep_seq or ()),
        paddings=tuple(args.padding),
        modes=("forward", "train") if args.mode == "both" else (args.mode,),
        dtype=args.dtype,
        device=args.device,
        tf32=args.tf32 == "on",
        torch_compile=args.torch_compile,
        repeats=args.repeats,
        rounds=args.rounds,
        warmup=args.warmup,
        lr=args.lr,
        seed=args.seed,
        out_dir=args.out or Path("results") / f"bench-{stamp}",
        lengths=args.lengths,
        padded_batch=args.padded_batch,
        lengths_batches=args.lengths_batches,
    )


def _minutes(seconds: float | None) -> str:
    seconds = int(seconds or 0)
    return f"{seconds // 60}m{seconds % 60:02d}s"


class RichReporter:
    """The runner's progress: a rich progress bar on a terminal, one line per step in a log."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = progress.add_task("starting workers", total=None)
        self.log = not progress.console.is_terminal

    def start(self, total: int) -> None:
        """The number of steps is known: show the bar."""
        self.progress.update(self.task, total=total, completed=0)

    def step(self, description: str, advance: int = 1) -> None:
        """One step done (or, with `advance` 0, begun): describe it."""
        self.progress.update(self.task, description=description, advance=advance)
        if self.log:
            task = self.progress.tasks[0]
            progress = f"{task.completed:.0f}/{task.total or '?'}, {_minutes(task.elapsed)}"
            if task.completed and task.total:
                left = task.elapsed / task.completed * (task.total - task.completed)
                progress += f", ~{_minutes(left)} left"
            self.progress.console.print(f"[{progress}] {description}", highlight=False)

    def note(self, text: str) -> None:
        """A line above the bar (a failed or wrong implementation)."""
        self.progress.console.print(text)


def run(args: argparse.Namespace) -> int:
    """Measure, write results.json and the plots, print the tables; exit code 1 when a row was wrong or failed."""
    from rosetta_tools.throughput import plots, report, results_json, runner
    from rosetta_tools.throughput.processes import BenchError

    console = wide_console(160)
    try:
        config = config_from_args(args)
    except ValueError as err:
        message = in_option_names(str(err), "BenchConfig").replace("BenchConfig case", "case")
        raise CommandError(f"bench: {message}") from err
    console.print(
        f"rosetta bench: {config.preset}, {len(config.cases)} case(s), {' and '.join(config.modes)}, "
        f"{len(config.impls)} implementations: {describe(estimate_seconds(config))} on this machine "
        "(a rough estimate; `--preset tiny` is the quick look)",
        highlight=False,
    )
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    try:
        with Progress(*columns, console=console, transient=True) as progress:
            results = runner.run(config, RichReporter(progress))
    except BenchError as err:
        raise CommandError(f"bench: {err}") from err
    json_path = results_json.write_json(results, config.out_dir / "results.json")
    plot_paths = plots.make_plots(results, config.out_dir)
    report.print_report(results, console)
    console.print(f"results: {json_path}; plots: {', '.join(str(p) for p in plot_paths)}")
    failed = [
        f"{row.impl.name} {row.mode} ({case.case.label}): {row.status}"
        for case, row in results.rows()
        if row.status in ("wrong", "error")
    ]
    if failed:
        console.print("[red]not timed (wrong answer or error):[/red] " + "; ".join(failed))
        return EXIT_CHECK_FAILED
    return EXIT_OK
