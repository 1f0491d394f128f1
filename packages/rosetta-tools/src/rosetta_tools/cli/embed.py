"""`rosetta embed FOLDER TEXT... [--file texts.txt] [--framework torch|flax] [--out FILE.npy] [--pack]`: sentence
embeddings with a sentence-transformers folder's own tokenizer and head (modules.json), in either framework;
`--pack` packs the texts several to a row (segment ids) instead of padding each batch to its longest."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from rosetta_common import write_atomically
from rosetta_tools.cli.errors import EXIT_OK, CommandError
from rosetta_tools.cli.options import int_at_least
from rosetta_tools.frameworks import require

HELP = "sentence embeddings of texts with a sentence-transformers folder (its tokenizer.json and head), torch or flax"
TABLE_MAX = 8  # the cosine-similarity table is printed for 2 to TABLE_MAX texts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "folder", type=Path, help="a sentence-transformers folder (or any folder `load` reads, with tokenizer.json)"
    )
    parser.add_argument("texts", nargs="*", help="the texts to embed")
    parser.add_argument("--file", type=Path, help="more texts, one a line (a progress bar follows them)")
    parser.add_argument(
        "--framework", choices=["torch", "flax"], default="torch", help="which encoder runs (default torch)"
    )
    parser.add_argument("--out", type=Path, metavar="FILE.npy", help="write the [N, D] float32 embeddings here")
    parser.add_argument(
        "--dtype",
        choices=["float32", "float64"],
        help="cast the weights first (default: as stored); --out is float32 either way",
    )
    parser.add_argument(
        "--batch-size",
        type=int_at_least(1),
        default=32,
        help="texts per forward pass (with --pack: rows per forward pass) (default 32)",
    )
    parser.add_argument(
        "--pack",
        action="store_true",
        help="pack the texts into rows of the tokenizer's max length (first-fit decreasing, segment ids), each "
        "pooled as if alone: no padding to compute",
    )


def texts_of(args: argparse.Namespace) -> list[str]:
    texts = list(args.texts)
    if args.file is not None:
        try:
            lines = args.file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise CommandError(f"{args.file}: cannot read the texts: {err}") from err
        texts += [line for line in lines if line.strip()]
    if not texts:
        raise CommandError("no texts to embed: give them as arguments or with --file texts.txt")
    return texts


def embedder(framework: str, folder: Path, dtype: str | None):  # noqa: ANN201  (model, two NumPy-in NumPy-out embeds)
    """(the loaded model, `run(batch) -> [B, D_out]`, `run_packed(token_ids, segment_ids) -> [N, D_out]`, NumPy):
    torch's `model.embed` under no_grad, or flax's `checked_jit(model, method="embed")` (packed: the checked,
    jitted encoder, then `embed_sequences`). Single texts are all token type 0, the encoder's default: no
    token_type_ids are passed."""
    module = require(framework, "rosetta embed")
    notes = lambda note: print(f"note: {note}")
    if framework == "torch":
        import torch

        model = module.load(folder, dtype=dtype, on_note=notes).eval()

        def run_torch(batch) -> np.ndarray:  # noqa: ANN001
            with torch.no_grad():
                ids, mask = torch.from_numpy(batch.token_ids), torch.from_numpy(batch.attention_mask)
                return model.embed(ids, attention_mask=mask).numpy()

        def run_torch_packed(token_ids: np.ndarray, segment_ids: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                ids, segments = torch.from_numpy(token_ids), torch.from_numpy(segment_ids)
                return model.embed(ids, segment_ids=segments).numpy()

        return model, run_torch, run_torch_packed
    import jax

    jax.config.update("jax_enable_x64", True)  # a float64 folder, or --dtype float64 (float32 stays float32)
    model = module.load(folder, dtype=dtype, on_note=notes)
    model.eval()
    compiled, encoder = module.checked_jit(model, method="embed"), module.checked_jit(model)

    def run_flax(batch) -> np.ndarray:  # noqa: ANN001
        return np.asarray(compiled(batch.token_ids, attention_mask=batch.attention_mask))

    def run_flax_packed(token_ids: np.ndarray, segment_ids: np.ndarray) -> np.ndarray:
        return np.asarray(model.embed_sequences(encoder(token_ids, segment_ids=segment_ids), segment_ids))

    return model, run_flax, run_flax_packed


def run(args: argparse.Namespace) -> int:
    from rosetta_tools.texts import FolderTokenizer

    texts = texts_of(args)
    model, embed, embed_rows = embedder(args.framework, args.folder, args.dtype)
    if model.sentence_head is None:
        raise CommandError(f"{args.folder}: no sentence-embedding head (no modules.json): nothing says how to pool")
    tokenizer = FolderTokenizer(args.folder, model.config)
    if args.pack:
        row_length = min(tokenizer.max_length, model.config.max_len)
        vectors = embed_packed(
            texts, tokenizer, embed_rows, args.batch_size, row_length, progress=args.file is not None
        )
    else:
        vectors = embed_all(texts, tokenizer, embed, args.batch_size, progress=args.file is not None)
    if args.out is not None:
        out = np.ascontiguousarray(vectors, dtype=np.float32)
        write_atomically(args.out, lambda tmp: _save_npy(tmp, out))
    print(
        f"{len(texts)} texts -> [{vectors.shape[0]}, {vectors.shape[1]}] ({args.framework}, {vectors.dtype}; "
        f"{model.sentence_head.head.describe()})" + (f" -> {args.out}" if args.out else "")
    )
    if 2 <= len(texts) <= TABLE_MAX:
        print_similarities(texts, vectors)
    return EXIT_OK


def embed_all(texts: list[str], tokenizer, embed, batch_size: int, *, progress: bool) -> np.ndarray:  # noqa: ANN001
    """Every text's embedding, `[N, D_out]` in the model's dtype, in batches of `batch_size` in the given order."""
    starts = range(0, len(texts), batch_size)
    if not progress:
        return np.concatenate([embed(tokenizer.tokenize(texts[i : i + batch_size])) for i in starts])
    from rich.progress import Progress

    parts = []
    with Progress(transient=True) as bar:
        task = bar.add_task("embedding", total=len(texts))
        for i in starts:
            parts.append(embed(tokenizer.tokenize(texts[i : i + batch_size])))
            bar.advance(task, len(parts[-1]))
    return np.concatenate(parts)


def embed_packed(
    texts: list[str],
    tokenizer,  # noqa: ANN001
    embed_rows,  # noqa: ANN001
    batch_size: int,
    row_length: int,
    *,
    progress: bool,
) -> np.ndarray:
    """Every text's embedding, `[N, D_out]`, in the given order: the texts' tokens packed into rows of
    `row_length` (`rosetta_common.packing.pack`), `batch_size` rows per forward pass (the last filled with empty
    rows: one shape), each packed text pooled as if alone (`embed(..., segment_ids=...)`)."""
    from rich.progress import Progress

    from rosetta_common.packing import pack

    packed = pack(tokenizer.token_lists(texts), row_length, padding_id=tokenizer.pad_id)
    vectors: list[np.ndarray | None] = [None] * len(texts)
    with Progress(transient=True, disable=not progress) as bar:
        task = bar.add_task("embedding (packed)", total=len(texts))
        for part in packed.split(batch_size):
            got = embed_rows(part.token_ids, part.segment_ids)  # row order, then segment order
            order = sorted(range(part.indices.size), key=lambda n: (int(part.rows[n]), int(part.starts[n])))
            for vector, n in zip(got, order, strict=True):
                vectors[int(part.indices[n])] = vector
            bar.advance(task, part.indices.size)
    return np.stack(vectors)


def print_similarities(texts: list[str], vectors: np.ndarray) -> None:
    """The cosine similarity of every pair, as a table (texts shortened to 24 characters)."""
    from rich.console import Console
    from rich.table import Table

    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    cosine = unit @ unit.T
    short = [text if len(text) <= 24 else text[:23] + "…" for text in texts]
    table = Table(title="cosine similarity")
    table.add_column("")
    for i in range(len(texts)):
        table.add_column(f"{i}", justify="right")
    for i, text in enumerate(short):
        table.add_row(f"{i} {text}", *(f"{value:.3f}" for value in cosine[i]))
    Console().print(table)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:
        np.save(handle, array)
