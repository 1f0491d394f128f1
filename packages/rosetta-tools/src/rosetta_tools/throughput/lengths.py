"""`rosetta bench --lengths FILE`: a length distribution from real text, laid out packed and padded (NumPy only).

The workload is the file's first sequences (in its order; each truncated to the row length, as a tokenizer's
truncation would, and counted) that first-fit decreasing packs into `batches` batches of `rows` rows of
`row_length` (`rosetta_common.pack`), token ids drawn from the seed. The same sequences, in the same order, are
also cut into batches of `padded_batch` consecutive sequences, each padded to its longest rounded up to a multiple
of 8 (`rosetta_common.padded_batches`, as `pad_to_multiple_of=8` collators do): what the peers' users run. One timed
call is one pass over every batch of a layout, so every row does the same real tokens per call.

The correctness check runs on the first padded batch's sequences (`check` of them): the padded rows' output
there, and the packed rows' output at the same sequences wherever packing put them, against the float64
reference of that padded batch.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rosetta_common import EncoderConfig, PackedBatch, first_fit_decreasing, pack, padded_batches
from rosetta_tools.throughput import flops

if TYPE_CHECKING:  # settings imports nothing from here; the annotations only
    from rosetta_tools.throughput.settings import BenchConfig, Case

LAYOUTS = ("packed", "padded")
PAD_MULTIPLE = 8


@dataclass(frozen=True)
class LengthsFile:
    """A stored length distribution: its header (source, tokenizer, statistics) and the lengths."""

    path: Path
    header: dict[str, Any]
    lengths: tuple[int, ...]

    @property
    def name(self) -> str:
        return self.path.stem


def read_lengths(path: Path) -> LengthsFile:
    """The lengths file at `path` (JSON: {"header": {...}, "lengths": [int >= 1, ...]}); ValueError saying what is
    wrong with it."""
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"--lengths {path}: cannot read it as JSON ({err})") from err
    if not isinstance(document, dict) or not isinstance(document.get("header"), dict):
        raise ValueError(f"--lengths {path}: need a JSON object with a 'header' object and a 'lengths' list")
    lengths = document.get("lengths")
    if not isinstance(lengths, list) or not lengths:
        raise ValueError(f"--lengths {path}: 'lengths' must be a non-empty list of token counts")
    bad = next(
        (i for i, n in enumerate(lengths) if not (isinstance(n, int) and not isinstance(n, bool) and n >= 1)), None
    )
    if bad is not None:
        raise ValueError(f"--lengths {path}: lengths[{bad}] = {lengths[bad]!r}, need an integer >= 1")
    return LengthsFile(Path(path), document["header"], tuple(lengths))


@dataclass(frozen=True)
class Workload:
    """The sequences of one `--lengths` case and their two layouts."""

    name: str
    lengths: np.ndarray  # int64 [N], after truncation to the row length
    truncated: int  # how many of them were longer than a row
    packed: tuple[PackedBatch, ...]
    padded: tuple[PackedBatch, ...]

    @property
    def real_tokens(self) -> int:
        return int(self.lengths.sum())

    @property
    def check_sequences(self) -> int:
        """The sequences the correctness check compares: those of the first padded batch."""
        return int(self.padded[0].lengths.size)

    def batches(self, layout: str) -> tuple[PackedBatch, ...]:
        return self.packed if layout == "packed" else self.padded

    def positions(self, layout: str) -> int:
        """B * S summed over the layout's batches: the positions it computes."""
        return sum(batch.token_ids.size for batch in self.batches(layout))

    def step_flops(self, config: EncoderConfig, layout: str, mode: str) -> int:
        """FLOPs of one pass over the layout's batches in `mode` (every position counted, as computed)."""
        return sum(flops.step_flops(config, *batch.token_ids.shape, mode) for batch in self.batches(layout))

    def summary(self) -> dict[str, Any]:
        """What the report and results.json say about the workload."""
        padded_shapes = sorted({batch.token_ids.shape for batch in self.padded})
        return {
            "name": self.name,
            "sequences": int(self.lengths.size),
            "real_tokens": self.real_tokens,
            "mean_length": round(float(self.lengths.mean()), 2),
            "max_length": int(self.lengths.max()),
            "truncated_to_row": self.truncated,
            "packed_batches": len(self.packed),
            "packed_shape": list(self.packed[0].token_ids.shape),
            "packed_fill": round(self.real_tokens / self.positions("packed"), 4),
            "padded_batches": len(self.padded),
            "padded_batch_size": int(self.padded[0].token_ids.shape[0]),
            "padded_multiple_of": PAD_MULTIPLE,
            "padded_distinct_shapes": len(padded_shapes),
            "padded_shapes": [list(shape) for shape in padded_shapes],
            "padded_fill": round(self.real_tokens / self.positions("padded"), 4),
            "check_sequences": self.check_sequences,
        }


