"""Training on many devices with jax.sharding: `rosetta_common.parallel`'s plan as NNX sharding metadata and
`NamedSharding`s, one `jax.jit` step that GSPMD partitions.

Mirrors `rosetta_torch.parallel`. JAX sees one global program: the batch is laid out over `data`, the parameters
and AdamW moments as the plan says, and XLA inserts the collectives (all-gather, all-reduce, reduce-scatter).
The step is `rosetta_flax.training`'s own, so the loss is the global mean as on one device. On a CPU,
`XLA_FLAGS=--xla_force_host_platform_device_count=N` (set before jax is imported) simulates N devices; several
processes or hosts join through `jax.distributed.initialize`. Everything leaving this module is gathered and
canonical.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from rosetta_common import write_directory_atomically
from rosetta_common.name_tables import FLAX_ENCODER
from rosetta_common.parallel import (
    DATA,
    MESH_AXES,
    RUN_FILE,
    SHARDS_PARAMETERS_OVER_DATA,
    Mesh,
    PlanError,
    ShardedCheckpointInfo,
    check_batch,
    check_device_count,
    native_plan,
    plan,
)
from rosetta_common.training import AdamWConfig, OptimizerState
from rosetta_flax.encoder import Encoder
from rosetta_flax.training import (
    _build_optimizer,
    _parameter_dtype,
    canonical_optimizer_state,
    opt_state_from_canonical,
    params_to_canonical,
    train_step_function,
)

BATCH = PartitionSpec("data")

"""Token ids, targets and the loss mask `[B, S]`: rows split over `data`."""


def device_mesh(mesh: Mesh, devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
    """A `jax.sharding.Mesh` with axes ("data", "model") over `devices` (default: all of the process group's);
    PlanError unless `mesh` uses every device."""
    devices = list(jax.devices() if devices is None else devices)
    check_device_count(mesh, len(devices), "JAX devices", " (on a CPU, --devices N simulates N)")
    return jax.sharding.Mesh(np.array(devices).reshape(mesh.shape), MESH_AXES)


def without_axis(spec: PartitionSpec, axis: str) -> PartitionSpec:
    """`spec` with mesh axis `axis` taken out (that dimension whole over it)."""
    return PartitionSpec(*(None if entry == axis else entry for entry in spec))


def mesh_of(jax_mesh: jax.sharding.Mesh) -> Mesh:
    return Mesh(**{axis: jax_mesh.shape[axis] for axis in MESH_AXES})


def annotate(model: Encoder, strategy: str, mesh: Mesh) -> None:
    """Write the plan into the model's NNX sharding metadata: each `nnx.Param`'s `out_sharding`, the mesh axis
    splitting each of its dimensions (what `nnx.get_partition_spec` reads)."""
    if model.compute.active:
        raise PlanError("parallel training runs float32 or float64 models; a bfloat16 policy is not supported yet")
    placements = native_plan(FLAX_ENCODER, model.config, plan(model.config, strategy, mesh))
    for path, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Param):
            node.set_metadata(out_sharding=placements[".".join(map(str, path))])


def place(tree: Any, shardings: Any) -> Any:
    """Values every process holds alike, laid out as `shardings`: each process hands over its own devices' parts
    (`jax.make_array_from_callback`), so this also works when the mesh spans several processes or hosts."""

    def one(value: Any, sharding: NamedSharding) -> jax.Array:
        if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):  # an RNG key: place its raw data
            return jax.random.wrap_key_data(one(jax.random.key_data(value), sharding), impl=jax.random.key_impl(value))
        host = np.asarray(value)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(one, tree, shardings)


def on_host(tree: Any) -> Any:
    """Every array whole, as NumPy, on every process (a collective when the mesh spans several processes)."""
    from jax.experimental import multihost_utils

    def one(array: jax.Array) -> Any:
        if jax.dtypes.issubdtype(array.dtype, jax.dtypes.prng_key) or array.is_fully_addressable:
            return array
        return multihost_utils.process_allgather(array, tiled=True)

    return jax.tree.map(one, tree)


class ParallelTrainer:
    """`rosetta_flax.training.Trainer` on a mesh: `step(global batch) -> global mean loss before the update`.

    The parameters and AdamW moments live sharded as the plan says; one jitted step with those shardings in and
    out. `keep_gradients=True` keeps each step's canonical gradients in `last_gradients`.
    """

    def __init__(self, model: Encoder, adamw: AdamWConfig, strategy: str, mesh: jax.sharding.Mesh) -> None:
        self.config, self.adamw, self.strategy, self.mesh = model.config, adamw, strategy, mesh
        model.train()
        self._checker = model
        annotate(model, strategy, mesh_of(mesh))
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        self.graphdef = graphdef
        replicated = NamedSharding(mesh, PartitionSpec())
        self.param_shardings = nnx.get_named_sharding(params, mesh)
        self.rest_shardings = jax.tree.map(lambda _: replicated, rest)
        self.optimizer = _build_optimizer(adamw, _parameter_dtype(model))
        self.opt_shardings = optax.tree.map_params(
            self.optimizer,
            lambda _, sharding: sharding,
            jax.eval_shape(self.optimizer.init, params),
            self.param_shardings,
            transform_non_params=lambda _: replicated,
            is_leaf=lambda x: isinstance(x, NamedSharding),
        )
        # FSDP: the forward and backward compute with each tensor whole over `data` (an all-gather), the gradient
        # goes back to its shard (the transposed constraint: a reduce-scatter); the activations stay split by
        # batch. Without it GSPMD may keep the weights split and move activations instead (all-to-alls).
        self.use_shardings = jax.tree.map(
            lambda sharding: NamedSharding(mesh, without_axis(sharding.spec, DATA)),
            self.param_shardings,
            is_leaf=lambda x: isinstance(x, NamedSharding),
        )
        self.params = place(params, self.param_shardings)
        self.rest = place(rest, self.rest_shardings)
        self.opt_state = jax.jit(self.optimizer.init, out_shardings=self.opt_shardings)(self.params)
        batch = NamedSharding(mesh, BATCH)
        self.batch_sharding = batch
        state = (self.param_shardings, self.rest_shardings, self.opt_shardings)
        self._step = jax.jit(
            train_step_function(graphdef, self.optimizer, self.gathered_over_data),
            in_shardings=(*state, batch, batch, batch, batch, batch),  # ..., token_type_ids, segment_ids
            out_shardings=(*state, replicated, self.param_shardings),  # ..., loss, gradients
        )
        self.steps_done = 0
        self.last_gradients: dict[str, np.ndarray] | None = None

    def gathered_over_data(self, params: nnx.State) -> nnx.State:
        """The parameters as the model computes with them: whole over `data` (split over `model` as planned)."""
        if self.strategy not in SHARDS_PARAMETERS_OVER_DATA:
            return params
        return jax.lax.with_sharding_constraint(params, self.use_shardings)

    def _batch(
        self, token_ids: np.ndarray, targets: np.ndarray, loss_mask: np.ndarray, segment_ids: np.ndarray | None
    ) -> tuple[jax.Array | None, ...]:
        """The step's batch arguments, split over `data`: token ids, targets, loss mask, token type ids (None) and
        segment ids (None unless packed)."""
        check_batch(np.shape(token_ids)[0], mesh_of(self.mesh))
        self._checker.check_inputs(np.asarray(token_ids), segment_ids=segment_ids)
        arrays = (token_ids, targets, loss_mask, None, segment_ids)
        return tuple(None if a is None else place(np.asarray(a), self.batch_sharding) for a in arrays)

    def step(
        self,
        token_ids: np.ndarray,
        targets: np.ndarray,
        loss_mask: np.ndarray,
        segment_ids: np.ndarray | None = None,
        *,
        keep_gradients: bool = False,
    ) -> float:
        """One update on one global batch (NumPy); the global mean loss before it. `segment_ids` int `[B, S]`:
        packed rows (`rosetta_common.packing`), split over `data` with them."""
        self.params, self.rest, self.opt_state, loss, grads = self._step(
            self.params, self.rest, self.opt_state, *self._batch(token_ids, targets, loss_mask, segment_ids)
        )
        if keep_gradients:
            self.last_gradients = params_to_canonical(self.config, on_host(grads))
        self.steps_done += 1
        return float(loss)

    def compiled_text(
        self, token_ids: np.ndarray, targets: np.ndarray, loss_mask: np.ndarray, segment_ids: np.ndarray | None = None
    ) -> str:
        """The optimised HLO of the step for this batch shape: what the devices run, collectives included."""
        args = (self.params, self.rest, self.opt_state, *self._batch(token_ids, targets, loss_mask, segment_ids))
        return self._step.lower(*args).compile().as_text()

    def weights(self) -> dict[str, np.ndarray]:
        """The weights, gathered, canonical."""
        return params_to_canonical(self.config, on_host(self.params))

    def optimizer_state(self) -> OptimizerState:
        """AdamW's moments, gathered, canonical, and the step count."""
        return canonical_optimizer_state(self.config, self.adamw, self.steps_done, self.opt_state, on_host)

    def load_optimizer_state(self, state: OptimizerState) -> None:
        """Continue from a canonical `state` (any framework, any mesh), laid out as the plan says."""
        state.check_fits(self.config, self.adamw)
        host_state = opt_state_from_canonical(self.optimizer, on_host(self.params), state)
        self.opt_state = place(host_state, self.opt_shardings)
        self.steps_done = state.step

    def placements(self) -> dict[str, dict[str, Any]]:
        """By NNX path, as the arrays lie: each parameter's PartitionSpec and the shape of one device's part."""
        result = {}
        for path, variable in nnx.to_flat_state(self.params):
            array = variable[...]
            result[".".join(map(str, path))] = {
                "placements": str(array.sharding.spec),
                "local_shape": list(array.sharding.shard_shape(array.shape)),
            }
        return result


STATE_DIR = "state"


def save_sharded(trainer: ParallelTrainer, directory: str | os.PathLike) -> Path:
    """An Orbax checkpoint of the parameters and AdamW state as they lie sharded (each device's shards written as
    they are; every process calls it, on a filesystem they share), with `run.json` beside it. Atomic: the
    processes write into a temporary directory that process 0 swaps into place once every shard is written; an
    interrupted save leaves `directory` as it was."""
    from jax.experimental import multihost_utils

    info = ShardedCheckpointInfo(
        "flax", trainer.config, trainer.adamw, trainer.steps_done, trainer.strategy, mesh_of(trainer.mesh)
    )
    state = {"params": trainer.params, "opt_state": trainer.opt_state}

    def write_shards(tmp: Path) -> None:
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(tmp.resolve() / STATE_DIR, state)
        multihost_utils.sync_global_devices("rosetta: sharded checkpoint written")

    def write(tmp: Path) -> None:
        write_shards(Path(shared_text(str(tmp))))
        (tmp / RUN_FILE).write_text(info.to_json() + "\n")

    if jax.process_index() == 0:
        write_directory_atomically(directory, write)
    else:
        write_shards(Path(shared_text(None)))
    multihost_utils.sync_global_devices("rosetta: sharded checkpoint in place")
    return Path(directory)


def shared_text(text: str | None, size: int = 4096) -> str:
    """Process 0's `text` on every process (others pass None)."""
    if jax.process_count() == 1:
        assert text is not None
        return text
    from jax.experimental import multihost_utils

    buffer = np.zeros(size, dtype=np.uint8)
    if text is not None:
        encoded = text.encode()
        buffer[: len(encoded)] = np.frombuffer(encoded, dtype=np.uint8)
    received = np.asarray(multihost_utils.broadcast_one_to_all(buffer))
    return bytes(received[received != 0]).decode()


def restore_sharded(trainer: ParallelTrainer, directory: str | os.PathLike) -> None:
    """Continue from `save_sharded`'s checkpoint, on this trainer's mesh and strategy (any of them: Orbax reads
    each array into the shardings asked for). WeightFormatError if it was written for another run."""
    info = ShardedCheckpointInfo.read(directory)
    info.check_resumes("flax", trainer.config, trainer.adamw, str(directory))
    state = {"params": trainer.params, "opt_state": trainer.opt_state}
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    with ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore(Path(directory).resolve() / STATE_DIR, target)
    trainer.params, trainer.opt_state = restored["params"], restored["opt_state"]
    trainer.steps_done = info.step


COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
HLO_COLLECTIVE = re.compile(
    rf"^\s*(?:ROOT )?%?[\w.-]+ = (?P<shape>.*?) (?P<kind>{'|'.join(COLLECTIVES)})(?:-start)?\((?P<rest>.*)$"
)
"""An instruction line of an optimised HLO module that runs a collective (an async pair counted by its start);
the result shape may be a tuple, with `/*index=5*/` comments inside."""
SHAPE = re.compile(r"(?P<dtype>[a-z]+\d+)\[(?P<dims>[\d,]*)\]")
DTYPE_BYTES = {"f64": 8, "f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "s64": 8, "pred": 1, "s8": 1, "u8": 1}


@dataclass(frozen=True)
class Collective:
    """One collective of a compiled program: its kind, the bytes of its result, the devices of one group."""

    kind: str
    result_bytes: int
    group: int


def hlo_collectives(hlo_text: str, devices: int) -> list[Collective]:
    """The collectives an optimised HLO module (`ParallelTrainer.compiled_text`) runs, in order."""
    found = []
    for line in hlo_text.splitlines():
        match = HLO_COLLECTIVE.search(line)
        if match:
            result_bytes = sum(
                DTYPE_BYTES.get(shape["dtype"], 4) * math.prod(int(d) for d in shape["dims"].split(",") if d)
                for shape in SHAPE.finditer(match["shape"])
            )
            found.append(Collective(match["kind"], result_bytes, group_size(match["rest"], devices)))
    return found


def group_size(attributes: str, devices: int) -> int:
    """The replica group size of an HLO collective: `replica_groups=mesh['axis_0'=2,'axis_1'=2] {'axis_1'}` (the
    listed axes' sizes multiplied), `replica_groups=[a,b]<=[n]` (b) or `{{0,1},{2,3}}` (a group's length)."""
    named = re.search(r"replica_groups=mesh\[([^\]]*)\] \{([^}]*)\}", attributes)
    if named:
        sizes = {axis: int(size) for axis, size in re.findall(r"'(\w+)'=(\d+)", named[1])}
        return math.prod(sizes[axis] for axis in re.findall(r"'(\w+)'", named[2]))
    iota = re.search(r"replica_groups=\[(\d+),(\d+)\]", attributes)
    if iota:
        return int(iota[2])
    listed = re.search(r"replica_groups=\{\{([\d,]*)\}", attributes)
    if listed and listed[1]:
        return len(listed[1].split(","))
    return devices


def collectives(hlo_text: str) -> dict[str, int]:
    """How many of each collective an optimised HLO module holds."""
    kinds = [collective.kind for collective in hlo_collectives(hlo_text, devices=1)]
    return {name: kinds.count(name) for name in COLLECTIVES}
