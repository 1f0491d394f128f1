"""EncoderConfig: the one frozen description of an encoder, shared by every implementation.

The JSON stays flat (as HF configs); `config.layer(i)` derives what differs from layer to layer (a local window,
the rotary base, whether the attention sub-layer has its LayerNorm), so the canonical shapes, the oracle and both
frameworks' layers read one answer instead of each recomputing `i % global_every`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ACTIVATIONS = ("relu", "gelu", "gelu_tanh")
POSITIONS = ("sinusoidal", "learned", "rotary")
POSITION_IDS = ("sequential", "after_padding")
FEED_FORWARDS = ("mlp", "glu")
DEFAULT_ROPE_THETA = 10000.0


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def positive_int(value: object) -> str | None:
    return None if _is_int(value) and value >= 1 else "a positive int"


def int_at_least_zero(value: object) -> str | None:
    return None if _is_int(value) and value >= 0 else "an int >= 0"


def boolean(value: object) -> str | None:
    return None if isinstance(value, bool) else "a bool"


def optional(check: Callable[[object], str | None]) -> Callable[[object], str | None]:
    def checked(value: object) -> str | None:
        problem = None if value is None else check(value)
        return None if problem is None else f"None or {problem}"

    return checked


def one_of(choices: tuple[str, ...]) -> Callable[[object], str | None]:
    return lambda value: None if value in choices else f"one of {choices}"


def float_in(low: float, high: float | None, *, low_open: bool = True, high_open: bool = True) -> Callable:
    """A number in (low, high) (brackets by `*_open`; high None: unbounded)."""
    left, right = "(" if low_open else "[", ")" if high_open else "]"
    words = f"a float in {left}{low}, {'inf' if high is None else high}{right}"

    def check(value: object) -> str | None:
        if not _is_number(value):
            return words
        above = value > low if low_open else value >= low
        below = high is None or (value < high if high_open else value <= high)
        return None if above and below else words

    return check


FIELD_CHECKS: dict[str, Callable[[object], str | None]] = {
    "vocab_size": positive_int,
    "d_model": positive_int,
    "n_heads": positive_int,
    "n_layers": positive_int,
    "d_ff": positive_int,
    "max_len": positive_int,
    "activation": one_of(ACTIVATIONS),
    "norm_first": boolean,
    "final_norm": optional(boolean),
    "layer_norm_eps": float_in(0, 1),
    "dropout": float_in(0, 1, low_open=False),
    "scale_embedding": boolean,
    "positions": one_of(POSITIONS),
    "position_ids": one_of(POSITION_IDS),
    "type_vocab_size": int_at_least_zero,
    "embedding_norm": boolean,
    "embedding_norm_eps": optional(float_in(0, 1)),
    "pooler": boolean,
    "feed_forward": one_of(FEED_FORWARDS),
    "attention_bias": boolean,
    "mlp_bias": boolean,
    "norm_bias": boolean,
    "rope_theta": float_in(0, None),
    "local_rope_theta": optional(float_in(0, None)),
    "local_window": int_at_least_zero,
    "global_every": positive_int,
    "first_attention_norm": boolean,
}
"""Each field's own check: None when the value is valid, else what it must be (the ValueError's words)."""

COMBINATION_RULES: tuple[tuple[str, Callable[[EncoderConfig], bool], str], ...] = (
    ("d_model", lambda c: c.d_model % c.n_heads == 0, " ({c.d_model}) must be divisible by n_heads ({c.n_heads})"),
    (
        "padding_idx",
        lambda c: c.padding_idx is None or (_is_int(c.padding_idx) and 0 <= c.padding_idx < c.vocab_size),
        " must be None or an int in [0, vocab_size={c.vocab_size}), got {c.padding_idx!r}",
    ),
    (
        "position_ids",
        lambda c: c.position_ids != "after_padding" or (c.positions == "learned" and c.padding_idx is not None),
        "='after_padding' (RoBERTa) needs positions='learned' and a padding_idx",
    ),
    (
        "positions",
        lambda c: c.positions != "rotary" or c.d_head % 2 == 0,
        "='rotary' needs an even d_head ({c.d_head})",
    ),
    (
        "rope_theta",
        lambda c: c.positions == "rotary" or c.rope_theta == DEFAULT_ROPE_THETA,
        "={c.rope_theta!r} is read only with positions='rotary'",
    ),
    (
        "global_every",
        lambda c: (c.global_every == 1) == (c.local_window == 0),
        "={c.global_every} with local_window={c.local_window}: local layers (global_every > 1) need a window "
        "(local_window > 0) and a window needs local layers (layer i is global when i % global_every == 0)",
    ),
    (
        "local_rope_theta",
        lambda c: c.local_rope_theta is None or (c.positions == "rotary" and c.has_local_layers),
        "={c.local_rope_theta!r} is read only with positions='rotary' and local layers (local_window > 0, "
        "global_every > 1)",
    ),
    (
        "first_attention_norm",
        lambda c: c.first_attention_norm or c.norm_first,
        "=False (layer 0 reads the embedding LayerNorm's output unnormalised) needs norm_first=True",
    ),
    (
        "first_attention_norm",
        lambda c: c.first_attention_norm or c.embedding_norm,
        "=False needs embedding_norm=True: the embedding LayerNorm stands in for layer 0's",
    ),
)
"""(field, holds, what it needs): the rules between fields, checked after every field's own check; the words follow
`EncoderConfig.{field}` and are formatted with the config as `c`."""


@dataclass(frozen=True)
class LayerSpec:
    """What layer `index` of a config is: `max_distance` None (global attention) or the largest |query - key|
    a local layer attends over; `rope_theta` its rotary base (None: no rotary); `attention_norm` whether its
    attention sub-layer has a LayerNorm (`norm1`)."""

    index: int
    max_distance: int | None
    rope_theta: float | None
    attention_norm: bool

    @property
    def is_local(self) -> bool:
        return self.max_distance is not None


@dataclass(frozen=True)
class EncoderConfig:
    """Hyper-parameters of the Transformer encoder (see common/DESIGN.md).

    `final_norm=None` follows `norm_first`: pre-norm stacks end with a LayerNorm, post-norm stacks do not.

    The embedding front (defaults: the seeds' encoder): `positions` "sinusoidal" (a fixed table), "learned" (a
    trained `[position_table_size, d_model]` table, as BERT) or "rotary" (no table: q and k rotated per head in
    every attention, HF's rotate-half convention, base `rope_theta`); `position_ids` "sequential" (0, 1, ...) or
    "after_padding" (RoBERTa: padding_idx + 1, + 2, ... over the non-padding tokens, padding_idx at padding
    tokens; learned positions only); `type_vocab_size` token-type (segment) embeddings, 0 for none; an
    `embedding_norm` LayerNorm after the sum, with `embedding_norm_eps` (None: layer_norm_eps); a `pooler`
    (dense + tanh on the first position's output, as BERT's).

    The layers (defaults: the seeds'): `feed_forward` "mlp" (in, activation, out) or "glu" (`act(in) * gate`,
    then out: GeGLU with gelu); `attention_bias` / `mlp_bias` / `norm_bias` whether the attention's and the
    feed-forward's linears and every LayerNorm have a bias; `local_window` > 0 with `global_every` N > 1: layer i
    is global when i % N == 0, else local, attending only to keys within `local_window // 2` positions (its rotary
    base `local_rope_theta`, None: rope_theta); `first_attention_norm=False`: layer 0 of a pre-norm stack has no
    attention LayerNorm (the embedding LayerNorm stands in, as ModernBERT).
    """

    vocab_size: int
    d_model: int
    n_heads: int
    n_layers: int
    d_ff: int
    max_len: int = 512
    padding_idx: int | None = 1
    activation: str = "relu"
    norm_first: bool = False
    final_norm: bool | None = None
    layer_norm_eps: float = 1e-5
    dropout: float = 0.1
    scale_embedding: bool = True
    positions: str = "sinusoidal"
    position_ids: str = "sequential"
    type_vocab_size: int = 0
    embedding_norm: bool = False
    embedding_norm_eps: float | None = None
    pooler: bool = False
    feed_forward: str = "mlp"
    attention_bias: bool = True
    mlp_bias: bool = True
    norm_bias: bool = True
    rope_theta: float = DEFAULT_ROPE_THETA
    local_rope_theta: float | None = None
    local_window: int = 0
    global_every: int = 1
    first_attention_norm: bool = True

    def __post_init__(self) -> None:
        for name, check in FIELD_CHECKS.items():
            problem = check(getattr(self, name))
            if problem is not None:
                raise ValueError(f"EncoderConfig.{name} must be {problem}, got {getattr(self, name)!r}")
        for name, holds, needs in COMBINATION_RULES:
            if not holds(self):
                raise ValueError(f"EncoderConfig.{name}{needs.format(c=self)}")

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def position_table_size(self) -> int:
        """Rows of the learned position table: max_len, plus padding_idx + 1 when ids start after padding_idx."""
        offset = self.padding_idx + 1 if self.position_ids == "after_padding" and self.padding_idx is not None else 0
        return self.max_len + offset

    @property
    def embedding_norm_epsilon(self) -> float:
        """The embedding LayerNorm's eps (`embedding_norm_eps`, defaulting to `layer_norm_eps`)."""
        return self.layer_norm_eps if self.embedding_norm_eps is None else self.embedding_norm_eps

    @property
    def has_final_norm(self) -> bool:
        """Whether the stack ends with a LayerNorm (`final_norm`, defaulting to `norm_first`)."""
        return self.norm_first if self.final_norm is None else self.final_norm

    @property
    def has_local_layers(self) -> bool:
        """Whether some layer can be local (the stack may still be too short to reach one)."""
        return self.local_window > 0 and self.global_every > 1

    def layer(self, index: int) -> LayerSpec:
        """Layer `index`'s kind: global or local (and how far a local one sees), rotary base, attention norm."""
        if not 0 <= index < self.n_layers:
            raise IndexError(f"layer {index} of an encoder with n_layers={self.n_layers}")
        local = self.local_window > 0 and index % self.global_every != 0
        theta: float | None = None
        if self.positions == "rotary":
            theta = self.local_rope_theta if local and self.local_rope_theta is not None else self.rope_theta
        return LayerSpec(
            index=index,
            max_distance=self.local_window // 2 if local else None,
            rope_theta=theta,
            attention_norm=self.first_attention_norm or index > 0,
        )

    @property
    def layers(self) -> tuple[LayerSpec, ...]:
        return tuple(self.layer(i) for i in range(self.n_layers))

    def __repr__(self) -> str:
        """The fields without a default, then those set away from theirs: a Python expression of this config."""
        shown = [
            f"{field.name}={getattr(self, field.name)!r}"
            for field in dataclasses.fields(self)
            if field.default is dataclasses.MISSING or getattr(self, field.name) != field.default
        ]
        return f"EncoderConfig({', '.join(shown)})"

    def replace(self, **changes: Any) -> EncoderConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"EncoderConfig got unknown fields: {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> EncoderConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"EncoderConfig JSON is malformed: {err}") from err
        if not isinstance(data, dict):
            raise ValueError("EncoderConfig JSON must be an object")
        return cls.from_dict(data)
