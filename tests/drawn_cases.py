"""Random encoder cases for the property tests, drawn one way from two sources.

`draw_case` describes the distribution once, against a two-method `Draws` interface:

- `SeededDraws` (a NumPy generator with a fixed seed) gives the cases `nox -s tests` runs: the same cases on every
  machine and every Hypothesis release (NumPy itself is pinned in constraints.txt).
- `HypothesisDraws` gives the cases `nox -s fuzz` explores, with Hypothesis' search and shrinking.

A `Case` prints as a Python expression (`Case(config=EncoderConfig(...), seed=..., mask=(...), ...)`), so a
falsifying case from the fuzz session pastes straight into the explicit examples of `test_property.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np
from hypothesis import strategies as st

from rosetta_common import ACTIVATIONS, EncoderConfig
from rosetta_common.config import FEED_FORWARDS

T = TypeVar("T")


@dataclass(frozen=True)
class Case:
    """A config, a weight seed and a padding pattern `mask` (rows of bools, True = padding).

    With `derive_mask` the padded positions hold padding_idx (and only they) and the model derives the mask;
    otherwise the ids are random and `mask` is passed explicitly. With `segments` (rows of segment ids: packed
    sequences numbered 1, 2, ... per row, 0 = padding, where `mask` is True) the model gets them as `segment_ids`.
    """

    config: EncoderConfig
    seed: int
    mask: tuple[tuple[bool, ...], ...]
    derive_mask: bool = False
    segments: tuple[tuple[int, ...], ...] | None = None

    @property
    def token_ids(self) -> np.ndarray:
        """int64 `[B, S]`, from `seed`."""
        mask = np.array(self.mask, dtype=bool)
        ids = np.random.default_rng(self.seed).integers(0, self.config.vocab_size, size=mask.shape, dtype=np.int64)
        if not self.derive_mask:
            return ids
        padding_idx = self.config.padding_idx
        assert padding_idx is not None, "derive_mask needs a padding_idx"
        ids = np.where(ids == padding_idx, (padding_idx + 1) % self.config.vocab_size, ids)
        ids[mask] = padding_idx
        return ids

    @property
    def padding_mask(self) -> np.ndarray | None:
        """bool `[B, S]`, or None when the model derives it from padding_idx."""
        return None if self.derive_mask else np.array(self.mask, dtype=bool)


class Draws(Protocol):
    def integer(self, low: int, high: int) -> int:
        """An int in [low, high], both ends included."""
        ...

    def choice(self, options: Sequence[T]) -> T:
        """One of `options`."""
        ...


class SeededDraws:
    """Draws from a NumPy generator: reproducible wherever the pinned NumPy runs."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def integer(self, low: int, high: int) -> int:
        return int(self.rng.integers(low, high + 1))

    def choice(self, options: Sequence[T]) -> T:
        return options[int(self.rng.integers(len(options)))]


class HypothesisDraws:
    """Draws through Hypothesis (inside `st.composite`): searched and shrunk by its engine."""

    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw

    def integer(self, low: int, high: int) -> int:
        return self.draw(st.integers(low, high))

    def choice(self, options: Sequence[T]) -> T:
        return self.draw(st.sampled_from(options))


BOOLS = (False, True)


