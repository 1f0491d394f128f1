"""The JAX side of the harness: rosetta_flax under `jax.jit` over `nnx.split` state, and the JAX GEMM.

Imported only inside a JAX worker process (never next to torch). `nnx.jit` is not used: it walks the object
graph in Python on every call. `--dtype bfloat16` keeps float32 parameters and casts them to bfloat16 inside
the jitted function (JAX has no autocast); the loss is taken in float32.
"""

from __future__ import annotations

import functools
import gc
import importlib.metadata
import math
import os
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, traverse_util

from rosetta_common import EncoderConfig, load_canonical, sinusoidal_table
from rosetta_flax import load
from rosetta_tools.throughput import hf_bert
from rosetta_tools.throughput.worker import Prepared

Apply = Callable[[Any, jax.Array, jax.Array], jax.Array]  # (params, token_ids, padding_mask) -> [B, S, D]

ATTENTION = {
    "rosetta_flax.jit": "matmul + exp, softmax normalised after the value matmul (XLA fuses)",
    "rosetta_flax.jit.cudnn": "jax.nn.dot_product_attention(implementation='cudnn')",
    "hf.FlaxBertEncoder": "FlaxBertSelfAttention: flax.linen dot_product_attention_weights (einsum, softmax)",
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
        if config.dropout:
            raise ValueError("the harness times deterministic models: dropout must be 0")
        inputs = np.load(spec["inputs"])
        host_ids, host_mask = inputs["token_ids"], inputs["padding_mask"]
        token_ids, padding_mask = jax.device_put(host_ids, self.device), jax.device_put(host_mask, self.device)
        if self.impl == "hf.FlaxBertEncoder":  # a peer: no rosetta input check, like the torch peers
            apply, params = self._hf_bert(config, spec["weights"])
            check = lambda: None
        else:
            model = load(spec["weights"])
            check = functools.partial(model.check_inputs, host_ids, host_mask)  # outside jit, as the contract says
            apply, params = self._rosetta(model, training=spec["mode"] == "train")
        if spec["mode"] == "train":
            return self._train_step(apply, params, check, token_ids, padding_mask, spec["lr"])
        forward = jax.jit(apply)

        def call() -> jax.Array:
            check()
            return forward(params, token_ids, padding_mask)

        return Prepared(call, self.sync, lambda out: np.asarray(out.astype(jnp.float32)))

    def _rosetta(self, model: nnx.Module, training: bool) -> tuple[Apply, Any]:
        """rosetta_flax as a pure function of its parameters (the rest of its state held fixed)."""
        if self.impl == "rosetta_flax.jit.cudnn":
            for layer in model.layers:
                layer.attn.implementation = "cudnn"
        model.train() if training else model.eval()
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)

        def apply(params, token_ids, padding_mask):
            return nnx.merge(graphdef, self.cast(params), rest)(token_ids, padding_mask)

        return apply, params

    def _hf_bert(self, config: EncoderConfig, weights: str) -> tuple[Apply, Any]:
        compute = jnp.bfloat16 if self.dtype == "bfloat16" else jnp.float32
        apply, params = hf_flax_bert_peer(config, load_canonical(weights)[1], compute)
        return lambda params, token_ids, padding_mask: apply(self.cast(params), token_ids, padding_mask), params

    def _train_step(self, apply: Apply, params: Any, check, token_ids: jax.Array, padding_mask: jax.Array, lr: float):
        """forward + masked mean-square loss + backward + optax.adamw, one jitted function, buffers donated."""
        optimizer = optax.adamw(lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01)

        def loss_fn(params, token_ids, padding_mask):
            return masked_mean_square(apply(params, token_ids, padding_mask), padding_mask)

        @functools.partial(jax.jit, donate_argnums=(0, 1))
        def step(params, opt_state, token_ids, padding_mask):
            loss, grads = jax.value_and_grad(loss_fn)(params, token_ids, padding_mask)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        carry = {"params": params, "opt_state": optimizer.init(params)}

        def call() -> tuple[Any, ...]:
            check()
            carry["params"], carry["opt_state"], _ = result = step(
                carry["params"], carry["opt_state"], token_ids, padding_mask
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


def hf_flax_bert_peer(config: EncoderConfig, tensors: dict[str, np.ndarray], compute: jnp.dtype) -> tuple[Apply, Any]:
    """transformers' FlaxBertEncoder holding canonical `tensors`, behind rosetta's embedding: (apply, params).

    The front is rosetta's: a table lookup, the sqrt(d_model) scale, the sinusoidal table (see `hf_bert`).
    """
    from transformers import BertConfig
    from transformers.models.bert.modeling_flax_bert import FlaxBertEncoder

    bert = FlaxBertEncoder(BertConfig(**hf_bert.bert_config_kwargs(config)), dtype=compute)
    params = {
        "embedding": jnp.asarray(tensors["embedding.weight"]),
        "encoder": traverse_util.unflatten_dict(
            {name: jnp.asarray(value) for name, value in hf_bert.encoder_tensors(tensors).items()}, sep="."
        ),
    }
    scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
    table = sinusoidal_table(config.max_len, config.d_model)

    def apply(params, token_ids, padding_mask):
        x = jnp.take(params["embedding"], token_ids, axis=0) * scale
        x = x + jnp.asarray(table[: token_ids.shape[1]], x.dtype)
        keep = (~padding_mask).astype(jnp.int32)  # BERT's attention_mask: 1 = attend
        return bert.apply({"params": params["encoder"]}, x, keep, None, deterministic=True).last_hidden_state

    return apply, params
