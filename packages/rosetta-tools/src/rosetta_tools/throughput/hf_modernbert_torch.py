"""transformers' ModernBertModel (PyTorch, sdpa attention) holding a rosetta_torch encoder's weights: the
hf.ModernBertModel row, and the peer `tests/test_hf_peers.py` holds to the float64 oracle."""

from __future__ import annotations

import torch

from rosetta_common import EncoderConfig
from rosetta_common.name_tables import HF_MODERNBERT
from rosetta_tools.throughput import hf_modernbert
from rosetta_tools.throughput.hf_bert_torch import Forward
from rosetta_torch import Encoder, to_canonical


def hf_modernbert_peer(config: EncoderConfig, model: Encoder) -> tuple[torch.nn.Module, Forward]:
    """transformers' ModernBertModel with `model`'s weights, in `model`'s dtype and on its device; called with
    rosetta's padding mask turned into HF's attention_mask."""
    from transformers import ModernBertConfig, ModernBertModel

    weight = model.embedding.weight
    peer = ModernBertModel(ModernBertConfig(**hf_modernbert.config_kwargs(config))).to(weight.device, weight.dtype)
    native = HF_MODERNBERT.to_native(config, to_canonical(model))
    peer.load_state_dict({name: torch.from_numpy(value) for name, value in native.items()}, strict=True)

    def forward(token_ids: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        return peer(input_ids=token_ids, attention_mask=(~padding_mask).long()).last_hidden_state

    return peer, forward