def draw_case(draws: Draws) -> Case:
    """Small configs with every option (the embedding front's too), random weights (by seed), padding of any
    pattern, all-padding rows."""
    n_heads, d_head = draws.integer(1, 3), draws.integer(1, 5)
    vocab_size = draws.choice((2, 5, 11))
    batch, seq = draws.integer(1, 3), draws.integer(1, 6)
    config = EncoderConfig(
        vocab_size=vocab_size,
        d_model=n_heads * d_head,
        n_heads=n_heads,
        n_layers=draws.integer(1, 3),
        d_ff=draws.integer(1, 9),
        max_len=seq + draws.integer(0, 3),
        padding_idx=draws.choice((None, *range(vocab_size))),
        activation=draws.choice(ACTIVATIONS),
        norm_first=draws.choice(BOOLS),
        final_norm=draws.choice((None, True, False)),
        layer_norm_eps=draws.choice((1e-5, 1e-6, 1e-3)),
        dropout=draws.choice((0.0, 0.1)),
        scale_embedding=draws.choice(BOOLS),
    )
    mask = [[draws.choice(BOOLS) for _ in range(seq)] for _ in range(batch)]
    all_padding_row = draws.choice((None, *range(batch)))
    if all_padding_row is not None:
        mask[all_padding_row] = [True] * seq
    derive_mask = config.padding_idx is not None and draws.choice(BOOLS)
    seed = draws.integer(0, 2**16)
    # The embedding front (BERT, RoBERTa), drawn last: every other field keeps the value it was drawn with before
    # these options existed (same seeded cases, now with a front). Token types stay the default (all 0).
    positions = draws.choice(("sinusoidal", "learned"))
    after_padding = positions == "learned" and config.padding_idx is not None and draws.choice(BOOLS)
    config = config.replace(
        positions=positions,
        position_ids="after_padding" if after_padding else "sequential",
        type_vocab_size=draws.integer(0, 2),
        embedding_norm=draws.choice(BOOLS),
        embedding_norm_eps=draws.choice((None, 1e-12)),
        pooler=draws.choice(BOOLS),
    )
    return Case(draw_layer_options(draws, config), seed, tuple(map(tuple, mask)), derive_mask)


def draw_layer_options(draws: Draws, config: EncoderConfig) -> EncoderConfig:
    """The modern-encoder options (ModernBERT's), drawn after everything else so every earlier field keeps the
    value it was drawn with before they existed: rotary positions (even d_head) with one or two bases, local
    windows every N layers, a GLU, bias-less linears and norms, layer 0 without its attention norm."""
    rotary = config.d_head % 2 == 0 and draws.choice(BOOLS)
    local_window = draws.choice((0, 0, 2, 3))
    global_every = draws.integer(2, 3) if local_window else 1
    changes: dict[str, object] = {
        "local_window": local_window,
        "global_every": global_every,
        "feed_forward": draws.choice(FEED_FORWARDS),
        "attention_bias": draws.choice(BOOLS),
        "mlp_bias": draws.choice(BOOLS),
        "norm_bias": draws.choice(BOOLS),
        "first_attention_norm": not (config.norm_first and config.embedding_norm and draws.choice(BOOLS)),
    }
    if rotary:
        changes.update(
            positions="rotary",
            position_ids="sequential",
            rope_theta=draws.choice((10000.0, 160000.0)),
            local_rope_theta=draws.choice((None, 10.0)) if local_window else None,
        )
    return config.replace(**changes)


def draw_packed_case(draws: Draws) -> Case:
    """`draw_case`'s config and weights with packed rows instead of a padding pattern: each row a random run of
    segments (1 to its remaining length long) and padding runs, drawn left to right."""
    case = draw_case(draws)
    rows = []
    for row in case.mask:
        segments, position, number = [], 0, 0
        while position < len(row):
            length = draws.integer(1, len(row) - position)
            is_segment = draws.choice((True, True, False))
            number += is_segment
            segments += [number if is_segment else 0] * length
            position += length
        rows.append(tuple(segments))
    mask = tuple(tuple(segment == 0 for segment in row) for row in rows)
    return Case(case.config, case.seed, mask, derive_mask=False, segments=tuple(rows))


@st.composite
def packed_cases(draw: st.DrawFn) -> Case:
    """The Hypothesis strategy for `draw_packed_case`."""
    return draw_packed_case(HypothesisDraws(draw))


def seeded_packed_cases(count: int, seed: int) -> list[Case]:
    """`count` cases from `draw_packed_case`, seeded as `seeded_cases`."""
    return [draw_packed_case(SeededDraws(np.random.default_rng([seed, i]))) for i in range(count)]


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """The Hypothesis strategy for `draw_case`."""
    return draw_case(HypothesisDraws(draw))


def seeded_cases(count: int, seed: int) -> list[Case]:
    """`count` cases from `draw_case`, the i-th from NumPy's generator seeded with `[seed, i]`."""
    return [draw_case(SeededDraws(np.random.default_rng([seed, i]))) for i in range(count)]
