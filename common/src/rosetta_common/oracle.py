"""The float64 NumPy oracle: the encoder written as a specification, from canonical tensors.

Every test compares the two frameworks against this third, independent implementation. `encoder_forward`
also returns the activations at each component boundary, so a failing comparison names where it starts:

    embedding          token embedding (x sqrt(d_model) when scale_embedding)      [B, S, D]
    positional         + positions (sinusoidal or learned), + token types if any  [B, S, D]
    embedding_norm     after the embedding LayerNorm (only when configured)       [B, S, D]
    layers.{i}.attn    hidden state after the attention sub-layer (add & norm)   [B, S, D]
    layers.{i}.ffn     hidden state after the feed-forward sub-layer             [B, S, D]
    final_norm         after the final LayerNorm (only when the config has one)  [B, S, D]
    output             the encoder output                                        [B, S, D]
    pooler             tanh(output[:, 0] @ pooler.kernel + bias) (when configured) [B, D]

Every function takes an optional `rounding`, applied to each intermediate array it computes (identity by default,
so the oracle is exact float64). `rosetta_common.rounding_error` passes a random relative perturbation there to
estimate how far a lower precision's rounding moves each component for a given input (a float32 error model).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from rosetta_common.config import EncoderConfig
from rosetta_common.inputs import check_encoder_inputs, numpy_facts
from rosetta_common.positional import position_ids, sinusoidal_table

_erf = np.vectorize(math.erf, otypes=[np.float64])

Rounding = Callable[[np.ndarray], np.ndarray]
"""Applied to every intermediate array; maps an array to an array of the same shape."""


def exact(x: np.ndarray) -> np.ndarray:
    """No rounding: the oracle's own float64 arithmetic."""
    return x


def activation(name: str, x: np.ndarray, *, rounding: Rounding = exact) -> np.ndarray:
    """relu, exact gelu (erf) or gelu_tanh (the tanh approximation)."""
    r = rounding
    if name == "relu":
        return np.maximum(x, 0.0)
    if name == "gelu":
        return r(0.5 * x * r(1.0 + r(_erf(r(x / math.sqrt(2.0))))))
    if name == "gelu_tanh":
        inner = r(math.sqrt(2.0 / math.pi) * r(x + r(0.044715 * x**3)))
        return r(0.5 * x * r(1.0 + r(np.tanh(inner))))
    raise ValueError(f"unknown activation {name!r}")


def layer_norm(
    x: np.ndarray, scale: np.ndarray, bias: np.ndarray, eps: float, *, rounding: Rounding = exact
) -> np.ndarray:
    """(x - mean) / sqrt(var + eps) * scale + bias over the last axis; var is the biased two-pass variance."""
    r = rounding
    centred = r(x - r(x.mean(axis=-1, keepdims=True)))
    var = r((centred**2).mean(axis=-1, keepdims=True))
    return r(r(centred / r(np.sqrt(r(var + eps)))) * scale + bias)


def softmax(scores: np.ndarray, *, rounding: Rounding = exact) -> np.ndarray:
    r = rounding
    shifted = r(np.exp(r(scores - scores.max(axis=-1, keepdims=True))))
    return r(shifted / r(shifted.sum(axis=-1, keepdims=True)))


def attention(
    x: np.ndarray,
    weights: Mapping[str, np.ndarray],
    n_heads: int,
    padding_mask: np.ndarray,
    *,
    rounding: Rounding = exact,
) -> np.ndarray:
    """Multi-head self-attention. x `[B, S, D]`, padding_mask bool `[B, S]` (True = padding) -> `[B, S, D]`.

    A padded position is never attended to as a key; a query in a sequence that is all padding has no key
    to attend to and attends uniformly to every position instead (finite, never NaN).
    """
    r = rounding
    batch, seq, d_model = x.shape
    d_head = d_model // n_heads

    def heads(name: str) -> np.ndarray:  # [B, S, D] -> [B, H, S, d_head]
        projected = r(r(x @ weights[f"attn.{name}.kernel"]) + weights[f"attn.{name}.bias"])
        return projected.reshape(batch, seq, n_heads, d_head).transpose(0, 2, 1, 3)

    q, k, v = heads("q"), heads("k"), heads("v")
    scores = r(r(q @ k.transpose(0, 1, 3, 2)) / math.sqrt(d_head))  # [B, H, S, S]
    key_is_padding = padding_mask[:, None, None, :]
    scores = np.where(key_is_padding, -np.inf, scores)
    all_padding = padding_mask.all(axis=-1)[:, None, None, None]
    scores = np.where(all_padding, 0.0, scores)
    context = r(softmax(scores, rounding=r) @ v)  # [B, H, S, d_head]
    context = context.transpose(0, 2, 1, 3).reshape(batch, seq, d_model)
    return r(r(context @ weights["attn.out.kernel"]) + weights["attn.out.bias"])


def feed_forward(
    x: np.ndarray, weights: Mapping[str, np.ndarray], activation_name: str, *, rounding: Rounding = exact
) -> np.ndarray:
    """Position-wise feed-forward: d_model -> d_ff -> d_model. x `[B, S, D]` -> `[B, S, D]`."""
    r = rounding
    hidden = activation(activation_name, r(r(x @ weights["ffn.in.kernel"]) + weights["ffn.in.bias"]), rounding=r)
    return r(r(hidden @ weights["ffn.out.kernel"]) + weights["ffn.out.bias"])


