"""The JAX side of the harness: rosetta_flax under `jax.jit` over `nnx.split` state, HF Flax BERT, the JAX GEMM.

Imported only inside a JAX worker process (never next to torch). `nnx.jit` is not used: it walks the object
graph in Python on every call. `--dtype bfloat16`: the rosetta rows run the bfloat16-mixed policy
(`rosetta_common.precision`: float32 master weights, bfloat16 compute rounded at the policy's places); the HF peer
keeps float32 parameters and casts them to bfloat16 inside the jitted function (JAX has no autocast). The loss is
taken in float32.
"""

from __future__ import annotations

import functools
import gc
import importlib.metadata
import os
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from rosetta_common import EncoderConfig, load_canonical
from rosetta_common.precision import POLICIES
from rosetta_common.training import AdamWConfig
from rosetta_flax import Encoder, load
from rosetta_tools.throughput import memory
from rosetta_tools.throughput.hf_bert_jax import Apply, hf_flax_bert_peer
from rosetta_tools.throughput.impls import Impl, Model
from rosetta_tools.throughput.lengths import read_layout, takes_segment_ids
from rosetta_tools.throughput.loss_jax import masked_mean_square
from rosetta_tools.throughput.protocol import SetupSpec
from rosetta_tools.throughput.timing import time_calls
from rosetta_tools.throughput.worker import DeviceUnavailable, Prepared

Tree = Any  # a pytree of parameters (nnx.State or nested dicts of arrays)


def compute_cast(dtype: str) -> Callable[[Tree], Tree]:
    """Parameters -> the compute dtype, inside the jitted function (identity for float32)."""
    if dtype != "bfloat16":
        return lambda tree: tree
    return lambda tree: jax.tree.map(
        lambda x: x.astype(jnp.bfloat16) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
    )


