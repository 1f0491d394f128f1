"""Name tables: each layout's tensor names as rules over the canonical names (NumPy only).

    torch_encoder  TORCH_ENCODER  rosetta_torch.Encoder state_dict
    torch_nn       TORCH_NN       nn.Embedding + nn.TransformerEncoder state_dict (fused in_proj)
    flax_encoder   FLAX_ENCODER   rosetta_flax.Encoder NNX state
    hf_bert        HF_BERT        Hugging Face BertModel / RobertaModel state_dict
    hf_modernbert  HF_MODERNBERT  Hugging Face ModernBertModel state_dict (fused Wqkv and Wi)
    hf_distilbert  HF_DISTILBERT  Hugging Face DistilBertModel state_dict

They live here, not in the framework packages, because converting a safetensors file between layouts is NumPy
work that `rosetta convert` does without torch or JAX installed; each framework package applies its own table.
"""

from rosetta_common.name_tables.flax_encoder import FLAX_ENCODER
from rosetta_common.name_tables.hf_bert import HF_BERT
from rosetta_common.name_tables.hf_distilbert import HF_DISTILBERT
from rosetta_common.name_tables.hf_modernbert import HF_MODERNBERT
from rosetta_common.name_tables.table import (
    TRANSPOSE,
    Concatenate,
    Identity,
    NameTable,
    Rule,
    Transpose,
    rule,
    same_leaves,
    torch_layer_norm,
    torch_linear,
)
from rosetta_common.name_tables.torch_encoder import TORCH_ENCODER
from rosetta_common.name_tables.torch_nn import TORCH_NN

__all__ = [
    "FLAX_ENCODER",
    "HF_BERT",
    "HF_DISTILBERT",
    "HF_MODERNBERT",
    "TORCH_ENCODER",
    "TORCH_NN",
    "TRANSPOSE",
    "Concatenate",
    "Identity",
    "NameTable",
    "Rule",
    "Transpose",
    "rule",
    "same_leaves",
    "torch_layer_norm",
    "torch_linear",
]
