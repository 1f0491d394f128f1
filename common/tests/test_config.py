"""EncoderConfig: validation names the field; JSON round trip; derived properties."""

from __future__ import annotations

import pytest

from rosetta_common import EncoderConfig

BASE = dict(vocab_size=10, d_model=8, n_heads=2, n_layers=1, d_ff=16)


def test_defaults_are_the_design_ones():
    config = EncoderConfig(**BASE)
    assert (config.max_len, config.padding_idx, config.activation, config.norm_first) == (512, 1, "relu", False)
    assert (config.final_norm, config.layer_norm_eps, config.dropout, config.scale_embedding) == (None, 1e-5, 0.1, True)


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"d_model": 9}, "d_model"),
        ({"n_heads": 0}, "n_heads"),
        ({"vocab_size": -1}, "vocab_size"),
        ({"n_layers": 1.5}, "n_layers"),
        ({"activation": "swish"}, "activation"),
        ({"padding_idx": 10}, "padding_idx"),
        ({"padding_idx": -1}, "padding_idx"),
        ({"dropout": 1.0}, "dropout"),
        ({"layer_norm_eps": 0.0}, "layer_norm_eps"),
        ({"norm_first": "yes"}, "norm_first"),
        ({"final_norm": 1}, "final_norm"),
        ({"max_len": 0}, "max_len"),
    ],
)
def test_invalid_values_name_the_field(changes, field):
    with pytest.raises(ValueError, match=field):
        EncoderConfig(**{**BASE, **changes})


def test_json_round_trip_and_unknown_fields():
    config = EncoderConfig(**BASE, padding_idx=None, activation="gelu_tanh", norm_first=True, final_norm=False)
    assert EncoderConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="unknown fields: colour"):
        EncoderConfig.from_dict({**config.to_dict(), "colour": "red"})
    with pytest.raises(ValueError, match="malformed"):
        EncoderConfig.from_json("{not json")


def test_final_norm_follows_norm_first_unless_set():
    assert EncoderConfig(**BASE, norm_first=True).has_final_norm
    assert not EncoderConfig(**BASE).has_final_norm
    assert not EncoderConfig(**BASE, norm_first=True, final_norm=False).has_final_norm
    assert EncoderConfig(**BASE, final_norm=True).has_final_norm
    assert EncoderConfig(**BASE).d_head == 4


MODERN = dict(
    BASE, n_layers=3, norm_first=True, positions="rotary", embedding_norm=True, feed_forward="glu",
    attention_bias=False, mlp_bias=False, norm_bias=False, rope_theta=160000.0, local_rope_theta=10000.0,
    local_window=4, global_every=2, first_attention_norm=False,
)  # fmt: skip


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"feed_forward": "swiglu"}, "feed_forward"),
        ({"positions": "alibi"}, "positions"),
        ({"attention_bias": 1}, "attention_bias"),
        ({"norm_bias": None}, "norm_bias"),
        ({"rope_theta": 0.0}, "rope_theta"),
        ({"local_rope_theta": -1.0}, "local_rope_theta"),
        ({"local_window": -2}, "local_window"),
        ({"global_every": 0}, "global_every"),
        ({"global_every": 1}, "global_every"),  # a window, but no layer is local
        ({"local_window": 0}, "global_every"),  # local layers, but no window
        ({"first_attention_norm": False, "norm_first": False}, "first_attention_norm"),
        ({"first_attention_norm": False, "embedding_norm": False}, "first_attention_norm"),
        ({"n_heads": 1, "d_model": 9}, "positions"),  # rotary needs an even d_head
        ({"positions": "learned", "rope_theta": 10000.0}, "local_rope_theta"),  # a local base without rotary
    ],
)
def test_invalid_modern_options_name_the_field(changes, field):
    with pytest.raises(ValueError, match=rf"EncoderConfig\.{field}"):
        EncoderConfig(**{**MODERN, **changes})


def test_rope_theta_without_rotary_names_the_field():
    with pytest.raises(ValueError, match=r"EncoderConfig\.rope_theta=5\.0 is read only with positions='rotary'"):
        EncoderConfig(**BASE, rope_theta=5.0)


def test_each_layer_knows_its_kind():
    config = EncoderConfig(**MODERN)
    assert [(s.is_local, s.max_distance, s.rope_theta, s.attention_norm) for s in config.layers] == [
        (False, None, 160000.0, False),
        (True, 2, 10000.0, True),
        (False, None, 160000.0, True),
    ]
    assert EncoderConfig.from_json(config.to_json()) == config
    plain = EncoderConfig(**BASE).layer(0)
    assert (plain.max_distance, plain.rope_theta, plain.attention_norm) == (None, None, True)
    with pytest.raises(IndexError):
        config.layer(3)


def test_an_old_config_json_reads_with_the_defaults():
    old = {key: value for key, value in EncoderConfig(**BASE).to_dict().items() if key not in MODERN or key in BASE}
    assert EncoderConfig.from_dict(old) == EncoderConfig(**BASE)
