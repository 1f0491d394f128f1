"""Texts -> token ids with a checkpoint folder's own `tokenizer.json` (the `tokenizers` library, what transformers'
fast tokenizers run; rosetta-tools' `embed` extra), batched as sentence-transformers batches them.

Settings as sentence-transformers reads them: `sentence_bert_config.json`'s max_seq_length (truncation) and
do_lower_case (texts lower-cased first); without it, the encoder's max_len. Each batch is padded to its longest
text with the tokenizer's pad token (tokenizer_config.json's pad_token, else tokenizer.json's padding, else the
encoder's padding_idx).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rosetta_common import EncoderConfig, WeightFormatError
from rosetta_common.io import read_json_object

TOKENIZER_FILE, TOKENIZER_CONFIG_FILE, ST_CONFIG_FILE = (
    "tokenizer.json",
    "tokenizer_config.json",
    "sentence_bert_config.json",
)


@dataclass(frozen=True)
class Batch:
    """One batch: `token_ids` int64 `[B, S]`, `attention_mask` int64 `[B, S]` (1 = token, 0 = padding),
    `token_type_ids` int64 `[B, S]` (all 0 for single texts)."""

    token_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray


class FolderTokenizer:
    """`tokenize(texts) -> Batch` with the folder's tokenizer.json and sentence-transformers' settings."""

    def __init__(self, folder: str | os.PathLike, config: EncoderConfig | None = None) -> None:
        """`config`: the encoder's (its max_len and padding_idx are the fallbacks; default: read from the folder
        as `load` reads it)."""
        folder = Path(folder)
        if config is None:
            from rosetta_tools import layouts

            config = layouts.load_checkpoint(folder).config
        max_len, padding_idx = config.max_len, config.padding_idx
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise WeightFormatError(
                "reading a folder's tokenizer.json needs the `tokenizers` library: pip install 'rosetta-tools[embed]'"
            ) from None
        path = folder / TOKENIZER_FILE
        if not path.is_file():
            raise WeightFormatError(f"{folder}: no {TOKENIZER_FILE} (rosetta embed tokenizes with the folder's own)")
        try:
            self.tokenizer = Tokenizer.from_file(str(path))
        except Exception as err:  # the library raises its own Exception subclasses for a bad file
            raise WeightFormatError(f"{path}: not a tokenizer file the tokenizers library reads: {err}") from err
        settings = _optional_json(folder / ST_CONFIG_FILE)
        self.max_length = int(settings.get("max_seq_length") or max_len)
        self.lower_case = bool(settings.get("do_lower_case", False))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.max_length)
        self.pad_id = _pad_id(self.tokenizer, folder, padding_idx)

    def token_lists(self, texts: list[str]) -> list[np.ndarray]:
        """Each text's token ids, int64 `[length]` (truncated to `max_length`, as `tokenize`), unpadded: what
        `rosetta_common.packing.pack` packs."""
        encoded = self.tokenizer.encode_batch([text.lower() if self.lower_case else text for text in texts])
        return [np.asarray(e.ids, dtype=np.int64) for e in encoded]

    def tokenize(self, texts: list[str]) -> Batch:
        encoded = self.tokenizer.encode_batch([text.lower() if self.lower_case else text for text in texts])
        width = max(len(e.ids) for e in encoded)
        ids = np.full((len(texts), width), self.pad_id, dtype=np.int64)
        mask, types = np.zeros_like(ids), np.zeros_like(ids)
        for row, e in enumerate(encoded):
            ids[row, : len(e.ids)], mask[row, : len(e.ids)], types[row, : len(e.ids)] = e.ids, 1, e.type_ids
        return Batch(ids, mask, types)


def _optional_json(path: Path) -> dict[str, Any]:
    return read_json_object(path, path.name) if path.exists() else {}


def _pad_id(tokenizer: Any, folder: Path, padding_idx: int | None) -> int:
    token = _optional_json(folder / TOKENIZER_CONFIG_FILE).get("pad_token")
    if isinstance(token, dict):  # an AddedToken written out
        token = token.get("content")
    if isinstance(token, str) and tokenizer.token_to_id(token) is not None:
        return int(tokenizer.token_to_id(token))
    padding = json.loads(tokenizer.to_str()).get("padding") or {}
    if isinstance(padding.get("pad_id"), int):
        return int(padding["pad_id"])
    return 0 if padding_idx is None else padding_idx  # masked by attention_mask whatever its id
