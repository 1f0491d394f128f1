"""The sentence-embedding head (sentence-transformers' Pooling, Dense, Normalize) on the encoder's output, in the
operations sentence-transformers itself runs; `rosetta_common.pooling` is its float64 oracle."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rosetta_common.pooling import CLAMP, NORM_EPS
from rosetta_common.precision import cast_tensors
from rosetta_common.sentence_head import PREFIX, HeadConfig, check_head_tensors

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "identity": lambda x: x,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "gelu": F.gelu,  # exact (erf), torch.nn.GELU's default
    "sigmoid": torch.sigmoid,
}


def pooling_mask(head: HeadConfig, keep: torch.Tensor, prompt_length: int | None = None) -> torch.Tensor:
    """`keep [B, S]` (1 = real token), with the first `prompt_length` kept positions of each row cleared when the
    head excludes the prompt."""
    keep = keep.to(torch.int64)
    if head.include_prompt or prompt_length is None:
        return keep
    first = keep.argmax(dim=1)
    positions = torch.arange(keep.shape[1], device=keep.device)[None, :]
    return torch.where(positions < (first + prompt_length)[:, None], 0, keep)


def pool(mode: str, hidden: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """One pooling mode: `hidden [B, S, D]`, `keep [B, S]` -> `[B, D]` (as `rosetta_common.pooling.pool`)."""
    mask = keep[:, :, None].to(hidden.dtype)
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    if mode == "cls":
        return hidden[rows, keep.argmax(dim=1)]
    if mode == "max":
        return hidden.masked_fill(mask == 0, float("-inf")).max(dim=1).values
    if mode in ("mean", "mean_sqrt_len_tokens"):
        total, count = (hidden * mask).sum(dim=1), torch.clamp(mask.sum(dim=1), min=CLAMP)
        return total / count if mode == "mean" else total / torch.sqrt(count)
    if mode == "weightedmean":
        weights = torch.arange(1, hidden.shape[1] + 1, device=hidden.device, dtype=hidden.dtype)[None, :, None]
        weighted = mask * weights
        return (hidden * weighted).sum(dim=1) / torch.clamp(weighted.sum(dim=1), min=CLAMP)
    if mode == "lasttoken":
        values, index = keep.flip(1).max(dim=1)
        index = torch.where(values == 0, keep.shape[1] - 1, index)
        return (hidden * mask)[rows, keep.shape[1] - index - 1]
    raise ValueError(f"unknown pooling mode {mode!r}")


class SentenceHead(nn.Module):
    """`head(hidden [B, S, D], keep [B, S], prompt_length=None) -> [B, D_out]`: pooling, dense layers, Normalize.

    Computes in `dtype`, its parameters' (float32 or float64: `rosetta_common.sentence_head.head_dtype`)."""

    def __init__(
        self, head: HeadConfig, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> None:
        super().__init__()
        self.head = head
        # what it computes in (the encoder output is cast to it): a buffer, so that `.to()` / `.double()` move it
        self.register_buffer(
            "dtype_probe", torch.zeros(0, dtype=dtype or torch.float32, device=device), persistent=False
        )
        self.dense = nn.ModuleList(
            nn.Linear(d.in_features, d.out_features, bias=d.bias, dtype=dtype, device=device) for d in head.dense
        )

    def forward(self, hidden: torch.Tensor, keep: torch.Tensor, prompt_length: int | None = None) -> torch.Tensor:
        mask, hidden = pooling_mask(self.head, keep, prompt_length), hidden.to(self.dtype_probe.dtype)
        x = torch.cat([pool(mode, hidden, mask) for mode in self.head.pooling], dim=-1)
        for layer, spec in zip(self.dense, self.head.dense, strict=True):
            x = ACTIVATIONS[spec.activation](layer(x))
        return F.normalize(x, p=2, dim=1, eps=NORM_EPS) if self.head.normalize else x


def head_from_canonical(
    head: HeadConfig, tensors: Mapping[str, np.ndarray], dtype: str, *, device: torch.device | str | None = None
) -> SentenceHead:
    """A SentenceHead of the canonical `sentence_head.*` tensors cast to `dtype` ("float32" or "float64")."""
    check_head_tensors(head, tensors)
    tensors, _ = cast_tensors(tensors, dtype)
    torch_dtype = getattr(torch, dtype)
    module = SentenceHead(head, dtype=torch_dtype, device=device)
    with torch.no_grad():
        for i, layer in enumerate(module.dense):
            layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(tensors[f"{PREFIX}dense.{i}.kernel"].T)))
            if layer.bias is not None:
                layer.bias.copy_(torch.from_numpy(np.array(tensors[f"{PREFIX}dense.{i}.bias"])))
    return module


def head_to_canonical(module: SentenceHead) -> dict[str, np.ndarray]:
    """The head's parameters under canonical names (kernels `[in, out]`), NumPy copies on the CPU."""
    tensors = {}
    for i, layer in enumerate(module.dense):
        tensors[f"{PREFIX}dense.{i}.kernel"] = layer.weight.detach().cpu().numpy().T.copy()
        if layer.bias is not None:
            tensors[f"{PREFIX}dense.{i}.bias"] = layer.bias.detach().cpu().numpy().copy()
    return tensors
