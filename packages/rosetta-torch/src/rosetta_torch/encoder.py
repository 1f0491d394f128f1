"""The Transformer encoder: embedding, positional encoding, N layers, optional final LayerNorm."""

from __future__ import annotations

import torch
from torch import nn

from rosetta_common import EncoderConfig, check_array_type, check_padding_mask, check_token_ids
from rosetta_torch.attention import attention_bias
from rosetta_torch.embedding import PositionalEncoding, TokenEmbedding
from rosetta_torch.layer import EncoderLayer


class Encoder(nn.Module):
    """`model(token_ids [B, S], padding_mask [B, S] bool, True = padding) -> [B, S, D]`.

    Every call checks its inputs first (`check_inputs`, also callable on its own, as in rosetta_flax).
    """

    def __init__(
        self, config: EncoderConfig, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> None:
        super().__init__()
        self.config = config
        self.embedding = TokenEmbedding(config, dtype=dtype, device=device)
        self.positional = PositionalEncoding(config, dtype=dtype, device=device)
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(EncoderLayer(config, dtype=dtype, device=device) for _ in range(config.n_layers))
        self.final_norm = (
            nn.LayerNorm(config.d_model, eps=config.layer_norm_eps, dtype=dtype, device=device)
            if config.has_final_norm
            else None
        )

    # The checks read token ids back to the host (int(min), int(max)): under torch.compile they run eagerly
    # before the compiled graph instead of breaking it in two (rosetta_flax checks outside jax.jit likewise).
    @torch.compiler.disable
    def check_inputs(self, token_ids: torch.Tensor, padding_mask: torch.Tensor | None = None) -> None:
        """Raise a clear InputError for bad token ids or a bad padding mask (never a silent clamp)."""
        check_array_type("token_ids", token_ids, (torch.Tensor,), "a torch.Tensor", "torch.as_tensor")
        if padding_mask is not None:
            check_array_type("padding_mask", padding_mask, (torch.Tensor,), "a torch.Tensor", "torch.as_tensor")
        is_int = not token_ids.dtype.is_floating_point and not token_ids.dtype.is_complex
        is_int = is_int and token_ids.dtype != torch.bool
        nonempty = is_int and token_ids.numel() > 0
        check_token_ids(
            self.config,
            token_ids.shape,
            str(token_ids.dtype),
            is_int,
            int(token_ids.min()) if nonempty else 0,
            int(token_ids.max()) if nonempty else 0,
        )
        if padding_mask is not None:
            check_padding_mask(
                token_ids.shape, padding_mask.shape, str(padding_mask.dtype), padding_mask.dtype == torch.bool
            )

    @torch.compiler.disable
    def padding_mask_for(self, token_ids: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
        """Check the inputs (`check_inputs`) and return the bool padding mask `[B, S]`."""
        self.check_inputs(token_ids, padding_mask)
        if padding_mask is not None:
            return padding_mask
        if self.config.padding_idx is None:
            return torch.zeros(token_ids.shape, dtype=torch.bool, device=token_ids.device)
        return token_ids == self.config.padding_idx

    def activations(self, token_ids: torch.Tensor, padding_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Every boundary activation `[B, S, D]`, named as in `rosetta_common.oracle`."""
        padding_mask = self.padding_mask_for(token_ids, padding_mask)
        acts = {"embedding": self.embedding(token_ids)}
        x = acts["positional"] = self.positional(acts["embedding"])
        x = self.dropout(x)
        bias = attention_bias(padding_mask, x.dtype)
        for i, layer in enumerate(self.layers):
            x = acts[f"layers.{i}.attn"] = layer.attention_block(x, bias)
            x = acts[f"layers.{i}.ffn"] = layer.feed_forward_block(x)
        if self.final_norm is not None:
            x = acts["final_norm"] = self.final_norm(x)
        acts["output"] = x
        return acts

    def forward(self, token_ids: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        padding_mask = self.padding_mask_for(token_ids, padding_mask)
        x = self.dropout(self.positional(self.embedding(token_ids)))
        bias = attention_bias(padding_mask, x.dtype)
        for layer in self.layers:
            x = layer(x, bias)
        return x if self.final_norm is None else self.final_norm(x)
