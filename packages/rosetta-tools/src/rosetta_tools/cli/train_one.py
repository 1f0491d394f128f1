"""`rosetta train --framework torch|flax [--parallel STRATEGY --mesh data=N,model=M]`: one framework alone.

On one device it is the framework's plain Trainer; on a mesh, its own engine (`rosetta_torch.parallel` under
torchrun, `rosetta_flax.parallel` on the process's devices). The task, batches and initial weights are the
side-by-side run's. Rank 0 writes the files (`rosetta_tools.distributed.run`) and prints the summary.
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path
from typing import Any

from rich.table import Table

from rosetta_tools.cli.errors import EXIT_OK, CommandError
from rosetta_tools.cli.options import in_option_names
from rosetta_tools.cli.terminal import wide_console
from rosetta_tools.cli.train_folder import check_output_folder, interrupted
from rosetta_tools.frameworks import require_all


def summary_table(summary: dict[str, Any]) -> Table:
    where = "one device" if summary["strategy"] is None else f"{summary['strategy']} on mesh {summary['mesh']}"
    table = Table(title=f"rosetta train: {summary['framework']}, {where}", show_header=False)
    table.add_row(
        "steps, dtype",
        f"{summary['first_step']}..{summary['stopped_at'] - 1} of {summary['steps']}, {summary['dtype']}",
    )
    table.add_row("loss first, last", f"{summary['losses'][0]:.6f}, {summary['final_loss']:.6f}")
    accuracy = summary["final_accuracy"]
    table.add_row("held-out accuracy", f"{accuracy['token']:.1%} tokens, {accuracy['sequence']:.1%} sequences")
    table.add_row("step", f"{summary['step_ms_median']:.2f} ms median (first {summary['first_step_ms']:.0f} ms)")
    if "collectives" in summary:
        table.add_row("collectives in the step", ", ".join(f"{k} {v}" for k, v in summary["collectives"].items() if v))
    table.add_row("canonical checkpoint", summary["checkpoint"])
    if summary["sharded_checkpoint"]:
        table.add_row("sharded checkpoint", summary["sharded_checkpoint"])
    return table


def run_one_framework(args: argparse.Namespace) -> int:
    from rosetta_common.parallel import PlanError, check_device_count
    from rosetta_tools.cli.train import check_option_pairs, run_config_from_args
    from rosetta_tools.distributed import engines
    from rosetta_tools.distributed.run import FrameworkRun, train
    from rosetta_tools.sidebyside.divergence import TrainingDiverged

    require_all(
        ("torch", args.framework), f"rosetta train --framework {args.framework} (torch initialises the weights)"
    )
    check_option_pairs(args)
    check_output_folder(args.out, args.force, args.resume)  # before any process starts or writes
    if args.switch_at is not None:
        raise CommandError("train: --switch-at is for the side-by-side run (--framework both); use --resume")
    try:
        config = FrameworkRun(
            run_config_from_args(args), args.framework, args.parallel, args.mesh, args.resume, args.stop_at
        )
        config.check()
    except PlanError as err:
        raise CommandError(f"train: {err}") from err
    except ValueError as err:
        raise CommandError(f"train: {in_option_names(str(err), 'EncoderConfig')}") from err
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    started_group = False
    try:
        if args.framework == "flax":
            import jax

            engines.start_jax_processes(args.coordinator, args.num_processes, args.process_id)
            engines.use_jax_devices(args.devices)
            if config.mesh is not None:
                check_device_count(
                    config.mesh, jax.device_count(), "JAX devices", " (on a CPU, --devices N simulates N)"
                )
            if config.run.dtype == "float64":
                jax.config.update("jax_enable_x64", True)
        else:
            for option in ("devices", "coordinator", "num_processes", "process_id"):
                if getattr(args, option) is not None:
                    flag = option.replace("_", "-")
                    raise CommandError(f"train: --{flag} is for flax; torch runs one process per device under torchrun")
        if args.framework == "torch" and args.parallel is not None:
            engines.start_torch_process_group(config.mesh.size)
            started_group = True
        elif args.framework == "torch" and engines.torch_world()[1] != 1:
            raise CommandError("train: several torchrun processes need --parallel STRATEGY --mesh ...")
        rank = engines.torch_world()[0] if args.framework == "torch" else jax_process_index()
        out_dir = output_folder(args.out, args.framework, started_group)
        try:
            summary = train(config, out_dir, is_writer=rank == 0)
        except KeyboardInterrupt:
            raise interrupted(out_dir, config.last_step) from None
    except PlanError as err:
        raise CommandError(f"train: {err}") from err
    except TrainingDiverged as err:
        raise CommandError(f"train: {err}") from None
    finally:
        torch.set_num_threads(threads)
        if started_group:
            engines.stop_torch_process_group()
    if rank == 0:
        summary["torch_threads"] = args.threads
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        console = wide_console(120)
        console.print(summary_table(summary))
        console.print(f"log: {out_dir / 'log.jsonl'}; summary: {out_dir / 'summary.json'}")
    return EXIT_OK


def jax_process_index() -> int:
    import jax

    return jax.process_index()


def output_folder(given: Path | None, framework: str, in_torch_group: bool) -> Path:
    """`--out`, or results/train-<timestamp>/ chosen by rank 0 and sent to the others."""
    if given is not None:
        return given
    chosen = str(Path("results") / f"train-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    if in_torch_group:
        import torch.distributed as dist

        shared = [chosen]
        dist.broadcast_object_list(shared, src=0)
        return Path(shared[0])
    if framework == "flax":
        from rosetta_flax.parallel import shared_text

        return Path(shared_text(chosen if jax_process_index() == 0 else None))
    return Path(chosen)
