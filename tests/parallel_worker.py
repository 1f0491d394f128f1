"""The sharded half of tests/test_parallel.py, run in its own processes: JAX with 4 simulated CPU devices
(`python tests/parallel_worker.py flax DIR`), torch as 4 gloo ranks (`torchrun --standalone --nproc-per-node 4
tests/parallel_worker.py torch DIR`).

From DIR/initial.safetensors, for each case of `CASES` it trains `STEPS` float64 AdamW steps on the mesh and writes
DIR/<framework>-<case>.npz (rank 0): the global losses, each step's gathered canonical gradients, the final
gathered weights and both moments, and DIR/<framework>-<case>.json: the layout the engine holds (PartitionSpecs or
DTensor placements) and the collectives one step runs (JAX: counted in the compiled HLO; torch: the gloo
collectives the profiler saw). Case "reshard" saves a sharded checkpoint at fsdp data=4 after `RESHARD_AT` steps
and finishes on fsdp+tp 2x2 from it. The `PACKED_CASES` train on packed batches (segment ids). A third argument
(`tp,fsdp+tp`) runs those cases alone.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

DEVICES = 4
STEPS = 3
RESHARD_AT = 2
BATCH_SIZE = 8
CASES: dict[str, tuple[str, dict[str, int], bool]] = {
    # case: (strategy, mesh, clipping binds)
    "dp": ("dp", {"data": 4}, False),
    "fsdp": ("fsdp", {"data": 4}, False),
    "tp": ("tp", {"model": 4}, False),
    "fsdp+tp": ("fsdp+tp", {"data": 2, "model": 2}, False),
    "dp+tp": ("dp+tp", {"data": 2, "model": 2}, False),
    "fsdp+tp-clipped": ("fsdp+tp", {"data": 2, "model": 2}, True),
}
PACKED_CASES: dict[str, tuple[str, dict[str, int]]] = {
    # case: (strategy, mesh), on packed batches (segment ids; the rows a multiple of 4, so that `data` splits them)
    "dp-packed": ("dp", {"data": 4}),
    "fsdp+tp-packed": ("fsdp+tp", {"data": 2, "model": 2}),
}
ADAMW = {"lr": 1e-2, "warmup_steps": 1, "total_steps": 6, "weight_decay": 0.01}
CLIP_NORM = 0.05  # binds at every step of this run (the gradient norms are ~1)


def adamw(clipped: bool) -> Any:
    from rosetta_common.training import AdamWConfig

    return AdamWConfig(**ADAMW, clip_norm=CLIP_NORM if clipped else None)


def task() -> Any:
    from rosetta_tools.sidebyside.task import ReversalTask

    return ReversalTask(vocab_size=16, min_len=3, max_len=12, batch_size=BATCH_SIZE, seed=7)


def packed_task() -> Any:
    """Twice the sequences, from 2 tokens: 12, 12 and 16 rows (3 to 6 of them holding several sequences, 2 or 3
    only padding), a multiple of the 4 devices."""
    from rosetta_tools.sidebyside.task import ReversalTask

    return ReversalTask(16, min_len=2, max_len=12, batch_size=2 * BATCH_SIZE, seed=7, pack=True, row_multiple=DEVICES)


def batches(case: str) -> list[Any]:
    """The `STEPS` global batches of `case`: padded, or packed for the packed cases."""
    return [(packed_task() if case in PACKED_CASES else task()).batch(step) for step in range(STEPS)]


def trainer(framework: str, config: Any, weights: dict, strategy: str, mesh: dict[str, int], clipped: bool) -> Any:
    from rosetta_common.parallel import Mesh

    if framework == "torch":
        import rosetta_torch
        from rosetta_torch import parallel

        model = rosetta_torch.from_canonical(config, weights)
    else:
        import rosetta_flax
        from rosetta_flax import parallel

        model = rosetta_flax.from_canonical(config, weights)
    return parallel.ParallelTrainer(model, adamw(clipped), strategy, parallel.device_mesh(Mesh(**mesh)))


def torch_collectives(step: Any) -> dict[str, int]:
    """The gloo collectives one step runs, as the torch profiler records them."""
    from torch.profiler import profile

    with profile() as recorded:
        step()
    return dict(Counter(e.name.removeprefix("gloo:") for e in recorded.events() if e.name.startswith("gloo:")))


def record(framework: str, trainer: Any, losses: list[float], grads: list[dict], out: Path, case: str) -> None:
    weights, state = trainer.weights(), trainer.optimizer_state()  # collectives: every rank
    if framework == "torch":
        import torch.distributed as dist

        if dist.get_rank() != 0:
            return
    arrays = {"loss": np.asarray(losses)}
    for index, step_grads in enumerate(grads):
        arrays.update({f"grad.{index}.{name}": value for name, value in step_grads.items()})
    for group, values in (("weight", weights), ("mu", state.mu), ("nu", state.nu)):
        arrays.update({f"{group}.{name}": value for name, value in values.items()})
    np.savez(out / f"{framework}-{case}.npz", **arrays)


def run_case(framework: str, config: Any, weights: dict, out: Path, case: str) -> None:
    strategy, mesh, clipped = CASES[case] if case in CASES else (*PACKED_CASES[case], False)
    train = trainer(framework, config, weights, strategy, mesh, clipped)
    case_batches = batches(case)
    losses, grads = [], []
    for batch in case_batches:
        losses.append(train.step(*batch, keep_gradients=True))
        grads.append(train.last_gradients)
    record(framework, train, losses, grads, out, case)
    facts: dict[str, Any] = {"placements": train.placements()}
    if framework == "flax":
        from rosetta_flax.parallel import collectives
        from rosetta_tools.distributed.costs import measured_sent_bytes

        hlo = train.compiled_text(*case_batches[0])
        facts["collectives"] = collectives(hlo)
        facts["sent_bytes"] = measured_sent_bytes(hlo, DEVICES)
    else:  # one more step, profiled (the arrays are recorded already)
        facts["collectives"] = torch_collectives(lambda: train.step(*case_batches[0]))
    write_facts(framework, out, case, facts)


def run_reshard(framework: str, config: Any, weights: dict, out: Path) -> None:
    """`RESHARD_AT` steps at fsdp data=4, a sharded checkpoint, the rest at fsdp+tp 2x2 restored from it."""
    if framework == "torch":
        from rosetta_torch.parallel import restore_sharded, save_sharded
    else:
        from rosetta_flax.parallel import restore_sharded, save_sharded
    reshard_batches = batches("reshard")
    first = trainer(framework, config, weights, "fsdp", {"data": 4}, False)
    losses = [first.step(*batch) for batch in reshard_batches[:RESHARD_AT]]
    save_sharded(first, out / f"{framework}-sharded")
    second = trainer(framework, config, weights, "fsdp+tp", {"data": 2, "model": 2}, False)
    restore_sharded(second, out / f"{framework}-sharded")
    losses += [second.step(*batch) for batch in reshard_batches[RESHARD_AT:]]
    record(framework, second, losses, [], out, "reshard")


def write_facts(framework: str, out: Path, case: str, facts: dict[str, Any]) -> None:
    if framework == "torch":
        import torch.distributed as dist

        if dist.get_rank() != 0:
            return
    (out / f"{framework}-{case}.json").write_text(json.dumps(facts, indent=1))


def main(framework: str, out: Path, only: list[str] | None = None) -> None:
    """Every case and the reshard run; or, with `only`, those cases alone."""
    from rosetta_common import load_canonical

    if framework == "flax":
        import jax

        jax.config.update("jax_num_cpu_devices", DEVICES)
        jax.config.update("jax_enable_x64", True)
    else:
        import torch
        import torch.distributed as dist

        torch.set_num_threads(1)
        dist.init_process_group("gloo")
    config, weights = load_canonical(out / "initial.safetensors")
    try:
        for case in only or [*CASES, *PACKED_CASES]:
            run_case(framework, config, weights, out, case)
        if only is None:
            run_reshard(framework, config, weights, out)
    finally:
        if framework == "torch":
            dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), sys.argv[3].split(",") if len(sys.argv) > 3 else None)
