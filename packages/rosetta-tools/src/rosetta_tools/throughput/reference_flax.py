"""The float64 reference in rosetta_flax under JAX x64 (see `reference`), for an installation without torch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from rosetta_common import load_canonical
from rosetta_common.training import AdamWConfig
from rosetta_flax import from_canonical
from rosetta_flax.training import build_optimizer
from rosetta_tools.throughput.loss_jax import masked_mean_square


def reference(weights: str, inputs: str, device: str, adamw: AdamWConfig | None) -> dict[str, np.ndarray]:
    """`output` of the weights on the inputs, and `losses` before and after one AdamW step (NaN when `adamw` is
    None: a forward-only run, no gradients), in float64.

    Inputs holding `segment_ids` are packed rows: the model takes those instead of the mask. Turns JAX's x64
    mode on (the reference is float64); matmuls run at full precision on a GPU.
    """
    jax.config.update("jax_enable_x64", True)
    platform = "gpu" if device == "cuda" else "cpu"
    with jax.default_device(jax.devices(platform)[0]), jax.default_matmul_precision("highest"):
        config, tensors = load_canonical(weights)
        model = from_canonical(config, {name: value.astype(np.float64) for name, value in tensors.items()})
        data = np.load(inputs)
        token_ids, padding_mask = jnp.asarray(data["token_ids"]), jnp.asarray(data["padding_mask"])
        if "segment_ids" in data:  # packed rows (the lengths case)
            inputs = {"segment_ids": jnp.asarray(data["segment_ids"])}
            model.check_inputs(token_ids, **inputs)
        else:
            inputs = {"padding_mask": padding_mask}
            model.check_inputs(token_ids, padding_mask)
        model.train()  # dropout is 0: train and eval compute the same function
        if adamw is None:
            return {"output": np.asarray(model(token_ids, **inputs)), "losses": np.full(2, np.nan)}
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)

        def loss_fn(params: nnx.State) -> tuple[jax.Array, jax.Array]:
            output = nnx.merge(graphdef, params, rest, copy=True)(token_ids, **inputs)
            return masked_mean_square(output, padding_mask, jnp.float64), output

        (loss, output), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        optimizer = build_optimizer(adamw, model)
        updates, _ = optimizer.update(grads, optimizer.init(params), params)
        loss_after, _ = loss_fn(optax.apply_updates(params, updates))
    return {
        "output": np.asarray(output),
        "losses": np.array([float(loss), float(loss_after)], dtype=np.float64),
    }
