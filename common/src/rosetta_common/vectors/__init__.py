"""Common test vectors: deterministic cases (config, canonical weights, inputs, oracle activations).

The files ship with the package, in `stored/` beside this module (`STORED_DIR`); `python -m rosetta_common.vectors
[DIR]` regenerates them there (from a source checkout: `PYTHONPATH=common/src`, or an editable install).
Each case is one safetensors file: `weights.<canonical name>`, `inputs.token_ids` int64 `[B, S]`,
`inputs.padding_mask` bool `[B, S]`, `oracle.<boundary>` float64 (see `rosetta_common.oracle`),
the config in the metadata.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save

from rosetta_common.canonical import expected_shapes
from rosetta_common.config import EncoderConfig
from rosetta_common.io import CONFIG_KEY, read_metadata, write_atomically
from rosetta_common.oracle import default_padding_mask, encoder_forward

STORED_DIR = Path(__file__).parent / "stored"


@dataclass(frozen=True)
class VectorCase:
    """One stored case: a config and an input batch whose sequences end in `pad_lengths[b]` padding tokens."""

    name: str
    config: EncoderConfig
    seq_len: int
    pad_lengths: tuple[int, ...]
    seed: int


def _config(**fields: object) -> EncoderConfig:
    return EncoderConfig(**{"vocab_size": 37, "dropout": 0.0, **fields})


CASES: tuple[VectorCase, ...] = (
    VectorCase("seed_smallest", _config(vocab_size=11, d_model=6, n_heads=1, n_layers=1, d_ff=12), 1, (0,), 0),
    VectorCase("post_norm_relu", _config(d_model=16, n_heads=4, n_layers=2, d_ff=32), 8, (0, 3), 1),
    VectorCase(
        "pre_norm_gelu",
        _config(d_model=16, n_heads=2, n_layers=2, d_ff=24, activation="gelu", norm_first=True),
        8,
        (0, 5),
        2,
    ),
    VectorCase(
        "gelu_tanh_eps",
        _config(d_model=12, n_heads=3, n_layers=2, d_ff=20, activation="gelu_tanh", layer_norm_eps=1e-6),
        6,
        (1, 0),
        3,
    ),
    VectorCase(
        "no_padding_idx",
        _config(d_model=8, n_heads=2, n_layers=1, d_ff=16, padding_idx=None, scale_embedding=False),
        5,
        (0, 0),
        4,
    ),
    VectorCase(
        "varied_padding", _config(d_model=16, n_heads=4, n_layers=2, d_ff=32, padding_idx=0), 9, (0, 2, 5, 8), 5
    ),
    VectorCase("all_padding_row", _config(d_model=8, n_heads=2, n_layers=2, d_ff=16), 6, (0, 6, 3), 6),
    VectorCase(
        "odd_sizes",
        _config(
            vocab_size=23,
            d_model=15,
            n_heads=5,
            n_layers=3,
            d_ff=17,
            activation="gelu",
            max_len=13,
            norm_first=True,
            final_norm=False,
        ),
        13,
        (0, 4, 11),
        7,
    ),
    VectorCase(  # BERT's embedding front: learned positions, token types, embedding LayerNorm, pooler, no scaling
        "bert_front",
        _config(
            d_model=16,
            n_heads=4,
            n_layers=2,
            d_ff=32,
            activation="gelu",
            padding_idx=0,
            max_len=12,
            scale_embedding=False,
            positions="learned",
            type_vocab_size=2,
            embedding_norm=True,
            embedding_norm_eps=1e-12,
            pooler=True,
        ),
        9,
        (0, 4),
        8,
    ),
    VectorCase(  # RoBERTa's: position ids that start after padding_idx, one token type
        "roberta_front",
        _config(
            d_model=12,
            n_heads=3,
            n_layers=2,
            d_ff=20,
            activation="gelu",
            padding_idx=1,
            max_len=10,
            scale_embedding=False,
            positions="learned",
            position_ids="after_padding",
            type_vocab_size=1,
            embedding_norm=True,
            pooler=True,
        ),
        7,
        (0, 2, 7),
        9,
    ),
    VectorCase(  # ModernBERT's: rotary (two bases), local and global layers, GeGLU, no biases, layer 0 unnormed
        "modernbert_front",
        _config(
            d_model=16,
            n_heads=2,
            n_layers=3,
            d_ff=12,
            activation="gelu",
            padding_idx=0,
            max_len=16,
            norm_first=True,
            scale_embedding=False,
            positions="rotary",
            embedding_norm=True,
            feed_forward="glu",
            attention_bias=False,
            mlp_bias=False,
            norm_bias=False,
            rope_theta=160000.0,
            local_rope_theta=10000.0,
            local_window=4,
            global_every=2,
            first_attention_norm=False,
        ),
        11,  # longer than the local window (a local query sees 5 keys), with padding
        (0, 3, 8),
        10,
    ),
    VectorCase(  # DistilBERT's: learned positions, embedding LayerNorm, no token types, no pooler, post-norm
        "distilbert_front",
        _config(
            d_model=12,
            n_heads=3,
            n_layers=2,
            d_ff=20,
            activation="gelu",
            padding_idx=0,
            max_len=10,
            layer_norm_eps=1e-12,
            scale_embedding=False,
            positions="learned",
            embedding_norm=True,
        ),
        8,
        (0, 5),
        11,
    ),
)


def random_tensors(config: EncoderConfig, seed: int, dtype: np.dtype = np.float64) -> dict[str, np.ndarray]:
    """Random canonical weights with outputs of order 1; LayerNorm scales and biases are non-trivial.

    The `padding_idx` row of the embedding is zero, as both frameworks initialise it.
    """
    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {}
    for name, shape in expected_shapes(config).items():
        if name == "embedding.weight":
            value = rng.normal(0.0, 1.0 / math.sqrt(config.d_model), shape)
            if config.padding_idx is not None:
                value[config.padding_idx] = 0.0
        elif name.endswith(".kernel"):
            value = rng.normal(0.0, 1.0 / math.sqrt(shape[0]), shape)
        elif name.endswith(".scale"):
            value = 1.0 + 0.1 * rng.normal(size=shape)
        else:
            value = 0.1 * rng.normal(size=shape)
        tensors[name] = value.astype(dtype)
    return tensors


def random_inputs(
    config: EncoderConfig, seq_len: int, pad_lengths: tuple[int, ...], seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Token ids `[B, S]` (never padding_idx inside a sequence) ending in `pad_lengths[b]` pads, and the mask."""
    rng = np.random.default_rng(seed + 10_000)
    batch = len(pad_lengths)
    token_ids = rng.integers(0, config.vocab_size, size=(batch, seq_len), dtype=np.int64)
    mask = np.zeros((batch, seq_len), dtype=bool)
    for b, pads in enumerate(pad_lengths):
        mask[b, seq_len - pads :] = True
    if config.padding_idx is None:
        return token_ids, mask
    pad = config.padding_idx
    token_ids = np.where(token_ids == pad, (pad + 1) % config.vocab_size, token_ids)
    token_ids[mask] = pad
    assert (default_padding_mask(config, token_ids) == mask).all()
    return token_ids, mask


