"""Multi-head self-attention with a padding mask (and, in a local layer, a window), rotary positions when the
config has them, computed in query blocks: memory linear in S, a local layer reading only its band of keys."""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from rosetta_common import EncoderConfig
from rosetta_common.attention_blocks import KEY_BLOCK, POLICY_QUERY_BLOCK, QUERY_BLOCK, QueryBlocks
from rosetta_flax.precision import Compute
from rosetta_flax.rotary import Rotary, apply_rotary


def key_bias(allowed: jax.Array, dtype: jnp.dtype) -> jax.Array:
    """bool allowed (True = may attend) -> additive bias of the same shape: 0 where allowed, the dtype's lowest
    elsewhere. A finite lowest value (not -inf) gives a masked key a weight of exactly 0 next to any allowed key."""
    return jnp.where(allowed, jnp.zeros((), dtype), jnp.finfo(dtype).min)


def allowed_in_block(
    key_padding: jax.Array,
    blocks: QueryBlocks,
    index: jax.Array | int,
    segments: tuple[jax.Array, jax.Array] | None = None,
) -> jax.Array:
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
    queries = index * blocks.block + jnp.arange(blocks.block)
    keys = blocks.key_start(index) - blocks.left + jnp.arange(blocks.keys)
    return allowed & (jnp.abs(queries[:, None] - keys[None, :]) <= blocks.max_distance)[None, None]


def window_keep(padding_mask: jax.Array, max_distance: int | None, segment_ids: jax.Array | None = None) -> jax.Array:
    """bool `[B, 1, S, S]` (True = attend) for a library kernel that takes a dense mask: not padding, in a local
    layer within `max_distance`, packed within the query's segment."""
    seq = padding_mask.shape[-1]
    segments = None if segment_ids is None else (segment_ids, segment_ids)
    return jnp.broadcast_to(
        allowed_in_block(padding_mask, QueryBlocks.plan(seq, max_distance, seq), 0, segments),
        (padding_mask.shape[0], 1, seq, seq),
    )


StepDropout = Callable[[jax.Array, "jax.Array | None", jax.Array], jax.Array]
"""`dropout(e, dropout_key, index)`: key step `index`'s e^(s - m') entries `[B, H, Q, step]`, dropped and scaled."""


