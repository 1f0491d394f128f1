"""The float64 NumPy oracle: the encoder written as a specification, from canonical tensors.

Every test compares the two frameworks against this third, independent implementation. `encoder_forward`
also returns the activations at each component boundary, so a failing comparison names where it starts:

    embedding          token embedding (x sqrt(d_model) when scale_embedding)      [B, S, D]
    positional         + positions (sinusoidal or learned; rotary adds none here), + token types  [B, S, D]
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
from rosetta_common.positional import (
    position_ids,
    rotary_tables,
    rotate_half,
    segment_allowed,
    sequence_positions,
    sinusoidal_table,
    window_allowed,
)

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
    x: np.ndarray, scale: np.ndarray, bias: np.ndarray | None, eps: float, *, rounding: Rounding = exact
) -> np.ndarray:
    """(x - mean) / sqrt(var + eps) * scale (+ bias) over the last axis; var is the biased two-pass variance."""
    r = rounding
    centred = r(x - r(x.mean(axis=-1, keepdims=True)))
    var = r((centred**2).mean(axis=-1, keepdims=True))
    scaled = r(r(centred / r(np.sqrt(r(var + eps)))) * scale)
    return scaled if bias is None else r(scaled + bias)


def softmax(scores: np.ndarray, *, rounding: Rounding = exact) -> np.ndarray:
    r = rounding
    shifted = r(np.exp(r(scores - scores.max(axis=-1, keepdims=True))))
    return r(shifted / r(shifted.sum(axis=-1, keepdims=True)))


def linear(x: np.ndarray, weights: Mapping[str, np.ndarray], name: str, *, rounding: Rounding = exact) -> np.ndarray:
    """x @ `name.kernel` (+ `name.bias` when the config has one: the canonical check makes the tensors match it)."""
    r = rounding
    y = r(x @ weights[f"{name}.kernel"])
    return r(y + weights[f"{name}.bias"]) if f"{name}.bias" in weights else y


def allowed_keys(
    padding_mask: np.ndarray, max_distance: int | None = None, segment_ids: np.ndarray | None = None
) -> np.ndarray:
    """bool `[B, S, S]`: query i may attend to key j when j is not padding, in a local layer |i - j| is at most
    `max_distance`, and, packed (`segment_ids`), j is in i's segment (`positional.segment_allowed`)."""
    seq = padding_mask.shape[-1]
    allowed = ~padding_mask[:, None, :] & window_allowed(seq, max_distance)[None]
    return allowed if segment_ids is None else allowed & segment_allowed(segment_ids)


def rotary(
    x: np.ndarray, theta: float, positions: np.ndarray | None = None, *, rounding: Rounding = exact
) -> np.ndarray:
    """Rotary positions on q or k `[B, H, S, d_head]`: x cos + rotate_half(x) sin at positions 0, 1, ..., S-1, or
    at int `positions` `[B, S]` (packed: each token's position in its own sequence)."""
    r = rounding
    if positions is None:
        cos, sin = rotary_tables(np.arange(x.shape[2]), x.shape[-1], theta)
    else:
        cos, sin = (table[:, None] for table in rotary_tables(positions, x.shape[-1], theta))  # [B, 1, S, d_head]
    return r(r(x * r(cos)) + r(rotate_half(x) * r(sin)))


