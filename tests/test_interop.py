"""torch.nn.Embedding + torch.nn.TransformerEncoder <-> rosetta (rosetta_torch.interop), and on to rosetta_flax.

The torch modules are built here, independently of rosetta, with random weights (LayerNorms included); the
reference is torch's own `encoder(embedding(ids) * sqrt(d) + PE, src_key_padding_mask=mask)` in float64.
torch's inference fast path returns zeros (nested tensors) or NaN (all-padding rows) at padded positions,
so the reference is compared on valid positions, and on every position of a row only where torch computes it.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import rosetta_flax
from rosetta_common import EncoderConfig, save_canonical
from rosetta_common.vectors import random_tensors
from rosetta_torch import from_canonical, from_torch_modules, to_canonical, to_torch_modules, torch_modules_to_canonical

F64_BOUND = 1e-10  # common/DESIGN.md: float64 torch vs flax vs oracle
F32_BOUND = 1e-5  # common/DESIGN.md: float32 torch vs flax

pytestmark = pytest.mark.filterwarnings("ignore:.*nested tensors.*", "ignore:enable_nested_tensor is True")


@dataclass(frozen=True)
class TorchSetup:
    """How the independent torch modules are built."""

    name: str
    activation: object  # what nn.TransformerEncoderLayer receives
    rosetta_activation: str
    norm_first: bool = False
    final_norm: bool = False
    layer_norm_eps: float = 1e-5
    padding_idx: int | None = 1
    scale_embedding: bool = True
    d_model: int = 16
    n_heads: int = 4
    d_ff: int = 24
    n_layers: int = 2

    def config(self) -> EncoderConfig:
        return EncoderConfig(
            vocab_size=31,
            d_model=self.d_model,
            n_heads=self.n_heads,
            n_layers=self.n_layers,
            d_ff=self.d_ff,
            max_len=32,
            padding_idx=self.padding_idx,
            activation=self.rosetta_activation,
            norm_first=self.norm_first,
            final_norm=self.final_norm,
            layer_norm_eps=self.layer_norm_eps,
            dropout=0.1,
            scale_embedding=self.scale_embedding,
        )


SETUPS = [
    TorchSetup("post_relu_str", "relu", "relu"),
    TorchSetup("post_relu_module_final_norm", nn.ReLU(), "relu", final_norm=True, layer_norm_eps=1e-6),
    TorchSetup("post_gelu_str", "gelu", "gelu", padding_idx=0),
    TorchSetup("pre_gelu_module", nn.GELU(), "gelu", norm_first=True, final_norm=True),
    TorchSetup("pre_gelu_tanh_no_final", nn.GELU(approximate="tanh"), "gelu_tanh", norm_first=True),
    TorchSetup(
        "pre_gelu_tanh_partial",
        functools.partial(F.gelu, approximate="tanh"),
        "gelu_tanh",
        norm_first=True,
        final_norm=True,
        layer_norm_eps=1e-3,
    ),
    TorchSetup("post_relu_fn_no_padding_idx_unscaled", F.relu, "relu", padding_idx=None, scale_embedding=False),
    TorchSetup(
        "odd_sizes", "gelu", "gelu", d_model=15, n_heads=3, d_ff=7, n_layers=3, norm_first=True, final_norm=True
    ),
]


def build_torch_modules(
    setup: TorchSetup, *, batch_first: bool, seed: int, enable_nested_tensor: bool = True, dtype=torch.float64
) -> tuple[nn.Embedding, nn.TransformerEncoder]:
    """An Embedding + TransformerEncoder with random weights (non-trivial LayerNorms), in eval mode."""
    torch.manual_seed(seed)
    config = setup.config()
    embedding = nn.Embedding(config.vocab_size, config.d_model, padding_idx=config.padding_idx, dtype=dtype)
    layer = nn.TransformerEncoderLayer(
        config.d_model,
        config.n_heads,
        config.d_ff,
        dropout=0.1,
        activation=setup.activation,
        layer_norm_eps=config.layer_norm_eps,
        batch_first=batch_first,
        norm_first=config.norm_first,
        dtype=dtype,
    )
    norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps, dtype=dtype) if setup.final_norm else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        encoder = nn.TransformerEncoder(layer, config.n_layers, norm=norm, enable_nested_tensor=enable_nested_tensor)
    with torch.no_grad():
        for name, param in encoder.named_parameters():
            if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "norm.weight":
                param.copy_(1.0 + 0.2 * torch.randn_like(param))
            elif param.ndim == 1:
                param.copy_(0.2 * torch.randn_like(param))
            else:
                param.copy_(torch.randn_like(param) / math.sqrt(param.shape[1]))
    return embedding.eval(), encoder.eval()


def positional_table(seq: int, d_model: int) -> torch.Tensor:
    """PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(...), written out here for the reference."""
    position = torch.arange(seq, dtype=torch.float64)[:, None]
    angle = position / torch.pow(10000.0, torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    table = torch.zeros(seq, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle[:, : d_model // 2])
    return table


def make_inputs(config: EncoderConfig, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids `[5, 9]` and mask: one full row, rows ending in padding, one all-padding row."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, config.vocab_size, (5, 9), generator=generator)
    mask = torch.zeros(5, 9, dtype=torch.bool)
    for row, pads in enumerate((0, 3, 8, 9, 1)):
        mask[row, 9 - pads :] = True
    if config.padding_idx is not None:
        ids = torch.where(ids == config.padding_idx, (config.padding_idx + 1) % config.vocab_size, ids)
        ids[mask] = config.padding_idx
    return ids, mask


def declares_tanh_gelu_module(encoder: nn.TransformerEncoder) -> bool:
    activation = encoder.layers[0].activation
    return isinstance(activation, nn.GELU) and activation.approximate == "tanh"


def torch_reference(
    config: EncoderConfig, embedding: nn.Embedding, encoder: nn.TransformerEncoder, ids: torch.Tensor, mask
) -> torch.Tensor:
    """torch's own encoder on `embedding(ids) * sqrt(d) + PE`, batch-first `[B, S, D]` whatever the layout.

    torch's inference fast path runs exact GELU for an `nn.GELU(approximate="tanh")` module (see
    `test_torch_fast_path_runs_exact_gelu_for_a_tanh_gelu_module`): for one, the reference is the module's
    declared maths, with the fast path off.
    """
    batch_first = encoder.layers[0].self_attn.batch_first
    fast_path = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(fast_path and not declares_tanh_gelu_module(encoder))
    try:
        return _run_torch_encoder(config, embedding, encoder, ids, mask, batch_first)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast_path)


def _run_torch_encoder(config, embedding, encoder, ids, mask, batch_first: bool) -> torch.Tensor:
    with torch.no_grad():
        x = embedding(ids) * (math.sqrt(config.d_model) if config.scale_embedding else 1.0)
        x = x + positional_table(ids.shape[1], config.d_model).to(x.dtype)
        if not batch_first:
            x = x.transpose(0, 1)
        y = encoder(x, src_key_padding_mask=mask)
        if y.is_nested:
            y = y.to_padded_tensor(0.0, x.shape)
        return y if batch_first else y.transpose(0, 1)


def rows_with_tokens(mask: torch.Tensor) -> torch.Tensor:
    """bool `[B, S]`: every position of a row that has at least one valid token."""
    return (~mask).any(dim=1, keepdim=True).expand_as(mask)


def max_diff(a, b, where: torch.Tensor | np.ndarray) -> float:
    a, b, where = (np.asarray(x) for x in (a, b, where))
    assert where.any()
    return float(np.abs(a - b)[where].max())


@pytest.mark.parametrize("batch_first", [True, False], ids=["batch_first", "seq_first"])
@pytest.mark.parametrize("setup", SETUPS, ids=[s.name for s in SETUPS])
def test_import_matches_torch_transformer_encoder(setup: TorchSetup, batch_first: bool) -> None:
    config = setup.config()
    embedding, encoder = build_torch_modules(setup, batch_first=batch_first, seed=3)
    ids, mask = make_inputs(config, seed=4)
    reference = torch_reference(config, embedding, encoder, ids, mask)

    model = from_torch_modules(config, embedding, encoder).eval()
    assert model.embedding.weight.dtype == torch.float64
    with torch.no_grad():
        output = model(ids, mask)
    assert torch.isfinite(output).all()
    assert max_diff(output, reference, ~mask) < F64_BOUND


@pytest.mark.parametrize("batch_first", [True, False], ids=["batch_first", "seq_first"])
def test_import_matches_at_padded_positions_where_torch_computes_them(batch_first: bool) -> None:
    """Without nested tensors torch computes padded queries too (attending to valid keys), as rosetta does."""
    setup = SETUPS[1]
    config = setup.config()
    embedding, encoder = build_torch_modules(setup, batch_first=batch_first, seed=5, enable_nested_tensor=False)
    ids, mask = make_inputs(config, seed=6)
    reference = torch_reference(config, embedding, encoder, ids, mask)
    with torch.no_grad():
        output = from_torch_modules(config, embedding, encoder).eval()(ids, mask)
    padded_in_valid_rows = mask & rows_with_tokens(mask)
    assert max_diff(output, reference, padded_in_valid_rows) < F64_BOUND


@pytest.mark.parametrize("setup", SETUPS, ids=[s.name for s in SETUPS])
def test_torch_modules_reach_flax_through_a_canonical_file(setup: TorchSetup, tmp_path) -> None:
    """torch.nn.TransformerEncoder -> canonical safetensors file -> rosetta_flax: torch's output in float64."""
    config = setup.config()
    embedding, encoder = build_torch_modules(setup, batch_first=True, seed=7)
    ids, mask = make_inputs(config, seed=8)
    reference = torch_reference(config, embedding, encoder, ids, mask)

    path = save_canonical(
        tmp_path / "imported.safetensors", config, torch_modules_to_canonical(config, embedding, encoder)
    )
    flax_model = rosetta_flax.load(path)
    flax_model.eval()
    output = np.asarray(flax_model(jnp.asarray(ids.numpy()), jnp.asarray(mask.numpy())))
    assert output.dtype == np.float64
    assert np.isfinite(output).all()
    assert max_diff(output, reference.numpy(), ~mask.numpy()) < F64_BOUND

    with torch.no_grad():
        torch_output = from_torch_modules(config, embedding, encoder).eval()(ids, mask).numpy()
    assert max_diff(output, torch_output, np.ones(mask.shape, bool)) < F64_BOUND  # padded positions too


