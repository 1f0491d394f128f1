"""Named model sizes for the harness, with the batch and sequence length each is timed at by default."""

from __future__ import annotations

from dataclasses import dataclass, replace

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
    # ModernBERT-base sizes (answerdotai/ModernBERT-base's config.json): 22 layers, GeGLU, rotary, a 128-token window
    # on two of every three layers, no biases.
    "modernbert-base": Preset(
        MODERNBERT_BASE := EncoderConfig(
            50368,
            768,
            12,
            22,
            1152,
            max_len=8192,
            padding_idx=50283,
            activation="gelu",
            norm_first=True,
            dropout=0.0,
            scale_embedding=False,
            positions="rotary",
            embedding_norm=True,
            feed_forward="glu",
            attention_bias=False,
            mlp_bias=False,
            norm_bias=False,
            rope_theta=160000.0,
            local_rope_theta=10000.0,
            local_window=128,
            global_every=3,
            first_attention_norm=False,
        ),
        batch=1,
        seq=512,
    ),
    # The same model with every layer global: what its local layers save, measured (the long-context tables).
    "modernbert-base-global": Preset(
        replace(MODERNBERT_BASE, local_window=0, global_every=1, local_rope_theta=None), batch=1, seq=512
    ),
    # Small enough for CI on two cores.
    "tiny": Preset(EncoderConfig(1000, 64, 4, 2, 128, max_len=128, dropout=0.0), batch=4, seq=32),
}
