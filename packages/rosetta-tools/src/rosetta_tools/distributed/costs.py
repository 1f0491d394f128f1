"""What each strategy costs per device, on paper, and what the compiled JAX step really sends.

`python -m rosetta_tools.distributed.costs` prints the tables of docs/pages/parallel.md: for paper-base, bert-base
and a 24-layer d_model 1024 model at 8, 64 and 512 devices, the parameter + AdamW memory per device (float32:
weights and two moments, 12 bytes a parameter, laid out by `rosetta_common.parallel.plan`) and the bytes one device
sends per step (ring collectives: an all-reduce of n bytes over g devices sends 2 n (g - 1) / g, an all-gather or
reduce-scatter n (g - 1) / g). With `--measure` it also compiles the JAX step of the CLI's default model on 4
simulated CPU devices per strategy and sums the same ring bytes over the collectives in its optimised HLO.

The model of the traffic, per step, for a data shard of `BATCH` sequences of `SEQ` tokens:
- data axis (g = data): dp all-reduces every gradient; fsdp all-gathers the parameters for the forward and again
  for the backward, and reduce-scatters the gradients (ZeRO-3 / FSDP with resharding after the forward).
- model axis (g = model): per layer, the forward all-reduces the row-parallel outputs (attn.out, ffn.out) and the
  backward each column-parallel layer's input gradient (q, k, v and ffn.in: q, k and v are three linears, so
  three all-reduces where a fused qkv would need one): six all-reduces of the [tokens, d_model] activations a
  layer. Both engines compile or run exactly these (tests/test_parallel.py counts them).
Not counted: the loss and clipping scalars, the embedding gathers, the activations' memory.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass

from rosetta_common import EncoderConfig, expected_shapes
from rosetta_common.parallel import (
    SHARDS_PARAMETERS_OVER_DATA,
    STRATEGIES,
    TENSOR_PARALLEL,
    Mesh,
    PlanError,
    plan,
)
from rosetta_tools.throughput.presets import PRESETS

BYTES = 4  # float32
STATE_COPIES = 3  # weights, AdamW's two moments
BATCH, SEQ = 8, 128  # sequences and tokens per data shard
MODELS = {
    "paper-base": PRESETS["paper-base"].config,
    "bert-base": PRESETS["bert-base"].config,
    "24L-d1024": EncoderConfig(30522, 1024, 16, 24, 4096, max_len=512, activation="gelu", dropout=0.0),
}
DEVICE_COUNTS = (8, 64, 512)
MAX_MODEL_AXIS = 8  # tensor parallelism stays within a node of 8 devices
TP_ALL_REDUCES_PER_LAYER = 6  # forward: attn.out, ffn.out; backward: q, k, v, ffn.in


@dataclass(frozen=True)
class Cost:
    mesh: Mesh
    state_bytes: float  # parameters + AdamW moments on one device
    sent_bytes: float  # per step, one device


def ring(kind: str, payload: float, group: int) -> float:
    """Bytes one device sends for one ring collective of `payload` bytes over `group` devices."""
    if group <= 1:
        return 0.0
    return payload * (group - 1) / group * (2 if kind == "all-reduce" else 1)


def local_parameters(config: EncoderConfig, strategy: str, mesh: Mesh) -> float:
    """Parameters on one device: each tensor divided by the mesh axes that split it."""
    total = 0.0
    for name, axes in plan(config, strategy, mesh).items():
        size = math.prod(expected_shapes(config)[name])
        total += size / math.prod(getattr(mesh, axis) for axis in axes if axis is not None)
    return total


def model_axis_for(config: EncoderConfig, devices: int) -> int:
    """The largest model-axis size <= 8 that divides the devices, n_heads and d_ff."""
    return max(
        m for m in range(1, MAX_MODEL_AXIS + 1) if not devices % m and not config.n_heads % m and not config.d_ff % m
    )


def mesh_for(config: EncoderConfig, strategy: str, devices: int) -> Mesh:
    if strategy in ("dp", "fsdp"):
        return Mesh(data=devices)
    if strategy == "tp":
        return Mesh(model=devices)
    model = model_axis_for(config, devices)
    return Mesh(data=devices // model, model=model)


def cost(config: EncoderConfig, strategy: str, mesh: Mesh, tokens_per_shard: int = BATCH * SEQ) -> Cost:
    """Memory and traffic per device for `strategy` on `mesh`, a data shard being `tokens_per_shard` tokens."""
    local = local_parameters(config, strategy, mesh)
    sent = 0.0
    if strategy in SHARDS_PARAMETERS_OVER_DATA:  # the model-axis shard of every tensor, gathered and scattered
        full_on_model = local * mesh.data
        sent += 2 * ring("all-gather", full_on_model * BYTES, mesh.data)
        sent += ring("reduce-scatter", full_on_model * BYTES, mesh.data)
    elif mesh.data > 1:
        sent += ring("all-reduce", local * BYTES, mesh.data)
    if strategy in TENSOR_PARALLEL:
        activations = tokens_per_shard * config.d_model * BYTES
        sent += TP_ALL_REDUCES_PER_LAYER * config.n_layers * ring("all-reduce", activations, mesh.model)
    return Cost(mesh, STATE_COPIES * BYTES * local, sent)


def table_rows() -> Iterator[list[str]]:
    for name, config in MODELS.items():
        for strategy in STRATEGIES:
            row = [name, strategy]
            for devices in DEVICE_COUNTS:
                try:
                    result = cost(config, strategy, mesh_for(config, strategy, devices))
                except PlanError as err:
                    reason = re.search(r"(\w+) \((\d+)\) is not divisible by mesh axis '(\w+)' \((\d+)\)", str(err))
                    assert reason is not None, err
                    row.append(f"n/a: {reason[1]} {reason[2]} not divisible by {reason[3]}={reason[4]}")
                    continue
                row.append(
                    f"{result.mesh.data}x{result.mesh.model}: {mib(result.state_bytes)}, {mib(result.sent_bytes)}"
                )
            yield row


def mib(size: float) -> str:
    value = size / 2**20
    return f"{value:,.0f} MiB" if value >= 10 else f"{value:.1f} MiB"


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def measured_sent_bytes(hlo_text: str, devices: int) -> float:
    """Ring bytes one device sends for the collectives in an optimised HLO module (an all-gather's result is the
    gathered tensor, a reduce-scatter's the scattered part, so its payload is result x group)."""
    from rosetta_flax.parallel import hlo_collectives

    sent = 0.0
    for collective in hlo_collectives(hlo_text, devices):
        kind, payload, group = collective.kind, collective.result_bytes, collective.group
        if kind == "reduce-scatter":
            payload *= group
        if kind == "all-to-all":
            sent += payload * (group - 1) / group
        elif kind == "collective-permute":
            sent += payload
        else:
            sent += ring(kind, payload, group)
    return sent


def measure(devices: int = 4) -> list[list[str]]:
    """Compile the CLI's default model's float32 step on `devices` simulated devices per strategy; return rows
    of (strategy, mesh, analytical KiB, measured KiB)."""
    import jax

    jax.config.update("jax_num_cpu_devices", devices)
    from flax import nnx

    import rosetta_flax
    from rosetta_common.training import AdamWConfig
    from rosetta_flax.parallel import ParallelTrainer, device_mesh
    from rosetta_tools.sidebyside.task import ReversalTask

    task = ReversalTask(batch_size=64)
    config = EncoderConfig(16, 64, 4, 2, 128, max_len=task.max_len, padding_idx=0, dropout=0.0)
    weights = rosetta_flax.to_canonical(rosetta_flax.Encoder(config, rngs=nnx.Rngs(0)))
    rows = []
    for strategy in STRATEGIES:
        mesh = {"dp": Mesh(devices), "fsdp": Mesh(devices), "tp": Mesh(model=devices)}.get(strategy, Mesh(2, 2))
        analytical = cost(config, strategy, mesh, task.batch_size // mesh.data * task.max_len).sent_bytes
        trainer = ParallelTrainer(
            rosetta_flax.from_canonical(config, weights), AdamWConfig(), strategy, device_mesh(mesh)
        )
        measured = measured_sent_bytes(trainer.compiled_text(*task.batch(0)), devices)
        rows.append([strategy, f"{mesh.data}x{mesh.model}", f"{analytical / 2**10:,.1f}", f"{measured / 2**10:,.1f}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure", action="store_true", help="also compile the JAX step on 4 simulated devices")
    args = parser.parse_args()
    header = ["model", "strategy", *(f"{n} devices: mesh, state/device, sent/device/step" for n in DEVICE_COUNTS)]
    print(markdown(header, list(table_rows())))
    if args.measure:
        print()
        print(markdown(["strategy", "mesh", "analytical KiB", "measured KiB (HLO)"], measure()))


if __name__ == "__main__":
    main()