@pytest.mark.parametrize("batch_first", [True, False], ids=["batch_first", "seq_first"])
@pytest.mark.parametrize("setup", SETUPS, ids=[s.name for s in SETUPS])
def test_export_matches_rosetta(setup: TorchSetup, batch_first: bool) -> None:
    config = setup.config()
    model = from_canonical(config, random_tensors(config, seed=9)).eval()
    embedding, encoder = to_torch_modules(model, batch_first=batch_first)
    assert isinstance(encoder, nn.TransformerEncoder) and isinstance(embedding, nn.Embedding)
    assert embedding.weight.dtype == torch.float64 and embedding.padding_idx == config.padding_idx
    assert (encoder.norm is not None) == config.has_final_norm
    assert encoder.layers[0].self_attn.batch_first == batch_first
    embedding.eval(), encoder.eval()
    ids, mask = make_inputs(config, seed=10)
    reference = torch_reference(config, embedding, encoder, ids, mask)
    with torch.no_grad():
        output = model(ids, mask)
    # enable_nested_tensor=False (the default): torch computes padded queries of rows with a valid token too.
    assert max_diff(output, reference, rows_with_tokens(mask)) < F64_BOUND


def test_export_with_nested_tensors_skips_padded_positions() -> None:
    """`enable_nested_tensor=True`: torch's fast path matches on valid positions and returns zeros at padding."""
    config = SETUPS[0].config()
    model = from_canonical(config, random_tensors(config, seed=11)).eval()
    embedding, encoder = to_torch_modules(model, enable_nested_tensor=True)
    embedding.eval(), encoder.eval()
    ids, mask = make_inputs(config, seed=12)
    reference = torch_reference(config, embedding, encoder, ids, mask)
    with torch.no_grad():
        output = model(ids, mask)
    assert max_diff(output, reference, ~mask) < F64_BOUND
    assert (reference[mask] == 0).all()


