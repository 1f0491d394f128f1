"""Training on many processes with torch.distributed: `rosetta_common.parallel`'s plan as a `DeviceMesh`, DDP,
FSDP2 (`fully_shard`) and DTensor tensor parallelism (`ColwiseParallel` / `RowwiseParallel`).

Mirrors `rosetta_flax.parallel`. One process per device, launched by `torchrun` (gloo on CPU, NCCL on GPU). Every
process builds the same model from the same canonical weights and reads the same global batch; each takes its
`data` slice. The loss of a slice is divided by the global batch's count of counted positions and multiplied by
the `data` size, so DDP's and FSDP's gradient mean is the gradient of the global mean loss, as on one device.
Everything leaving this module is gathered and canonical (`full_tensor()` is a collective: every rank calls it).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, Shard, distribute_tensor
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module
from torch.nn.parallel import DistributedDataParallel

from rosetta_common import write_directory_atomically
from rosetta_common.name_tables import TORCH_ENCODER
from rosetta_common.parallel import (
    DATA,
    MESH_AXES,
    MODEL,
    RUN_FILE,
    SHARDS_PARAMETERS_OVER_DATA,
    TENSOR_PARALLEL,
    Mesh,
    PlanError,
    ShardedCheckpointInfo,
    check_batch,
    check_device_count,
    native_plan,
    plan,
)
from rosetta_common.training import AdamWConfig, OptimizerState
from rosetta_torch.convert import canonical_to_parameters, tensor_to_numpy
from rosetta_torch.encoder import Encoder
from rosetta_torch.training import build_optimizer, build_schedule, restart_schedule, sequence_loss

LINEARS = ("attn.q", "attn.k", "attn.v", "attn.out", "ffn.up", "ffn.gate", "ffn.down")
"""A layer's linear modules, the ones tensor parallelism splits (`ffn.gate` in a GLU only)."""


def device_mesh(mesh: Mesh, device_type: str | None = None) -> DeviceMesh:
    """The process group's `DeviceMesh` with axes ("data", "model"); PlanError unless `mesh` uses every process.
    `device_type` defaults to "cuda" where torch sees a GPU (one per process, by LOCAL_RANK), else "cpu"."""
    world = dist.get_world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", "1"))
    check_device_count(mesh, world, "processes", " (torchrun --nproc-per-node N)")
    if device_type is None:
        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    if device_type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return init_device_mesh(device_type, mesh.shape, mesh_dim_names=MESH_AXES)


def mesh_of(device_mesh: DeviceMesh) -> Mesh:
    return Mesh(**{axis: device_mesh[axis].size() for axis in MESH_AXES})


