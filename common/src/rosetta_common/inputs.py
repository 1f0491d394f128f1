"""Input checks shared by both frameworks, so a bad call fails the same way, with the same words, in each."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rosetta_common.config import EncoderConfig
from rosetta_common.positional import run_firsts


class InputError(ValueError):
    """The arguments of an encoder call are invalid (bad token ids, shapes or dtypes)."""


ID_DTYPES = ("int32", "int64")
"""The dtypes token ids and token type ids may have: the ones torch's embedding lookup takes (JAX takes them too)."""


def check_id_dtype(name: str, dtype_name: str) -> None:
    """InputError for integer ids of another dtype than int32 / int64 (`dtype_name` as NumPy or torch spell it)."""
    if dtype_name.removeprefix("torch.") not in ID_DTYPES:
        raise InputError(
            f"{name} must be int32 or int64, got dtype {dtype_name} (convert it, e.g. {name}.astype(np.int64) or "
            f"{name}.long())"
        )


def check_token_ids(
    config: EncoderConfig, shape: Sequence[int], dtype_name: str, is_integer: bool, id_min: int, id_max: int
) -> None:
    """Check token ids described by their shape, dtype and extreme values (taken by the caller).

    `id_min` / `id_max` are ignored when the array is empty or not of an int32 / int64 dtype (ID_DTYPES).
    """
    shape = tuple(shape)
    if not is_integer:
        raise InputError(f"token_ids must be an integer array, got dtype {dtype_name}")
    check_id_dtype("token_ids", dtype_name)
    if len(shape) != 2:
        raise InputError(f"token_ids must have shape [batch, seq], got shape {shape}")
    if shape[0] == 0:
        raise InputError(f"token_ids has an empty batch (shape {shape})")
    if shape[1] == 0:
        raise InputError(f"token_ids has sequence length 0 (shape {shape})")
    if shape[1] > config.max_len:
        raise InputError(f"sequence length {shape[1]} exceeds max_len {config.max_len}")
    if id_min < 0 or id_max >= config.vocab_size:
        bad = id_min if id_min < 0 else id_max
        raise InputError(f"token id {bad} is out of range [0, vocab_size={config.vocab_size})")


def check_padding_mask(ids_shape: Sequence[int], shape: Sequence[int], dtype_name: str, is_bool: bool) -> None:
    """Check a padding mask: bool (True = padding), the same shape as the token ids."""
    if tuple(shape) != tuple(ids_shape):
        raise InputError(f"padding_mask shape {tuple(shape)} does not match token_ids shape {tuple(ids_shape)}")
    if not is_bool:
        raise InputError(f"padding_mask must be bool (True = padding), got dtype {dtype_name}")


def check_array_type(name: str, value: object, array_types: tuple[type, ...], kind: str, convert: str) -> None:
    """Refuse a list, a scalar or another framework's array before any attribute of it is read; the message says
    how to convert it (`convert` names the function, e.g. "torch.as_tensor")."""
    if not isinstance(value, array_types):
        raise InputError(f"{name} must be {kind}, got {type(value).__name__} (convert it with {convert}({name}))")


def check_token_type_ids(
    config: EncoderConfig,
    ids_shape: Sequence[int],
    shape: Sequence[int],
    dtype_name: str,
    is_integer: bool,
    id_min: int,
    id_max: int,
) -> None:
    """Check token type (segment) ids: ints in [0, type_vocab_size), the shape of the token ids."""
    if not config.type_vocab_size:
        raise InputError("token_type_ids given, but this encoder has no token-type embeddings (type_vocab_size=0)")
    if tuple(shape) != tuple(ids_shape):
        raise InputError(f"token_type_ids shape {tuple(shape)} does not match token_ids shape {tuple(ids_shape)}")
    if not is_integer:
        raise InputError(f"token_type_ids must be an integer array, got dtype {dtype_name}")
    check_id_dtype("token_type_ids", dtype_name)
    if id_min < 0 or id_max >= config.type_vocab_size:
        bad = id_min if id_min < 0 else id_max
        raise InputError(f"token type id {bad} is out of range [0, type_vocab_size={config.type_vocab_size})")


def check_attention_mask(
    padding_mask_given: bool, ids_shape: Sequence[int], shape: Sequence[int], values_ok: bool
) -> None:
    """Check an HF-style attention_mask (1 = keep, 0 = padding), given instead of a padding_mask."""
    if padding_mask_given:
        raise InputError("pass padding_mask (True = padding) or attention_mask (1 = keep, 0 = padding), not both")
    if tuple(shape) != tuple(ids_shape):
        raise InputError(f"attention_mask shape {tuple(shape)} does not match token_ids shape {tuple(ids_shape)}")
    if not values_ok:
        raise InputError("attention_mask must hold only 0 (padding) and 1 (keep)")