@pytest.mark.parametrize("setup", SETUPS, ids=[s.name for s in SETUPS])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_export_import_round_trip_is_bit_exact(setup: TorchSetup, dtype) -> None:
    config = setup.config()
    tensors = random_tensors(config, seed=13, dtype=dtype)
    embedding, encoder = to_torch_modules(from_canonical(config, tensors), batch_first=False)
    assert embedding.weight.dtype == torch.from_numpy(np.zeros(0, dtype)).dtype
    back = torch_modules_to_canonical(config, embedding, encoder)
    assert back.keys() == tensors.keys()
    for name, value in tensors.items():
        assert back[name].dtype == value.dtype, name
        np.testing.assert_array_equal(back[name], value, err_msg=name)
    np.testing.assert_array_equal(
        to_canonical(from_torch_modules(config, embedding, encoder))["embedding.weight"], tensors["embedding.weight"]
    )


def test_float32_import_agrees_with_flax_and_torch_reference() -> None:
    setup = SETUPS[3]
    config = setup.config()
    embedding, encoder = build_torch_modules(setup, batch_first=True, seed=14, dtype=torch.float32)
    ids, mask = make_inputs(config, seed=15)
    reference = torch_reference(config, embedding, encoder, ids, mask)
    model = from_torch_modules(config, embedding, encoder).eval()
    flax_model = rosetta_flax.from_canonical(config, torch_modules_to_canonical(config, embedding, encoder))
    flax_model.eval()
    with torch.no_grad():
        output = model(ids, mask)
    flax_output = np.asarray(flax_model(jnp.asarray(ids.numpy()), jnp.asarray(mask.numpy())))
    assert output.dtype == torch.float32 and flax_output.dtype == np.float32
    assert max_diff(output, reference, ~mask) < F32_BOUND
    assert max_diff(output, flax_output, np.ones(mask.shape, bool)) < F32_BOUND


