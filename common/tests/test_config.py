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