def attention(
    x: np.ndarray,
    weights: Mapping[str, np.ndarray],
    n_heads: int,
    padding_mask: np.ndarray,
    *,
    max_distance: int | None = None,
    rope_theta: float | None = None,
    segment_ids: np.ndarray | None = None,
    rounding: Rounding = exact,
) -> np.ndarray:
    """Multi-head self-attention. x `[B, S, D]`, padding_mask bool `[B, S]` (True = padding) -> `[B, S, D]`.

    A padded position is never attended to as a key; `max_distance` (a local layer): nor a key further than that
    from the query; packed (`segment_ids` int `[B, S]`): nor a key of another segment, and rotary positions count
    from each segment's start. `rope_theta`: rotate q and k (rotary positions) with this base. A query with no key
    it may attend to (a sequence that is all padding; in a local layer, a padded position whose window holds only
    padding) attends uniformly to every position instead (scores 0: finite, never NaN).
    """
    r = rounding
    batch, seq, d_model = x.shape
    d_head = d_model // n_heads

    def heads(name: str) -> np.ndarray:  # [B, S, D] -> [B, H, S, d_head]
        projected = linear(x, weights, f"attn.{name}", rounding=r)
        return projected.reshape(batch, seq, n_heads, d_head).transpose(0, 2, 1, 3)

    q, k, v = heads("q"), heads("k"), heads("v")
    if rope_theta is not None:
        positions = None if segment_ids is None else sequence_positions(segment_ids, segment_ids.shape)
        q, k = (rotary(t, rope_theta, positions, rounding=r) for t in (q, k))
    scores = r(r(q @ k.transpose(0, 1, 3, 2)) / math.sqrt(d_head))  # [B, H, S, S]
    allowed = allowed_keys(padding_mask, max_distance, segment_ids)  # [B, S, S]
    scores = np.where(allowed[:, None], scores, -np.inf)
    no_key = ~allowed.any(axis=-1)[:, None, :, None]  # [B, 1, S, 1]
    scores = np.where(no_key, 0.0, scores)
    context = r(softmax(scores, rounding=r) @ v)  # [B, H, S, d_head]
    context = context.transpose(0, 2, 1, 3).reshape(batch, seq, d_model)
    return linear(context, weights, "attn.out", rounding=r)


def feed_forward(
    x: np.ndarray,
    weights: Mapping[str, np.ndarray],
    activation_name: str,
    *,
    glu: bool = False,
    rounding: Rounding = exact,
) -> np.ndarray:
    """Position-wise feed-forward: d_model -> d_ff -> d_model. x `[B, S, D]` -> `[B, S, D]`.

    `glu`: the hidden units are `act(x @ in) * (x @ gate)` (GeGLU with gelu), else `act(x @ in)`."""
    r = rounding
    hidden = activation(activation_name, linear(x, weights, "ffn.in", rounding=r), rounding=r)
    if glu:
        hidden = r(hidden * linear(x, weights, "ffn.gate", rounding=r))
    return linear(hidden, weights, "ffn.out", rounding=r)


def encoder_layer(
    config: EncoderConfig,
    weights: Mapping[str, np.ndarray],
    x: np.ndarray,
    padding_mask: np.ndarray,
    *,
    index: int = 0,
    segment_ids: np.ndarray | None = None,
    rounding: Rounding = exact,
) -> tuple[np.ndarray, np.ndarray]:
    """Layer `index`; returns (hidden after the attention sub-layer, hidden after the feed-forward sub-layer).
    `segment_ids`: packed rows (see `attention`)."""
    r, eps, spec = rounding, config.layer_norm_eps, config.layer(index)

    def norm(name: str, h: np.ndarray) -> np.ndarray:
        if f"{name}.scale" not in weights:  # layer 0 without its attention norm (ModernBERT)
            return h
        return layer_norm(h, weights[f"{name}.scale"], weights.get(f"{name}.bias"), eps, rounding=r)

    def attend(h: np.ndarray) -> np.ndarray:
        return attention(
            h,
            weights,
            config.n_heads,
            padding_mask,
            max_distance=spec.max_distance,
            rope_theta=spec.rope_theta,
            segment_ids=segment_ids,
            rounding=r,
        )

    def feed(h: np.ndarray) -> np.ndarray:
        return feed_forward(h, weights, config.activation, glu=config.feed_forward == "glu", rounding=r)

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
    segment_ids: np.ndarray | None = None,
    rounding: Rounding = exact,
) -> dict[str, np.ndarray]:
    """Token embedding, positions, token types and the embedding LayerNorm: the activations up to the first layer.
    Packed (`segment_ids`): positions restart at each segment (`positional.position_ids`)."""
    r = rounding
    acts: dict[str, np.ndarray] = {}
    x = w["embedding.weight"][token_ids]
    if config.scale_embedding:
        x = r(x * math.sqrt(config.d_model))
    acts["embedding"] = x
    if config.positions == "learned":
        x = r(x + w["position_embedding.weight"][position_ids(config, token_ids, segment_ids)])
    elif config.positions == "sinusoidal":
        table = sinusoidal_table(config.max_len, config.d_model)
        x = r(x + r(table[sequence_positions(segment_ids, token_ids.shape)]))
    else:
        assert config.positions == "rotary", config.positions  # rotary: applied inside each attention

    if config.type_vocab_size:
        types = np.zeros_like(token_ids) if token_type_ids is None else token_type_ids
        x = r(x + w["token_type_embedding.weight"][types])
    acts["positional"] = x
    if config.embedding_norm:
        scale, bias = w["embedding_norm.scale"], w.get("embedding_norm.bias")
        acts["embedding_norm"] = layer_norm(x, scale, bias, config.embedding_norm_epsilon, rounding=r)
    return acts