def test_torch_fast_path_runs_exact_gelu_for_a_tanh_gelu_module() -> None:
    """Why the reference turns the fast path off for `nn.GELU(approximate="tanh")`, and why the export uses a
    partial: in eval mode without grad torch computes exact GELU for that module (its training path does not)."""
    setup = SETUPS[4]
    config = setup.config()
    embedding, encoder = build_torch_modules(setup, batch_first=True, seed=16)
    assert declares_tanh_gelu_module(encoder)
    ids, mask = make_inputs(config, seed=17)
    model = from_torch_modules(config, embedding, encoder).eval()
    exact = from_canonical(config.replace(activation="gelu"), to_canonical(model)).eval()
    with torch.no_grad():
        fast = _run_torch_encoder(config, embedding, encoder, ids, mask, batch_first=True)
        tanh_output, exact_output = model(ids, mask), exact(ids, mask)
    assert max_diff(fast, exact_output, ~mask) < F64_BOUND
    assert max_diff(fast, tanh_output, ~mask) > 1e-6
    assert max_diff(torch_reference(config, embedding, encoder, ids, mask), tanh_output, ~mask) < F64_BOUND


# --- settings rosetta cannot represent: a clear ValueError, never a silent wrong conversion -------------------


def plain_modules(config: EncoderConfig, **layer_kwargs) -> tuple[nn.Embedding, nn.TransformerEncoder]:
    embedding = nn.Embedding(config.vocab_size, config.d_model, padding_idx=config.padding_idx)
    kwargs = {
        "activation": config.activation,
        "layer_norm_eps": config.layer_norm_eps,
        "batch_first": True,
        "norm_first": config.norm_first,
        **layer_kwargs,
    }
    layer = nn.TransformerEncoderLayer(config.d_model, config.n_heads, config.d_ff, **kwargs)
    norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps) if config.has_final_norm else None
    return embedding, nn.TransformerEncoder(layer, config.n_layers, norm=norm, enable_nested_tensor=False)


CONFIG = EncoderConfig(vocab_size=20, d_model=8, n_heads=2, n_layers=2, d_ff=12)


def test_plain_modules_are_accepted() -> None:
    """The baseline the failure cases below change one thing of."""
    model = from_torch_modules(CONFIG, *plain_modules(CONFIG))
    assert model.config == CONFIG


def test_bias_false_is_refused() -> None:
    with pytest.raises(ValueError, match=r"layers\.0 was built with bias=False"):
        from_torch_modules(CONFIG, *plain_modules(CONFIG, bias=False))


@pytest.mark.parametrize("activation", [nn.SiLU(), lambda x: F.relu(x) * 2, F.silu], ids=["SiLU", "lambda", "silu"])
def test_custom_activation_is_refused(activation) -> None:
    with pytest.raises(ValueError, match=r"layers\.0\.activation .* is not relu, gelu or tanh-gelu: unsupported"):
        from_torch_modules(CONFIG, *plain_modules(CONFIG, activation=activation))


def test_max_norm_embedding_is_refused() -> None:
    _, encoder = plain_modules(CONFIG)
    embedding = nn.Embedding(CONFIG.vocab_size, CONFIG.d_model, padding_idx=CONFIG.padding_idx, max_norm=1.0)
    with pytest.raises(ValueError, match=r"embedding\.max_norm is set"):
        from_torch_modules(CONFIG, embedding, encoder)