def online_softmax(
    q: jax.Array,
    k_steps: jax.Array,
    v_steps: jax.Array,
    bias_steps: jax.Array,
    needed: jax.Array,
    dropout_key: jax.Array | None,
    dropout: StepDropout,
) -> jax.Array:
    """q `[B, H, Q, d_head]` against `count` steps of keys: k_steps, v_steps `[count, B, H, step, d_head]`,
    bias_steps `[count, B, 1, 1 or Q, step]`, needed bool `[count]` (a step left out changes nothing) -> context
    `[B, H, Q, d_head]`.

    Forward: Milakov & Gimelshein's online softmax, a running max m, sum l and context c per query row: for each
    step, m' = max(m, max(s)), l' = l e^(m - m') + sum(e^(s - m')), c' = c e^(m - m') + dropout(e^(s - m')) @ v,
    and c / l at the end (one step: exp(s - max) @ v / sum, the division after the matmul). It keeps each row's
    log-sum-exp L = m + log l besides the context O.

    Backward: flash attention's (Dao, FlashAttention-2, algorithm 2), so nothing of a step is stored and the
    forward is not run again: per step it recomputes p = e^(s - L) and gives dv = dropout(p)^T dO,
    ds = p (dropout(dO v^T) - rowsum(dO * O)), dk = ds^T q / sqrt(d), dq += ds k / sqrt(d). It works key-major,
    on s^T `[step, Q]`, with q, dO and each step's k transposed once outside the loop: every product is then a
    plain [m, k] x [k, n] GEMM, in layouts XLA's CPU backend runs up to 2.4x faster than the forms autodiff left
    (`docs/pages/performance.md` has the numbers). The masks, the max shift and the dropout keys carry no
    gradient."""
    root = math.sqrt(q.shape[-1])

    def forward(*inputs: jax.Array | None) -> tuple[jax.Array, jax.Array]:  # attend's inputs -> (O, L)
        q, k_steps, v_steps, bias_steps, needed, dropout_key = inputs

        def update(carry: tuple, k_step: jax.Array, v_step: jax.Array, bias_step: jax.Array, index: jax.Array) -> tuple:
            running_max, total, context = carry
            scores = q @ k_step.swapaxes(-1, -2) / root + bias_step
            new_max = jnp.maximum(running_max, scores.max(axis=-1, keepdims=True))
            unnormalised, correction = jnp.exp(scores - new_max), jnp.exp(running_max - new_max)
            total = total * correction + unnormalised.sum(axis=-1, keepdims=True)
            return new_max, total, context * correction + dropout(unnormalised, dropout_key, index) @ v_step

        def step(carry: tuple, inputs: tuple) -> tuple[tuple, None]:
            *step_inputs, needed = inputs
            return jax.lax.cond(needed, update, lambda carry, *_: carry, carry, *step_inputs), None

        rows = (*q.shape[:-1], 1)
        start = (jnp.full(rows, -jnp.inf, q.dtype), jnp.zeros(rows, q.dtype), jnp.zeros_like(q))
        scanned = (k_steps, v_steps, bias_steps, jnp.arange(len(needed)), needed)
        (running_max, total, context), _ = jax.lax.scan(step, start, scanned)
        return context / total, running_max + jnp.log(total)

    @jax.custom_vjp
    def attend(*inputs: jax.Array | None) -> jax.Array:
        return forward(*inputs)[0]

    def attend_forward(*inputs: jax.Array | None) -> tuple[jax.Array, tuple]:
        context, log_sum_exp = forward(*inputs)
        return context, (*inputs, context, log_sum_exp)

    def attend_backward(residuals: tuple, d_context: jax.Array) -> tuple:
        q, k_steps, v_steps, bias_steps, needed, dropout_key, context, log_sum_exp = residuals
        delta = (d_context * context).sum(axis=-1, keepdims=True)  # [B, H, Q, 1]: rowsum(dO * O) = rowsum(dp * p)
        q_t, d_context_t = q.swapaxes(-1, -2), d_context.swapaxes(-1, -2)  # [B, H, d_head, Q]
        log_sum_exp_t, delta_t = log_sum_exp.swapaxes(-1, -2), delta.swapaxes(-1, -2)  # [B, H, 1, Q]

        def dropout_t(entries_t: jax.Array, index: jax.Array) -> jax.Array:  # the forward's mask, on [.., step, Q]
            return dropout(entries_t.swapaxes(-1, -2), dropout_key, index).swapaxes(-1, -2)

        def update(d_q_t: jax.Array, *step_inputs: jax.Array) -> tuple[jax.Array, tuple]:
            k_step, k_step_t, v_step, bias_step_t, index = step_inputs
            probabilities_t = jnp.exp((k_step @ q_t) / root + bias_step_t - log_sum_exp_t)  # [B, H, step, Q]
            d_v = dropout_t(probabilities_t, index) @ d_context  # [B, H, step, d_head]
            d_scores_t = probabilities_t * (dropout_t(v_step @ d_context_t, index) - delta_t) / root
            return d_q_t + k_step_t @ d_scores_t, (d_scores_t @ q, d_v)

        def skipped(d_q_t: jax.Array, *step_inputs: jax.Array) -> tuple[jax.Array, tuple]:
            return d_q_t, (jnp.zeros_like(step_inputs[0]), jnp.zeros_like(step_inputs[2]))

        def step(d_q_t: jax.Array, inputs: tuple) -> tuple[jax.Array, tuple]:
            *step_inputs, needed = inputs
            return jax.lax.cond(needed, update, skipped, d_q_t, *step_inputs)

        bias_steps_t = bias_steps.swapaxes(-1, -2)  # [count, B, 1, step, 1 or Q]
        scanned = (k_steps, k_steps.swapaxes(-1, -2), v_steps, bias_steps_t, jnp.arange(len(needed)), needed)
        d_q_t, (d_k, d_v) = jax.lax.scan(step, jnp.zeros_like(q_t), scanned)
        return d_q_t.swapaxes(-1, -2), d_k, d_v, None, None, None

    attend.defvjp(attend_forward, attend_backward)
    return attend(q, k_steps, v_steps, bias_steps, needed, dropout_key)


