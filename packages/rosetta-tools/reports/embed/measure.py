"""`rosetta embed` vs `SentenceTransformer.encode()`: texts per second on the same texts, batch size and threads.

One run, on a random all-MiniLM-L6-v2-shaped folder (BERT, 6 layers, d_model 384, 12 heads, d_ff 1536, mean
pooling, Normalize) built offline with `tests/st_folders.py`; 512 texts of 24 words each (so sentence-transformers'
length sorting and rosetta's given order pad alike), batch 32, float32, 2 torch threads. Each row is the median of
3 timed passes over all texts after one warm-up pass (the flax warm-up pass holds its compilations, reported
apart); tokenization is inside the timed region for every row. Run alone on a quiet machine, in the cross suite's
virtualenv (it has sentence-transformers):

    PYTHONPATH=tests python packages/rosetta-tools/reports/embed/measure.py [FOLDER]   # writes results.json here

FOLDER: a sentence-transformers folder of your own (e.g. the real all-MiniLM-L6-v2) instead of the random one.
"""

from __future__ import annotations

import functools
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).parent
N_TEXTS, WORDS_PER_TEXT, BATCH, THREADS, REPEATS = 512, 24, 32, 2, 3


def build(where: Path) -> Path:
    import st_folders
    from transformers import BertConfig, BertModel

    hf = where / "hf"
    tokenizer = st_folders.fast_tokenizer("bert")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                         intermediate_size=1536, max_position_embeddings=512)).save_pretrained(hf)  # fmt: skip
    tokenizer.save_pretrained(hf)
    return st_folders.st_folder(hf, where / "st", "mean", normalize=True, max_seq_length=128)


def texts() -> list[str]:
    import st_folders

    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(st_folders.WORDS, WORDS_PER_TEXT)) for _ in range(N_TEXTS)]


def timed(run) -> tuple[float, float]:  # noqa: ANN001
    """(the warm-up pass's seconds, the median of REPEATS timed passes)."""
    start = time.perf_counter()
    run()
    warm = time.perf_counter() - start
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return warm, statistics.median(times)


def main() -> None:
    torch.set_num_threads(THREADS)
    from sentence_transformers import SentenceTransformer

    from rosetta_tools.cli.embed import embed_all, embedder
    from rosetta_tools.texts import FolderTokenizer

    corpus = texts()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(sys.argv[1]) if len(sys.argv) > 1 else build(Path(tmp))
        client = SentenceTransformer(str(folder), device="cpu").eval()
        rows["sentence-transformers encode (torch)"] = timed(lambda: client.encode(corpus, batch_size=BATCH))
        reference = client.encode(corpus, batch_size=BATCH)
        for framework in ("torch", "flax"):
            model, embed = embedder(framework, folder, None)
            tokenizer = FolderTokenizer(folder, model.config)
            run = functools.partial(embed_all, corpus, tokenizer, embed, BATCH, progress=False)
            rows[f"rosetta embed --framework {framework}"] = timed(run)
            assert np.abs(run() - reference).max() <= 1e-5
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model_name = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if "Model name" in line), "")
    results = {
        "machine": {"cpu": model_name, "cores": torch.get_num_threads(), "python": platform.python_version()},
        "setup": {
            "folder": "random" if len(sys.argv) < 2 else Path(sys.argv[1]).name,
            "texts": N_TEXTS,
            "words_per_text": WORDS_PER_TEXT,
            "batch": BATCH,
            "threads": THREADS,
        },
        "rows": {
            name: {"texts_per_s": N_TEXTS / median, "median_s": median, "first_pass_s": warm}
            for name, (warm, median) in rows.items()
        },
    }
    (HERE / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    for name, row in results["rows"].items():
        print(f"{name:40s} {row['texts_per_s']:8.1f} texts/s  (median {row['median_s']:.3f} s, first pass "
              f"{row['first_pass_s']:.3f} s)")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
