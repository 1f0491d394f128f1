"""`rosetta bench` end to end on the tiny preset: the implementations run, are checked, and are written out.

Asserts that the harness works and that its JSON holds the expected, finite, positive figures; never a speed.
Every implementation row runs, the compiled peer included, but both compiled rows use `--torch-compile aot-eager`
(dynamo and AOTAutograd trace the forward and backward graphs, inductor generates no kernels): inductor's code
generation was most of this module's time (about 100 s quiet on two cores; past the old 300 s limit on a loaded
machine). The real inductor path is what `rosetta bench` runs by default and is measured there, not here.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from rosetta_common import EncoderConfig, save_canonical, tolerances
from rosetta_common.training import AdamWConfig
from rosetta_common.vectors import random_inputs, random_tensors
from rosetta_flax import from_canonical
from rosetta_tools import frameworks
from rosetta_tools.cli import main
from rosetta_tools.throughput import hf_bert, reference, reference_flax, reference_torch, runner
from rosetta_tools.throughput.flops import gemm_flops, gemm_shape, gemms_per_call, step_flops
from rosetta_tools.throughput.impls import IMPLS as IMPLS_BY_NAME
from rosetta_tools.throughput.inputs import make_inputs
from rosetta_tools.throughput.presets import PRESETS
from rosetta_tools.throughput.settings import BenchConfig

IMPLS = sorted(IMPLS_BY_NAME)  # every row the harness has
HANG_GUARD_S = 1800  # a hang guard only: this run takes about 40 s on two quiet cores, 6 min with both loaded


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("bench")
    command = [sys.executable, "-m", "rosetta_tools", "bench", "--preset", "tiny", "--batch", "2", "--seq", "16"]
    command += ["--padding", "0.25", "--repeats", "2", "--rounds", "1", "--warmup", "0", "--impl", *IMPLS]
    command += ["--torch-compile", "aot-eager", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=HANG_GUARD_S)
    return done, out


@pytest.mark.slow
def test_exits_cleanly_and_prints_the_table(bench_run) -> None:
    done, _ = bench_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert all(impl in done.stdout for impl in IMPLS if not impl.startswith("hf."))
    assert "not run: nn.TransformerEncoder.fastpath: nn.TransformerEncoder.fastpath has no train mode" in done.stdout


@pytest.mark.slow
def test_json_has_every_figure(bench_run) -> None:
    _, out = bench_run
    results = json.loads((out / "results.json").read_text())
    assert results["schema"] == "rosetta-bench/1"
    assert results["machine"]["cpu_model"] and results["machine"]["usable_cpus"] >= 1
    assert results["machine"]["bfloat16_hardware"] in ("AMX-BF16", "AVX512-BF16", "ARM BF16", "none", "unknown")
    assert results["workers"]["rosetta_torch"]["num_threads"] >= 1
    assert results["workers"]["rosetta_flax.jit"]["jax"]
    (case,) = results["cases"]
    model = EncoderConfig.from_dict(results["settings"]["model"])
    assert 0 < case["padded_fraction"] < 1
    timed = {(e["impl"], e["mode"]): e for e in case["results"] if e["status"] == "ok"}
    expected = {
        (impl, mode)
        for impl in (
            "rosetta_torch",
            "rosetta_torch.compile",
            "rosetta_flax.jit",
            "nn.TransformerEncoder",
            "nn.TransformerEncoder.compile",
        )
        for mode in ("forward", "train")
    }
    expected |= {("nn.TransformerEncoder.fastpath", "forward"), ("matmul.torch", "gemm"), ("matmul.jax", "gemm")}
    hf_rows = {"hf.BertEncoder": "torch", "hf.FlaxBertEncoder": "jax"}  # where transformers has them
    expected |= {(i, m) for i, f in hf_rows.items() for m in ("forward", "train") if not hf_bert.skip_reason(model, f)}
    assert expected <= set(timed)
    for entry in timed.values():
        numbers = [entry["median_s"], entry["min_s"], entry["max_s"], entry["gflops"], entry["first_call_s"]]
        if not entry["ceiling"]:
            numbers += [entry["tokens_per_s"], entry["fraction_of_ceiling"], entry["fraction_of_framework_ceiling"]]
            assert entry["check"]["ok"]
            numbers.append(entry["vs_baseline"])  # the compiled peer ran: every row has its ratio
        assert all(isinstance(x, float) and math.isfinite(x) and x > 0 for x in numbers), entry
        if sys.platform == "linux":  # the timed calls' peak resident set (memory.py)
            assert isinstance(entry["peak_memory_bytes"], int) and entry["peak_memory_bytes"] > 2**20, entry
        calls = gemms_per_call(model, case["batch"], case["seq"], entry["ceiling_of"]) if entry["ceiling"] else 1
        assert len(entry["times_s"]) == 2 * calls  # a GEMM block does as many FLOPs as an encoder block
    statuses = {e["status"] for e in case["results"]}
    assert statuses <= {"ok", "skipped"}


@pytest.mark.slow
def test_plot_written(bench_run) -> None:
    _, out = bench_run
    png = (out / "throughput.png").read_bytes()
    assert png.startswith(b"\x89PNG")


@pytest.mark.slow
def test_bfloat16_sweep_writes_one_case_per_length_and_the_line_plot(tmp_path: Path) -> None:
    """A bfloat16 sweep: the rosetta rows run the bfloat16-mixed policy and pass the check, every case records its
    peak memory, and the line plot (tokens/s, ratio, memory) is written."""
    command = [sys.executable, "-m", "rosetta_tools", "bench", "--preset", "tiny", "--batch", "2", "--dtype"]
    command += ["bfloat16", "--sweep-seq", "8", "16", "--mode", "forward", "--impl", "rosetta_torch"]
    command += ["rosetta_flax.jit"]
    command += ["--repeats", "2", "--rounds", "1", "--warmup", "0", "--out", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert sorted((case["batch"], case["seq"]) for case in results["cases"]) == [(2, 8), (2, 16)]
    for case in results["cases"]:
        timed = {e["impl"] for e in case["results"] if not e["ceiling"] and e["status"] == "ok" and e["check"]["ok"]}
        assert {"rosetta_torch", "rosetta_flax.jit"} <= timed
        for entry in case["results"]:
            if entry["impl"] in timed:
                assert entry["precision"].startswith("bfloat16-mixed policy"), entry["precision"]
                assert sys.platform != "linux" or entry["peak_memory_bytes"] > 2**20
    assert (tmp_path / "tokens_vs_seq.png").read_bytes().startswith(b"\x89PNG")
    assert not (tmp_path / "tokens_vs_batch.png").exists()


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        (["--padding", "1.5"], "padding"),
        (["--seq", "100000"], "seq"),
        (["--sweep-batch", "0"], "batch"),
        (["--repeats", "0"], "--repeats must be >= 1, got 0"),
        (["--warmup", "-1"], "--warmup must be >= 0, got -1"),
        (["--lr", "0"], "--lr must be > 0, got 0.0"),
    ],
)
def test_bad_arguments_are_reported_before_any_work(arguments, named, tmp_path: Path, capsys) -> None:
    code = main(["bench", "--preset", "tiny", *arguments, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("rosetta: error: bench: ") and named in err
    assert not (tmp_path / "out").exists()


def test_flax_attention_implementation_the_bench_switches_agrees() -> None:
    """`attn.implementation` (set to "cudnn" by the bench on a GPU) goes through jax.nn.dot_product_attention;
    its "xla" form runs here and must agree with the default path (`online_softmax` in blocks), all-padding row
    included."""
    config = EncoderConfig(vocab_size=50, d_model=16, n_heads=4, n_layers=2, d_ff=32, dropout=0.0)
    token_ids, padding_mask = (jnp.asarray(a) for a in random_inputs(config, 7, (0, 3, 7), 0))
    model = from_canonical(config, random_tensors(config, 0, np.float32))
    model.eval()
    expected = np.asarray(model(token_ids, padding_mask))
    for layer in model.layers:
        layer.attn.implementation = "xla"
    got = np.asarray(model(token_ids, padding_mask))
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("preset", ["tiny", "paper-base", "bert-base"])
@pytest.mark.parametrize("mode", ["forward", "train"])
def test_a_gemm_block_does_an_encoder_blocks_work(preset: str, mode: str) -> None:
    """The ceiling probe's calls per block: the encoder call's FLOPs to within half a GEMM, and at least one."""
    config = PRESETS[preset].config
    for batch, seq in ((1, 1), (8, 128), (32, 512)):
        gemm = gemm_flops(*gemm_shape(config, batch, seq))
        calls = gemms_per_call(config, batch, seq, mode)
        assert calls >= 1
        assert calls == 1 or abs(calls * gemm - step_flops(config, batch, seq, mode)) <= gemm / 2


def test_rows_of_a_missing_framework_are_skipped_saying_what_to_install(monkeypatch) -> None:
    """rosetta_flax reported missing: its rows and its GEMM probe are not run, and say which package to install;
    the torch rows still run and the float64 reference runs in torch."""
    monkeypatch.setattr(frameworks, "installed", lambda framework: framework != "flax")
    tiny = PRESETS["tiny"]
    config = BenchConfig(preset="tiny", model=tiny.config, impls=tuple(IMPLS), batch=tiny.batch, seq=tiny.seq)
    missing = "needs rosetta-flax, which is not installed (pip install ./packages/rosetta-flax)"
    for impl, mode in (("rosetta_flax.jit", "forward"), ("hf.FlaxBertEncoder", "train"), ("matmul.jax", "gemm")):
        assert config.skip_reason(impl, mode) == f"{impl} {missing}"
    assert config.skip_reason("rosetta_torch", "train") is None and config.skip_reason("matmul.torch", "gemm") is None
    runnable = {impl.name for impl in runner.runnable_impls(config)}
    assert {"rosetta_torch", "nn.TransformerEncoder.compile", "matmul.torch"} <= runnable
    assert not runnable & {"rosetta_flax.jit", "hf.FlaxBertEncoder", "matmul.jax"}
    assert reference.framework() == "torch"
    monkeypatch.setattr(frameworks, "installed", lambda framework: framework == "flax")
    assert reference.framework() == "flax"


def test_bench_with_neither_framework_is_one_error_line(monkeypatch, tmp_path: Path, capsys) -> None:
    monkeypatch.setattr(frameworks, "installed", lambda framework: False)
    code = main(["bench", "--preset", "tiny", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("rosetta: error: ") and err.count("\n") == 1, err
    assert "rosetta-torch" in err and "rosetta-flax" in err
    assert not (tmp_path / "out").exists()


def test_the_flax_reference_agrees_with_the_torch_reference(tmp_path: Path, device: str) -> None:
    """The float64 reference of an installation without torch (rosetta_flax, JAX x64): the same output and the
    same losses before and after one AdamW step as rosetta_torch's, to common/DESIGN.md's float64 bound."""
    config = PRESETS["tiny"].config
    weights = save_canonical(tmp_path / "weights.safetensors", config, random_tensors(config, 0, np.float32))
    token_ids, padding_mask = make_inputs(config, 2, 16, 0.25, 0)
    np.savez(tmp_path / "inputs.npz", token_ids=token_ids, padding_mask=padding_mask)
    arguments = (str(weights), str(tmp_path / "inputs.npz"), device, AdamWConfig(lr=1e-3))
    by_torch, by_flax = reference_torch.reference(*arguments), reference_flax.reference(*arguments)
    assert by_torch["output"].dtype == by_flax["output"].dtype == np.float64
    assert np.abs(by_torch["output"] - by_flax["output"]).max() <= tolerances.FLOAT64
    assert np.abs(by_torch["losses"] - by_flax["losses"]).max() <= tolerances.FLOAT64
    assert by_torch["losses"][1] < by_torch["losses"][0]  # the step moved the weights: the losses compare a step


def test_max_len_lengthens_the_preset_table_only(tmp_path: Path, capsys) -> None:
    """`--max-len` makes a sequence past the preset's max_len valid (the sinusoidal table is longer, nothing else
    changes); without it the same sequence is refused before any work."""
    import argparse
    import dataclasses

    from rosetta_tools.cli import bench

    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    config = bench.config_from_args(parser.parse_args(["--preset", "tiny", "--seq", "200", "--max-len", "256"]))
    assert config.model == dataclasses.replace(PRESETS["tiny"].config, max_len=256)
    assert main(["bench", "--preset", "tiny", "--seq", "200", "--out", str(tmp_path / "out")]) == 2
    assert "seq" in capsys.readouterr().err and not (tmp_path / "out").exists()
