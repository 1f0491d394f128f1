"""Multi-head self-attention with a padding mask (and, in a local layer, a window), rotary positions when the
config has them: `F.scaled_dot_product_attention` without a precision policy, explicit float32 scores under one,
in query blocks where that keeps memory linear in S or skips a local layer's far keys."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from rosetta_common import EncoderConfig
from rosetta_common.attention_blocks import POLICY_QUERY_BLOCK, QUERY_BLOCK, QueryBlocks
from rosetta_torch.precision import Compute
from rosetta_torch.rotary import Rotary, apply_rotary


def key_bias(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """bool allowed (True = may attend) -> additive bias of the same shape: 0 where allowed, the dtype's lowest
    elsewhere. A finite lowest value (not -inf) gives a masked key a weight of exactly 0 next to any allowed key."""
    bias = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return bias.masked_fill(~allowed, torch.finfo(dtype).min)


def allowed_in_block(
    key_padding: torch.Tensor,
    blocks: QueryBlocks,
    index: int,
    segments: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """key_padding bool `[B, keys]` (the keys block `index` reads, True = padding) -> bool
    `[B, 1, 1 or block, keys]`: the keys each of its queries may attend to (not padding; in a local layer, within
    `max_distance` of the query; packed, `segments` = the segment ids of the block's queries `[B, block]` and of its
    keys `[B, keys]`: a key of the query's own segment, any key for a padding query, as
    `rosetta_common.positional.segment_allowed`)."""
    allowed = ~key_padding[:, None, None, :]
    if segments is not None:
        queries, keys = segments[0][:, None, :, None], segments[1][:, None, None, :]
        allowed = allowed & ((queries == keys) | (queries == 0))
    if blocks.max_distance is None:
        return allowed
    device = key_padding.device
    queries = index * blocks.block + torch.arange(blocks.block, device=device)
    keys = blocks.key_start(index) - blocks.left + torch.arange(blocks.keys, device=device)
    return allowed & ((queries[:, None] - keys[None, :]).abs() <= blocks.max_distance)[None, None]


def only_needed_keys(
    k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """k, v `[B, H, K, d_head]` and allowed bool `[B, 1, Q, K]` of one query block of packed rows -> the same cut to
    the span of keys some query of the block (in any row) may attend to: the keys of the segments the block's
    queries belong to. A key outside it has weight exactly 0 for every query, so leaving it out changes nothing but
    the work; a block holding a padding query (which attends to every real key of its row) keeps them all.

    Eager only (one host read of the span per block): under `torch.compile` the span would be a data-dependent
    shape, and the block reads every key."""
    columns = allowed.flatten(0, 2).any(dim=0).nonzero()  # [K', 1]: keys some query of some row may attend to
    if columns.numel() == 0:  # every query of the block is in an all-padding row: the uniform stand-in
        return k, v, allowed
    first, last = int(columns[0]), int(columns[-1]) + 1
    if first == 0 and last == k.shape[2]:
        return k, v, allowed
    return k[:, :, first:last], v[:, :, first:last], allowed[..., first:last]


def after_block(x: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """x unchanged (x + 0 is x, bit for bit), but computed after `previous` (the last block's context). Under
    `torch.compile`, inductor's C++ backend fuses up to 16 independent reductions that read the same buffers into
    one kernel (`cpp.max_horizontal_fusion_size`): the blocks' softmaxes, which all read the mask, would then run
    together and keep every block's `[B, H, block, K]` float32 scores alive at once, S^2 memory. This edge keeps the
    blocks one after another, as in eager mode. (p - p is 0 for the finite p a context holds; inductor folds p * 0
    away, and with it the edge.)"""
    first = previous.flatten()[:1]
    return x + (first - first).to(x.dtype)


class MultiHeadSelfAttention(nn.Module):
    """x `[B, S, D]`, padding_mask bool `[B, S]` (True = padding), rotary (cos, sin) `[S, d_head]` when the layer
    has rotary positions, segment_ids int `[B, S]` for packed rows (a token attends only within its segment) ->
    `[B, S, D]`; heads are contiguous column blocks of d_head. `max_distance`: a local layer's window
    (`LayerSpec.max_distance`; None: global).

    Without a precision policy an unpacked global float32 / bfloat16 layer is one `F.scaled_dot_product_attention`
    call (its fused kernels keep memory linear in S); a local layer, a packed one (its mask depends on the query),
    every float64 layer (SDPA's math kernel would hold the `[S, S]` scores) and every layer under a policy are
    computed in blocks of `query_block` queries (`rosetta_common.attention_blocks`: `QUERY_BLOCK`, or
    `POLICY_QUERY_BLOCK` under a policy), a local block reading only its band of keys and, eagerly, a packed
    block only the keys of its queries' segments (`only_needed_keys`). `query_block` can be set on a built model.
    """

    def __init__(
        self,
        config: EncoderConfig,
        *,
        max_distance: int | None = None,
        dtype: torch.dtype | None = None,
        compute_dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        query_block: int | None = None,
    ) -> None:
        super().__init__()
        d = config.d_model
        self.d_head, self.dropout = config.d_head, config.dropout
        self.compute = Compute(compute_dtype)
        self.rotary, self.max_distance = config.positions == "rotary", max_distance
        if query_block is None:  # the policy's float32 scores: see rosetta_common.attention_blocks
            query_block = POLICY_QUERY_BLOCK if self.compute.active else QUERY_BLOCK
        self.query_block = query_block
        bias = config.attention_bias
        self.q, self.k, self.v, self.out = (nn.Linear(d, d, bias=bias, dtype=dtype, device=device) for _ in range(4))

    def forward(
        self,
        x: torch.Tensor,
        padding_mask: torch.Tensor,
        rotary: Rotary | None = None,
        segment_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        batch, seq, _ = x.shape

        def heads(projected: torch.Tensor) -> torch.Tensor:  # [B, S, H * d_head] -> [B, H, S, d_head]
            # H from the projection's width: under tensor parallelism a rank holds n_heads / model whole heads
            return projected.view(batch, seq, -1, self.d_head).transpose(1, 2)

        query, key, value = (heads(projected) for projected in self.compute.linears((self.q, self.k, self.v), x))
        if self.rotary:
            if rotary is None:
                raise ValueError("this attention has rotary positions: pass its (cos, sin) tables")
            query, key = (self.compute.rotary(apply_rotary, t, rotary) for t in (query, key))
        context = self.blockwise(query, key, value, padding_mask, segment_ids)
        return self.compute.linear(self.out, context.transpose(1, 2).reshape(batch, seq, -1))

    def blockwise(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        padding_mask: torch.Tensor,
        segment_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """q, k, v `[B, H, S, d_head]`, padding_mask `[B, S]`, segment_ids `[B, S]` (packed rows, or None) ->
        context `[B, H, S, d_head]`, one query block at a
        time (under a policy, and in float64, each block under activation checkpointing when there are several, so
        the backward recomputes a block's scores instead of storing all of them, as flash attention does).

        A query with no key it may attend to (a sequence that is all padding; in a local layer, a padded position
        whose window holds only padding) attends uniformly to every position, as the oracle defines: the same
        kernel on a zero query against all keys. Its block computes a finite stand-in (bias 0), replaced. (A row
        whose every bias is the dtype's lowest would also mislead torch's fused CPU backward, which recomputes the
        probabilities from a log-sum-exp that absorbed log(S).)
        """
        batch, _, seq, _ = q.shape
        # SDPA's fused kernels take float32 / bfloat16 / float16: float64 falls back to the math kernel, [S, S] scores
        packed = segment_ids is not None
        blocked = self.compute.active or self.max_distance is not None or q.dtype == torch.float64 or packed
        blocks = QueryBlocks.plan(seq, self.max_distance, self.query_block if blocked else seq)
        score_dtype = self.compute.island_dtype(q.dtype)
        kernel = self.policy_attention if self.compute.active else self.fused_attention
        if self.compute.active:  # float32 operands holding the bfloat16 values: see policy_attention
            k = self.compute.widen(k)
            v = self.compute.widen(v) if torch.is_grad_enabled() else v
        no_keys = torch.zeros((batch, 1, 1, seq), dtype=score_dtype, device=q.device)
        uniform = kernel(torch.zeros_like(q[:, :, :1]), k, v, no_keys)
        keys, values, key_padding, key_segments = k, v, padding_mask, segment_ids
        if blocks.banded:  # pad the keys so that every block's band is one slice
            keys, values = (F.pad(t, (0, 0, blocks.left, blocks.right)) for t in (k, v))
            key_padding = F.pad(padding_mask, (blocks.left, blocks.right), value=True)
            key_segments = None if segment_ids is None else F.pad(segment_ids, (blocks.left, blocks.right))

        def one_block(q_block: torch.Tensor, index: int) -> torch.Tensor:  # [B, H, rows <= block, d_head]
            start, rows, first = blocks.key_start(index), q_block.shape[2], index * blocks.block
            k_block, v_block = (t[:, :, start : start + blocks.keys] for t in (keys, values))
            segments = None
            if packed:  # the block's queries, padded like its rows to a whole block
                query_segments = F.pad(segment_ids[:, first : first + rows], (0, blocks.block - rows))
                segments = (query_segments, key_segments[:, start : start + blocks.keys])
            key_block_padding = key_padding[:, start : start + blocks.keys]
            allowed = allowed_in_block(key_block_padding, blocks, index, segments)[:, :, :rows]
            if packed and not blocks.banded and not torch.compiler.is_compiling():
                k_block, v_block, allowed = only_needed_keys(k_block, v_block, allowed)
            empty = ~allowed.any(dim=-1, keepdim=True)  # [B, 1, 1 or rows, 1]
            context = kernel(q_block, k_block, v_block, key_bias(allowed | empty, score_dtype))
            return torch.where(empty, uniform, context)

        stores_probabilities = self.compute.active or q.dtype == torch.float64  # not a fused kernel
        recompute = stores_probabilities and blocks.count > 1 and torch.is_grad_enabled()
        in_order = stores_probabilities and torch.compiler.is_compiling()  # see after_block
        contexts = []
        for index in range(blocks.count):
            q_block = q[:, :, index * blocks.block : (index + 1) * blocks.block]
            if in_order and contexts:
                q_block = after_block(q_block, contexts[-1])
            if recompute:
                contexts.append(checkpoint(one_block, q_block, index, use_reentrant=False))
            else:
                contexts.append(one_block(q_block, index))
        return contexts[0] if blocks.count == 1 else torch.cat(contexts, dim=2)

    def fused_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """q `[B, H, Q, d_head]`, k, v `[B, H, K, d_head]`, bias `[B, 1, 1 or Q, K]` -> context `[B, H, Q, d_head]`:
        `F.scaled_dot_product_attention`, whose fused kernels never hold the `[Q, K]` scores of every head."""
        dropout = self.dropout if self.training else 0.0
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout)

    def policy_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Attention under a precision policy: q `[B, H, Q, d_head]`, k, v `[B, H, K, d_head]` (compute dtype),
        bias float32 `[B, 1, 1 or Q, K]` -> context `[B, H, Q, d_head]`. Scores from float32 operands (exact
        products of the bfloat16 values, float32 accumulation), softmax in float32, the probabilities rounded,
        then p @ v with one rounding (as `rosetta_flax.attention.MultiHeadSelfAttention.policy_attention`).

        `blockwise` passes k and v widened once, before the blocks: both products run on float32 operands that hold
        the bfloat16 values (exact products, float32 accumulation, the same maths as a bfloat16 GEMM), so the
        gradients of k and v, summed over the query blocks, accumulate in float32 and are rounded once. Without a
        gradient it leaves v in the compute dtype, and p @ v is the bfloat16 GEMM itself (float32 accumulation, one
        rounding), at twice the float32 GEMM's rate where the CPU has bfloat16 dot products. (The scores stay a
        float32 matmul: torch has no CPU GEMM from bfloat16 operands to a float32 result.)

        Eagerly, a block's float32 scores are one buffer: scaled and biased in place and, without a gradient (which
        would need the scores), the softmax written over them; the same bits as fresh tensors, without a fresh
        `[B, H, Q, K]` buffer (new pages to fault in) per op. On a 2-core AMD EPYC, the 6-layer paper-base forward
        at 2,048 tokens ran 8-10% faster so. (Compiled, inductor fuses these ops itself.)"""
        widen, round_, matmul = self.compute.widen, self.compute.round, self.compute.island_matmul
        scores, root = matmul(widen(q), widen(k).transpose(-1, -2)), math.sqrt(q.shape[-1])
        if torch.compiler.is_compiling():
            softmax = torch.softmax(scores / root + bias, dim=-1)
        else:
            scores = scores.div_(root).add_(bias)
            softmax = torch.softmax(scores, dim=-1, out=None if torch.is_grad_enabled() else scores)
        probabilities = round_(F.dropout(softmax, self.dropout, self.training))
        if v.dtype == probabilities.dtype:  # no gradient: see above
            return probabilities @ v
        return round_(widen(probabilities) @ v)
