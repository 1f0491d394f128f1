"""EncoderConfig: the one frozen description of an encoder, shared by every implementation."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

ACTIVATIONS = ("relu", "gelu", "gelu_tanh")
POSITIONS = ("sinusoidal", "learned")
POSITION_IDS = ("sequential", "after_padding")


@dataclass(frozen=True)
class EncoderConfig:
    """Hyper-parameters of the Transformer encoder (see common/DESIGN.md).

    `final_norm=None` follows `norm_first`: pre-norm stacks end with a LayerNorm, post-norm stacks do not.

    The embedding front (defaults: the seeds' encoder): `positions` "sinusoidal" (a fixed table) or "learned" (a
    trained `[position_table_size, d_model]` table, as BERT); `position_ids` "sequential" (0, 1, ...) or
    "after_padding" (RoBERTa: padding_idx + 1, + 2, ... over the non-padding tokens, padding_idx at padding
    tokens; learned positions only); `type_vocab_size` token-type (segment) embeddings, 0 for none; an
    `embedding_norm` LayerNorm after the sum, with `embedding_norm_eps` (None: layer_norm_eps); a `pooler`
    (dense + tanh on the first position's output, as BERT's).
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

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_heads", "n_layers", "d_ff", "max_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"EncoderConfig.{name} must be a positive int, got {value!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"EncoderConfig.d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.padding_idx is not None and (
            isinstance(self.padding_idx, bool)
            or not isinstance(self.padding_idx, int)
            or not 0 <= self.padding_idx < self.vocab_size
        ):
            raise ValueError(
                f"EncoderConfig.padding_idx must be None or an int in [0, vocab_size={self.vocab_size}), "
                f"got {self.padding_idx!r}"
            )
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"EncoderConfig.activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        for name in ("norm_first", "scale_embedding"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"EncoderConfig.{name} must be a bool, got {getattr(self, name)!r}")
        if self.final_norm is not None and not isinstance(self.final_norm, bool):
            raise ValueError(f"EncoderConfig.final_norm must be None or a bool, got {self.final_norm!r}")
        if (
            isinstance(self.layer_norm_eps, bool)
            or not isinstance(self.layer_norm_eps, (int, float))
            or not (0 < self.layer_norm_eps < 1)
        ):
            raise ValueError(f"EncoderConfig.layer_norm_eps must be a float in (0, 1), got {self.layer_norm_eps!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not (0 <= self.dropout < 1):
            raise ValueError(f"EncoderConfig.dropout must be a float in [0, 1), got {self.dropout!r}")
        self._check_embedding_front()

    def _check_embedding_front(self) -> None:
        if self.positions not in POSITIONS:
            raise ValueError(f"EncoderConfig.positions must be one of {POSITIONS}, got {self.positions!r}")
        if self.position_ids not in POSITION_IDS:
            raise ValueError(f"EncoderConfig.position_ids must be one of {POSITION_IDS}, got {self.position_ids!r}")
        if self.position_ids == "after_padding" and (self.positions != "learned" or self.padding_idx is None):
            raise ValueError(
                "EncoderConfig.position_ids='after_padding' (RoBERTa) needs positions='learned' and a padding_idx"
            )
        if (
            isinstance(self.type_vocab_size, bool)
            or not isinstance(self.type_vocab_size, int)
            or self.type_vocab_size < 0
        ):
            raise ValueError(f"EncoderConfig.type_vocab_size must be an int >= 0, got {self.type_vocab_size!r}")
        for name in ("embedding_norm", "pooler"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"EncoderConfig.{name} must be a bool, got {getattr(self, name)!r}")
        eps = self.embedding_norm_eps
        if eps is not None and (isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (0 < eps < 1)):
            raise ValueError(f"EncoderConfig.embedding_norm_eps must be None or a float in (0, 1), got {eps!r}")

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
