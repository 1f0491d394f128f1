"""Parallel training proven: every strategy of `rosetta_common.parallel` in each framework's own engine equals the
single-device step and the other framework's sharded step.

The sharded runs happen in their own processes (tests/parallel_worker.py): JAX on 4 simulated CPU devices, torch as
4 gloo ranks under torchrun (localhost only; each launch bounded in time, its process group killed on a timeout).
The single-device references run here, with each framework's plain Trainer. float64, 3 AdamW steps (warm-up and
cosine schedule) from the same canonical weights and batches.

Bounds, relative: losses |a - b| / |a| and gradients max|a - b| / max|a| per tensor within 1e-13; weights and both
Adam moments within 1e-13 as ||a - b|| / ||a|| per tensor, and within 1e-12 as max|a - b| / max|a|. Measured on a
2-core AMD EPYC (docs/pages/parallel.md): losses <= 4.3e-16, gradients <= 2.2e-14, weights <= 8.1e-15 (L2)
and 1.4e-13 (max-abs, torch tensor parallel), moments <= 1.7e-14. A sharded step sums the same numbers in another
order (the data-parallel gradient mean, the row-parallel partial sums); AdamW then divides each element by its own
sqrt(v), so an element whose gradient is a near-cancellation (attn.k.kernel's, whose keys-summed part is zero)
takes a full-size step from a gradient known to fewer digits: its weight differs by up to lr x that element's
relative error. The L2 measure weighs those elements by their size, max-abs not.
`attn.k.bias` has an exactly-zero gradient (tests/test_gradients.py): its gradients and first moments are asserted
to be rounding noise (<= 1e-14 of the largest gradient), and its weights are compared with their exact trajectory
(weight decay alone) within 1e-9, as tests/test_optimizer.py does: AdamW divides that noise by sqrt(v) + eps ~ eps
and so turns it into steps of up to lr * 1e-9.

float32 (stated, not asserted here): `rosetta train` float32, default model, 30 steps, clipping on, 2-core AMD EPYC:
sharded vs single device in the same framework (fsdp on 4, fsdp+tp on 2x2) <= 4.4e-7 relative in the losses and
<= 1.8e-7 (relative L2) in the final weights; sharded torch vs sharded flax 3.3e-6 and 2.1e-5, as on one device
(3.4e-6, 2.1e-5: the frameworks' own float32 rounding and clip formulas, rosetta_tools.sidebyside.loop).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import parallel_worker as worker
import pytest
import torch
from jax.sharding import PartitionSpec

import rosetta_flax
import rosetta_torch
from rosetta_common import EncoderConfig, save_canonical
from rosetta_common.name_tables import FLAX_ENCODER, TORCH_ENCODER
from rosetta_common.parallel import SHARDS_PARAMETERS_OVER_DATA, Mesh, native_plan, plan
from rosetta_common.tolerances import relative_l2
from rosetta_tools.sidebyside.task import batch_parts

CONFIG = EncoderConfig(
    vocab_size=16, d_model=32, n_heads=4, n_layers=2, d_ff=64, max_len=12, padding_idx=0, dropout=0.0
)
MODERN = EncoderConfig(
    vocab_size=16, d_model=32, n_heads=4, n_layers=3, d_ff=64, max_len=12, padding_idx=0, dropout=0.0,
    activation="gelu", norm_first=True, scale_embedding=False, positions="rotary", embedding_norm=True,
    feed_forward="glu", attention_bias=False, mlp_bias=False, norm_bias=False, rope_theta=160000.0,
    local_rope_theta=10000.0, local_window=4, global_every=2, first_attention_norm=False,
)  # fmt: skip
MODERN_CASES = ("tp", "fsdp+tp")  # q, k, v whole heads and ffn.in with its gate's columns per rank; FSDP over both
RELATIVE_BOUND = 1e-13
ELEMENT_BOUND = 1e-12  # weights and moments, max-abs: see the module docstring
ZERO_GRADIENT_NOISE = 1e-14  # of the largest gradient, as tests/test_gradients.py
ZERO_GRADIENT_WEIGHT_BOUND = 1e-9  # k.bias against its exact trajectory, as tests/test_optimizer.py
LAUNCH_TIMEOUT_S = 300
FRAMEWORKS = ("torch", "flax")
TABLES = {"torch": TORCH_ENCODER, "flax": FLAX_ENCODER}


def has_zero_gradient(name: str) -> bool:
    return name.endswith(".attn.k.bias")


def run_bounded(command: list[str], timeout: float = LAUNCH_TIMEOUT_S) -> None:
    """Run `command` in its own process group; kill the whole group if it outlives `timeout`."""
    run_bounded_together([command], timeout)


def run_bounded_together(commands: list[list[str]], timeout: float = LAUNCH_TIMEOUT_S) -> None:
    """Start `commands` side by side, each in its own process group; kill every group still running after
    `timeout` seconds (or once one has failed), so no process outlives the test."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    processes = [
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, env=env
        )
        for command in commands
    ]
    deadline = time.monotonic() + timeout
    outputs = []
    try:
        for process in processes:
            try:
                outputs.append(process.communicate(timeout=max(deadline - time.monotonic(), 1))[0])
            except subprocess.TimeoutExpired:
                pytest.fail(f"{' '.join(process.args)} ran past {timeout} s and was killed")
            if process.returncode != 0:
                pytest.fail(f"{' '.join(process.args)} failed:\n{outputs[-1][-6000:]}")
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.communicate()


