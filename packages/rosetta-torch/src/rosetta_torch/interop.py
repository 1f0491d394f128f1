"""Import and export `torch.nn.Embedding` + `torch.nn.TransformerEncoder` pairs.

`from_torch_modules(config, embedding, encoder)` returns an Encoder whose output equals
`encoder(embedding(ids) * sqrt(d) + PE, src_key_padding_mask=mask)` (no scaling when `scale_embedding` is off)
on non-padded positions; `to_torch_modules(model)` goes the other way. Settings rosetta cannot represent
(no bias, custom activations, separate key/value sizes, a max_norm embedding...) and encoders the pair cannot
hold (learned positions, token types, an embedding LayerNorm, a pooler: `TORCH_NN_FRONT`) raise ValueError,
never a silent wrong conversion.

torch's inference fast path (eval mode, no grad) runs exact GELU for an `nn.GELU(approximate="tanh")` module,
while its training path runs the tanh approximation; rosetta imports such a module as "gelu_tanh" (what the
module declares) and exports "gelu_tanh" as `functools.partial(F.gelu, approximate="tanh")`, which torch never
sends down the fast path.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rosetta_common import EncoderConfig
from rosetta_common.name_tables import TORCH_NN
from rosetta_torch.convert import from_canonical, to_canonical
from rosetta_torch.encoder import Encoder


def _activation_name(layer: nn.TransformerEncoderLayer) -> str | None:
    """The activation of a TransformerEncoderLayer as a rosetta name, or None when rosetta has no equivalent."""
    activation = layer.activation
    if activation is F.relu or isinstance(activation, nn.ReLU):
        return "relu"
    if activation is F.gelu:
        return "gelu"
    if isinstance(activation, nn.GELU):
        return {"none": "gelu", "tanh": "gelu_tanh"}[activation.approximate]
    if isinstance(activation, functools.partial) and activation.func is F.gelu and not activation.args:
        return {"none": "gelu", "tanh": "gelu_tanh"}.get(activation.keywords.get("approximate", "none"))
    return None


# The embedding front nn.Embedding + nn.TransformerEncoder has: options with other values have no place there.
TORCH_NN_FRONT = {"positions": "sinusoidal", "position_ids": "sequential", "type_vocab_size": 0,
                  "embedding_norm": False, "pooler": False}  # fmt: skip


def _unrepresentable(config: EncoderConfig) -> list[str]:
    """One line per config option (learned positions, token types, embedding norm, pooler...) that an
    nn.Embedding + nn.TransformerEncoder pair cannot hold."""
    return [
        f"config.{name} is {getattr(config, name)!r}: nn.Embedding + nn.TransformerEncoder only has {name}={value!r}"
        for name, value in TORCH_NN_FRONT.items()
        if getattr(config, name) != value
    ]


def _check_modules(config: EncoderConfig, embedding: nn.Embedding, encoder: nn.TransformerEncoder) -> None:
    """Raise one ValueError listing every way the modules differ from `config` or from what rosetta supports."""
    problems: list[str] = _unrepresentable(config)

    def expect(what: str, found: object, wanted: object) -> None:
        if found != wanted:
            problems.append(f"{what} is {found!r}, config says {wanted!r}")

    expect("embedding.num_embeddings", embedding.num_embeddings, config.vocab_size)
    expect("embedding.embedding_dim", embedding.embedding_dim, config.d_model)
    expect("embedding.padding_idx", embedding.padding_idx, config.padding_idx)
    if embedding.max_norm is not None:
        problems.append("embedding.max_norm is set (rosetta embeddings never renormalise rows): unsupported")
    expect("number of encoder layers", len(encoder.layers), config.n_layers)
    expect("encoder.norm present", encoder.norm is not None, config.has_final_norm)
    if encoder.norm is not None and not isinstance(encoder.norm, nn.LayerNorm):
        problems.append(f"encoder.norm is a {type(encoder.norm).__name__}, not an nn.LayerNorm: unsupported")
    elif encoder.norm is not None:
        expect("encoder.norm.eps", encoder.norm.eps, config.layer_norm_eps)
        if not encoder.norm.elementwise_affine or encoder.norm.bias is None:
            problems.append("encoder.norm has no affine scale/bias: unsupported")
    for i, layer in enumerate(encoder.layers):
        attn = layer.self_attn
        expect(f"layers.{i}.self_attn.embed_dim", attn.embed_dim, config.d_model)
        expect(f"layers.{i}.self_attn.num_heads", attn.num_heads, config.n_heads)
        expect(f"layers.{i}.linear1.out_features", layer.linear1.out_features, config.d_ff)
        expect(f"layers.{i}.norm_first", layer.norm_first, config.norm_first)
        expect(f"layers.{i}.norm1.eps", layer.norm1.eps, config.layer_norm_eps)
        expect(f"layers.{i}.norm2.eps", layer.norm2.eps, config.layer_norm_eps)
        activation = _activation_name(layer)
        if activation is None:
            problems.append(f"layers.{i}.activation {layer.activation!r} is not relu, gelu or tanh-gelu: unsupported")
        else:
            expect(f"layers.{i}.activation", activation, config.activation)
        if not attn._qkv_same_embed_dim:
            problems.append(f"layers.{i}.self_attn has separate kdim/vdim: unsupported")
        if attn.in_proj_bias is None or layer.linear1.bias is None or layer.norm1.bias is None:
            problems.append(f"layers.{i} was built with bias=False: unsupported (rosetta layers have biases)")
        if attn.bias_k is not None or attn.add_zero_attn:
            problems.append(f"layers.{i}.self_attn uses add_bias_kv / add_zero_attn: unsupported")
    if problems:
        raise ValueError("cannot import these torch modules into rosetta:\n  - " + "\n  - ".join(problems))


def torch_modules_to_canonical(
    config: EncoderConfig, embedding: nn.Embedding, encoder: nn.TransformerEncoder
) -> dict[str, np.ndarray]:
    """Canonical tensors from an Embedding + TransformerEncoder (checked against `config` first)."""
    _check_modules(config, embedding, encoder)
    pair = nn.ModuleDict({"embedding": embedding, "encoder": encoder})
    state = {name: value.detach().cpu().numpy() for name, value in pair.state_dict().items()}
    return TORCH_NN.to_canonical(config, state, source="the torch modules")


def from_torch_modules(config: EncoderConfig, embedding: nn.Embedding, encoder: nn.TransformerEncoder) -> Encoder:
    """A rosetta Encoder with the weights of `embedding` + `encoder` (any norm_first, batch_first or not)."""
    return from_canonical(config, torch_modules_to_canonical(config, embedding, encoder))


def to_torch_modules(
    model: Encoder, *, batch_first: bool = True, enable_nested_tensor: bool = False
) -> tuple[nn.Embedding, nn.TransformerEncoder]:
    """An Embedding + TransformerEncoder holding the model's weights, in its dtype, on the CPU.

    `enable_nested_tensor=True` lets torch's inference fast path skip padded positions (their outputs are
    then zeros instead of the computed values).
    """
    problems = _unrepresentable(model.config)
    if problems:
        raise ValueError("cannot export this encoder to torch modules:\n  - " + "\n  - ".join(problems))
    config, tensors = model.config, to_canonical(model)
    dtype = model.embedding.weight.dtype
    # Not nn.GELU(approximate="tanh"): torch's inference fast path treats every nn.GELU as exact GELU (~1e-4 off);
    # a partial keeps the fast path out of the way for that activation.
    gelu_tanh = functools.partial(F.gelu, approximate="tanh")
    activation = {"relu": "relu", "gelu": "gelu", "gelu_tanh": gelu_tanh}[config.activation]
    layer = nn.TransformerEncoderLayer(
        config.d_model,
        config.n_heads,
        config.d_ff,
        dropout=config.dropout,
        activation=activation,
        layer_norm_eps=config.layer_norm_eps,
        batch_first=batch_first,
        norm_first=config.norm_first,
        dtype=dtype,
    )
    final_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps, dtype=dtype) if config.has_final_norm else None
    encoder = nn.TransformerEncoder(
        layer, config.n_layers, norm=final_norm, enable_nested_tensor=enable_nested_tensor and not config.norm_first
    )
    embedding = nn.Embedding(config.vocab_size, config.d_model, padding_idx=config.padding_idx, dtype=dtype)

    state = {name: torch.from_numpy(value) for name, value in TORCH_NN.to_native(config, tensors).items()}
    pair = nn.ModuleDict({"embedding": embedding, "encoder": encoder})
    pair.load_state_dict(state, strict=True)
    return embedding, encoder