class MultiHeadSelfAttention(nnx.Module):
    """x `[B, S, D]`, padding_mask bool `[B, S]` (True = padding), rotary (cos, sin) `[S, d_head]` when the layer
    has rotary positions, segment_ids int `[B, S]` for packed rows (a token attends only within its segment) ->
    `[B, S, D]`; heads are contiguous column blocks of d_head. `max_distance`: a local
    layer's window (`LayerSpec.max_distance`; None: global).

    `implementation=None` (the default) computes the attention in blocks of `query_block` queries
    (`rosetta_common.attention_blocks`: `QUERY_BLOCK`, or `POLICY_QUERY_BLOCK` under a policy) and, without a
    precision policy, each block against `key_block` keys at a time (an online softmax): exact in every dtype
    (float64 included), memory linear in S, a local layer reading only its band of keys. "cudnn" (GPU,
    bfloat16/float16) or "xla" hands it to `jax.nn.dot_product_attention` instead, which takes its softmax in
    float32 and has no dropout: the counterpart of the kernels torch's `F.scaled_dot_product_attention` picks for
    itself. Both can be set on a built model (`attn.implementation`, `attn.query_block`)."""

    def __init__(
        self,
        config: EncoderConfig,
        *,
        max_distance: int | None = None,
        dtype: jnp.dtype = jnp.float32,
        compute_dtype: jnp.dtype | None = None,
        rngs: nnx.Rngs,
        implementation: str | None = None,
        query_block: int | None = None,
        key_block: int = KEY_BLOCK,
    ) -> None:
        d = config.d_model
        self.n_heads, self.rotary, self.max_distance = config.n_heads, config.positions == "rotary", max_distance
        self.q, self.k, self.v, self.out = (
            nnx.Linear(d, d, use_bias=config.attention_bias, param_dtype=dtype, rngs=rngs) for _ in range(4)
        )
        self.dropout = nnx.Dropout(config.dropout, rngs=rngs)
        self.compute = Compute(compute_dtype)
        if query_block is None:  # the policy's float32 scores: see rosetta_common.attention_blocks
            query_block = POLICY_QUERY_BLOCK if self.compute.active else QUERY_BLOCK
        self.implementation, self.query_block, self.key_block = implementation, query_block, key_block

    def __call__(
        self,
        x: jax.Array,
        padding_mask: jax.Array,
        rotary: Rotary | None = None,
        segment_ids: jax.Array | None = None,
    ) -> jax.Array:
        batch, seq, d_model = x.shape
        tokens = x.reshape(batch * seq, d_model)  # 2-D projections: see FeedForward.__call__

        def heads(projected: jax.Array) -> jax.Array:  # [B*S, D] -> [B, H, S, d_head]
            return projected.reshape(batch, seq, self.n_heads, -1).swapaxes(1, 2)

        q, k, v = (heads(projected) for projected in self.compute.linears((self.q, self.k, self.v), tokens))
        if self.rotary:
            if rotary is None:
                raise ValueError("this attention has rotary positions: pass its (cos, sin) tables")
            q, k = (self.compute.rotary(apply_rotary, t, rotary) for t in (q, k))
        if self.implementation is None or self.compute.active:
            context = self.blockwise(q, k, v, padding_mask, segment_ids)
        else:
            context = self.library_attention(q, k, v, padding_mask, segment_ids)
        merged = context.swapaxes(1, 2).reshape(batch * seq, d_model)
        return self.compute.linear(self.out, merged).reshape(batch, seq, d_model)

    def blockwise(
        self,
        q: jax.Array,
        k: jax.Array,
        v: jax.Array,
        padding_mask: jax.Array,
        segment_ids: jax.Array | None = None,
    ) -> jax.Array:
        """q, k, v `[B, H, S, d_head]`, padding_mask `[B, S]`, segment_ids `[B, S]` (packed rows, or None) ->
        context `[B, H, S, d_head]`, one query block at a
        time (`jax.lax.map`). No block's scores are stored for the backward: without a policy `online_softmax`'s
        own backward recomputes them, as flash attention does; under a policy each block runs under
        `jax.checkpoint`, so autodiff recomputes its scores instead of storing all of them.

        A query with no key it may attend to (a sequence that is all padding; in a local layer, a padded position
        whose window holds only padding) attends uniformly to every position, as the oracle defines: the same
        kernel on a zero query against all keys. Its block computes a finite stand-in (bias 0), replaced.
        """
        batch, heads, seq, d_head = q.shape
        blocks = QueryBlocks.plan(seq, self.max_distance, self.query_block)
        score_dtype = self.compute.island_dtype(q.dtype)
        kernel = self.policy_attention if self.compute.active else self.online_softmax_attention
        dropout_key = self.dropout_key()
        if self.compute.active:  # float32 operands holding the bfloat16 values: see policy_attention
            k, v = self.compute.widen(k), self.compute.widen(v)
        no_keys = jnp.zeros((batch, 1, 1, seq), score_dtype)
        uniform = kernel(jnp.zeros_like(q[:, :, :1]), k, v, no_keys, self.block_key(dropout_key, blocks.count))
        keys, values, key_padding, key_segments = k, v, padding_mask, segment_ids
        if blocks.banded:  # pad the keys so that every block's band is one slice
            keys, values = (jnp.pad(t, ((0, 0), (0, 0), (blocks.left, blocks.right), (0, 0))) for t in (k, v))
            key_padding = jnp.pad(padding_mask, ((0, 0), (blocks.left, blocks.right)), constant_values=True)
            if segment_ids is not None:
                key_segments = jnp.pad(segment_ids, ((0, 0), (blocks.left, blocks.right)))
        query_segments = None  # packed: the queries' segment ids, padded like the queries to whole blocks
        if segment_ids is not None:
            query_segments = jnp.pad(segment_ids, ((0, 0), (0, blocks.padded_queries - seq)))

        def one_block(q_block: jax.Array, index: jax.Array | int) -> jax.Array:  # [B, H, block, d_head]
            start = blocks.key_start(index)
            k_block, v_block = (jax.lax.dynamic_slice_in_dim(t, start, blocks.keys, axis=2) for t in (keys, values))
            padding_block = jax.lax.dynamic_slice_in_dim(key_padding, start, blocks.keys, axis=1)
            segments = None
            if segment_ids is not None:
                segments = (
                    jax.lax.dynamic_slice_in_dim(query_segments, index * blocks.block, blocks.block, axis=1),
                    jax.lax.dynamic_slice_in_dim(key_segments, start, blocks.keys, axis=1),
                )
            allowed = allowed_in_block(padding_block, blocks, index, segments)
            empty = ~allowed.any(axis=-1, keepdims=True)  # [B, 1, 1 or block, 1]
            bias, block_key = key_bias(allowed | empty, score_dtype), self.block_key(dropout_key, index)
            context = kernel(q_block, k_block, v_block, bias, block_key, attended=allowed)
            return jnp.where(empty, uniform, context)

        if blocks.count == 1:
            return one_block(q, 0)
        padded = jnp.pad(q, ((0, 0), (0, 0), (0, blocks.padded_queries - seq), (0, 0)))
        q_blocks = jnp.moveaxis(padded.reshape(batch, heads, blocks.count, blocks.block, d_head), 2, 0)
        block_of = jax.checkpoint(one_block) if self.compute.active else one_block
        contexts = jax.lax.map(lambda args: block_of(*args), (q_blocks, jnp.arange(blocks.count)))
        return jnp.moveaxis(contexts, 0, 2).reshape(batch, heads, blocks.padded_queries, d_head)[:, :, :seq]

    def dropout_key(self) -> jax.Array | None:
        """One key per call for the attention dropout (None when dropout is off); each block folds in its index."""
        if not self.dropout.rate or self.dropout.deterministic:
            return None
        return self.dropout.rngs()

    @staticmethod
    def block_key(key: jax.Array | None, index: jax.Array | int) -> jax.Array | None:
        return None if key is None else jax.random.fold_in(key, index)

    def attention_dropout(self, probabilities: jax.Array, key: jax.Array | None) -> jax.Array:
        return probabilities if key is None else self.dropout(probabilities, rngs=key)

    def online_softmax_attention(
        self,
        q: jax.Array,
        k: jax.Array,
        v: jax.Array,
        bias: jax.Array,
        dropout_key: jax.Array | None = None,
        *,
        attended: jax.Array | None = None,
    ) -> jax.Array:
        """q `[B, H, Q, d_head]`, k, v `[B, H, K, d_head]`, bias `[B, 1, 1 or Q, K]` -> context `[B, H, Q, d_head]`:
        softmax(scores) @ v over `key_block` keys at a time (`online_softmax`, which has the maths and the
        backward). The `[B, H, Q, key_block]` scores of one step stay in cache (see
        `rosetta_common.attention_blocks.KEY_BLOCK` for the measurement); K keys or fewer are one step.

        `attended` bool `[B, 1, 1 or Q, K]` (default: where the bias is above the dtype's lowest) names the keys
        each query attends to; `blockwise` leaves out the queries that have none, whose stand-in it replaces. A
        step holding no attended key in any row (the other segments of packed rows, a batch's trailing padding)
        is not computed (`jax.lax.cond`): computed, it would leave m, l and c exactly as they were (its e^(s - m')
        are 0, or are wiped by the next step's e^(m - m') = 0 while m is still -inf), so skipping it changes no bit
        of the result or of its gradients.
        """
        keys = k.shape[2]
        block = min(keys, self.key_block)
        count = -(-keys // block)
        padding = count * block - keys  # padded keys are masked: bias at the dtype's lowest, weight 0
        lowest = jnp.finfo(bias.dtype).min
        attended = bias > lowest if attended is None else attended
        if padding:
            k, v = (jnp.pad(t, ((0, 0), (0, 0), (0, padding), (0, 0))) for t in (k, v))
            bias = jnp.pad(bias, ((0, 0), (0, 0), (0, 0), (0, padding)), constant_values=lowest)
            attended = jnp.pad(attended, ((0, 0), (0, 0), (0, 0), (0, padding)))
        attended_steps = attended.reshape(-1, count, block).any(axis=(0, 2))  # [count]: some query attends there
        attended_steps |= ~attended_steps.any()  # no query attends at all: every stand-in computed, finite

        def steps(t: jax.Array) -> jax.Array:  # [..., count * block, d] -> [count, ..., block, d]
            return jnp.moveaxis(t.reshape(*t.shape[:-2], count, block, t.shape[-1]), -3, 0)

        bias_steps = jnp.moveaxis(bias.reshape(*bias.shape[:-1], count, block), -2, 0)
        return online_softmax(q, steps(k), steps(v), bias_steps, attended_steps, dropout_key, self.step_dropout)

    def step_dropout(self, unnormalised: jax.Array, dropout_key: jax.Array | None, index: jax.Array) -> jax.Array:
        """Dropout of one online-softmax step's e^(s - m') entries: the step's own key, folded in from the call's
        (the same mask wherever the step is computed again: in `online_softmax`'s backward)."""
        return self.attention_dropout(unnormalised, self.block_key(dropout_key, index))

    def policy_attention(
        self,
        q: jax.Array,
        k: jax.Array,
        v: jax.Array,
        bias: jax.Array,
        dropout_key: jax.Array | None = None,
        *,
        attended: jax.Array | None = None,
    ) -> jax.Array:
        """Attention under a precision policy: q `[B, H, Q, d_head]`, k, v `[B, H, K, d_head]` (compute dtype),
        bias float32 `[B, 1, 1 or Q, K]` -> context `[B, H, Q, d_head]`. Scores from float32 operands (exact
        products of the bfloat16 values, float32 accumulation), softmax in float32, the probabilities rounded,
        then p @ v with one rounding (as `rosetta_torch.attention.MultiHeadSelfAttention.policy_attention`).

        `blockwise` passes k and v widened once, before the blocks: both products run on float32 operands that hold
        the bfloat16 values (exact products, float32 accumulation, the same maths as a bfloat16 GEMM), so the
        gradients of k and v, summed over the query blocks, accumulate in float32 and are rounded once. (`attended`
        is `online_softmax_attention`'s; one pass over every key has no step to skip.)"""
        del attended
        widen, round_, matmul = self.compute.widen, self.compute.round, self.compute.island_matmul
        scores = matmul(widen(q), widen(k).swapaxes(-1, -2)) / math.sqrt(q.shape[-1]) + bias
        probabilities = self.attention_dropout(jax.nn.softmax(scores, axis=-1), dropout_key)
        return round_(matmul(widen(round_(probabilities)), widen(v)))

    def library_attention(
        self, q: jax.Array, k: jax.Array, v: jax.Array, padding_mask: jax.Array, segment_ids: jax.Array | None = None
    ) -> jax.Array:
        """`jax.nn.dot_product_attention` (`implementation` "cudnn" or "xla") on q, k, v `[B, H, S, d_head]` ->
        `[B, H, S, d_head]`, with a bool mask (True = attend) at the full `[B, 1, S, S]` cuDNN asks for; JAX turns
        it into its own large negative bias, which cuDNN handles where the dtype's lowest value may not. A row with
        no key gets JAX's own answer (its kernels' convention, not the oracle's)."""
        if self.dropout.rate and not self.dropout.deterministic:
            raise ValueError(f"attention dropout needs implementation=None, not {self.implementation!r}")
        keep = window_keep(padding_mask, self.max_distance, segment_ids)
        q, k, v = (t.swapaxes(1, 2) for t in (q, k, v))  # JAX's kernels take [B, S, H, d_head]
        context = jax.nn.dot_product_attention(q, k, v, mask=keep, implementation=self.implementation)
        return context.swapaxes(1, 2)
