"""The shipped lengths file and the `rosetta bench --lengths` workload built from it (NumPy only: no framework).

The file is read, never regenerated: another machine's standard library gives other lengths.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rosetta_common import EncoderConfig
from rosetta_tools.throughput.lengths import build_workload, read_layout, read_lengths, write_workload
from rosetta_tools.throughput.presets import PRESETS
from rosetta_tools.throughput.settings import BenchConfig

LENGTHS = Path(__file__).resolve().parents[1] / "reports" / "lengths" / "stdlib-docstrings.json"


def test_the_stored_lengths_file_is_well_formed() -> None:
    document = json.loads(LENGTHS.read_text())
    header, lengths = document["header"], np.asarray(document["lengths"])
    for key in ("source", "python", "tokenizer", "counted", "paragraphs", "count", "sample", "statistics"):
        assert key in header, key
    assert "standard library" in header["source"] and "WordPiece" in header["tokenizer"]
    assert "[CLS]" in header["counted"] and header["count"] == lengths.size == 4096
    assert header["paragraphs"] >= lengths.size
    assert lengths.dtype.kind == "i" and lengths.min() >= 3  # [CLS] + >= 4 words' tokens + [SEP]
    stats = header["statistics"]
    assert (stats["min"], stats["max"]) == (lengths.min(), lengths.max())
    assert stats["mean"] == pytest.approx(lengths.mean(), abs=0.01)
    assert stats["p50"] == pytest.approx(np.percentile(lengths, 50), abs=0.1)
    assert stats["fraction_over_128"] == pytest.approx((lengths > 128).mean(), abs=1e-4)
    assert read_lengths(LENGTHS).lengths == tuple(lengths.tolist())


def test_workload_packs_and_pads_the_same_sequences(tmp_path: Path) -> None:
    config = PRESETS["tiny"].config
    workload = build_workload(read_lengths(LENGTHS), config, rows=4, row_length=128, batches=3, padded_batch=8, seed=1)
    file_lengths = np.minimum(read_lengths(LENGTHS).lengths[: workload.lengths.size], 128)
    np.testing.assert_array_equal(workload.lengths, file_lengths)  # the file's first sequences, in order
    assert [b.token_ids.shape for b in workload.packed] == [(4, 128)] * 3
    assert workload.real_tokens > 0.9 * 3 * 4 * 128  # FFD fills the rows
    assert all(b.token_ids.shape[1] % 8 == 0 and b.token_ids.shape[1] <= 128 for b in workload.padded)
    assert [b.token_ids.shape[0] for b in workload.padded[:-1]] == [8] * (len(workload.padded) - 1)
    # both layouts hold every sequence once, with the same tokens, never the padding id inside a sequence
    for layout in ("packed", "padded"):
        tokens = {}
        for batch in workload.batches(layout):
            for index, got in zip(batch.indices.tolist(), batch.unpack(batch.token_ids), strict=True):
                tokens[index] = got
        assert sorted(tokens) == list(range(workload.lengths.size))
        if layout == "packed":
            packed_tokens = tokens
        else:
            for index, got in tokens.items():
                np.testing.assert_array_equal(got, packed_tokens[index])
                assert (got != config.padding_idx).all()
    summary = workload.summary()
    assert summary["truncated_to_row"] == int((np.asarray(read_lengths(LENGTHS).lengths[: len(tokens)]) > 128).sum())
    assert summary["padded_distinct_shapes"] == len({b.token_ids.shape for b in workload.padded})
    # what the workers read back: the check sequences' places in each layout
    path = write_workload(workload, tmp_path / "w.npz")
    for layout in ("packed", "padded"):
        stored = read_layout(path, layout)
        outputs = [batch.token_ids[..., None].astype(float) for batch in workload.batches(layout)]
        want = np.concatenate([packed_tokens[i] for i in range(workload.check_sequences)])
        np.testing.assert_array_equal(stored.gather(outputs)[:, 0], want)
    assert np.load(path)["padding_mask"].shape == (int(workload.lengths[: workload.check_sequences].sum()),)


def test_bad_lengths_files_and_options(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    for text, message in (
        ("nope", "cannot read it as JSON"),
        ('{"lengths": [3]}', "need a JSON object with a 'header'"),
        ('{"header": {}, "lengths": []}', "'lengths' must be a non-empty list"),
        ('{"header": {}, "lengths": [3, 0]}', r"lengths\[1\] = 0, need an integer >= 1"),
    ):
        bad.write_text(text)
        with pytest.raises(ValueError, match=message):
            read_lengths(bad)
    config = EncoderConfig(50, 8, 2, 1, 16, max_len=32, dropout=0.0)
    with pytest.raises(ValueError, match=r"BenchConfig\.lengths runs its own two cases"):
        BenchConfig("tiny", config, ("rosetta_torch",), 2, 16, paddings=(0.25,), lengths=LENGTHS)
    cases = BenchConfig("tiny", config, ("rosetta_torch",), 2, 16, lengths=LENGTHS).cases
    assert [case.label for case in cases] == ["B2-S16-pad0", "B2-S16-lengths-stdlib-docstrings"]
