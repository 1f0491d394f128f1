"""transformers' BertEncoder (PyTorch, SDPA attention) holding a rosetta_torch encoder's layers: the hf.BertEncoder
row, and the peer `tests/test_hf_peers.py` holds to the float64 oracle."""

from __future__ import annotations

from collections.abc import Callable

import torch

from rosetta_common import EncoderConfig
from rosetta_tools.throughput import hf_bert
from rosetta_torch import Encoder, to_canonical
from rosetta_torch.attention import key_bias

Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (token_ids, padding_mask) -> [B, S, D]


def hf_bert_peer(config: EncoderConfig, model: Encoder) -> tuple[torch.nn.Module, Forward]:
    """transformers' BertEncoder (SDPA attention) holding `model`'s layers, behind `model`'s own embedding and
    positional encoding; in `model`'s dtype and on its device. Kernels are transposed to torch's `[out, in]`."""
    from transformers import BertConfig
    from transformers.models.bert.modeling_bert import BertEncoder

    bert_config = BertConfig(**hf_bert.bert_config_kwargs(config))
    bert_config._attn_implementation = "sdpa"
    weight = model.embedding.weight
    bert = BertEncoder(bert_config).to(weight.device, weight.dtype)
    state = {}
    for name, value in hf_bert.encoder_tensors(to_canonical(model)).items():
        stem, leaf = name.rsplit(".", 1)
        state[f"{stem}.{'bias' if leaf == 'bias' else 'weight'}"] = torch.from_numpy(
            value.T.copy() if leaf == "kernel" else value
        )
    bert.load_state_dict(state, strict=True)

    def forward(token_ids: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        x = model.positional(model.embedding(token_ids))
        return bert(x, attention_mask=key_bias(~padding_mask[:, None, None, :], x.dtype)).last_hidden_state

    return torch.nn.ModuleList([model.embedding, bert]), forward
