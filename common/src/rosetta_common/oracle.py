"""The float64 NumPy oracle: the encoder written as a specification, from canonical tensors.

Every test compares the two frameworks against this third, independent implementation. `encoder_forward`
also returns the activations at each component boundary, so a failing comparison names where it starts:

    embedding          token embedding (x sqrt(d_model) when scale_embedding)      [B, S, D]
    positional         embedding + positional encoding                           [B, S, D]
    layers.{i}.attn    hidden state after the attention sub-layer (add & norm)   [B, S, D]
    layers.{i}.ffn     hidden state after the feed-forward sub-layer             [B, S, D]
    final_norm         after the final LayerNorm (only when the config has one)  [B, S, D]
    output             the encoder output                                        [B, S, D]
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from rosetta_common.config import EncoderConfig
from rosetta_common.inputs import check_padding_mask, check_token_ids
from rosetta_common.positional import sinusoidal_table

_erf = np.vectorize(math.erf, otypes=[np.float64])


def activation(name: str, x: np.ndarray) -> np.ndarray:
    """relu, exact gelu (erf) or gelu_tanh (the tanh approximation)."""
    if name == "relu":
        return np.maximum(x, 0.0)
    if name == "gelu":
        return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))
    if name == "gelu_tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    raise ValueError(f"unknown activation {name!r}")


def layer_norm(x: np.ndarray, scale: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    """(x - mean) / sqrt(var + eps) * scale + bias over the last axis; var is the biased two-pass variance."""
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * scale + bias


def softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def attention(x: np.ndarray, weights: Mapping[str, np.ndarray], n_heads: int, padding_mask: np.ndarray) -> np.ndarray:
    """Multi-head self-attention. x `[B, S, D]`, padding_mask bool `[B, S]` (True = padding) -> `[B, S, D]`.

    A padded position is never attended to as a key; a query in a sequence that is all padding has no key
    to attend to and attends uniformly to every position instead (finite, never NaN).
    """
    batch, seq, d_model = x.shape
    d_head = d_model // n_heads

    def heads(name: str) -> np.ndarray:  # [B, S, D] -> [B, H, S, d_head]
        projected = x @ weights[f"attn.{name}.kernel"] + weights[f"attn.{name}.bias"]
        return projected.reshape(batch, seq, n_heads, d_head).transpose(0, 2, 1, 3)

    q, k, v = heads("q"), heads("k"), heads("v")
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d_head)  # [B, H, S, S]
    key_is_padding = padding_mask[:, None, None, :]
    scores = np.where(key_is_padding, -np.inf, scores)
    all_padding = padding_mask.all(axis=-1)[:, None, None, None]
    scores = np.where(all_padding, 0.0, scores)
    context = softmax(scores) @ v  # [B, H, S, d_head]
    context = context.transpose(0, 2, 1, 3).reshape(batch, seq, d_model)
    return context @ weights["attn.out.kernel"] + weights["attn.out.bias"]


def feed_forward(x: np.ndarray, weights: Mapping[str, np.ndarray], activation_name: str) -> np.ndarray:
    """Position-wise feed-forward: d_model -> d_ff -> d_model. x `[B, S, D]` -> `[B, S, D]`."""
    hidden = activation(activation_name, x @ weights["ffn.in.kernel"] + weights["ffn.in.bias"])
    return hidden @ weights["ffn.out.kernel"] + weights["ffn.out.bias"]


def encoder_layer(
    config: EncoderConfig, weights: Mapping[str, np.ndarray], x: np.ndarray, padding_mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One layer; returns (hidden after the attention sub-layer, hidden after the feed-forward sub-layer)."""
    eps = config.layer_norm_eps

    def norm(name: str, h: np.ndarray) -> np.ndarray:
        return layer_norm(h, weights[f"{name}.scale"], weights[f"{name}.bias"], eps)

    if config.norm_first:
        after_attn = x + attention(norm("norm1", x), weights, config.n_heads, padding_mask)
        after_ffn = after_attn + feed_forward(norm("norm2", after_attn), weights, config.activation)
    else:
        after_attn = norm("norm1", x + attention(x, weights, config.n_heads, padding_mask))
        after_ffn = norm("norm2", after_attn + feed_forward(after_attn, weights, config.activation))
    return after_attn, after_ffn


def default_padding_mask(config: EncoderConfig, token_ids: np.ndarray) -> np.ndarray:
    """`token_ids == padding_idx`, or no padding at all when padding_idx is None."""
    if config.padding_idx is None:
        return np.zeros(token_ids.shape, dtype=bool)
    return token_ids == config.padding_idx


def encoder_forward(
    config: EncoderConfig,
    tensors: Mapping[str, np.ndarray],
    token_ids: np.ndarray,
    padding_mask: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The encoder in float64 (dropout off). token_ids int `[B, S]` -> every boundary activation, see module doc."""
    token_ids = np.asarray(token_ids)
    is_int = np.issubdtype(token_ids.dtype, np.integer)
    check_token_ids(
        config,
        token_ids.shape,
        str(token_ids.dtype),
        is_int,
        int(token_ids.min()) if is_int and token_ids.size else 0,
        int(token_ids.max()) if is_int and token_ids.size else 0,
    )
    if padding_mask is None:
        mask = default_padding_mask(config, token_ids)
    else:
        mask = np.asarray(padding_mask)
        check_padding_mask(token_ids.shape, mask.shape, str(mask.dtype), mask.dtype == np.bool_)
    w = {name: np.asarray(value, dtype=np.float64) for name, value in tensors.items()}

    acts: dict[str, np.ndarray] = {}
    x = w["embedding.weight"][token_ids]
    if config.scale_embedding:
        x = x * math.sqrt(config.d_model)
    acts["embedding"] = x
    x = x + sinusoidal_table(config.max_len, config.d_model)[: token_ids.shape[1]]
    acts["positional"] = x
    for i in range(config.n_layers):
        layer = {name[len(f"layers.{i}.") :]: value for name, value in w.items() if name.startswith(f"layers.{i}.")}
        acts[f"layers.{i}.attn"], x = encoder_layer(config, layer, x, mask)
        acts[f"layers.{i}.ffn"] = x
    if config.has_final_norm:
        x = layer_norm(x, w["final_norm.scale"], w["final_norm.bias"], config.layer_norm_eps)
        acts["final_norm"] = x
    acts["output"] = x
    return acts