def check_segment_ids(ids_shape: Sequence[int], segment_ids: np.ndarray, padding: np.ndarray | None = None) -> None:
    """Check packed segment ids (host copies): int `[B, S]` like the token ids, 0 = padding, k >= 1 the k-th sequence
    packed into its row, each one contiguous run, numbered 1, 2, ... from the left. `padding`: the bool padding mask
    (True = padding) a padding_mask or attention_mask also gave, which must be exactly `segment_ids == 0`."""
    segment_ids = np.asarray(segment_ids)
    if tuple(segment_ids.shape) != tuple(ids_shape):
        shape = tuple(segment_ids.shape)
        raise InputError(f"segment_ids shape {shape} does not match token_ids shape {tuple(ids_shape)}")
    if not np.issubdtype(segment_ids.dtype, np.integer):
        raise InputError(f"segment_ids must be an integer array, got dtype {segment_ids.dtype}")
    check_id_dtype("segment_ids", str(segment_ids.dtype))
    if segment_ids.size and segment_ids.min() < 0:
        raise InputError(f"segment id {int(segment_ids.min())} is negative (0 = padding, 1, 2, ... = the sequences)")
    starts = run_firsts(segment_ids) & (segment_ids != 0)  # a sequence's first token
    numbered = np.cumsum(starts, axis=1)  # the number the segment of each token must have
    wrong = (segment_ids != 0) & (segment_ids != numbered)
    if wrong.any():
        row, column = (int(i) for i in np.argwhere(wrong)[0])
        segment = int(segment_ids[row, column])
        earlier = segment_ids[row, :column]
        what = "is not contiguous" if segment in earlier else f"comes where segment {int(numbered[row, column])} should"
        raise InputError(
            f"segment_ids row {row}: segment {segment} at position {column} {what} (each packed sequence is one "
            "contiguous run, numbered 1, 2, ... from the left; 0 = padding)"
        )
    if padding is not None and not np.array_equal(np.asarray(padding), segment_ids == 0):
        row, column = (int(i) for i in np.argwhere(np.asarray(padding) != (segment_ids == 0))[0])
        raise InputError(
            f"segment_ids and the padding mask disagree at row {row}, position {column} (segment id "
            f"{int(segment_ids[row, column])}; padding is exactly where the segment id is 0)"
        )


@dataclass(frozen=True)
class ArrayFacts:
    """What the input checks read of one array; each framework reads them from its own array type."""

    shape: tuple[int, ...]
    dtype: str
    is_integer: bool
    is_bool: bool
    lowest: int = 0  # of an integer array; 0 when it is empty or not of an integer dtype
    highest: int = 0
    binary: bool = True  # every value 0 or 1: read (and worked out) for an attention_mask only


def numpy_facts(value: object, *, binary: bool = False) -> ArrayFacts:
    """The facts of a NumPy (or JAX, or anything `np.asarray` reads) array; `binary`: work out whether every value
    is 0 or 1."""
    array = np.asarray(value)
    is_integer = bool(np.issubdtype(array.dtype, np.integer))
    lowest, highest = (int(array.min()), int(array.max())) if is_integer and array.size else (0, 0)
    zeros_and_ones = bool(np.isin(array, (0, 1)).all()) if binary else True
    return ArrayFacts(
        array.shape, str(array.dtype), is_integer, array.dtype == np.bool_, lowest, highest, zeros_and_ones
    )


def check_encoder_inputs(
    config: EncoderConfig,
    token_ids: ArrayFacts,
    padding_mask: ArrayFacts | None = None,
    *,
    token_type_ids: ArrayFacts | None = None,
    attention_mask: ArrayFacts | None = None,
    segment_ids: np.ndarray | None = None,
    mask_padding: np.ndarray | None = None,
) -> None:
    """Every check of an encoder call, in one order and one set of words for the oracle and both frameworks: the
    token ids, the token types, the attention_mask (not beside a padding_mask) or the padding_mask, then packed
    `segment_ids` (a host copy; `mask_padding`: the host copy of the padding a given mask says, which must agree)."""
    ids = token_ids
    check_token_ids(config, ids.shape, ids.dtype, ids.is_integer, ids.lowest, ids.highest)
    if token_type_ids is not None:
        types = token_type_ids
        check_token_type_ids(config, ids.shape, types.shape, types.dtype, types.is_integer, types.lowest, types.highest)
    if attention_mask is not None:
        check_attention_mask(padding_mask is not None, ids.shape, attention_mask.shape, attention_mask.binary)
    elif padding_mask is not None:
        check_padding_mask(ids.shape, padding_mask.shape, padding_mask.dtype, padding_mask.is_bool)
    if segment_ids is not None:
        check_segment_ids(ids.shape, segment_ids, mask_padding)
