"""sentence-transformers folders built offline for the tests: a small random BertModel or XLMRobertaModel, a
WordPiece tokenizer built with the `tokenizers` library, then Pooling / Dense / Normalize modules, saved with
`SentenceTransformer.save` (what the client itself writes). Nothing is downloaded."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from collections.abc import Sequence
from pathlib import Path

import torch

WORDS = [
    "a",
    "the",
    "cat",
    "dog",
    "sat",
    "on",
    "mat",
    "runs",
    "fast",
    "slow",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "sleeps",
    "in",
    "sun",
    "rain",
    "red",
    "blue",
    "green",
    "sky",
    "sea",
    "tree",
    "house",
    "car",
    "road",
    "city",
    "night",
    "day",
    "query",
    "passage",
    "is",
    "was",
]
TEXTS = [
    "The cat sat on the mat.",
    "A quick brown fox jumps over the lazy dog",
    "dog",
    "The sky is blue and the sea is green, the tree is red in the rain at night",
    "Rain!",
    "a car on a road in a city by day, a house in the sun",
]
FAMILIES = {  # model type -> (special tokens in id order, the pad token, the template)
    "bert": (("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"), "[PAD]", ("[CLS]", "[SEP]")),
    "xlm-roberta": (("<s>", "<pad>", "</s>", "<unk>", "<mask>"), "<pad>", ("<s>", "</s>")),
}


def fast_tokenizer(family: str):
    """A WordPiece tokenizer over WORDS (lower-cased, BERT's pre-tokenizer), the family's special tokens."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials, pad, (first, last) = FAMILIES[family]
    unk = specials[1] if family == "bert" else "<unk>"
    vocab = {token: i for i, token in enumerate([*specials, *WORDS, ".", ",", "!", "##s"])}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token=unk))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{first} $A {last}", special_tokens=[(first, vocab[first]), (last, vocab[last])]
    )
    tokenizer.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token=unk, pad_token=pad, cls_token=first, sep_token=last,
        mask_token=specials[4], bos_token=first, eos_token=last,
    )  # fmt: skip


def hf_folder(family: str, folder: Path, seed: int = 0) -> Path:
    """A random 2-layer encoder of the family with the tokenizer, saved with save_pretrained (safetensors)."""
    from transformers import BertConfig, BertModel, XLMRobertaConfig, XLMRobertaModel

    tokenizer = fast_tokenizer(family)
    torch.manual_seed(seed)
    sizes = dict(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=32, hidden_act="gelu")  # fmt: skip
    if family == "bert":
        model = BertModel(BertConfig(**sizes, max_position_embeddings=64, pad_token_id=0, type_vocab_size=2))
    else:
        config = XLMRobertaConfig(**sizes, max_position_embeddings=66, pad_token_id=1, bos_token_id=0, eos_token_id=2)
        model = XLMRobertaModel(config)
    with torch.no_grad():  # every weight of order 1: HF's zero biases and unit LayerNorms would hide a mix-up
        for name, param in model.named_parameters():
            param.copy_(torch.randn_like(param) * (0.3 if "weight" in name and param.ndim == 2 else 0.1))
            if "LayerNorm.weight" in name:
                param.add_(1.0)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def st_folder(
    hf: Path,
    folder: Path,
    pooling: str | Sequence[str] = "mean",
    *,
    dense: Sequence[tuple[int, bool, torch.nn.Module | None]] = (),
    normalize: bool = False,
    include_prompt: bool = True,
    max_seq_length: int = 48,
    seed: int = 1,
) -> Path:
    """`SentenceTransformer(modules=[Transformer(hf), Pooling(...), Dense(...)..., Normalize()]).save(folder)`;
    `dense`: (out_features, bias, activation or None for the default Tanh) per layer."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer

    transformer = Transformer(str(hf), max_seq_length=max_seq_length)
    width = transformer.get_embedding_dimension()
    modules = [transformer, Pooling(width, pooling_mode=pooling, include_prompt=include_prompt)]
    width = modules[-1].get_embedding_dimension()
    torch.manual_seed(seed)
    for out, bias, activation in dense:
        kwargs = {} if activation is None else {"activation_function": activation}
        modules.append(Dense(width, out, bias=bias, **kwargs))
        width = out
    if normalize:
        modules.append(Normalize())
    SentenceTransformer(modules=modules, device="cpu").save(str(folder))
    return folder
