"""Starting each framework's distributed engine, with clear errors before any work.

JAX: the process's devices (`--devices N` simulates N CPU devices; it must be set before JAX starts its backend).
torch: one process per device under torchrun (`WORLD_SIZE`, `RANK`, `MASTER_ADDR` set by it); gloo on CPU, NCCL
on GPU.
"""

from __future__ import annotations

import logging
import os

from rosetta_common.parallel import PlanError


def use_jax_devices(count: int | None) -> None:
    """Give JAX `count` CPU devices (None: leave it as it is). PlanError if JAX has started with another count."""
    import jax

    if count is None:
        return
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        have = jax.device_count()
        if have != count:
            raise PlanError(
                f"--devices {count}: JAX has already started with {have} device(s) in this process "
                "(--devices must be set before JAX is used)"
            )
        return
    jax.config.update("jax_num_cpu_devices", count)


def start_jax_processes(coordinator: str | None, processes: int | None, process_id: int | None) -> None:
    """Join a JAX process group (`jax.distributed.initialize`: one process per host, or several on one host), before
    JAX starts its backend; on CPU the collectives between processes go over gloo. PlanError for a partial set."""
    given = [value is not None for value in (coordinator, processes, process_id)]
    if not any(given):
        return
    if not all(given):
        raise PlanError("--coordinator, --num-processes and --process-id go together")
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=processes, process_id=process_id)


def torch_world() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) outside torchrun."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def start_torch_process_group(expected: int) -> None:
    """Join torchrun's process group (gloo on CPU, NCCL on CUDA). PlanError if the launch has another number
    of processes than the mesh needs, or none was launched for a mesh of several."""
    import torch
    import torch.distributed as dist

    _, world = torch_world()
    if world != expected:
        how = "" if "WORLD_SIZE" in os.environ else " (run it under torchrun)"
        raise PlanError(
            f"the mesh needs {expected} processes, but this launch has {world}{how}: "
            f"torchrun --nproc-per-node {expected} -m rosetta_tools train --framework torch ..."
        )
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        if "WORLD_SIZE" in os.environ:
            dist.init_process_group(backend)  # torchrun's rendezvous, from its environment
        else:  # one process, no torchrun: a group of one in memory, no port opened
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    # DTensor warns at every two-step redistribution of a 2-D mesh (fsdp+tp's gathers); informative, not actionable
    logging.getLogger("torch.distributed.tensor._redistribute").setLevel(logging.ERROR)


def stop_torch_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