def test_every_mismatched_config_field_is_listed_in_one_error() -> None:
    other = CONFIG.replace(
        vocab_size=21,
        n_heads=4,
        d_ff=16,
        n_layers=3,
        layer_norm_eps=1e-6,
        padding_idx=0,
        activation="gelu",
        norm_first=True,
    )
    with pytest.raises(ValueError) as error:
        from_torch_modules(CONFIG, *plain_modules(other))
    message = str(error.value)
    for expected in (
        "embedding.num_embeddings is 21, config says 20",
        "embedding.padding_idx is 0, config says 1",
        "number of encoder layers is 3, config says 2",
        "encoder.norm present is True, config says False",
        "layers.0.self_attn.num_heads is 4, config says 2",
        "layers.0.linear1.out_features is 16",
        "layers.1.norm_first is True",
        "layers.0.norm1.eps is 1e-06, config says 1e-05",
        "layers.0.activation is 'gelu', config says 'relu'",
    ):
        assert expected in message


def test_d_model_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match=r"embedding\.embedding_dim is 16, config says 8"):
        from_torch_modules(CONFIG, *plain_modules(CONFIG.replace(d_model=16)))


def test_separate_key_value_sizes_are_refused() -> None:
    embedding, encoder = plain_modules(CONFIG)
    encoder.layers[1].self_attn = nn.MultiheadAttention(CONFIG.d_model, CONFIG.n_heads, kdim=4, vdim=4)
    with pytest.raises(ValueError, match=r"layers\.1\.self_attn has separate kdim/vdim"):
        from_torch_modules(CONFIG, embedding, encoder)


def test_add_bias_kv_is_refused() -> None:
    embedding, encoder = plain_modules(CONFIG)
    encoder.layers[0].self_attn = nn.MultiheadAttention(CONFIG.d_model, CONFIG.n_heads, add_bias_kv=True)
    with pytest.raises(ValueError, match=r"layers\.0\.self_attn uses add_bias_kv"):
        from_torch_modules(CONFIG, embedding, encoder)


@pytest.mark.parametrize(
    ("norm", "message"),
    [
        (nn.LayerNorm(8, elementwise_affine=False), "encoder.norm has no affine scale/bias"),
        (nn.LayerNorm(8, bias=False), "encoder.norm has no affine scale/bias"),
        (nn.RMSNorm(8, eps=1e-5), "encoder.norm is a RMSNorm, not an nn.LayerNorm"),
    ],
    ids=["no_affine", "no_bias", "rms_norm"],
)
def test_unsupported_final_norm_is_refused(norm: nn.Module, message: str) -> None:
    config = CONFIG.replace(final_norm=True)
    embedding, encoder = plain_modules(config)
    encoder.norm = norm
    with pytest.raises(ValueError, match=message):
        from_torch_modules(config, embedding, encoder)


FRONT_OPTIONS = {
    "learned_positions": ({"positions": "learned"}, r"config\.positions is 'learned'"),
    "after_padding": (
        {"positions": "learned", "position_ids": "after_padding"},
        r"config\.positions is 'learned'.*\n.*config\.position_ids is 'after_padding'",
    ),
    "token_types": ({"type_vocab_size": 2}, r"config\.type_vocab_size is 2: nn\.Embedding \+ nn\.TransformerEncoder"),
    "embedding_norm": ({"embedding_norm": True}, r"config\.embedding_norm is True"),
    "pooler": ({"pooler": True}, r"config\.pooler is True: .* only has pooler=False"),
}


@pytest.mark.parametrize("options", FRONT_OPTIONS, ids=list(FRONT_OPTIONS))
def test_embedding_front_options_are_refused_both_ways(options: str) -> None:
    """nn.Embedding + nn.TransformerEncoder has no learned positions, token types, embedding norm or pooler: a
    ValueError naming the option, in export and in import, never a model without those parts."""
    changes, message = FRONT_OPTIONS[options]
    config = CONFIG.replace(**changes)
    model = from_canonical(config, random_tensors(config, seed=1))
    with pytest.raises(ValueError, match=r"cannot export this encoder to torch modules:\n  - " + message):
        to_torch_modules(model)
    with pytest.raises(ValueError, match=r"cannot import these torch modules into rosetta:\n  - " + message):
        from_torch_modules(config, *plain_modules(CONFIG))
