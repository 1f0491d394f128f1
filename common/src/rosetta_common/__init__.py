"""rosetta-common: what both frameworks share (NumPy only)."""

from rosetta_common.canonical import (
    FORMAT_VERSION,
    WeightFormatError,
    check_named_tensors,
    check_tensors,
    expected_shapes,
)
from rosetta_common.config import ACTIVATIONS, EncoderConfig
from rosetta_common.inputs import InputError, check_array_type, check_padding_mask, check_token_ids
from rosetta_common.io import (
    load_canonical,
    read_config_file,
    read_metadata,
    read_safetensors,
    save_canonical,
    write_atomically,
    write_directory_atomically,
)
from rosetta_common.oracle import encoder_forward
from rosetta_common.packing import PackedBatch, first_fit_decreasing, pack, pad, padded_batches
from rosetta_common.positional import sinusoidal_table

__all__ = [
    "ACTIVATIONS",
    "FORMAT_VERSION",
    "EncoderConfig",
    "InputError",
    "PackedBatch",
    "WeightFormatError",
    "check_array_type",
    "check_named_tensors",
    "check_padding_mask",
    "check_tensors",
    "check_token_ids",
    "encoder_forward",
    "expected_shapes",
    "first_fit_decreasing",
    "load_canonical",
    "pack",
    "pad",
    "padded_batches",
    "read_config_file",
    "read_metadata",
    "read_safetensors",
    "save_canonical",
    "sinusoidal_table",
    "write_atomically",
    "write_directory_atomically",
]
