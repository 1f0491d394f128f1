"""The sentence-embedding head (sentence-transformers' Pooling, Dense, Normalize) on the encoder's output, as
rosetta_torch.sentence_head computes it; `rosetta_common.pooling` is its float64 oracle."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rosetta_common.pooling import CLAMP, NORM_EPS
from rosetta_common.precision import cast_tensors
from rosetta_common.sentence_head import PREFIX, HeadConfig, check_head_tensors

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "identity": lambda x: x,
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # exact (erf), as torch.nn.GELU
    "sigmoid": jax.nn.sigmoid,
}


def pooling_mask(head: HeadConfig, keep: jax.Array, prompt_length: int | None = None) -> jax.Array:
    """`keep [B, S]` (1 = real token), with the first `prompt_length` kept positions of each row cleared when the
    head excludes the prompt."""
    keep = jnp.asarray(keep).astype(jnp.int32)
    if head.include_prompt or prompt_length is None:
        return keep
    first = keep.argmax(axis=1)
    positions = jnp.arange(keep.shape[1])[None, :]
    return jnp.where(positions < (first + prompt_length)[:, None], 0, keep)


def pool(mode: str, hidden: jax.Array, keep: jax.Array) -> jax.Array:
    """One pooling mode: `hidden [B, S, D]`, `keep [B, S]` -> `[B, D]` (as `rosetta_common.pooling.pool`)."""
    mask = keep[:, :, None].astype(hidden.dtype)
    rows = jnp.arange(hidden.shape[0])
    if mode == "cls":
        return hidden[rows, keep.argmax(axis=1)]
    if mode == "max":
        return jnp.where(mask == 0, -jnp.inf, hidden).max(axis=1)
    if mode in ("mean", "mean_sqrt_len_tokens"):
        total, count = (hidden * mask).sum(axis=1), jnp.maximum(mask.sum(axis=1), CLAMP)
        return total / count if mode == "mean" else total / jnp.sqrt(count)
    if mode == "weightedmean":
        weighted = mask * jnp.arange(1, hidden.shape[1] + 1, dtype=hidden.dtype)[None, :, None]
        return (hidden * weighted).sum(axis=1) / jnp.maximum(weighted.sum(axis=1), CLAMP)
    if mode == "lasttoken":
        flipped = keep[:, ::-1]
        index = jnp.where(flipped.max(axis=1) == 0, keep.shape[1] - 1, flipped.argmax(axis=1))
        return (hidden * mask)[rows, keep.shape[1] - index - 1]
    raise ValueError(f"unknown pooling mode {mode!r}")


class SentenceHead(nnx.Module):
    """`head(hidden [B, S, D], keep [B, S], prompt_length=None) -> [B, D_out]`: pooling, dense layers, Normalize.

    Computes in `dtype`, its parameters' (float32 or float64: `rosetta_common.sentence_head.head_dtype`)."""

    def __init__(self, head: HeadConfig, *, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs) -> None:
        self.head = head
        self.dtype = jnp.dtype(dtype)  # what it computes in (the encoder output is cast)
        self.dense = nnx.List(
            [
                nnx.Linear(d.in_features, d.out_features, use_bias=d.bias, param_dtype=dtype, rngs=rngs)
                for d in head.dense
            ]
        )

    def __call__(self, hidden: jax.Array, keep: jax.Array, prompt_length: int | None = None) -> jax.Array:
        mask, hidden = pooling_mask(self.head, keep, prompt_length), jnp.asarray(hidden).astype(self.dtype)
        x = jnp.concatenate([pool(mode, hidden, mask) for mode in self.head.pooling], axis=-1)
        for layer, spec in zip(self.dense, self.head.dense, strict=True):
            x = ACTIVATIONS[spec.activation](layer(x))
        if self.head.normalize:
            x = x / jnp.maximum(jnp.linalg.norm(x, axis=1, keepdims=True), NORM_EPS)
        return x


def head_from_canonical(
    head: HeadConfig, tensors: Mapping[str, np.ndarray], dtype: str, *, rngs: nnx.Rngs | None = None
) -> SentenceHead:
    """A SentenceHead of the canonical `sentence_head.*` tensors cast to `dtype` ("float32" or "float64")."""
    check_head_tensors(head, tensors)
    tensors, _ = cast_tensors(tensors, dtype)
    dtype = jnp.dtype(dtype)
    module = SentenceHead(head, dtype=dtype, rngs=rngs or nnx.Rngs(0))
    for i, layer in enumerate(module.dense):
        layer.kernel.set_value(jnp.asarray(tensors[f"{PREFIX}dense.{i}.kernel"], dtype=dtype))
        if layer.bias is not None:
            layer.bias.set_value(jnp.asarray(tensors[f"{PREFIX}dense.{i}.bias"], dtype=dtype))
    return module


def head_to_canonical(module: SentenceHead) -> dict[str, np.ndarray]:
    """The head's parameters under canonical names (kernels `[in, out]`), as NumPy arrays."""
    tensors = {}
    for i, layer in enumerate(module.dense):
        tensors[f"{PREFIX}dense.{i}.kernel"] = np.asarray(jax.device_get(layer.kernel[...]))
        if layer.bias is not None:
            tensors[f"{PREFIX}dense.{i}.bias"] = np.asarray(jax.device_get(layer.bias[...]))
    return tensors