def launch_workers(out: Path, config: EncoderConfig, *only: str) -> Path:
    """The worker's results for both frameworks (one launch each) from the same initial weights of `config`: every
    case, or `only` those."""
    torch.manual_seed(3)
    model = rosetta_torch.Encoder(config, dtype=torch.float64)
    save_canonical(out / "initial.safetensors", config, rosetta_torch.to_canonical(model))
    worker_path = str(Path(worker.__file__).resolve())
    cases = [",".join(only)] if only else []
    run_bounded([sys.executable, worker_path, "flax", str(out), *cases])
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={worker.DEVICES}"]
    run_bounded([*torchrun, worker_path, "torch", str(out), *cases])
    return out


@pytest.fixture(scope="module")
def sharded_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return launch_workers(tmp_path_factory.mktemp("parallel"), CONFIG)


@pytest.fixture(scope="module")
def modern_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ModernBERT-like encoder (rotary, a local layer, GeGLU, no biases) on the tensor-parallel strategies."""
    return launch_workers(tmp_path_factory.mktemp("parallel-modern"), MODERN, *MODERN_CASES)


def load_result(out: Path, framework: str, case: str) -> dict[str, Any]:
    with np.load(out / f"{framework}-{case}.npz") as arrays:
        data = {key: arrays[key] for key in arrays.files}
    result: dict[str, Any] = {"loss": data.pop("loss"), "grads": {}, "weight": {}, "mu": {}, "nu": {}}
    for key, value in data.items():
        group, rest = key.split(".", 1)
        if group == "grad":
            step, name = rest.split(".", 1)
            result["grads"].setdefault(int(step), {})[name] = value
        else:
            result[group][rest] = value
    facts = out / f"{framework}-{case}.json"
    result.update(json.loads(facts.read_text()) if facts.exists() else {})
    return result


@pytest.fixture(scope="module")
def single_device(sharded_runs: Path) -> dict[tuple[str, bool], dict[str, Any]]:
    return single_device_runs(sharded_runs, clippings=(False, True))


@pytest.fixture(scope="module")
def packed_single_device(sharded_runs: Path) -> dict[str, dict[str, Any]]:
    """Each framework's plain Trainer on the packed cases' batches (the same for every packed case)."""
    from rosetta_common import load_canonical

    config, weights = load_canonical(sharded_runs / "initial.safetensors")
    batches = worker.batches(next(iter(worker.PACKED_CASES)))
    results = {
        framework: train_single(framework, weights, batches, worker.adamw(False), config) for framework in FRAMEWORKS
    }
    return {**results, "start": weights, "batches": batches}


@pytest.fixture(scope="module")
def modern_single_device(modern_runs: Path) -> dict[tuple[str, bool], dict[str, Any]]:
    return single_device_runs(modern_runs, clippings=(False,))


def single_device_runs(out: Path, clippings: tuple[bool, ...]) -> dict[tuple[str, bool], dict[str, Any]]:
    """Each framework's plain single-device Trainer on the same weights and batches (with and without clipping)."""
    from rosetta_common import load_canonical

    config, weights = load_canonical(out / "initial.safetensors")
    batches = [worker.task().batch(step) for step in range(worker.STEPS)]
    results = {}
    for framework in FRAMEWORKS:
        for clipped in clippings:
            results[framework, clipped] = train_single(framework, weights, batches, worker.adamw(clipped), config)
    results["start"] = weights  # type: ignore[index]
    return results


