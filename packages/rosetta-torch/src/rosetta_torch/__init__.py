"""rosetta-torch: the Transformer encoder in PyTorch."""

from rosetta_torch.attention import MultiHeadSelfAttention
from rosetta_torch.convert import from_canonical, load, save, to_canonical
from rosetta_torch.embedding import LearnedPositionalEmbedding, PositionalEncoding, TokenEmbedding, TokenTypeEmbedding
from rosetta_torch.encoder import Encoder
from rosetta_torch.feedforward import FeedForward
from rosetta_torch.interop import from_torch_modules, to_torch_modules, torch_modules_to_canonical
from rosetta_torch.layer import EncoderLayer
from rosetta_torch.pooler import Pooler
from rosetta_torch.precision import Compute
from rosetta_torch.runner import Runner
from rosetta_torch.sentence_head import SentenceHead

__all__ = [
    "Compute",
    "Encoder",
    "EncoderLayer",
    "FeedForward",
    "LearnedPositionalEmbedding",
    "MultiHeadSelfAttention",
    "Pooler",
    "PositionalEncoding",
    "Runner",
    "SentenceHead",
    "TokenEmbedding",
    "TokenTypeEmbedding",
    "from_canonical",
    "from_torch_modules",
    "load",
    "save",
    "to_canonical",
    "to_torch_modules",
    "torch_modules_to_canonical",
]
