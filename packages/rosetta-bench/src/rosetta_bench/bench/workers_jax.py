"""The JAX side of the harness: rosetta_flax under `jax.jit` over `nnx.split` state, and the JAX GEMM.

Imported only inside a JAX worker process (never next to torch). `nnx.jit` is not used: it walks the object
graph in Python on every call. `--dtype bfloat16` keeps float32 parameters and casts them to bfloat16 inside
the jitted function (JAX has no autocast); the loss is taken in float32.
"""

from __future__ import annotations

import functools
import gc
import importlib.metadata
import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from rosetta_bench.bench.worker import Prepared
from rosetta_common import EncoderConfig
from rosetta_flax import load

ATTENTION = {
    "rosetta_flax.jit": "matmul + exp, softmax normalised after the value matmul (XLA fuses)",
    "rosetta_flax.jit.cudnn": "jax.nn.dot_product_attention(implementation='cudnn')",
    "matmul.jax": "-",
}


class DeviceUnavailable(RuntimeError):
    """The requested device does not exist on this machine."""


def masked_mean_square(output: jax.Array, padding_mask: jax.Array) -> jax.Array:
    """The training loss (same in every implementation): mean of output^2 over real positions and features."""
    valid = (~padding_mask).astype(jnp.float32)[..., None]
    return (jnp.square(output.astype(jnp.float32)) * valid).sum() / (valid.sum() * output.shape[-1])


def compute_cast(dtype: str):
    """Parameters -> the compute dtype, inside the jitted function (identity for float32)."""
    if dtype != "bfloat16":
        return lambda tree: tree
    return lambda tree: jax.tree.map(
        lambda x: x.astype(jnp.bfloat16) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
    )


class Backend:
    """Builds the prepared call for one JAX implementation; global settings are made once per process."""

    def __init__(self, impl: str, device: str, dtype: str, tf32: bool) -> None:
        self.impl, self.dtype, self.tf32 = impl, dtype, tf32
        platform = "gpu" if device == "cuda" else "cpu"
        try:
            self.device = jax.devices(platform)[0]
        except RuntimeError as err:
            raise DeviceUnavailable(
                f"--device {device}, but JAX has no {platform} backend ({err}); a CUDA jaxlib and a GPU are needed"
            ) from err
        jax.config.update("jax_default_device", self.device)
        if device == "cuda":
            jax.config.update("jax_default_matmul_precision", "tensorfloat32" if tf32 else "highest")
        self.cast = compute_cast(dtype)

    def info(self) -> dict[str, Any]:
        return {
            "jax": jax.__version__,
            "jaxlib": importlib.metadata.version("jaxlib"),
            "flax": flax.__version__,
            "optax": optax.__version__,
            "device": str(self.device),
            "device_kind": self.device.device_kind,
            "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
            "visible_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "default_matmul_precision": jax.config.jax_default_matmul_precision,
            "attention": ATTENTION[self.impl],
            "precision": "bfloat16 compute (float32 parameters cast in the jitted function)"
            if self.dtype == "bfloat16"
            else "float32",
        }

    def release(self) -> None:
        jax.clear_caches()
        gc.collect()

    @staticmethod
    def sync(result: Any) -> None:
        jax.block_until_ready(result)

    def prepare(self, spec: dict[str, Any]) -> Prepared:
        if self.impl == "matmul.jax":
            return self._gemm(*spec["gemm_shape"])
        config = EncoderConfig.from_dict(spec["config"])
        inputs = np.load(spec["inputs"])
        host_ids, host_mask = inputs["token_ids"], inputs["padding_mask"]
        token_ids, padding_mask = jax.device_put(host_ids, self.device), jax.device_put(host_mask, self.device)
        model = load(spec["weights"])
        if self.impl == "rosetta_flax.jit.cudnn":
            for layer in model.layers:
                layer.attn.implementation = "cudnn"
        if config.dropout:
            raise ValueError("the harness times deterministic models: dropout must be 0")
        check = functools.partial(model.check_inputs, host_ids, host_mask)  # outside jit, as the contract says
        if spec["mode"] == "train":
            model.train()
            return self._train_step(model, check, token_ids, padding_mask, spec["lr"])
        model.eval()
        graphdef, state = nnx.split(model)

        @jax.jit
        def forward(state, token_ids, padding_mask):
            return nnx.merge(graphdef, self.cast(state))(token_ids, padding_mask)

        def call() -> jax.Array:
            check()
            return forward(state, token_ids, padding_mask)

        return Prepared(call, self.sync, lambda out: np.asarray(out.astype(jnp.float32)))

    def _train_step(self, model: nnx.Module, check, token_ids: jax.Array, padding_mask: jax.Array, lr: float):
        """forward + masked mean-square loss + backward + optax.adamw, one jitted function, buffers donated."""
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        optimizer = optax.adamw(lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01)

        def loss_fn(params, rest, token_ids, padding_mask):
            output = nnx.merge(graphdef, self.cast(params), rest)(token_ids, padding_mask)
            return masked_mean_square(output, padding_mask)

        @functools.partial(jax.jit, donate_argnums=(0, 1))
        def step(params, opt_state, rest, token_ids, padding_mask):
            loss, grads = jax.value_and_grad(loss_fn)(params, rest, token_ids, padding_mask)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        carry = {"params": params, "opt_state": optimizer.init(params)}

        def call() -> tuple[Any, ...]:
            check()
            carry["params"], carry["opt_state"], _ = result = step(
                carry["params"], carry["opt_state"], rest, token_ids, padding_mask
            )
            return result

        return Prepared(call, self.sync, lambda result: np.asarray(result[-1]))

    def _gemm(self, m: int, k: int, n: int) -> Prepared:
        dtype = jnp.bfloat16 if self.dtype == "bfloat16" else jnp.float32
        key_a, key_b = jax.random.split(jax.random.key(0))
        a = jax.random.normal(key_a, (m, k), dtype)
        b = jax.random.normal(key_b, (k, n), dtype)
        matmul = jax.jit(jnp.matmul)
        return Prepared(lambda: matmul(a, b), self.sync, lambda out: np.asarray(out.astype(jnp.float32)))