def random_token_types(config: EncoderConfig, token_ids: np.ndarray, seed: int) -> np.ndarray | None:
    """Token type ids int64 like `token_ids` (None when the config has no token types): a first and a second
    segment, split at a random point of each row, as BERT's sentence pairs."""
    if not config.type_vocab_size:
        return None
    rng = np.random.default_rng(seed + 20_000)
    splits = rng.integers(0, token_ids.shape[1] + 1, size=(token_ids.shape[0], 1))
    second = np.arange(token_ids.shape[1])[None, :] >= splits
    return np.minimum(second.astype(np.int64), config.type_vocab_size - 1)


def build_case(case: VectorCase) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """All tensors and metadata of one case's file."""
    weights = random_tensors(case.config, case.seed)
    token_ids, mask = random_inputs(case.config, case.seq_len, case.pad_lengths, case.seed)
    token_types = random_token_types(case.config, token_ids, case.seed)
    activations = encoder_forward(case.config, weights, token_ids, mask, token_type_ids=token_types)
    tensors = {f"weights.{name}": value for name, value in weights.items()}
    tensors["inputs.token_ids"] = token_ids
    tensors["inputs.padding_mask"] = mask
    if token_types is not None:
        tensors["inputs.token_type_ids"] = token_types
    tensors.update({f"oracle.{name}": value for name, value in activations.items()})
    return tensors, {CONFIG_KEY: case.config.to_json(), "rosetta.vector_case": case.name}


def case_bytes(case: VectorCase) -> bytes:
    tensors, metadata = build_case(case)
    return save(tensors, metadata=metadata)


def write_all(directory: Path) -> list[Path]:
    """Regenerate every stored case into `directory`."""
    return [write_atomically(directory / f"{case.name}.safetensors", _writer(case)) for case in CASES]


def _writer(case: VectorCase) -> Callable[[Path], int]:
    payload = case_bytes(case)
    return lambda tmp: tmp.write_bytes(payload)


@dataclass(frozen=True)
class Vector:
    """A stored case, loaded: config, canonical weights, inputs and oracle activations."""

    name: str
    config: EncoderConfig
    weights: dict[str, np.ndarray]
    token_ids: np.ndarray
    padding_mask: np.ndarray
    oracle: dict[str, np.ndarray]
    token_type_ids: np.ndarray | None = None  # when the config has token types


def load_vector(path: str | Path) -> Vector:
    metadata = read_metadata(path)
    tensors = load_file(str(path))

    def group(prefix: str) -> dict[str, np.ndarray]:
        return {name[len(prefix) :]: value for name, value in tensors.items() if name.startswith(prefix)}

    return Vector(
        name=metadata["rosetta.vector_case"],
        config=EncoderConfig.from_json(metadata[CONFIG_KEY]),
        weights=group("weights."),
        token_ids=tensors["inputs.token_ids"],
        padding_mask=tensors["inputs.padding_mask"],
        oracle=group("oracle."),
        token_type_ids=tensors.get("inputs.token_type_ids"),
    )


def stored_vector(name: str) -> Vector:
    """The stored case `name` (one of `CASES`)."""
    return load_vector(STORED_DIR / f"{name}.safetensors")