def _token_ids(config: EncoderConfig, lengths: np.ndarray, seed: int) -> list[np.ndarray]:
    """Random token ids per sequence, never the padding id (the padded rows' default mask would hide them)."""
    rng = np.random.default_rng(seed + 30_000)
    pad = config.padding_idx
    high = config.vocab_size - (pad is not None)
    sequences = []
    for length in lengths.tolist():
        ids = rng.integers(0, high, size=length, dtype=np.int64)
        sequences.append(ids if pad is None else ids + (ids >= pad))
    return sequences


def build_workload(
    lengths_file: LengthsFile,
    config: EncoderConfig,
    *,
    rows: int,
    row_length: int,
    batches: int,
    padded_batch: int,
    seed: int,
) -> Workload:
    """The file's first sequences that FFD packs into `batches` x `rows` rows of `row_length`, in both layouts."""
    all_lengths = np.asarray(lengths_file.lengths, dtype=np.int64)
    capped = np.minimum(all_lengths, row_length)
    budget = rows * batches
    count = int(np.searchsorted(np.cumsum(capped), budget * row_length, side="right"))
    while count > 1 and max(first_fit_decreasing(capped[:count].tolist(), row_length)) + 1 > budget:
        count -= 1  # FFD left a little room in each row: drop sequences from the end until the rows suffice
    count = max(count, 1)
    lengths = capped[:count]
    sequences = _token_ids(config, lengths, seed)
    padding_id = config.padding_idx
    packed = pack(sequences, row_length, padding_id=padding_id, min_rows=budget).split(rows)
    padded = padded_batches(
        sequences, padded_batch, padding_id=padding_id, multiple_of=PAD_MULTIPLE, max_length=row_length
    )
    return Workload(
        name=lengths_file.name,
        lengths=lengths,
        truncated=int((all_lengths[:count] > row_length).sum()),
        packed=tuple(packed),
        padded=tuple(padded),
    )


def case_workload(config: BenchConfig, case: Case) -> Workload | None:
    """The lengths case's workload (NumPy, milliseconds), None for another case."""
    if case.lengths is None or config.lengths is None:
        return None
    return build_workload(
        read_lengths(config.lengths),
        config.model,
        rows=case.batch,
        row_length=case.seq,
        batches=config.lengths_batches,
        padded_batch=config.padded_batch,
        seed=config.seed,
    )


def write_workload(workload: Workload, path: Path) -> Path:
    """The workload as one .npz the workers read (`read_layout`): per layout its batches' token ids and segment
    ids, and where each sequence went (batch, row, start); `lengths`; `padding_mask` (False, one per token of the
    check sequences: the check compares them all)."""
    arrays: dict[str, np.ndarray] = {"lengths": workload.lengths, "check": np.array(workload.check_sequences)}
    for layout in LAYOUTS:
        place = np.zeros((3, workload.lengths.size), dtype=np.int64)
        for index, batch in enumerate(workload.batches(layout)):
            arrays[f"{layout}{index}_token_ids"] = batch.token_ids
            arrays[f"{layout}{index}_segment_ids"] = batch.segment_ids
            place[0, batch.indices] = index
            place[1, batch.indices] = batch.rows
            place[2, batch.indices] = batch.starts
        arrays[f"{layout}_place"] = place
        arrays[f"{layout}_batches"] = np.array(len(workload.batches(layout)))
    arrays["padding_mask"] = np.zeros(int(workload.lengths[: workload.check_sequences].sum()), dtype=bool)
    np.savez(path, **arrays)
    return path


@dataclass(frozen=True)
class LayoutInputs:
    """One layout of a stored workload, as a worker reads it: its batches and where the check sequences are."""

    token_ids: tuple[np.ndarray, ...]  # int64 [B, S] per batch
    segment_ids: tuple[np.ndarray, ...]  # int64 [B, S] per batch, 0 = padding
    place: np.ndarray  # int64 [3, check]: batch, row, start of each check sequence
    lengths: np.ndarray  # int64 [check]

    def gather(self, outputs: list[np.ndarray]) -> np.ndarray:
        """The check sequences' outputs `[T, ...]`, concatenated in sequence order, from each batch's output."""
        parts = [
            outputs[batch][row, start : start + length]
            for (batch, row, start), length in zip(self.place.T.tolist(), self.lengths.tolist(), strict=True)
        ]
        return np.concatenate(parts)


def read_layout(path: str | Path, layout: str) -> LayoutInputs:
    """What `write_workload` stored for `layout` ("packed" or "padded")."""
    data = np.load(path)
    count, check = int(data[f"{layout}_batches"]), int(data["check"])
    return LayoutInputs(
        token_ids=tuple(data[f"{layout}{i}_token_ids"] for i in range(count)),
        segment_ids=tuple(data[f"{layout}{i}_segment_ids"] for i in range(count)),
        place=data[f"{layout}_place"][:, :check],
        lengths=data["lengths"][:check],
    )


def takes_segment_ids(function: Callable[..., Any]) -> bool:
    """Whether a framework's encoder call takes `segment_ids` (packed rows): the packed rows' feature check."""
    return "segment_ids" in inspect.signature(function).parameters
