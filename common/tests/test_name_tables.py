"""The name tables: each maps every canonical tensor once, both directions invert each other exactly, and the
native names and shapes it derives are those the frameworks use (checked against the real models in
tests/test_conversion.py and tests/test_cli.py)."""

from __future__ import annotations

import numpy as np
import pytest

from rosetta_common import EncoderConfig, WeightFormatError
from rosetta_common.name_tables import FLAX_ENCODER, TORCH_ENCODER, TORCH_NN, NameTable, rule
from rosetta_common.vectors import random_tensors

CONFIGS = {
    "post_norm": EncoderConfig(vocab_size=11, d_model=6, n_heads=2, n_layers=2, d_ff=10),
    "pre_norm_final_norm": EncoderConfig(vocab_size=11, d_model=6, n_heads=3, n_layers=3, d_ff=4, norm_first=True),
    "bert_front": EncoderConfig(
        vocab_size=11,
        d_model=6,
        n_heads=2,
        n_layers=1,
        d_ff=8,
        positions="learned",
        position_ids="after_padding",
        type_vocab_size=2,
        embedding_norm=True,
        pooler=True,
    ),
}
TABLES = {"torch_encoder": TORCH_ENCODER, "torch_nn": TORCH_NN, "flax_encoder": FLAX_ENCODER}
PAIRS = [
    (table, config) for table in TABLES for config in CONFIGS if not (table == "torch_nn" and config == "bert_front")
]


@pytest.mark.parametrize(("table_name", "config_name"), PAIRS)
def test_round_trip_is_bit_exact_and_shapes_are_derived(table_name: str, config_name: str) -> None:
    table, config = TABLES[table_name], CONFIGS[config_name]
    tensors = random_tensors(config, seed=3)
    native = table.to_native(config, tensors)
    assert {name: value.shape for name, value in native.items()} == table.native_shapes(config)
    back = table.to_canonical(config, native)
    assert back.keys() == tensors.keys()
    for name, value in tensors.items():
        assert back[name].flags.c_contiguous  # a copy: never a view of the native arrays
        assert not any(np.shares_memory(back[name], array) for array in native.values()), name
        np.testing.assert_array_equal(back[name], value, err_msg=name)


def test_fused_qkv_is_torch_in_proj_layout() -> None:
    config = CONFIGS["post_norm"]
    tensors = random_tensors(config, seed=4)
    native = TORCH_NN.to_native(config, tensors)
    q, k, v = (tensors[f"layers.1.attn.{p}.kernel"] for p in "qkv")
    np.testing.assert_array_equal(native["encoder.layers.1.self_attn.in_proj_weight"], np.concatenate([q.T, k.T, v.T]))
    biases = [tensors[f"layers.1.attn.{p}.bias"] for p in "qkv"]
    np.testing.assert_array_equal(native["encoder.layers.1.self_attn.in_proj_bias"], np.concatenate(biases))
    assert TORCH_NN.native_shapes(config)["encoder.layers.0.self_attn.in_proj_weight"] == (18, 6)


def test_one_to_one_names() -> None:
    names = TORCH_ENCODER.native_names(CONFIGS["post_norm"])
    assert names["layers.0.ffn.in.kernel"] == "layers.0.ffn.up.weight"
    assert names["layers.1.norm2.scale"] == "layers.1.norm2.weight"
    with pytest.raises(ValueError, match="fuses tensors"):
        TORCH_NN.native_names(CONFIGS["post_norm"])


def test_native_tensors_are_checked_with_every_problem_listed() -> None:
    config = CONFIGS["post_norm"]
    native = TORCH_ENCODER.to_native(config, random_tensors(config, seed=5))
    del native["layers.0.attn.q.bias"]
    native["layers.1.ffn.up.weight"] = native["layers.1.ffn.up.weight"].T
    native["stray.weight"] = np.zeros(3)
    with pytest.raises(WeightFormatError) as error:
        TORCH_ENCODER.to_canonical(config, native, source="a.safetensors")
    message = str(error.value)
    assert message.startswith("a.safetensors do not match rosetta_torch.Encoder state_dict for EncoderConfig(")
    assert "missing tensors: layers.0.attn.q.bias" in message
    assert "unexpected tensors: stray.weight" in message
    assert "layers.1.ffn.up.weight: shape (6, 10), expected (10, 6)" in message


def test_a_layout_without_a_place_for_a_tensor_says_which() -> None:
    """nn.TransformerEncoder has no learned positions: converting such an encoder to it names what has no place."""
    learned = CONFIGS["post_norm"].replace(positions="learned", pooler=True)
    with pytest.raises(WeightFormatError, match=r"cannot hold this encoder: no place for position_embedding\.weight"):
        TORCH_NN.entries(learned)
    incomplete = NameTable("incomplete", (rule("embedding.weight", "embedding.weight"),))
    with pytest.raises(WeightFormatError, match=r"no place for layers\.\*\.attn\.q\.kernel"):  # every layer, once
        incomplete.entries(CONFIGS["post_norm"])
