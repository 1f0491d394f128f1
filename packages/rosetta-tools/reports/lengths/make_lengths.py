"""Writes stdlib-docstrings.json: token counts of real passages that ship with every Python, for `rosetta bench
--lengths`.

Run: `python packages/rosetta-tools/reports/lengths/make_lengths.py [--out FILE] [--count N]` (needs the
`tokenizers` library; reads only this interpreter's standard library, fetches nothing).

The passages are the paragraphs (blank-line separated blocks, lines joined) of the docstrings of every module,
class and function in the standard library's own source (`ast`, test packages left out), keeping prose: at least
four words, no doctest (`>>>`) blocks. Paragraphs are what an encoder is fed (a sentence to a few, as in
retrieval passages and sentence pairs); whole docstrings mix signatures, parameter tables and examples, and run to
thousands of tokens. They are counted with a WordPiece tokenizer trained here on those same paragraphs (the
`tokenizers` library's WordPieceTrainer, BERT's normaliser with lower-casing and pre-tokeniser, a 30,522-entry
vocabulary as BERT-base's), `[CLS] ... [SEP]` included, not truncated. The file keeps a seeded random sample of
them, in the sample's order. The same standard library gives the same file; another Python version gives another.
"""

from __future__ import annotations

import argparse
import ast
import json
import platform
import sys
import sysconfig
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tokenizers import Tokenizer

HERE = Path(__file__).resolve().parent
SKIPPED_PARTS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
VOCAB_SIZE = 30522
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def stdlib_files(root: Path) -> list[Path]:
    """The standard library's .py files under `root`, sorted, test packages and installed packages left out."""
    return sorted(path for path in root.rglob("*.py") if not SKIPPED_PARTS.intersection(path.relative_to(root).parts))


def docstrings(path: Path) -> list[str]:
    """Every module, class and function docstring of one file, in source order (unparsable files give none)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return []
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    found = [ast.get_docstring(node, clean=True) for node in ast.walk(tree) if isinstance(node, kinds)]
    return [text for text in found if text]


def paragraphs(text: str) -> list[str]:
    """The prose paragraphs of a docstring: blank-line separated, lines joined, >= 4 words, no doctest."""
    kept = []
    for block in text.split("\n\n"):
        lines = [line.strip() for line in block.strip().splitlines()]
        if not lines or any(line.startswith(">>>") for line in lines):
            continue
        joined = " ".join(lines)
        if len(joined.split()) >= 4:
            kept.append(joined)
    return kept


def train_tokenizer(texts: list[str]) -> Tokenizer:
    """A BERT-style WordPiece trained on `texts` (lower-cased, BERT's pre-tokeniser, [CLS] $A [SEP])."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=VOCAB_SIZE, special_tokens=SPECIALS, show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return tokenizer


def statistics(lengths: np.ndarray) -> dict[str, float]:
    """Summary of the lengths (tokens, [CLS]/[SEP] included)."""
    quantiles = {f"p{q}": round(float(np.percentile(lengths, q)), 1) for q in (10, 25, 50, 75, 90, 99)}
    return {
        "min": int(lengths.min()),
        "mean": round(float(lengths.mean()), 2),
        **quantiles,
        "max": int(lengths.max()),
        "fraction_over_128": round(float((lengths > 128).mean()), 4),
        "fraction_over_512": round(float((lengths > 512).mean()), 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "stdlib-docstrings.json")
    parser.add_argument("--count", type=int, default=4096, help="lengths kept, a seeded sample (default 4096)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    root = Path(sysconfig.get_paths()["stdlib"])
    files = stdlib_files(root)
    texts = [p for path in files for doc in docstrings(path) for p in paragraphs(doc)]
    tokenizer = train_tokenizer(texts)
    every = np.array([len(encoding.ids) for encoding in tokenizer.encode_batch(texts)], dtype=np.int64)
    chosen = np.random.default_rng(args.seed).choice(every.size, size=min(args.count, every.size), replace=False)
    lengths = every[chosen]
    header = {
        "what": "token counts of passages, one per entry of `lengths`, for `rosetta bench --lengths`",
        "source": f"paragraphs of the docstrings of Python {platform.python_version()}'s standard library "
        f"({len(files)} .py files under its stdlib directory, test packages left out; module, class and function "
        "docstrings by ast, split at blank lines, lines joined, kept when >= 4 words and no '>>>')",
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "tokenizer": f"WordPiece trained on those paragraphs (tokenizers {__import__('tokenizers').__version__} "
        f"WordPieceTrainer, vocab_size {VOCAB_SIZE}, BertNormalizer(lowercase=True), BertPreTokenizer), "
        "template [CLS] $A [SEP]",
        "counted": "tokens including [CLS] and [SEP]; not truncated (a consumer truncates to its row length)",
        "paragraphs": int(every.size),
        "count": int(lengths.size),
        "sample": f"numpy default_rng({args.seed}).choice without replacement, in that order",
        "statistics": statistics(lengths),
        "statistics_all_paragraphs": statistics(every),
        "generator": "packages/rosetta-tools/reports/lengths/make_lengths.py",
    }
    text = json.dumps({"header": header, "lengths": None}, indent=1)  # the lengths on one line, after the header
    args.out.write_text(text.replace('"lengths": null', f'"lengths": {json.dumps(lengths.tolist())}') + "\n")
    print(f"{args.out}: {lengths.size} of {every.size} paragraphs, {json.dumps(header['statistics'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
