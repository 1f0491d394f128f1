"""HF transformers' BERT encoder stack as a peer: rosetta's canonical weights in BERT's names.

A rosetta post-norm encoder layer is exactly a BERT layer (q/k/v/out projections, residual + LayerNorm,
feed-forward, residual + LayerNorm). BERT's own embedding module is not (learned positions, token types and
a LayerNorm), so the peer is `BertEncoder` / `FlaxBertEncoder` behind rosetta's embedding: a table lookup,
the sqrt(d_model) scale and the sinusoidal table. Same function, same weights, so the float64 check applies.

Numpy only: each worker builds its framework's BERT from `encoder_tensors` (torch transposes the kernels).
Nothing is fetched from a hub: the models are built from a config.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re

import numpy as np

from rosetta_common import EncoderConfig

# canonical name (after "layers.{i}.") -> BERT layer name (after "layer.{i}."), kernels/scales in Flax's names
LAYER_NAMES = {
    "attn.q": "attention.self.query",
    "attn.k": "attention.self.key",
    "attn.v": "attention.self.value",
    "attn.out": "attention.output.dense",
    "norm1": "attention.output.LayerNorm",
    "ffn.in": "intermediate.dense",
    "ffn.out": "output.dense",
    "norm2": "output.LayerNorm",
}
ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh"}  # names in HF's ACT2FN
_CANONICAL = re.compile(r"layers\.(\d+)\.(.+)\.(kernel|bias|scale)")


def bert_config_kwargs(config: EncoderConfig) -> dict:
    """`transformers.BertConfig(**kwargs)` for the encoder stack of `config` (dropout off, as in every bench row)."""
    return {
        "vocab_size": config.vocab_size,
        "hidden_size": config.d_model,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "intermediate_size": config.d_ff,
        "hidden_act": ACTIVATIONS[config.activation],
        "layer_norm_eps": config.layer_norm_eps,
        "max_position_embeddings": config.max_len,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    }


def encoder_tensors(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Canonical tensors -> BERT encoder tensors, `layer.{i}.attention.self.query.kernel` [in, out] and so on.

    The embedding table stays with rosetta's embedding in front of the stack, so it is left out here.
    """
    renamed = {}
    for name, value in tensors.items():
        if name == "embedding.weight":
            continue
        match = _CANONICAL.fullmatch(name)
        if not match or match.group(2) not in LAYER_NAMES:
            raise ValueError(f"{name}: no BERT counterpart (BERT's encoder is post-norm, without a final norm)")
        index, part, leaf = match.groups()
        renamed[f"layer.{index}.{LAYER_NAMES[part]}.{leaf}"] = value
    return renamed


def skip_reason(config: EncoderConfig, framework: str) -> str | None:
    """Why the HF BERT peer cannot run `config` in `framework` ("torch" or "jax") here, or None."""
    if config.norm_first or config.has_final_norm:
        return "HF BERT is post-norm without a final LayerNorm (norm_first=False only)"
    front = {"positions": "sinusoidal", "type_vocab_size": 0, "embedding_norm": False, "pooler": False}
    different = [f"{name}={getattr(config, name)!r}" for name, value in front.items() if getattr(config, name) != value]
    if different:
        return f"the peer is HF's encoder stack behind rosetta's plain embedding front, not {', '.join(different)}"
    if importlib.util.find_spec("transformers") is None:
        return "transformers is not installed (pip install './packages/rosetta-tools[hf]')"
    version = importlib.metadata.version("transformers")
    if framework == "jax" and int(version.split(".")[0]) >= 5:
        return f"transformers {version} has no Flax models (dropped in v5)"
    return None
