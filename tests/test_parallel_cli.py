"""`rosetta train --framework torch|flax --parallel STRATEGY --mesh data=N,model=M`: the commands end to end, the
clear errors before any work, and checkpoints never half-written.

End to end (float64, clipping off so that the frameworks' clip formulas do not differ): flax fsdp on 4 simulated
devices stops at step 2 and writes its sharded and canonical checkpoints; flax resumes the sharded one on fsdp+tp
2x2; torch resumes flax's canonical one on dp+tp 2x2 under torchrun. Each equals the single-device torch run of the
same command within 1e-13 (losses relative; final weights and AdamW moments relative L2, as tests/test_parallel.py).
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
import pytest
import test_parallel
import torch.distributed.checkpoint as dcp

import rosetta_flax
import rosetta_torch
from rosetta_common.parallel import Mesh
from rosetta_common.tolerances import relative_l2
from rosetta_common.training import AdamWConfig, load_training_state
from rosetta_tools.cli import main
from rosetta_tools.sidebyside.task import ReversalTask

RELATIVE_BOUND = test_parallel.RELATIVE_BOUND
TRAIN = ["train", "--dtype", "float64", "--steps", "4", "--warmup", "1", "--batch-size", "8", "--clip-norm", "0"]
TRAIN += ["--d-model", "32", "--n-heads", "4", "--d-ff", "64", "--vocab-size", "12", "--max-len", "10"]


def losses(folder: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (folder / "log.jsonl").read_text().splitlines()]


def rosetta(*args: str) -> list[str]:
    return [sys.executable, "-m", "rosetta_tools", *args]


def torchrun(processes: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("train")
    flax = [*TRAIN, "--framework", "flax", "--devices", "4"]
    test_parallel.run_bounded(
        rosetta(*flax, "--parallel", "fsdp", "--mesh", "data=4", "--stop-at", "2", "--out", str(out / "a"))
    )
    test_parallel.run_bounded(
        rosetta(
            *flax,
            "--parallel",
            "fsdp+tp",
            "--mesh",
            "data=2,model=2",
            "--resume",
            str(out / "a" / "sharded"),
            "--out",
            str(out / "b"),
        )
    )
    torch_args = [*TRAIN, "--framework", "torch", "--parallel", "dp+tp", "--mesh", "data=2,model=2"]
    command = [
        *torchrun(4),
        "-m",
        "rosetta_tools",
        *torch_args,
        "--resume",
        str(out / "a" / "checkpoint.safetensors"),
        "--out",
        str(out / "c"),
    ]
    test_parallel.run_bounded(command)
    assert main([*TRAIN, "--framework", "torch", "--out", str(out / "single")]) == 0
    return out


def final_state(folder: Path) -> tuple[dict[str, np.ndarray], object]:
    return load_training_state(folder / "checkpoint.safetensors")


def assert_same_state(folder: Path, reference: Path) -> None:
    (weights, state), (ref_weights, ref_state) = final_state(folder), final_state(reference)
    assert state.step == ref_state.step == 4
    for ours, theirs in ((weights, ref_weights), (state.mu, ref_state.mu), (state.nu, ref_state.nu)):
        for name, value in ours.items():
            if test_parallel.has_zero_gradient(name):
                continue  # AdamW amplifies its rounding noise: tests/test_parallel.py checks it against the exact path
            assert relative_l2(value, theirs[name], theirs[name]) <= RELATIVE_BOUND, f"{folder.name}: {name}"


def assert_same_losses(ours: list[float], reference: list[float]) -> None:
    assert len(ours) == len(reference)
    worst = max(abs(a - b) / abs(b) for a, b in zip(ours, reference, strict=True))
    assert worst <= RELATIVE_BOUND, f"losses differ by {worst:.1e}"


def test_flax_stops_then_resumes_on_another_mesh(runs: Path) -> None:
    assert_same_losses(losses(runs / "a") + losses(runs / "b"), losses(runs / "single"))
    assert_same_state(runs / "b", runs / "single")
    summary = json.loads((runs / "b" / "summary.json").read_text())
    assert (summary["strategy"], summary["mesh"], summary["first_step"]) == ("fsdp+tp", "data=2,model=2", 2)
    assert summary["collectives"]["all-gather"] > 0 and summary["collectives"]["all-reduce"] > 0
    assert summary["placements"]["layers.0.attn.q.kernel"]["placements"] == "P('data', 'model')"


def test_torch_resumes_flax_canonical_checkpoint_on_a_mesh(runs: Path) -> None:
    """Only rank 0 writes: one log line per step."""
    assert_same_losses(losses(runs / "c"), losses(runs / "single")[2:])
    assert_same_state(runs / "c", runs / "single")
    summary = json.loads((runs / "c" / "summary.json").read_text())
    assert summary["placements"]["layers.0.attn.q.weight"]["local_shape"] == [16, 32]  # 32 rows over model=2
    assert sorted(path.name for path in (runs / "c").iterdir()) == [
        "checkpoint.safetensors",
        "log.jsonl",
        "sharded",
        "summary.json",
    ]


def test_flax_on_two_processes(runs: Path, tmp_path: Path) -> None:
    """2 JAX processes x 2 devices on localhost (jax.distributed.initialize, gloo between them), fsdp+tp: the
    single-device run; process 0 alone writes."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    common = [*TRAIN, "--framework", "flax", "--parallel", "fsdp+tp", "--mesh", "data=2,model=2", "--devices", "2"]
    common += ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--out", str(tmp_path / "multi")]
    test_parallel.run_bounded_together([rosetta(*common, "--process-id", str(index)) for index in range(2)])
    assert_same_losses(losses(tmp_path / "multi"), losses(runs / "single"))
    assert_same_state(tmp_path / "multi", runs / "single")
    assert (tmp_path / "multi" / "sharded" / "run.json").is_file()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--parallel", "fsdp", "--mesh", "data=2"], "--parallel needs --framework torch or --framework flax"),
        (["--framework", "flax", "--parallel", "fsdp"], "--parallel fsdp needs --mesh"),
        (["--framework", "flax", "--parallel", "dp", "--mesh", "data=2"], "needs 2 JAX devices, but there are 1"),
        (["--framework", "torch", "--parallel", "dp", "--mesh", "data=2"], "this launch has 1 (run it under torchrun)"),
        (
            ["--framework", "flax", "--parallel", "dp", "--mesh", "data=3"],
            "batch size 8 is not divisible by mesh axis 'data' (3)",
        ),
        (
            ["--framework", "flax", "--parallel", "tp", "--mesh", "model=3"],
            "n_heads (4) is not divisible by mesh axis 'model' (3)",
        ),
        (
            ["--framework", "flax", "--parallel", "tp", "--mesh", "model=4", "--d-ff", "66"],
            "d_ff (66) is not divisible by mesh axis 'model' (4)",
        ),
        (
            ["--framework", "flax", "--parallel", "tp", "--mesh", "data=2"],
            "strategy 'tp' does not use mesh axis 'data'",
        ),
        (["--framework", "flax", "--mesh", "data=1"], "--mesh needs --parallel STRATEGY"),
        (["--framework", "torch", "--parallel", "dp", "--mesh", "data=1", "--devices", "2"], "--devices is for flax"),
    ],
)
def test_bad_plans_fail_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture, options: list[str], message: str
) -> None:
    out = tmp_path / "out"
    assert main([*TRAIN, *options, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--parallel", "zigzag"], "invalid choice: 'zigzag'"),
        (["--mesh", "data=2,pipe=2"], "unknown axis 'pipe'"),
        (["--mesh", "data"], "'data' is not AXIS=SIZE"),
        (["--mesh", "data=2,data=2"], "axis 'data' given twice"),
    ],
)
def test_unknown_strategy_or_axis(capsys: pytest.CaptureFixture, options: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*TRAIN, "--framework", "flax", *options])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_packed_batches_on_a_mesh_equal_one_device(tmp_path: Path) -> None:
    """`--pack` with one framework: flax on a data=2 mesh (its packed rows rounded up to a multiple of 2 with
    all-padding rows, which count nowhere) against torch on one device (its own number of rows): the same losses
    and final state, float64."""
    packed = [*TRAIN, "--pack"]
    rows = {
        m: [ReversalTask(12, 4, 10, 8, pack=True, row_multiple=m).batch(s)[0].shape[0] for s in range(4)]
        for m in (1, 2)
    }
    assert rows == {1: [8, 7, 7, 7], 2: [8, 8, 8, 8]}  # the task of TRAIN: the mesh's batches have rows added
    mesh = ["--framework", "flax", "--devices", "2", "--parallel", "dp", "--mesh", "data=2"]
    test_parallel.run_bounded(rosetta(*packed, *mesh, "--out", str(tmp_path / "mesh")))
    assert main([*packed, "--framework", "torch", "--out", str(tmp_path / "single")]) == 0
    assert_same_losses(losses(tmp_path / "mesh"), losses(tmp_path / "single"))
    assert_same_state(tmp_path / "mesh", tmp_path / "single")


