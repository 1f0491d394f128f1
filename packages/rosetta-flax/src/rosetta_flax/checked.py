"""`checked_jit(model)`: the encoder compiled with `jax.jit`, its inputs checked on the host before every call.

Inside `jax.jit` the inputs are tracers, which `Encoder.__call__` cannot check, and JAX's gather turns a bad token
id into NaN or a clamped row without an error. The wrapper runs `Encoder.check_inputs` on the concrete arrays
first (the same InputError as an eager call), then the compiled forward: `jax.jit` over the `nnx.split` state, the
weights as they are when the model is wrapped (wrap it again after changing them). Meant for inference: put the
model in eval mode first (dropout's random state is not carried from call to call).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
from flax import nnx

from rosetta_flax.encoder import Array, Encoder


class CheckedJit:
    """`call(token_ids, padding_mask=None, *, token_type_ids=None, attention_mask=None, segment_ids=None)`: checked,
    then jitted (`embed` without segment_ids: packed, jit the encoder and call `model.embed_sequences` after)."""

    def __init__(self, model: Encoder, method: str = "__call__") -> None:
        if method not in ("__call__", "activations", "embed"):
            raise ValueError(f"method must be '__call__', 'activations' or 'embed', got {method!r}")
        self.model = model
        graphdef, self._state = nnx.split(model)

        def run(
            state: nnx.State,
            token_ids: Array,
            padding_mask: Array | None,
            types: Array | None,
            mask: Array | None,
            segments: Array | None,
        ) -> jax.Array | dict[str, jax.Array]:
            merged = nnx.merge(graphdef, state)
            call = getattr(merged, method)
            return call(token_ids, padding_mask, token_type_ids=types, attention_mask=mask, segment_ids=segments)

        self._compiled: Callable = jax.jit(run)

    def __call__(
        self,
        token_ids: Array,
        padding_mask: Array | None = None,
        *,
        token_type_ids: Array | None = None,
        attention_mask: Array | None = None,
        segment_ids: Array | None = None,
    ) -> jax.Array | dict[str, jax.Array]:
        self.model.check_inputs(
            token_ids,
            padding_mask,
            token_type_ids=token_type_ids,
            attention_mask=attention_mask,
            segment_ids=segment_ids,
        )
        return self._compiled(self._state, token_ids, padding_mask, token_type_ids, attention_mask, segment_ids)


def checked_jit(model: Encoder, *, method: str = "__call__") -> CheckedJit:
    """`model` (or its `activations` / `embed` with `method=`) under `jax.jit`, every call's inputs checked first."""
    return CheckedJit(model, method)
