"""rosetta-flax: the Transformer encoder in JAX / Flax NNX."""

from rosetta_flax.attention import MultiHeadSelfAttention
from rosetta_flax.checked import checked_jit
from rosetta_flax.convert import from_canonical, load, save, to_canonical
from rosetta_flax.embedding import LearnedPositionalEmbedding, PositionalEncoding, TokenEmbedding, TokenTypeEmbedding
from rosetta_flax.encoder import Encoder
from rosetta_flax.feedforward import FeedForward
from rosetta_flax.layer import EncoderLayer
from rosetta_flax.orbax import load_checkpoint, save_checkpoint
from rosetta_flax.pooler import Pooler
from rosetta_flax.precision import Compute
from rosetta_flax.runner import Runner
from rosetta_flax.sentence_head import SentenceHead

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
    "checked_jit",
    "from_canonical",
    "load",
    "load_checkpoint",
    "save",
    "save_checkpoint",
    "to_canonical",
]
