"""Shared fixtures: the device under test (`--device=cpu|cuda`), the stored vectors, x64 JAX.

On CUDA, parity runs with TF32 off in both frameworks (common/DESIGN.md).
"""

from __future__ import annotations

import os

# JAX would otherwise take 75% of the GPU at its first use, in each pytest-xdist worker; torch shares the card.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax
import pytest
import torch

from rosetta_common.vectors import CASES, Vector, stored_vector

jax.config.update("jax_enable_x64", True)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", default="cpu", choices=["cpu", "cuda"], help="device to run both frameworks on")
    parser.addoption(
        "--fuzz-examples",
        type=int,
        default=0,
        help="run the `fuzz` tests, each on this many new Hypothesis draws (nox -s fuzz); 0 skips them",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--fuzz-examples") < 1:
        skip_fuzz = pytest.mark.skip(reason="exploration: run with --fuzz-examples N (nox -s fuzz)")
        for item in items:
            if "fuzz" in item.keywords:
                item.add_marker(skip_fuzz)
    if config.getoption("--device") != "cuda":
        skip = pytest.mark.skip(reason="GPU test: run with --device=cuda on a machine with a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
        return
    reason = None
    if not torch.cuda.is_available():
        reason = "--device=cuda but torch sees no CUDA GPU"
    elif not any(d.platform == "gpu" for d in jax.devices()):
        reason = "--device=cuda but JAX sees no GPU (is a CUDA jaxlib installed?)"
    if reason:
        for item in items:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """The test tensors are tiny: one intra-op thread. Two OpenMP threads per pytest-xdist worker on 2 cores
    stall at every barrier (measured 2.8 ms vs 425 ms for one small backward on a loaded 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def fuzz_examples(request: pytest.FixtureRequest) -> int:
    """How many new Hypothesis draws each `fuzz` test explores."""
    return request.config.getoption("--fuzz-examples")


def pytest_configure(config: pytest.Config) -> None:
    """On CUDA, for every test (not only those taking `device`): TF32 off in torch, JAX matmuls at full precision,
    and cuBLAS's bfloat16 GEMMs reducing in float32 (the policy's one rounding per matmul)."""
    if config.getoption("--device") == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
        jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> str:
    """'cpu' or 'cuda' (set up by `pytest_configure`); on CUDA JAX's default device is the GPU."""
    name = request.config.getoption("--device")
    if name == "cuda":
        jax.config.update("jax_default_device", jax.devices("gpu")[0])
    return name


@pytest.fixture(scope="session", params=[case.name for case in CASES])
def vector(request: pytest.FixtureRequest) -> Vector:
    """Each stored common test vector in turn."""
    return stored_vector(request.param)
