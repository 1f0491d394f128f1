"""rosetta_common.packing: first-fit decreasing packing with segment ids, padded batches, and the way back."""

from __future__ import annotations

import numpy as np
import pytest

from rosetta_common import PackedBatch, first_fit_decreasing, pack, pad, padded_batches


def _sequences(lengths: list[int], seed: int = 0, vocab: int = 50) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(2, vocab, size=length) for length in lengths]


def _check_layout(batch: PackedBatch, sequences: list[np.ndarray], padding_id: int) -> None:
    """Every token exactly once at its mapped place, padding elsewhere, contiguous segments 1.. per row."""
    covered = np.zeros(batch.token_ids.shape, dtype=np.int64)
    for n, index in enumerate(batch.indices.tolist()):
        row, start, length = int(batch.rows[n]), int(batch.starts[n]), int(batch.lengths[n])
        assert length == sequences[index].size
        np.testing.assert_array_equal(batch.token_ids[row, start : start + length], sequences[index])
        assert len(set(batch.segment_ids[row, start : start + length].tolist())) == 1
        covered[row, start : start + length] += 1
    assert covered.max() <= 1  # no two sequences overlap
    np.testing.assert_array_equal(covered == 1, batch.segment_ids > 0)
    assert (batch.token_ids[covered == 0] == padding_id).all()
    assert batch.real_tokens == sum(sequences[i].size for i in batch.indices.tolist())
    for row in batch.segment_ids:
        ids = row[row > 0]
        # contiguous runs numbered 1, 2, ... from the left, padding only after the last segment
        runs = [int(v) for i, v in enumerate(ids) if i == 0 or v != ids[i - 1]]
        assert runs == list(range(1, len(runs) + 1))
        if ids.size:
            assert (row[: ids.size] > 0).all()


RANDOM_CASES = [(seed, row) for seed in range(12) for row in (7, 16, 64)]