class Objective(nn.Module):
    """The training loss as one module around the encoder: the tied head reads the embedding after the encoder
    returns, and DDP and FSDP must see every use of a parameter inside one forward."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(
        self,
        token_ids: torch.Tensor,
        targets: torch.Tensor,
        loss_mask: torch.Tensor,
        denominator: float,
        segment_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return sequence_loss(
            self.encoder, token_ids, targets, loss_mask=loss_mask, denominator=denominator, segment_ids=segment_ids
        )


def linear_style(weight_axes: tuple[str | None, ...]) -> ColwiseParallel | RowwiseParallel | None:
    """`nn.Linear.weight [out, in]` split over `model` by rows of the weight (output columns of the canonical
    kernel): ColwiseParallel; by its columns: RowwiseParallel; not split: None."""
    if weight_axes[0] == MODEL:
        return ColwiseParallel()
    if weight_axes[1] == MODEL:
        return RowwiseParallel()
    return None


def parallelize(encoder: Encoder, strategy: str, mesh: DeviceMesh) -> nn.Module:
    """Wrap `encoder` (every rank holding the same full weights) for `strategy` on `mesh`; returns the `Objective`
    to call: `objective(token_ids, targets, loss_mask, denominator, segment_ids=None) -> loss`. The encoder is
    changed in place: its parameters become DTensors where the plan splits them (DDP, under dp+tp, turns them back
    into their local shards: `as_dtensor` views them whole again)."""
    if encoder.compute.active:
        raise PlanError("parallel training runs float32 or float64 models; a bfloat16 policy is not supported yet")
    placements = native_plan(TORCH_ENCODER, encoder.config, plan(encoder.config, strategy, mesh_of(mesh)))
    objective = Objective(encoder)
    if strategy in TENSOR_PARALLEL:
        for i, layer in enumerate(encoder.layers):
            styles = {
                name: linear_style(placements[f"layers.{i}.{name}.weight"])
                for name in LINEARS
                if f"layers.{i}.{name}.weight" in placements
            }
            parallelize_module(layer, mesh[MODEL], {name: style for name, style in styles.items() if style})
    if strategy in SHARDS_PARAMETERS_OVER_DATA:
        names = {param: name for name, param in encoder.named_parameters()}

        def data_dim(param: nn.Parameter) -> Shard | None:
            axes = placements[names[param]]
            return Shard(axes.index(DATA)) if DATA in axes else None

        for layer in encoder.layers:
            fully_shard(layer, mesh=mesh[DATA], shard_placement_fn=data_dim)
        fully_shard(objective, mesh=mesh[DATA], shard_placement_fn=data_dim)
        return objective
    if strategy == "tp":
        return objective  # no data axis: nothing to replicate
    # no buffer sync at each forward: the one buffer, the sinusoidal table, is built the same on every rank
    return DistributedDataParallel(objective, device_mesh=mesh[DATA], forward_sync_buffers=False)


def full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor on every rank: a DTensor gathered (a collective), a plain tensor as it is."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


class ParallelTrainer:
    """`rosetta_torch.training.Trainer` on a mesh: `step(global batch) -> global mean loss before the update`.

    AdamW runs on each rank's shards (`foreach=False`: DTensor and plain parameters mix under tensor
    parallelism); clipping uses the global norm. `keep_gradients=True` gathers each step's canonical gradients
    (before clipping) into `last_gradients`. `gradients()`, `weights()` and `optimizer_state()` gather (every
    rank must call them); canonical NumPy on every rank.
    """

    def __init__(self, encoder: Encoder, adamw: AdamWConfig, strategy: str, mesh: DeviceMesh) -> None:
        self.config, self.adamw, self.strategy, self.mesh = encoder.config, adamw, strategy, mesh
        self.encoder = encoder
        self.device = (
            mesh.device_type
            if mesh.device_type == "cpu"
            else torch.device(mesh.device_type, torch.cuda.current_device())
        )
        self.native = native_plan(TORCH_ENCODER, encoder.config, plan(encoder.config, strategy, mesh_of(mesh)))
        self.objective = parallelize(encoder, strategy, mesh)
        # The parameters as the engine holds them, read once: under dp+tp, DDP's hooks put whole DTensors on the
        # modules for each forward; the parameters it reduces (and AdamW updates) are the local shards listed here.
        self.named_parameters = list(encoder.named_parameters())
        self.names = {param: name for name, param in self.named_parameters}
        self.optimizer = build_optimizer(adamw, encoder, foreach=False)
        self.scheduler = build_schedule(adamw, self.optimizer)
        self.steps_done = 0
        self.last_gradients: dict[str, np.ndarray] | None = None

    def as_dtensor(self, param: nn.Parameter, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` (the parameter, its gradient or a moment) as a DTensor where the plan splits it over `model`,
        also after DDP turned it into its local shard; a tensor the plan leaves whole as it is."""
        if isinstance(tensor, DTensor):
            return tensor
        axes = self.native[self.names[param]]
        if MODEL not in axes:
            return tensor
        return DTensor.from_local(tensor, self.mesh[MODEL], [Shard(axes.index(MODEL))], run_check=False)

    def gather(self, param: nn.Parameter, tensor: torch.Tensor | None) -> torch.Tensor:
        """The whole of `tensor` (None: zeros of the parameter's shape) on every rank."""
        if tensor is None:
            return torch.zeros(self.as_dtensor(param, param.detach()).shape, dtype=param.dtype, device=self.device)
        return full(self.as_dtensor(param, tensor))

    @property
    def data_rank(self) -> int:
        return self.mesh[DATA].get_local_rank()

    def local_slice(self, array: np.ndarray) -> np.ndarray:
        """This rank's rows of a global batch array (rows split evenly over `data`)."""
        data = self.mesh[DATA].size()
        check_batch(array.shape[0], Mesh(data=data))
        rows = array.shape[0] // data
        return np.ascontiguousarray(array[self.data_rank * rows : (self.data_rank + 1) * rows])

    def step(
        self,
        token_ids: np.ndarray,
        targets: np.ndarray,
        loss_mask: np.ndarray,
        segment_ids: np.ndarray | None = None,
        *,
        keep_gradients: bool = False,
    ) -> float:
        """One update on one global batch (NumPy, the same on every rank); the global mean loss before it.
        `segment_ids` int `[B, S]`: packed rows (`rosetta_common.packing`), split over `data` with them."""
        self.encoder.train()
        self.optimizer.zero_grad(set_to_none=True)
        data = self.mesh[DATA].size()
        denominator = max(float(np.asarray(loss_mask).sum()), 1.0) / data

        def local(array: np.ndarray, dtype: type) -> torch.Tensor:
            return torch.from_numpy(self.local_slice(np.asarray(array, dtype=dtype))).to(self.device)

        ids, labels, mask = local(token_ids, np.int64), local(targets, np.int64), local(loss_mask, bool)
        segments = None if segment_ids is None else local(segment_ids, np.int64)
        loss = self.objective(ids, labels, mask, denominator, segments)
        loss.backward()
        if keep_gradients:
            self.last_gradients = self.gradients()
        if self.adamw.clip_norm is not None:
            self.clip_gradients(self.adamw.clip_norm)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.steps_done += 1
        total = loss.detach() / data  # each slice's loss is scaled by `data`: their mean is the global mean
        dist.all_reduce(total, group=self.mesh[DATA].get_group())
        return float(total)

    def clip_gradients(self, max_norm: float) -> None:
        """Scale the gradients to a global L2 norm of at most `max_norm`: `torch.nn.utils.get_total_norm` per
        group of gradients on one mesh (split ones as DTensors, whole ones as they are), the groups combined."""
        params = [p for _, p in self.named_parameters if p.grad is not None]
        groups: dict[Any, list[torch.Tensor]] = {}
        for param in params:
            view = self.as_dtensor(param, param.grad)
            groups.setdefault(view.device_mesh if isinstance(view, DTensor) else None, []).append(view)
        norms = [full(torch.nn.utils.get_total_norm(group, foreach=False)) for group in groups.values()]
        total = torch.linalg.vector_norm(torch.stack(norms))
        coefficient = float(torch.clamp(max_norm / (total + 1e-6), max=1.0))
        with torch.no_grad():
            for param in params:
                param.grad.mul_(coefficient)

    def canonical(self, read: Callable[[nn.Parameter], torch.Tensor | None]) -> dict[str, np.ndarray]:
        """`read(parameter)` of every parameter, gathered, as canonical NumPy arrays."""
        native = {name: tensor_to_numpy(self.gather(p, read(p)).detach().cpu()) for name, p in self.named_parameters}
        return TORCH_ENCODER.to_canonical(self.config, native, source="the gathered parameters")

    def gradients(self) -> dict[str, np.ndarray]:
        """The current gradients, gathered, canonical (zeros where there is none)."""
        return self.canonical(lambda p: p.grad)

    def weights(self) -> dict[str, np.ndarray]:
        """The weights, gathered, canonical."""
        return self.canonical(lambda p: p.detach())

    def optimizer_state(self) -> OptimizerState:
        """AdamW's moments, gathered, canonical (zeros before the first step), and the step count."""

        def moment(key: str) -> dict[str, np.ndarray]:
            return self.canonical(lambda p: self.optimizer.state.get(p, {}).get(key))

        return OptimizerState(self.config, self.adamw, self.steps_done, moment("exp_avg"), moment("exp_avg_sq"))

    def load_optimizer_state(self, state: OptimizerState) -> None:
        """Continue from a canonical `state` (any framework, any mesh): each rank keeps its shards of the moments."""
        state.check_fits(self.config, self.adamw)
        moments = {key: canonical_to_parameters(self.encoder, getattr(state, group)) for key, group in MOMENTS}
        for name, param in self.named_parameters:
            self.optimizer.state[param] = {
                "step": torch.tensor(float(state.step), dtype=torch.get_default_dtype()),
                **{key: self.local_part(param, values[name]) for key, values in moments.items()},
            }
        self.scheduler = restart_schedule(self.adamw, self.optimizer, state.step)
        self.steps_done = state.step

    def local_part(self, param: nn.Parameter, whole: torch.Tensor) -> torch.Tensor:
        """`whole` laid out as `param`: a DTensor shard for a DTensor, the local shard for a localized one."""
        whole = whole.to(device=param.device, dtype=param.dtype)  # moments live where their parameter does (a GPU)
        view = self.as_dtensor(param, param.detach())
        if not isinstance(view, DTensor):
            return whole
        shard = distribute_tensor(whole, view.device_mesh, view.placements)
        return shard if isinstance(param, DTensor) else shard.to_local()

    def placements(self) -> dict[str, dict[str, Any]]:
        """By torch name, as the engine holds each parameter: its DTensor placements ("None" for a plain tensor,
        which DDP's tensor-parallel hooks also leave as the local shard) and the shape of this rank's part."""
        return {
            name: {
                "placements": str(tuple(param.placements)) if isinstance(param, DTensor) else "None",
                "local_shape": list(param.to_local().shape if isinstance(param, DTensor) else param.shape),
            }
            for name, param in self.named_parameters
        }