def checked_masks(
    config: EncoderConfig,
    token_ids: np.ndarray,
    padding_mask: np.ndarray | None,
    attention_mask: np.ndarray | None,
    token_type_ids: np.ndarray | None,
    segment_ids: np.ndarray | None = None,
) -> np.ndarray:
    """Check every input (`check_encoder_inputs`, as both frameworks do) and return the padding mask (packed:
    where the segment id is 0)."""
    given = None
    if attention_mask is not None:
        given = np.asarray(attention_mask) == 0
    elif padding_mask is not None:
        given = np.asarray(padding_mask)
    check_encoder_inputs(
        config,
        numpy_facts(token_ids),
        None if padding_mask is None else numpy_facts(padding_mask),
        token_type_ids=None if token_type_ids is None else numpy_facts(token_type_ids),
        attention_mask=None if attention_mask is None else numpy_facts(attention_mask, binary=True),
        segment_ids=segment_ids,
        mask_padding=given,
    )
    if segment_ids is not None:
        return np.asarray(segment_ids) == 0
    return default_padding_mask(config, token_ids) if given is None else given


def encoder_forward(
    config: EncoderConfig,
    tensors: Mapping[str, np.ndarray],
    token_ids: np.ndarray,
    padding_mask: np.ndarray | None = None,
    *,
    token_type_ids: np.ndarray | None = None,
    attention_mask: np.ndarray | None = None,
    segment_ids: np.ndarray | None = None,
    rounding: Rounding = exact,
) -> dict[str, np.ndarray]:
    """The encoder in float64 (dropout off). token_ids int `[B, S]` -> every boundary activation, see module doc.

    `padding_mask` bool (True = padding) or, instead, HF's `attention_mask` (1 = keep); `token_type_ids` int
    `[B, S]` when the config has token types (default: all 0). `segment_ids` int `[B, S]`: packed rows (0 =
    padding, k = the k-th sequence of the row): each token attends only within its segment and positions restart
    at each one, so every packed token's output is its sequence's output alone. `rounding` (see the module doc) is
    applied to every intermediate array; the default computes exactly.
    """
    token_ids = np.asarray(token_ids)
    segments = None if segment_ids is None else np.asarray(segment_ids)
    mask = checked_masks(config, token_ids, padding_mask, attention_mask, token_type_ids, segments)
    w = {name: np.asarray(value, dtype=np.float64) for name, value in tensors.items()}
    types = None if token_type_ids is None else np.asarray(token_type_ids)

    r = rounding
    acts = embedding_front(config, w, token_ids, types, segment_ids=segments, rounding=r)
    x = acts["embedding_norm" if config.embedding_norm else "positional"]
    for i in range(config.n_layers):
        layer = {name[len(f"layers.{i}.") :]: value for name, value in w.items() if name.startswith(f"layers.{i}.")}
        acts[f"layers.{i}.attn"], x = encoder_layer(config, layer, x, mask, index=i, segment_ids=segments, rounding=r)
        acts[f"layers.{i}.ffn"] = x
    if config.has_final_norm:
        x = layer_norm(x, w["final_norm.scale"], w.get("final_norm.bias"), config.layer_norm_eps, rounding=r)
        acts["final_norm"] = x
    acts["output"] = x
    if config.pooler:
        acts["pooler"] = r(np.tanh(r(r(x[:, 0] @ w["pooler.kernel"]) + w["pooler.bias"])))
    return acts
