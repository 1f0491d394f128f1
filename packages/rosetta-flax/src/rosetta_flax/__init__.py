"""rosetta-flax: the Transformer encoder in JAX / Flax NNX."""

from rosetta_flax.attention import MultiHeadSelfAttention, attention_bias
from rosetta_flax.convert import from_canonical, load, save, to_canonical
from rosetta_flax.embedding import PositionalEncoding, TokenEmbedding
from rosetta_flax.encoder import Encoder
from rosetta_flax.feedforward import FeedForward
from rosetta_flax.layer import EncoderLayer

__all__ = [
    "Encoder",
    "EncoderLayer",
    "FeedForward",
    "MultiHeadSelfAttention",
    "PositionalEncoding",
    "TokenEmbedding",
    "attention_bias",
    "from_canonical",
    "load",
    "save",
    "to_canonical",
]