def train_single(
    framework: str, weights: dict, batches: list, adamw: Any, config: EncoderConfig = CONFIG
) -> dict[str, Any]:
    losses, grads = [], {}
    if framework == "torch":
        from rosetta_torch.training import Trainer, loss_and_gradients

        trainer = Trainer(rosetta_torch.from_canonical(config, weights), adamw)
        for step, batch in enumerate(batches):
            ids, targets, mask, segments = batch_parts(batch)
            as_torch = [None if a is None else torch.from_numpy(a) for a in (ids, targets, mask, segments)]
            _, grads[step] = loss_and_gradients(
                trainer.model, as_torch[0], as_torch[1], loss_mask=as_torch[2], segment_ids=as_torch[3]
            )
            losses.append(float(trainer.step(ids, targets, mask, segment_ids=segments)))
        final = rosetta_torch.to_canonical(trainer.model)
    else:
        from rosetta_flax.training import Trainer, loss_and_gradients, params_to_canonical

        trainer = Trainer(rosetta_flax.from_canonical(config, weights), adamw)
        for step, batch in enumerate(batches):
            ids, targets, mask, segments = batch_parts(batch)
            _, grads[step] = loss_and_gradients(trainer.model, ids, targets, loss_mask=mask, segment_ids=segments)
            losses.append(float(trainer.step(ids, targets, mask, segment_ids=segments)))
        final = params_to_canonical(config, trainer.params)
    state = trainer.optimizer_state()
    return {"loss": np.asarray(losses), "grads": grads, "weight": final, "mu": state.mu, "nu": state.nu}


def relative(a: np.ndarray, b: np.ndarray) -> float:
    scale = float(np.abs(a).max())
    return float(np.abs(a - b).max()) / scale if scale else float(np.abs(b).max())


def exact_decay(start: np.ndarray, adamw: Any, steps: int) -> np.ndarray:
    value = start.copy()
    for step in range(steps):
        value = value * (1.0 - adamw.learning_rate(step) * adamw.weight_decay)
    return value


def assert_same_run(
    ours: dict[str, Any], reference: dict[str, Any], start: dict, adamw: Any, what: str
) -> dict[str, float]:
    """Losses and each step's gradients within RELATIVE_BOUND (max-abs), weights and moments within RELATIVE_BOUND
    (relative L2) and ELEMENT_BOUND (max-abs); the zero gradients as noise. Returns the worst of each measure."""
    worst = {"loss": float(np.max(np.abs(ours["loss"] - reference["loss"]) / np.abs(reference["loss"])))}
    assert worst["loss"] <= RELATIVE_BOUND, f"{what}: losses differ by {worst['loss']:.1e}"
    worst["gradient"] = 0.0
    for step, grads in ours["grads"].items():
        largest = max(float(np.abs(g).max()) for g in grads.values())
        for name, grad in grads.items():
            if has_zero_gradient(name):
                assert np.abs(grad).max() <= ZERO_GRADIENT_NOISE * largest, f"{what}: {name} step {step} not noise"
                continue
            difference = relative(reference["grads"][step][name], grad)
            assert difference <= RELATIVE_BOUND, f"{what}: gradient {name} step {step}: {difference:.1e}"
            worst["gradient"] = max(worst["gradient"], difference)
    steps = len(ours["loss"])
    for group in ("weight", "mu", "nu"):
        worst[f"{group} l2"] = worst[f"{group} element"] = 0.0
        for name, value in ours[group].items():
            if has_zero_gradient(name):
                if group == "weight":
                    exact = exact_decay(start[name], adamw, steps)
                    assert relative(exact, value) <= ZERO_GRADIENT_WEIGHT_BOUND, f"{what}: {name} off its trajectory"
                elif group == "mu":
                    assert np.abs(value).max() <= ZERO_GRADIENT_NOISE, f"{what}: mu of {name} is not noise"
                continue
            l2 = relative_l2(value, reference[group][name], reference[group][name])
            element = relative(reference[group][name], value)
            assert l2 <= RELATIVE_BOUND, f"{what}: {group} {name}: relative L2 {l2:.1e}"
            assert element <= ELEMENT_BOUND, f"{what}: {group} {name}: max-abs {element:.1e}"
            worst[f"{group} l2"] = max(worst[f"{group} l2"], l2)
            worst[f"{group} element"] = max(worst[f"{group} element"], element)
    # Not vacuous: the weights moved far more than the bound.
    moved = min(relative(start[n], v) for n, v in ours["weight"].items() if not has_zero_gradient(n))
    assert moved > 1e6 * RELATIVE_BOUND
    return worst