def test_checkpoint_restored_onto_another_config_fails(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A sharded (data=1 on this process's one device) and a canonical checkpoint, resumed by a run of another
    config or framework: a clear error, nothing written."""
    flax = [*TRAIN, "--framework", "flax", "--stop-at", "1"]
    assert main([*flax, "--parallel", "dp", "--mesh", "data=1", "--out", str(tmp_path / "run")]) == 0
    cases = [
        (
            [*flax, "--parallel", "dp", "--mesh", "data=1", "--d-model", "16"],
            "sharded",
            "encoder config differs in d_model",
        ),
        (
            [*TRAIN, "--framework", "torch", "--parallel", "dp", "--mesh", "data=1"],
            "sharded",
            "written by flax, not torch",
        ),
        ([*flax, "--parallel", "dp", "--mesh", "data=1", "--lr", "0.5"], "sharded", "AdamW settings differ"),
        (flax, "sharded", "a sharded checkpoint resumes on a mesh"),
        ([*TRAIN, "--framework", "torch", "--d-ff", "32"], "checkpoint.safetensors", "another encoder or AdamW config"),
    ]
    for options, folder, message in cases:
        out = tmp_path / "resumed"
        assert main([*options, "--resume", str(tmp_path / "run" / folder), "--out", str(out)]) == 2, message
        assert message in capsys.readouterr().err
        assert not out.exists()


def test_flax_sharded_save_interrupted_leaves_the_old_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rosetta_flax import parallel

    trainer = parallel.ParallelTrainer(
        rosetta_flax.from_canonical(test_parallel.CONFIG, initial_weights()),
        AdamWConfig(),
        "dp",
        parallel.device_mesh(Mesh(data=1)),
    )
    target = parallel.save_sharded(trainer, tmp_path / "sharded")
    before = sorted(p.relative_to(target) for p in target.rglob("*"))

    def dies(self, directory, *args, **kwargs):
        Path(directory).mkdir(parents=True)
        (Path(directory) / "half").write_text("x")
        raise RuntimeError("killed mid-save")

    monkeypatch.setattr(ocp.StandardCheckpointer, "save", dies)
    with pytest.raises(RuntimeError, match="killed mid-save"):
        parallel.save_sharded(trainer, target)
    assert sorted(p.relative_to(target) for p in target.rglob("*")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sharded"]  # no temporary left behind


def test_torch_sharded_save_interrupted_leaves_the_old_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch.distributed as dist

    from rosetta_torch import parallel

    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        model = rosetta_torch.from_canonical(test_parallel.CONFIG, initial_weights())
        trainer = parallel.ParallelTrainer(model, AdamWConfig(), "fsdp", parallel.device_mesh(Mesh(data=1)))
        target = parallel.save_sharded(trainer, tmp_path / "out" / "sharded")
        before = sorted(p.relative_to(target) for p in target.rglob("*"))

        def dies(state, checkpoint_id, **kwargs):
            Path(checkpoint_id).mkdir(parents=True)
            (Path(checkpoint_id) / "__0_0.distcp").write_text("half")
            raise RuntimeError("killed mid-save")

        monkeypatch.setattr(dcp, "save", dies)
        with pytest.raises(RuntimeError, match="killed mid-save"):
            parallel.save_sharded(trainer, target)
        assert sorted(p.relative_to(target) for p in target.rglob("*")) == before
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["sharded"]
    finally:
        dist.destroy_process_group()


def initial_weights() -> dict[str, np.ndarray]:
    from rosetta_common.vectors import random_tensors

    return random_tensors(test_parallel.CONFIG, seed=5)