MOMENTS = (("exp_avg", "mu"), ("exp_avg_sq", "nu"))


STATE_DIR = "state"


def sharded_state(trainer: ParallelTrainer) -> dict[str, torch.Tensor]:
    """The parameters and AdamW moments by torch name (`param.`, `exp_avg.`, `exp_avg_sq.`), each a DTensor where
    the plan splits it (what `torch.distributed.checkpoint` saves shard by shard and reshards on load), sharing
    storage with the trainer's tensors; moments not created yet are created as zeros."""
    state: dict[str, torch.Tensor] = {}
    for name, param in trainer.named_parameters:
        slots = trainer.optimizer.state.setdefault(param, {})
        for key, _ in MOMENTS:
            slots.setdefault(key, torch.zeros_like(param, memory_format=torch.preserve_format))
        slots.setdefault("step", torch.tensor(float(trainer.steps_done), dtype=torch.get_default_dtype()))
        state[f"param.{name}"] = trainer.as_dtensor(param, param.detach())
        for key, _ in MOMENTS:
            state[f"{key}.{name}"] = trainer.as_dtensor(param, slots[key])
    return state


def save_sharded(trainer: ParallelTrainer, directory: str | os.PathLike) -> Path:
    """A `torch.distributed.checkpoint` of the parameters and AdamW state, each rank writing its own shards, with
    `run.json` beside it. Every rank calls it. Atomic: the ranks write into a temporary directory that rank 0
    renames into place once all shards are written; a rank dying mid-save leaves `directory` as it was."""
    info = ShardedCheckpointInfo(
        "torch", trainer.config, trainer.adamw, trainer.steps_done, trainer.strategy, mesh_of(trainer.mesh)
    )
    state = sharded_state(trainer)

    def write(tmp: Path) -> None:
        dist.broadcast_object_list([str(tmp)], src=0)
        dcp.save(state, checkpoint_id=tmp / STATE_DIR)  # returns once every rank's shards and the metadata are written
        (tmp / RUN_FILE).write_text(info.to_json() + "\n")

    if dist.get_rank() == 0:
        write_directory_atomically(directory, write)
    else:
        where: list[Any] = [None]
        dist.broadcast_object_list(where, src=0)
        dcp.save(state, checkpoint_id=Path(where[0]) / STATE_DIR)
    dist.barrier()  # the directory is in place for every rank
    return Path(directory)


def restore_sharded(trainer: ParallelTrainer, directory: str | os.PathLike) -> None:
    """Continue from `save_sharded`'s checkpoint on this trainer's mesh and strategy (any of them:
    `torch.distributed.checkpoint` reads each rank's part of every tensor). WeightFormatError if it was written for
    another run. Every rank calls it."""
    info = ShardedCheckpointInfo.read(directory)
    info.check_resumes("torch", trainer.config, trainer.adamw, str(directory))
    state = sharded_state(trainer)
    dcp.load(state, checkpoint_id=Path(directory) / STATE_DIR)  # in place, into the trainer's own storage
    for param in trainer.optimizer.state.values():
        param["step"] = torch.tensor(float(info.step), dtype=torch.get_default_dtype())
    trainer.scheduler = restart_schedule(trainer.adamw, trainer.optimizer, info.step)
    trainer.steps_done = info.step
