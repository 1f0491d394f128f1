"""Named model sizes for the harness, with the batch and sequence length each is timed at by default."""

from __future__ import annotations

from dataclasses import dataclass

from rosetta_common import EncoderConfig


@dataclass(frozen=True)
class Preset:
    """A model config and its default input shape. Dropout is 0 so every run is deterministic."""

    config: EncoderConfig
    batch: int
    seq: int


PRESETS: dict[str, Preset] = {
    # "Attention Is All You Need", base model: shared BPE vocabulary of about 37000 tokens.
    "paper-base": Preset(EncoderConfig(37000, 512, 8, 6, 2048, max_len=512, dropout=0.0), batch=8, seq=128),
    # BERT-base sizes (post-norm, exact GELU); BERT's own embedding is not scaled, rosetta's default is kept.
    "bert-base": Preset(
        EncoderConfig(30522, 768, 12, 12, 3072, max_len=512, activation="gelu", dropout=0.0), batch=8, seq=128
    ),
    # Small enough for CI on two cores.
    "tiny": Preset(EncoderConfig(1000, 64, 4, 2, 128, max_len=128, dropout=0.0), batch=4, seq=32),
}