class Backend:
    """Builds the prepared call for one JAX implementation; global settings are made once per process."""

    def __init__(self, impl: Impl, device: str, dtype: str, tf32: bool) -> None:
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
        policy = dtype == "bfloat16" and impl.model is Model.ROSETTA
        self.precision = POLICIES["bfloat16-mixed"] if policy else None
        self.cast = compute_cast("float32" if policy else dtype)  # identity under the policy: it rounds itself

    def info(self) -> dict[str, Any]:
        """Versions, visible CPUs and precision settings, for the results."""
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
            "attention": self.impl.attention,
            "segment_ids": takes_segment_ids(Encoder.__call__),
            "precision": "bfloat16-mixed policy (float32 master weights, explicit bfloat16 rounding)"
            if self.precision is not None
            else "bfloat16 compute (float32 parameters cast in the jitted function)"
            if self.dtype == "bfloat16"
            else "float32",
        }

    def release(self) -> None:
        """Forget the previous setup's compiled functions and buffers."""
        jax.clear_caches()
        gc.collect()

    def reset_peak_memory(self) -> None:
        """Before a block of timed calls: the process's RSS peak on a CPU (XLA's GPU peak cannot be reset)."""
        if self.device.platform == "cpu":
            memory.reset_peak_rss()

    def peak_memory_bytes(self) -> int | None:
        """The process's resident-set peak on a CPU; on a GPU, XLA's allocator peak (since the process began)."""
        if self.device.platform == "cpu":
            return memory.peak_rss_bytes()
        stats = self.device.memory_stats() or {}
        peak = stats.get("peak_bytes_in_use")
        return None if peak is None else int(peak)

    @staticmethod
    def sync(result: object) -> None:
        """Wait until `result` is computed."""
        jax.block_until_ready(result)

    def prepare(self, spec: SetupSpec) -> Prepared:
        """The call to time for `spec`: a forward, a training step, or the GEMM probe."""
        if self.impl.ceiling:
            return self._gemm(*spec.gemm_shape)
        config = spec.config
        if config.dropout:
            raise ValueError("the harness times deterministic models: dropout must be 0")
        if spec.layout is not None:
            return self._lengths(spec)
        inputs = np.load(spec.inputs)
        host_ids, host_mask = inputs["token_ids"], inputs["padding_mask"]
        token_ids, padding_mask = jax.device_put(host_ids, self.device), jax.device_put(host_mask, self.device)
        if self.impl.model is Model.HF_BERT:  # a peer: no rosetta input check, like the torch peers
            apply, params = self._hf_bert(config, spec.weights)
            check = lambda: None
        else:
            model = load(spec.weights, precision=self.precision)
            check = functools.partial(model.check_inputs, host_ids, host_mask)  # outside jit, as the contract says
            apply, params = self._rosetta(model, training=spec.mode == "train")
        if spec.mode == "train":
            return self._train_step(apply, params, check, [(token_ids, padding_mask, padding_mask)], spec.adamw)
        forward = jax.jit(apply)

        def call() -> jax.Array:
            check()
            return forward(params, token_ids, padding_mask)

        return Prepared(call, self.sync, lambda out: np.asarray(out.astype(jnp.float32)))

    def _lengths(self, spec: SetupSpec) -> Prepared:
        """A pass over every batch of the lengths case's layout: packed rows call `model(token_ids,
        segment_ids=...)`, padded ones the row's own apply with the padding mask; each batch checked outside jit
        (rosetta's rows), every shape compiled by the first call."""
        layout = read_layout(spec.inputs, spec.layout or "padded")
        packed = spec.layout == "packed"
        checks: list[Callable[[], None]] = []
        batches = []
        if self.impl.model is Model.HF_BERT:
            apply, params = self._hf_bert(spec.config, spec.weights)
        else:
            model = load(spec.weights, precision=self.precision)
            apply, params = self._rosetta(model, training=spec.mode == "train", packed=packed)
        for token_ids, segment_ids in zip(layout.token_ids, layout.segment_ids, strict=True):
            second = segment_ids if packed else segment_ids == 0
            if self.impl.model is Model.ROSETTA:
                inputs = {"segment_ids": second} if packed else {"padding_mask": second}
                checks.append(functools.partial(model.check_inputs, token_ids, **inputs))
            put = functools.partial(jax.device_put, device=self.device)
            batches.append((put(token_ids), put(second), put(segment_ids == 0)))
        check_all = lambda: [check() for check in checks]
        if spec.mode == "train":
            return self._train_step(apply, params, check_all, batches, spec.adamw, checks[:1])
        forward = jax.jit(apply)

        def call() -> list[jax.Array]:
            check_all()
            return [forward(params, ids, second) for ids, second, _ in batches]

        def to_numpy(outputs: list[jax.Array]) -> np.ndarray:
            return layout.gather([np.asarray(output.astype(jnp.float32)) for output in outputs])

        return Prepared(call, self.sync, to_numpy)

    def _rosetta(self, model: Encoder, training: bool, packed: bool = False) -> tuple[Apply, Tree]:
        """rosetta_flax as a pure function of its parameters (the rest of its state held fixed); `packed`: its
        third argument is the segment ids."""
        if self.impl.attention_implementation is not None:
            for layer in model.layers:
                layer.attn.implementation = self.impl.attention_implementation
        model.train() if training else model.eval()
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)

        def apply(params: Tree, token_ids: jax.Array, padding_mask: jax.Array) -> jax.Array:
            return nnx.merge(graphdef, self.cast(params), rest)(token_ids, padding_mask)

        def apply_packed(params: Tree, token_ids: jax.Array, segment_ids: jax.Array) -> jax.Array:
            return nnx.merge(graphdef, self.cast(params), rest)(token_ids, segment_ids=segment_ids)

        return (apply_packed if packed else apply), params

    def _hf_bert(self, config: EncoderConfig, weights: str) -> tuple[Apply, Tree]:
        compute = jnp.bfloat16 if self.dtype == "bfloat16" else jnp.float32
        apply, params = hf_flax_bert_peer(config, load_canonical(weights)[1], compute)
        return lambda params, token_ids, padding_mask: apply(self.cast(params), token_ids, padding_mask), params

    def _train_step(
        self,
        apply: Apply,
        params: Tree,
        check: Callable[[], None],
        batches: list[tuple[jax.Array, jax.Array, jax.Array]],
        adamw: AdamWConfig,
        first_check: list[Callable[[], None]] | None = None,
    ) -> Prepared:
        """forward + masked mean-square loss + backward + optax.adamw, one jitted function, buffers donated; a call
        is one step per batch (token ids, the apply's second input, the padding mask). Several batches (the lengths
        case): the check takes two steps on the first batch before the first call (`first_check` its input check).
        """
        optimizer = optax.adamw(adamw.lr, b1=adamw.b1, b2=adamw.b2, eps=adamw.eps, weight_decay=adamw.weight_decay)

        def loss_fn(params: Tree, token_ids: jax.Array, second: jax.Array, padding_mask: jax.Array) -> jax.Array:
            return masked_mean_square(apply(params, token_ids, second), padding_mask, jnp.float32)

        @functools.partial(jax.jit, donate_argnums=(0, 1))
        def step(
            params: Tree, opt_state: optax.OptState, token_ids: jax.Array, second: jax.Array, padding_mask: jax.Array
        ) -> tuple[Tree, optax.OptState, jax.Array]:
            loss, grads = jax.value_and_grad(loss_fn)(params, token_ids, second, padding_mask)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        carry = {"params": params, "opt_state": optimizer.init(params)}

        def one(batch: tuple[jax.Array, jax.Array, jax.Array]) -> jax.Array:
            carry["params"], carry["opt_state"], loss = step(carry["params"], carry["opt_state"], *batch)
            return loss

        def call() -> tuple[Tree, optax.OptState, jax.Array]:
            check()
            losses = [one(batch) for batch in batches]
            return carry["params"], carry["opt_state"], losses[0]

        if len(batches) == 1 and first_check is None:
            return Prepared(call, self.sync, lambda result: np.asarray(result[-1]))

        def check_losses() -> tuple[float, float]:
            for input_check in first_check or ():
                input_check()
            return float(one(batches[0])), float(one(batches[0]))

        return Prepared(call, self.sync, lambda result: np.asarray(result[-1]), check_losses=check_losses)

    def _gemm(self, m: int, k: int, n: int) -> Prepared:
        """JAX's GEMM ceiling: the faster of a plain jitted matmul and, in bfloat16, one with a float32 result
        (`preferred_element_type`): on XLA's CPU backend only the latter runs a bfloat16 kernel (YNNPACK's), the
        former is upcast to float32. rosetta_flax's bfloat16 policy uses the latter."""
        dtype = jnp.bfloat16 if self.dtype == "bfloat16" else jnp.float32
        key_a, key_b = jax.random.split(jax.random.key(0))
        a = jax.random.normal(key_a, (m, k), dtype)
        b = jax.random.normal(key_b, (k, n), dtype)
        candidates = {"jnp.matmul": jax.jit(jnp.matmul)}
        if dtype == jnp.bfloat16:
            float32_result = functools.partial(jnp.matmul, preferred_element_type=jnp.float32)
            candidates["jnp.matmul(preferred_element_type=float32)"] = jax.jit(float32_result)
        best_s = {}
        for name, matmul in candidates.items():
            self.sync(matmul(a, b))  # compiles
            best_s[name] = min(time_calls(lambda matmul=matmul: matmul(a, b), self.sync, 5))
        chosen = min(best_s, key=best_s.get)
        matmul = candidates[chosen]
        details = {"gemm_candidates_best_s": best_s, "gemm_used": chosen}
        return Prepared(lambda: matmul(a, b), self.sync, lambda out: np.asarray(out.astype(jnp.float32)), details)
