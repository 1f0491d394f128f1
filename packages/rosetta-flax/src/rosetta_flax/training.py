"""Training in JAX / Flax NNX: tied-head loss, AdamW + schedule from optax, a jitted train step, canonical views.

Mirrors `rosetta_torch.training`. Everything leaving this module is canonical (names, `[in, out]` kernels,
NumPy arrays), so gradients and optimizer state compare and cross frameworks like the weights do.
The train step is `jax.jit` over the `nnx.split` state (common/DESIGN.md: `nnx.jit` walks the graph on every call).

The public functions have the same names, parameters and order in both modules:

    token_logits(model, hidden)
    sequence_loss(model, token_ids, targets, padding_mask=None, loss_mask=None, *, token_type_ids=None,
                  segment_ids=None, denominator=None)
    predict(model, token_ids, padding_mask=None, *, token_type_ids=None, segment_ids=None)
    evaluate_loss(model, token_ids, targets, padding_mask=None, loss_mask=None, *, token_type_ids=None,
                  segment_ids=None) -> float
    loss_and_gradients(model, token_ids, targets, padding_mask=None, loss_mask=None, *, token_type_ids=None,
                       segment_ids=None) -> (float, canonical grads)
    gradients_to_canonical(model, grads) -> canonical grads
    build_optimizer(adamw, model)
    build_schedule(adamw, <the framework's second argument>)
    Trainer(model, adamw): step(token_ids, targets, loss_mask, *, token_type_ids=None,
                           segment_ids=None), learning_rate(),
                           optimizer_state(), load_optimizer_state(state)

`token_type_ids` int `[B, S]` (configs with token types; default all 0) and `segment_ids` int `[B, S]` (packed
rows, `rosetta_common.packing`) go to the model. The loss reads the
encoder output only: a pooler's parameters get zero gradients from it.

Where the frameworks differ, by necessity:
- `gradients_to_canonical(model, grads)`: `grads` is a State shaped like the model's parameters (what
  `jax.grad` over the `nnx.split` params returns) and is required: NNX parameters hold no gradient.
  (rosetta_torch's `grads` may be None, meaning each parameter's `.grad`.)
- `build_optimizer(adamw, model)` reads the parameters' dtype from `model` (the schedule is computed in it).
- `build_schedule(adamw, dtype)`: an optax schedule is a function of the update count, which optax keeps as
  int32; the second argument is the dtype to compute it in (the parameters'). (rosetta_torch's is the optimizer
  its LR schedulers drive.)
- The objects returned are optax's and JAX's own: `optax.GradientTransformation`, an `optax.Schedule` (or a
  constant), arrays.
Only here: `params_to_canonical` / `params_from_canonical` (a parameter-shaped State <-> canonical arrays),
`canonical_optimizer_state` / `opt_state_from_canonical` (optax's state <-> canonical moments) and
`train_step_function` / `make_train_step` (the step over split state, jitted), which torch's eager, stateful
objects do not need. (Only in rosetta_torch: `restart_schedule`, a scheduler moved to a resumed step.)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from rosetta_common import EncoderConfig
from rosetta_common.name_tables import FLAX_ENCODER
from rosetta_common.training import AdamWConfig, OptimizerState
from rosetta_flax.encoder import Encoder

ArrayLike = np.ndarray | jax.Array  # a batch: NumPy or JAX


def token_logits(model: Encoder, hidden: jax.Array) -> jax.Array:
    """The head tied to the token embedding: hidden `[B, S, D]` -> logits `[B, S, V]` = hidden @ embedding.T.

    The padding row is held out of the head's gradient, so it stays zero (its logit is 0) as common/DESIGN.md asks.
    Under a precision policy the operands are the compute dtype's values and the logits float32 (the loss is a
    float32 island).
    """
    weight = model.embedding.weight[...]
    padding_idx = model.config.padding_idx
    if padding_idx is not None:
        is_padding_row = jnp.arange(weight.shape[0])[:, None] == padding_idx
        weight = jnp.where(is_padding_row, jax.lax.stop_gradient(weight), weight)
    compute = model.compute
    return compute.widen(hidden) @ compute.widen(compute.weight(weight)).T


def sequence_loss(
    model: Encoder,
    token_ids: jax.Array,
    targets: jax.Array,
    padding_mask: jax.Array | None = None,
    loss_mask: jax.Array | None = None,
    *,
    token_type_ids: jax.Array | None = None,
    segment_ids: jax.Array | None = None,
    denominator: float | None = None,
) -> jax.Array:
    """Mean cross-entropy of the tied-head logits against `targets` int `[B, S]` over the counted positions.

    `loss_mask` bool `[B, S]` (True = counted) defaults to the positions that are not padding; `segment_ids`: packed
    rows (the model's keyword; padding where it is 0). `denominator`: the
    count to divide the summed loss by (default: the counted positions of this batch; a data-parallel shard passes
    the global batch's, so that the shards' losses sum to the global mean).
    """
    padding_mask = model.padding_mask_for(
        token_ids, padding_mask, token_type_ids=token_type_ids, segment_ids=segment_ids
    )
    if loss_mask is None:
        loss_mask = ~padding_mask
    hidden = model(token_ids, padding_mask, token_type_ids=token_type_ids, segment_ids=segment_ids)
    logits = token_logits(model, hidden)
    per_token = optax.softmax_cross_entropy_with_integer_labels(logits, targets)  # [B, S]
    weights = loss_mask.astype(per_token.dtype)
    return (per_token * weights).sum() / (jnp.maximum(weights.sum(), 1.0) if denominator is None else denominator)


@functools.partial(jax.jit, static_argnums=0)
def _logits(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    token_ids: jax.Array,
    padding_mask: jax.Array | None,
    token_type_ids: jax.Array | None,
    segment_ids: jax.Array | None = None,
) -> jax.Array:
    model = nnx.merge(graphdef, state, copy=True)
    return token_logits(model, model(token_ids, padding_mask, token_type_ids=token_type_ids, segment_ids=segment_ids))


def predict(
    model: Encoder,
    token_ids: jax.Array,
    padding_mask: jax.Array | None = None,
    *,
    token_type_ids: jax.Array | None = None,
    segment_ids: jax.Array | None = None,
) -> jax.Array:
    """The most likely token at every position, int `[B, S]`. Jitted; meant for eval mode (in train mode the
    dropout RNG counters are not written back, so repeated calls would draw the same masks)."""
    model.check_inputs(token_ids, padding_mask, token_type_ids=token_type_ids, segment_ids=segment_ids)
    graphdef, state = nnx.split(model)
    logits = _logits(graphdef, state, jnp.asarray(token_ids), padding_mask, token_type_ids, segment_ids)
    return jnp.argmax(logits, axis=-1)


def params_to_canonical(config: EncoderConfig, state: nnx.State) -> dict[str, np.ndarray]:
    """A State shaped like the model's parameters (params, gradients, Adam moments) as canonical NumPy arrays."""
    native = {".".join(map(str, path)): jax.device_get(variable[...]) for path, variable in nnx.to_flat_state(state)}
    return FLAX_ENCODER.to_canonical(config, native, source="the parameter state")


def gradients_to_canonical(model: Encoder, grads: nnx.State) -> dict[str, np.ndarray]:
    """Gradients in canonical names and layout: `grads` is a State shaped like `model`'s parameters (what
    `jax.grad` over the `nnx.split` params returns)."""
    return params_to_canonical(model.config, grads)


def params_from_canonical(config: EncoderConfig, template: nnx.State, tensors: Mapping[str, np.ndarray]) -> nnx.State:
    """A State with `template`'s structure and variable types holding the canonical `tensors` (template dtypes)."""
    native = FLAX_ENCODER.to_native(config, tensors)
    flat = [
        (path, variable.replace(jnp.asarray(native[".".join(map(str, path))], dtype=variable[...].dtype)))
        for path, variable in nnx.to_flat_state(template)
    ]
    return nnx.from_flat_state(flat)


@functools.partial(jax.jit, static_argnums=0)
def _loss_and_grads(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    rest: nnx.State,
    token_ids: jax.Array,
    targets: jax.Array,
    padding_mask: jax.Array | None,
    loss_mask: jax.Array | None,
    token_type_ids: jax.Array | None,
    segment_ids: jax.Array | None = None,
) -> tuple[jax.Array, nnx.State]:
    def loss_fn(params: nnx.State) -> jax.Array:
        model = nnx.merge(graphdef, params, rest, copy=True)  # fresh Variables at this trace level
        return sequence_loss(
            model, token_ids, targets, padding_mask, loss_mask, token_type_ids=token_type_ids, segment_ids=segment_ids
        )

    return jax.value_and_grad(loss_fn)(params)


@functools.partial(jax.jit, static_argnums=0)
def _loss(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    token_ids: jax.Array,
    targets: jax.Array,
    padding_mask: jax.Array | None,
    loss_mask: jax.Array | None,
    token_type_ids: jax.Array | None,
    segment_ids: jax.Array | None = None,
) -> jax.Array:
    model = nnx.merge(graphdef, state, copy=True)
    return sequence_loss(
        model, token_ids, targets, padding_mask, loss_mask, token_type_ids=token_type_ids, segment_ids=segment_ids
    )


def evaluate_loss(
    model: Encoder,
    token_ids: jax.Array,
    targets: jax.Array,
    padding_mask: jax.Array | None = None,
    loss_mask: jax.Array | None = None,
    *,
    token_type_ids: jax.Array | None = None,
    segment_ids: jax.Array | None = None,
) -> float:
    """`sequence_loss` at the model's weights, without gradients (jitted; inputs checked before)."""
    model.check_inputs(token_ids, padding_mask, token_type_ids=token_type_ids, segment_ids=segment_ids)
    graphdef, state = nnx.split(model)
    return float(_loss(graphdef, state, token_ids, targets, padding_mask, loss_mask, token_type_ids, segment_ids))


def loss_and_gradients(
    model: Encoder,
    token_ids: jax.Array,
    targets: jax.Array,
    padding_mask: jax.Array | None = None,
    loss_mask: jax.Array | None = None,
    *,
    token_type_ids: jax.Array | None = None,
    segment_ids: jax.Array | None = None,
) -> tuple[float, dict[str, np.ndarray]]:
    """`sequence_loss` and its gradient w.r.t. every parameter (canonical): `jax.grad` over `nnx.split` state.

    Jitted (one compile per model structure and input shapes); inputs are checked before the jitted call.
    """
    model.check_inputs(token_ids, padding_mask, token_type_ids=token_type_ids, segment_ids=segment_ids)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    loss, grads = _loss_and_grads(
        graphdef, params, rest, token_ids, targets, padding_mask, loss_mask, token_type_ids, segment_ids
    )
    return float(loss), gradients_to_canonical(model, grads)


def build_schedule(adamw: AdamWConfig, dtype: jnp.dtype) -> optax.Schedule | float:
    """Linear warm-up then cosine decay to `end_factor * lr` (held after `total_steps`), from optax's schedules.

    optax evaluates the schedule at the count of updates already done: update t uses `adamw.learning_rate(t)`.
    The count is cast to `dtype` first: optax counts are int32, and int32 with Python floats computes in
    float32 even under JAX x64 (a float64 run would get a float32 learning rate). A constant `lr` when the
    config has no schedule.
    """
    lr, warmup, total = adamw.lr, adamw.warmup_steps, adamw.total_steps
    if warmup and total is not None:
        schedule = optax.warmup_cosine_decay_schedule(
            init_value=adamw.warmup_start_factor * lr,
            peak_value=lr,
            warmup_steps=warmup,
            decay_steps=total,
            end_value=adamw.end_factor * lr,
        )
    elif warmup:
        schedule = optax.linear_schedule(adamw.warmup_start_factor * lr, lr, transition_steps=warmup)
    elif total is not None:
        schedule = optax.cosine_decay_schedule(lr, decay_steps=total, alpha=adamw.end_factor)
    else:
        return lr
    return lambda count: schedule(jnp.asarray(count, dtype=dtype))


def build_optimizer(adamw: AdamWConfig, model: Encoder) -> optax.GradientTransformation:
    """`optax.adamw` with the config's maths, after `optax.clip_by_global_norm` when `clip_norm` is set.

    optax.adamw scales the decayed weights by the learning rate too (p <- p - lr (update + wd p)), as torch's
    AdamW does (p <- p (1 - lr wd)); `eps` is added outside the square root as in torch (`eps_root=0`).
    The schedule is computed in `model`'s parameter dtype. Initialise it on the `nnx.split` params
    (`optimizer.init(params)`).
    """
    return _build_optimizer(adamw, _parameter_dtype(model))


def _parameter_dtype(model: Encoder) -> jnp.dtype:
    return jnp.dtype(model.embedding.weight[...].dtype)


def _build_optimizer(adamw: AdamWConfig, dtype: jnp.dtype) -> optax.GradientTransformation:
    """`build_optimizer` for parameters of `dtype` (the Trainer's compiled-step cache is keyed by dtype)."""
    optimizer = optax.adamw(
        build_schedule(adamw, dtype),
        b1=adamw.b1,
        b2=adamw.b2,
        eps=adamw.eps,
        eps_root=0.0,
        weight_decay=adamw.weight_decay,
    )
    if adamw.clip_norm is None:
        return optimizer
    return optax.chain(optax.clip_by_global_norm(adamw.clip_norm), optimizer)


TrainStep = Callable[..., tuple[nnx.State, nnx.State, optax.OptState, jax.Array]]


def train_step_function(
    graphdef: nnx.GraphDef,
    optimizer: optax.GradientTransformation,
    params_for_use: Callable[[nnx.State], nnx.State] | None = None,
) -> Callable[..., tuple[nnx.State, nnx.State, optax.OptState, jax.Array, nnx.State]]:
    """The train step before `jax.jit`: `(params, rest, opt_state, token_ids, targets, loss_mask,
    token_type_ids=None, segment_ids=None) -> (params, rest, opt_state, loss, grads)`. `make_train_step` jits it
    on one device, `rosetta_flax.parallel` with shardings. `params_for_use` maps the stored parameters to the ones
    the model computes with, inside the differentiated function (`rosetta_flax.parallel`: FSDP's all-gather)."""

    def step(
        params: nnx.State,
        rest: nnx.State,
        opt_state: optax.OptState,
        token_ids: jax.Array,
        targets: jax.Array,
        loss_mask: jax.Array,
        token_type_ids: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
    ) -> tuple[nnx.State, nnx.State, optax.OptState, jax.Array, nnx.State]:
        def loss_fn(params: nnx.State) -> tuple[jax.Array, nnx.State]:
            used = params if params_for_use is None else params_for_use(params)
            model = nnx.merge(graphdef, used, rest, copy=True)  # fresh Variables at this trace level
            loss = sequence_loss(
                model, token_ids, targets, loss_mask=loss_mask, token_type_ids=token_type_ids, segment_ids=segment_ids
            )
            return loss, nnx.split(model, nnx.Param, ...)[2]

        (loss, new_rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_rest, opt_state, loss, grads

    return step


def make_train_step(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation) -> TrainStep:
    """`step(params, rest, opt_state, token_ids, targets, loss_mask, token_type_ids=None, segment_ids=None)
    -> (params, rest, opt_state, loss)`, jitted.

    `rest` (dropout RNG counters) is threaded through, so dropout draws new masks at every step.
    """
    step_with_gradients = train_step_function(graphdef, optimizer)

    def step(*args: jax.Array | nnx.State | optax.OptState) -> tuple[nnx.State, nnx.State, optax.OptState, jax.Array]:
        return step_with_gradients(*args)[:4]  # the gradients unused: XLA drops them

    return jax.jit(step)


@functools.lru_cache(maxsize=16)
def _optimizer_and_step(
    graphdef: nnx.GraphDef, adamw: AdamWConfig, dtype_name: str
) -> tuple[optax.GradientTransformation, TrainStep]:
    """One optimizer and jitted step per (model structure, AdamW config, dtype): a Trainer built again (e.g. when
    a run switches framework and back) reuses the compiled step instead of compiling it again."""
    optimizer = _build_optimizer(adamw, jnp.dtype(dtype_name))
    return optimizer, make_train_step(graphdef, optimizer)


class Trainer:
    """Trains an Encoder with AdamW: `step(token_ids, targets, loss_mask) -> loss before the update`.

    Batches are NumPy or JAX int `[B, S]` (ids, targets, token type ids when given) and bool `[B, S]` (loss
    mask, True = counted); the padding mask follows `padding_idx`. The model is held split (graphdef, params,
    rest); `model` merges a current copy. Token ids (and token type ids) are checked before the jitted step
    (JAX's gather would clamp them).
    """

    def __init__(self, model: Encoder, adamw: AdamWConfig) -> None:
        self.config, self.adamw = model.config, adamw
        model.train()
        self._checker = model
        self.graphdef, self.params, self.rest = nnx.split(model, nnx.Param, ...)
        dtype = _parameter_dtype(model)
        self.optimizer, self._step = _optimizer_and_step(self.graphdef, adamw, dtype.name)
        self.opt_state = self.optimizer.init(self.params)
        self._schedule = build_schedule(adamw, dtype)
        self.steps_done = 0

    @property
    def model(self) -> Encoder:
        """The current model (a merged copy, in train mode)."""
        return nnx.merge(self.graphdef, self.params, self.rest, copy=True)

    def step(
        self,
        token_ids: ArrayLike,
        targets: ArrayLike,
        loss_mask: ArrayLike,
        *,
        token_type_ids: ArrayLike | None = None,
        segment_ids: ArrayLike | None = None,
    ) -> jax.Array:
        """One update on one batch; returns the loss at the parameters before it (a scalar array). `segment_ids`:
        packed rows (`rosetta_common.packing`)."""
        types = None if token_type_ids is None else np.asarray(token_type_ids)
        segments = None if segment_ids is None else np.asarray(segment_ids)
        self._checker.check_inputs(np.asarray(token_ids), token_type_ids=types, segment_ids=segments)
        self.params, self.rest, self.opt_state, loss = self._step(
            self.params,
            self.rest,
            self.opt_state,
            jnp.asarray(token_ids),
            jnp.asarray(targets),
            jnp.asarray(loss_mask),
            None if types is None else jnp.asarray(types),
            None if segments is None else jnp.asarray(segments),
        )
        self.steps_done += 1
        return loss

    def learning_rate(self) -> float:
        """The rate the next update will use."""
        schedule = self._schedule
        return float(schedule(self.steps_done)) if callable(schedule) else float(schedule)

    def optimizer_state(self) -> OptimizerState:
        """AdamW's moments in canonical names and layout (zeros before the first step) and the step count."""
        return canonical_optimizer_state(self.config, self.adamw, self.steps_done, self.opt_state)

    def load_optimizer_state(self, state: OptimizerState) -> None:
        """Continue from `state` (e.g. written by the other framework): moments, step count and schedule."""
        state.check_fits(self.config, self.adamw)
        self.opt_state = opt_state_from_canonical(self.optimizer, self.params, state)
        self.steps_done = state.step


def canonical_optimizer_state(
    config: EncoderConfig,
    adamw: AdamWConfig,
    step: int,
    opt_state: optax.OptState,
    fetch: Callable[[nnx.State], nnx.State] = lambda moments: moments,
) -> OptimizerState:
    """optax AdamW's moments as a canonical OptimizerState; `fetch` brings each moment tree to this host first
    (`rosetta_flax.parallel`: gathered from the devices of every process)."""
    mu, nu = (fetch(optax.tree.get(opt_state, group)) for group in ("mu", "nu"))
    return OptimizerState(config, adamw, step, params_to_canonical(config, mu), params_to_canonical(config, nu))


def opt_state_from_canonical(
    optimizer: optax.GradientTransformation, params: nnx.State, state: OptimizerState
) -> optax.OptState:
    """`optimizer`'s state for `params` (host arrays) holding the canonical moments and step of `state`."""
    fresh = optimizer.init(params)
    mu = params_from_canonical(state.config, optax.tree.get(fresh, "mu"), state.mu)
    nu = params_from_canonical(state.config, optax.tree.get(fresh, "nu"), state.nu)
    count = jnp.asarray(state.step, dtype=jnp.int32)  # optax's counts (Adam's and the schedule's) are int32
    return optax.tree.set(fresh, mu=mu, nu=nu, count=count)