def encoder_layer(
    config: EncoderConfig,
    weights: Mapping[str, np.ndarray],
    x: np.ndarray,
    padding_mask: np.ndarray,
    *,
    rounding: Rounding = exact,
) -> tuple[np.ndarray, np.ndarray]:
    """One layer; returns (hidden after the attention sub-layer, hidden after the feed-forward sub-layer)."""
    r, eps = rounding, config.layer_norm_eps

    def norm(name: str, h: np.ndarray) -> np.ndarray:
        return layer_norm(h, weights[f"{name}.scale"], weights[f"{name}.bias"], eps, rounding=r)

    def attend(h: np.ndarray) -> np.ndarray:
        return attention(h, weights, config.n_heads, padding_mask, rounding=r)

    def feed(h: np.ndarray) -> np.ndarray:
        return feed_forward(h, weights, config.activation, rounding=r)

    if config.norm_first:
        after_attn = r(x + attend(norm("norm1", x)))
        after_ffn = r(after_attn + feed(norm("norm2", after_attn)))
    else:
        after_attn = norm("norm1", r(x + attend(x)))
        after_ffn = norm("norm2", r(after_attn + feed(after_attn)))
    return after_attn, after_ffn


def default_padding_mask(config: EncoderConfig, token_ids: np.ndarray) -> np.ndarray:
    """`token_ids == padding_idx`, or no padding at all when padding_idx is None."""
    if config.padding_idx is None:
        return np.zeros(token_ids.shape, dtype=bool)
    return token_ids == config.padding_idx


def embedding_front(
    config: EncoderConfig,
    w: Mapping[str, np.ndarray],
    token_ids: np.ndarray,
    token_type_ids: np.ndarray | None,
    *,
    rounding: Rounding = exact,
) -> dict[str, np.ndarray]:
    """Token embedding, positions, token types and the embedding LayerNorm: the activations up to the first layer."""
    r = rounding
    acts: dict[str, np.ndarray] = {}
    x = w["embedding.weight"][token_ids]
    if config.scale_embedding:
        x = r(x * math.sqrt(config.d_model))
    acts["embedding"] = x
    if config.positions == "learned":
        x = r(x + w["position_embedding.weight"][position_ids(config, token_ids)])
    else:
        x = r(x + r(sinusoidal_table(config.max_len, config.d_model)[: token_ids.shape[1]]))
    if config.type_vocab_size:
        types = np.zeros_like(token_ids) if token_type_ids is None else token_type_ids
        x = r(x + w["token_type_embedding.weight"][types])
    acts["positional"] = x
    if config.embedding_norm:
        scale, bias = w["embedding_norm.scale"], w["embedding_norm.bias"]
        acts["embedding_norm"] = layer_norm(x, scale, bias, config.embedding_norm_epsilon, rounding=r)
    return acts


def checked_masks(
    config: EncoderConfig,
    token_ids: np.ndarray,
    padding_mask: np.ndarray | None,
    attention_mask: np.ndarray | None,
    token_type_ids: np.ndarray | None,
) -> np.ndarray:
    """Check every input (`check_encoder_inputs`, as both frameworks do) and return the padding mask."""
    check_encoder_inputs(
        config,
        numpy_facts(token_ids),
        None if padding_mask is None else numpy_facts(padding_mask),
        token_type_ids=None if token_type_ids is None else numpy_facts(token_type_ids),
        attention_mask=None if attention_mask is None else numpy_facts(attention_mask, binary=True),
    )
    if attention_mask is not None:
        return np.asarray(attention_mask) == 0
    if padding_mask is None:
        return default_padding_mask(config, token_ids)
    return np.asarray(padding_mask)


def encoder_forward(
    config: EncoderConfig,
    tensors: Mapping[str, np.ndarray],
    token_ids: np.ndarray,
    padding_mask: np.ndarray | None = None,
    *,
    token_type_ids: np.ndarray | None = None,
    attention_mask: np.ndarray | None = None,
    rounding: Rounding = exact,
) -> dict[str, np.ndarray]:
    """The encoder in float64 (dropout off). token_ids int `[B, S]` -> every boundary activation, see module doc.

    `padding_mask` bool (True = padding) or, instead, HF's `attention_mask` (1 = keep); `token_type_ids` int
    `[B, S]` when the config has token types (default: all 0). `rounding` (see the module doc) is applied to
    every intermediate array; the default computes exactly.
    """
    token_ids = np.asarray(token_ids)
    mask = checked_masks(config, token_ids, padding_mask, attention_mask, token_type_ids)
    w = {name: np.asarray(value, dtype=np.float64) for name, value in tensors.items()}
    types = None if token_type_ids is None else np.asarray(token_type_ids)

    r = rounding
    acts = embedding_front(config, w, token_ids, types, rounding=r)
    x = acts["embedding_norm" if config.embedding_norm else "positional"]
    for i in range(config.n_layers):
        layer = {name[len(f"layers.{i}.") :]: value for name, value in w.items() if name.startswith(f"layers.{i}.")}
        acts[f"layers.{i}.attn"], x = encoder_layer(config, layer, x, mask, rounding=r)
        acts[f"layers.{i}.ffn"] = x
    if config.has_final_norm:
        x = layer_norm(x, w["final_norm.scale"], w["final_norm.bias"], config.layer_norm_eps, rounding=r)
        acts["final_norm"] = x
    acts["output"] = x
    if config.pooler:
        acts["pooler"] = r(np.tanh(r(r(x[:, 0] @ w["pooler.kernel"]) + w["pooler.bias"])))
    return acts