@pytest.mark.parametrize(("seed", "row_length"), RANDOM_CASES)
def test_pack_places_every_token_once_and_round_trips(seed: int, row_length: int) -> None:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, row_length + 1, size=int(rng.integers(1, 40))).tolist()
    sequences = _sequences(lengths, seed)
    batch = pack(sequences, row_length, padding_id=1)
    assert batch.token_ids.shape[1] == row_length
    assert batch.token_ids.dtype == batch.segment_ids.dtype == np.int64
    _check_layout(batch, sequences, padding_id=1)
    # never over-full; first fit: a sequence went to a later row only if no earlier row had room for it (an
    # earlier row's room at the end is at most its room then)
    used = (batch.segment_ids > 0).sum(axis=1)
    assert (used <= row_length).all() and (used > 0).all()
    room = row_length - used
    for row, length in zip(batch.rows.tolist(), batch.lengths.tolist(), strict=True):
        assert (room[:row] < length).all()
    assert batch.token_ids.shape[0] >= -(-sum(lengths) // row_length)
    # unpack(pack(x)) == x, for the token ids and for an output with trailing feature axes
    for got, want in zip(batch.unpack(batch.token_ids), sequences, strict=True):
        np.testing.assert_array_equal(got, want)
    features = np.stack([batch.token_ids * 10, batch.segment_ids], axis=-1)
    for got, want in zip(batch.unpack(features), sequences, strict=True):
        np.testing.assert_array_equal(got[:, 0], want * 10)
    np.testing.assert_array_equal(batch.indices, np.arange(len(sequences)))
    assert batch.padding_mask.sum() == batch.token_ids.size - sum(lengths)


def test_ffd_row_counts_where_the_optimum_is_known() -> None:
    # 6+4, 6+4, 5+5: FFD finds the 3-row optimum (first fit in input order would need 4 rows: 4+4, 6, 6, 5+5)
    assert max(first_fit_decreasing([4, 4, 6, 6, 5, 5], 10)) + 1 == 3
    # one row when everything fits exactly
    assert first_fit_decreasing([3, 3, 2, 2], 10) == [0, 0, 0, 0]
    # every sequence a full row: one row each
    assert first_fit_decreasing([8, 8, 8], 8) == [0, 1, 2]
    # 7 and 3 pairs, 5 and 5: optimum 3 rows of exactly 10, FFD places 7s first then 5+5, then 3s beside the 7s
    assert first_fit_decreasing([3, 5, 7, 3, 5, 7], 10) == [0, 2, 0, 1, 2, 1]
    # a classic case where FFD is not optimal: 2 x (4+3+2) and 1 x ... OPT = 3 rows of 9, FFD uses 4
    lengths = [4, 4, 4, 3, 3, 3, 2, 2, 2]  # total 27 = 3 rows of 9: 4+3+2 three times
    assert max(first_fit_decreasing(lengths, 9)) + 1 == 4  # FFD: 4+4, 4+3+2, 3+3+2, 2


def test_placement_is_deterministic_with_ties_by_index() -> None:
    sequences = [np.array([10]), np.array([20, 21]), np.array([30]), np.array([40, 41])]
    batch = pack(sequences, 3)
    # longest first, ties by input index: [20 21 | 10], [40 41 | 30]
    np.testing.assert_array_equal(batch.token_ids, [[20, 21, 10], [40, 41, 30]])
    np.testing.assert_array_equal(batch.segment_ids, [[1, 1, 2], [1, 1, 2]])
    np.testing.assert_array_equal(batch.rows, [0, 0, 1, 1])
    np.testing.assert_array_equal(batch.starts, [2, 0, 2, 0])
    again = pack(sequences, 3)
    for field in ("token_ids", "segment_ids", "rows", "starts", "lengths"):
        np.testing.assert_array_equal(getattr(batch, field), getattr(again, field))


def test_token_types_follow_their_tokens() -> None:
    sequences = _sequences([3, 5, 2, 4], seed=3)
    types = [np.arange(s.size) % 2 for s in sequences]
    batch = pack(sequences, 8, token_type_ids=types, padding_id=None)
    assert batch.token_type_ids is not None and batch.padding_id == 0
    for got, want in zip(batch.unpack(batch.token_type_ids), types, strict=True):
        np.testing.assert_array_equal(got, want)
    assert (batch.token_type_ids[batch.padding_mask] == 0).all()
    assert pack(sequences, 8).token_type_ids is None


def test_min_rows_and_split_keep_one_shape() -> None:
    sequences = _sequences([5, 4, 3, 3, 2, 6, 1], seed=4)
    batch = pack(sequences, 8, padding_id=1, min_rows=5)
    assert batch.token_ids.shape == (5, 8)
    assert (batch.segment_ids[3:] == 0).all() and (batch.token_ids[3:] == 1).all()
    parts = batch.split(2)
    assert [p.token_ids.shape for p in parts] == [(2, 8)] * 3
    assert sorted(np.concatenate([p.indices for p in parts]).tolist()) == list(range(len(sequences)))
    for part in parts:
        _check_layout(part, sequences, padding_id=1)
        for index, got in zip(part.indices.tolist(), part.unpack(part.token_ids), strict=True):
            np.testing.assert_array_equal(got, sequences[index])


def test_pad_and_padded_batches() -> None:
    sequences = _sequences([3, 9, 2, 5, 1], seed=5)
    batch = pad(sequences, padding_id=7, multiple_of=8)
    assert batch.token_ids.shape == (5, 16)
    np.testing.assert_array_equal(batch.rows, np.arange(5))
    np.testing.assert_array_equal(batch.starts, np.zeros(5))
    np.testing.assert_array_equal(batch.segment_ids.max(axis=1), np.ones(5))
    _check_layout(batch, sequences, padding_id=7)
    assert pad(sequences, multiple_of=8, max_length=12).token_ids.shape == (5, 12)  # rounding capped
    batches = padded_batches(sequences, 2, multiple_of=4)
    assert [b.token_ids.shape for b in batches] == [(2, 12), (2, 8), (1, 4)]
    assert [b.indices.tolist() for b in batches] == [[0, 1], [2, 3], [4]]
    for part in batches:
        _check_layout(part, sequences, padding_id=0)


def test_errors_name_the_sequence() -> None:
    with pytest.raises(ValueError, match=r"sequence 2 has 9 tokens, longer than a row of 8.*never truncates"):
        pack(_sequences([3, 8, 9]), 8)
    with pytest.raises(ValueError, match="sequence 1 is empty"):
        pack([np.array([1, 2]), np.array([], dtype=np.int64)], 8)
    with pytest.raises(ValueError, match="sequence 0: need a 1-D integer array"):
        pack([np.array([1.5, 2.0])], 8)
    with pytest.raises(ValueError, match="sequence 0: need a 1-D integer array"):
        pack([np.array([[1, 2]])], 8)
    with pytest.raises(ValueError, match="row_length must be >= 1"):
        pack(_sequences([1]), 0)
    with pytest.raises(ValueError, match="token_type_ids 1: need integers of the sequence's shape"):
        pack(_sequences([2, 3]), 8, token_type_ids=[np.zeros(2, int), np.zeros(2, int)])
    with pytest.raises(ValueError, match="token_type_ids: 1 sequences for 2"):
        pack(_sequences([2, 3]), 8, token_type_ids=[np.zeros(2, int)])
    with pytest.raises(ValueError, match="sequence 1 has 9 tokens, longer than max_length 8"):
        pad(_sequences([3, 9]), max_length=8)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        padded_batches(_sequences([3]), 0)
    batch = pack(_sequences([3, 4]), 8)
    with pytest.raises(ValueError, match=r"unpack: array of shape \(2, 8\)"):
        batch.unpack(np.zeros((2, 8)))
    assert pack([], 8).token_ids.shape == (0, 8)  # nothing to pack: no rows