def expected_local_shape(
    framework: str, strategy: str, mesh: Mesh, name: str, shape: tuple[int, ...], config: EncoderConfig = CONFIG
) -> list[int]:
    """One device's part of native tensor `name` as the plan lays it out. FSDP2 splits every parameter over
    `data`: where the plan leaves one whole over data (fsdp+tp: the column-split biases), torch splits dim 0."""
    axes = native_plan(TABLES[framework], config, plan(config, strategy, mesh))[name]
    local = [size // (getattr(mesh, axis) if axis else 1) for size, axis in zip(shape, axes, strict=True)]
    if framework == "torch" and strategy in SHARDS_PARAMETERS_OVER_DATA and "data" not in axes:
        local[0] //= mesh.data
    return local


def assert_laid_out(
    result: dict[str, Any], framework: str, strategy: str, mesh: Mesh, config: EncoderConfig = CONFIG
) -> None:
    """Every parameter as the engine holds it has the local shape the plan gives (a replicated run fails this)."""
    shapes = TABLES[framework].native_shapes(config)
    assert set(result["placements"]) == set(shapes)
    plan_axes = native_plan(TABLES[framework], config, plan(config, strategy, mesh))
    for name, held in result["placements"].items():
        expected = expected_local_shape(framework, strategy, mesh, name, shapes[name], config)
        assert held["local_shape"] == expected, f"{framework} {strategy}: {name} held {held}, plan says {expected}"
        if framework == "flax":  # the PartitionSpec JAX holds is the plan's
            assert held["placements"] == str(PartitionSpec(*plan_axes[name])), f"{strategy}: {name} {held}"


def expected_collectives(n_layers: int) -> dict[str, dict[str, int]]:
    """strategy: the least each compiled / profiled step must run (names as XLA spells them)."""
    return {
        "dp": {"all-reduce": 1},  # the gradients
        "fsdp": {"all-gather": 1, "all-reduce": 1},  # the parameters gathered, the gradients reduced
        "tp": {"all-reduce": 2 * n_layers},  # every row-parallel linear's partial sums (attn.out, ffn.out)
        "fsdp+tp": {"all-gather": 1, "all-reduce": 2 * n_layers},
        "dp+tp": {"all-reduce": 2 * n_layers + 1},
    }


def assert_collectives(result: dict[str, Any], strategy: str, n_layers: int = CONFIG.n_layers) -> None:
    seen = {name.replace("_", "-"): count for name, count in result["collectives"].items()}
    for name, least in expected_collectives(n_layers)[strategy].items():
        assert seen.get(name, 0) >= least, f"{strategy}: {seen.get(name, 0)} {name}, expected >= {least}: {seen}"


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("case", list(worker.CASES))
def test_sharded_steps_equal_single_device(sharded_runs: Path, single_device: dict, framework: str, case: str) -> None:
    strategy, mesh, clipped = worker.CASES[case]
    result = load_result(sharded_runs, framework, case)
    reference = single_device[framework, clipped]
    assert_same_run(result, reference, single_device["start"], worker.adamw(clipped), f"{framework} {case}")
    assert_laid_out(result, framework, strategy, Mesh(**mesh))
    assert_collectives(result, strategy)


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("case", list(worker.PACKED_CASES))
def test_packed_sharded_steps_equal_single_device(
    sharded_runs: Path, packed_single_device: dict, framework: str, case: str
) -> None:
    """Packed batches (several sequences per row, segment ids split over `data` with the rows): the same 3 steps as
    one device, laid out as the plan says, and torch == flax."""
    strategy, mesh = worker.PACKED_CASES[case]
    for token_ids, _, _, segments in packed_single_device["batches"]:  # not vacuous: rows hold several sequences
        assert token_ids.shape[0] % worker.DEVICES == 0 and segments.max() >= 2 and (segments.max(axis=1) == 0).any()
    result = load_result(sharded_runs, framework, case)
    start, adamw = packed_single_device["start"], worker.adamw(False)
    assert_same_run(result, packed_single_device[framework], start, adamw, f"{framework} {case}")
    assert_laid_out(result, framework, strategy, Mesh(**mesh))
    assert_collectives(result, strategy)
    other = load_result(sharded_runs, "flax" if framework == "torch" else "torch", case)
    assert_same_run(result, other, start, adamw, f"torch vs flax {case}")


@pytest.mark.parametrize("case", [case for case, (_, _, clipped) in worker.CASES.items() if not clipped])
def test_sharded_torch_equals_sharded_flax(sharded_runs: Path, single_device: dict, case: str) -> None:
    """Without binding clipping: torch's clip divides by |g| + 1e-6, optax's by |g| (tests/test_optimizer.py)."""
    torch_result, flax_result = (load_result(sharded_runs, framework, case) for framework in FRAMEWORKS)
    assert_same_run(torch_result, flax_result, single_device["start"], worker.adamw(False), f"torch vs flax {case}")


def test_clipping_binds(single_device: dict) -> None:
    """The clipped case is not vacuous: its runs differ from the unclipped ones by far more than the bound."""
    for framework in FRAMEWORKS:
        clipped, free = single_device[framework, True], single_device[framework, False]
        assert relative(free["weight"]["embedding.weight"], clipped["weight"]["embedding.weight"]) > 1e-3


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_checkpoint_restored_onto_another_mesh(sharded_runs: Path, single_device: dict, framework: str) -> None:
    """Saved sharded at fsdp data=4 after 2 steps (Orbax / torch.distributed.checkpoint), restored at fsdp+tp 2x2,
    one more step: the single-device run's 3 steps."""
    result = load_result(sharded_runs, framework, "reshard")
    reference = single_device[framework, False]
    assert_same_run(result, reference, single_device["start"], worker.adamw(False), f"{framework} resharded")
    written = sorted(path.name for path in (sharded_runs / f"{framework}-sharded").iterdir())
    assert written == ["run.json", "state"]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_replicated_run_fails_the_layout_and_collective_checks(sharded_runs: Path, framework: str) -> None:
    """The checks above can fail: the dp run (parameters whole on every device) does not pass as fsdp or tp."""
    replicated = load_result(sharded_runs, framework, "dp")
    for strategy, mesh in (("fsdp", Mesh(data=4)), ("tp", Mesh(model=4))):
        with pytest.raises(AssertionError):
            assert_laid_out(replicated, framework, strategy, mesh)
    with pytest.raises(AssertionError):
        assert_collectives(replicated, "tp")


@pytest.mark.parametrize("case", [case for case, (_, _, clipped) in worker.CASES.items() if not clipped])
def test_compiled_traffic_matches_the_cost_model(sharded_runs: Path, case: str) -> None:
    """The bytes the compiled JAX step sends (its HLO's collectives, ring algorithm) against
    `rosetta_tools.distributed.costs`' model: within 5% plus 2 KiB (the loss and the clipping scalars and the
    float64 step's small extra reductions the model leaves out)."""
    from rosetta_tools.distributed.costs import cost

    strategy, mesh, _ = worker.CASES[case]
    mesh = Mesh(**mesh)
    tokens = worker.BATCH_SIZE // mesh.data * CONFIG.max_len
    analytical = cost(CONFIG, strategy, mesh, tokens).sent_bytes * 2  # float64: twice the model's float32 bytes
    measured = load_result(sharded_runs, "flax", case)["sent_bytes"]
    assert abs(measured - analytical) <= 0.05 * analytical + 2048, f"{case}: {measured:.0f} vs {analytical:.0f} bytes"


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("case", MODERN_CASES)
def test_a_modernbert_like_encoder_sharded_equals_single_device(
    modern_runs: Path, modern_single_device: dict, framework: str, case: str
) -> None:
    """Rotary positions, a local layer, GeGLU and no biases under tensor parallelism (and FSDP with it): the same
    3 steps as one device, laid out as the plan says (ffn.gate split with ffn.in, whole heads), torch == flax."""
    strategy, mesh, _ = worker.CASES[case]
    result = load_result(modern_runs, framework, case)
    start = modern_single_device["start"]
    assert_same_run(result, modern_single_device[framework, False], start, worker.adamw(False), f"{framework} {case}")
    assert_laid_out(result, framework, strategy, Mesh(**mesh), MODERN)
    assert_collectives(result, strategy, MODERN.n_layers)
    other = load_result(modern_runs, "flax" if framework == "torch" else "torch", case)
    assert_same_run(result, other, start, worker.adamw(False), f"torch vs flax {case}")
