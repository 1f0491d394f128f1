"""Where rosetta_flax rounds under a mixed-precision policy (`rosetta_common.precision`; common/DESIGN.md,
"Mixed precision"). Mirrors `rosetta_torch.precision`: the same methods, rounding at the same places.

`Compute(None)` is a model without a policy: every method is the plain operation in the parameters' dtype.
`Compute(jnp.bfloat16)` rounds as the policy says, and says so explicitly: XLA's compilers may keep float32
between ops that JAX's types say are bfloat16 (`xla_allow_excess_precision`, on by default: a convert to bfloat16
and back is removed), so a rounding here is `jax.lax.reduce_precision`, which XLA keeps. The linear layers are
`accumulate`: bfloat16 operands, `preferred_element_type=float32` (on XLA's CPU backend the one form that
runs a bfloat16 GEMM kernel, YNNPACK's; a bfloat16 dot with a bfloat16 result is upcast to float32 there, at half the
rate), rounded once by the caller. Both attention products take float32 operands widened from bfloat16 ones, so that
the gradients of k and v accumulate in float32 over the query blocks, and run as `island_product`: the bfloat16
GEMM forward (the same exact products), the float32 matmul's backward. The gradients round where the forward
changed dtype, by the custom VJPs of `rounded`, `widened` and `accumulate`; jitted and op-by-op runs then round at
the same places as eager torch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

ISLAND = jnp.float32
"""What the float32 islands (embedding front, LayerNorm, softmax, activation, logits, loss) compute in."""


def _reduce(x: jax.Array, dtype: jnp.dtype) -> jax.Array:
    info = jnp.finfo(dtype)
    return jax.lax.reduce_precision(x, exponent_bits=info.nexp, mantissa_bits=info.nmant).astype(dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def rounded(x: jax.Array, dtype: jnp.dtype) -> jax.Array:
    """float32 -> `dtype`, rounding to nearest even where XLA cannot skip it; the gradient passes back widened."""
    return _reduce(x, dtype)


def _rounded_forward(x: jax.Array, dtype: jnp.dtype) -> tuple[jax.Array, None]:
    return _reduce(x, dtype), None


def _rounded_backward(dtype: jnp.dtype, _: None, cotangent: jax.Array) -> tuple[jax.Array]:
    return (cotangent.astype(ISLAND),)


rounded.defvjp(_rounded_forward, _rounded_backward)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def widened(x: jax.Array, dtype: jnp.dtype) -> jax.Array:
    """`dtype` -> float32, exactly; the gradient is rounded back to `dtype` (as torch's `.float()` backward)."""
    return x.astype(ISLAND)


def _widened_forward(x: jax.Array, dtype: jnp.dtype) -> tuple[jax.Array, None]:
    return x.astype(ISLAND), None


def _widened_backward(dtype: jnp.dtype, _: None, cotangent: jax.Array) -> tuple[jax.Array]:
    return (_reduce(cotangent, dtype),)


widened.defvjp(_widened_forward, _widened_backward)


@jax.custom_vjp
def accumulate(a: jax.Array, b: jax.Array) -> jax.Array:
    """a `[..., m, k]` @ b `[k, n]` or `[..., k, n]` (the compute dtype) -> float32 `[..., m, n]`: exact products,
    float32 accumulation. The caller rounds the result once (`Compute.linear`, `Compute.matmul`), so the cotangent
    coming back holds compute-dtype values and the backward runs the same kind of matmul: da and db accumulate in
    float32 and are rounded once each, as torch's bfloat16 matmul backward."""
    return jnp.matmul(a, b, preferred_element_type=ISLAND)


def _accumulate_forward(a: jax.Array, b: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    return accumulate(a, b), (a, b)


def _accumulate_backward(operands: tuple[jax.Array, jax.Array], cotangent: jax.Array) -> tuple[jax.Array, jax.Array]:
    a, b = operands
    g = _reduce(cotangent, a.dtype)  # exact: the forward's result was rounded to this dtype by the caller
    da = jnp.matmul(g, jnp.swapaxes(b, -1, -2), preferred_element_type=ISLAND)
    if b.ndim == 2:  # a weight: sum its gradient over every leading (token) dimension of a
        db = jnp.matmul(a.reshape(-1, a.shape[-1]).T, g.reshape(-1, g.shape[-1]), preferred_element_type=ISLAND)
    else:
        db = jnp.matmul(jnp.swapaxes(a, -1, -2), g, preferred_element_type=ISLAND)
    return _reduce(da, a.dtype), _reduce(db, b.dtype)


accumulate.defvjp(_accumulate_forward, _accumulate_backward)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def island_product(a: jax.Array, b: jax.Array, dtype: jnp.dtype) -> jax.Array:
    """a `[..., m, k]` @ b `[..., k, n]` (the same leading dimensions), both float32 holding `dtype` values
    (widened, so that their gradients accumulate in float32) -> float32 `[..., m, n]`: the float32 matmul's maths
    (exact products, float32 accumulation) run as `dtype`'s GEMM (`preferred_element_type=float32`; the casts are
    exact and XLA hoists a loop-invariant one out of the query blocks), twice the float32 GEMM's rate on a CPU with
    bfloat16 dot products. The backward is the float32 matmul's own (`jax.vjp` of `jnp.matmul`)."""
    return jnp.matmul(a.astype(dtype), b.astype(dtype), preferred_element_type=ISLAND)


def _island_product_forward(
    a: jax.Array, b: jax.Array, dtype: jnp.dtype
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    return island_product(a, b, dtype), (a, b)


def _island_product_backward(
    dtype: jnp.dtype, operands: tuple[jax.Array, jax.Array], cotangent: jax.Array
) -> tuple[jax.Array, jax.Array]:
    return jax.vjp(jnp.matmul, *operands)[1](cotangent)


island_product.defvjp(_island_product_forward, _island_product_backward)


@jax.custom_vjp
def _round_cotangent(x: jax.Array) -> jax.Array:
    """Identity; the summed cotangent of its output (all uses of x) is rounded to x's dtype once."""
    return x


def _round_cotangent_forward(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return x, jnp.zeros((), x.dtype)


def _round_cotangent_backward(like: jax.Array, cotangent: jax.Array) -> tuple[jax.Array]:
    return (_reduce(cotangent.astype(ISLAND), like.dtype),)


_round_cotangent.defvjp(_round_cotangent_forward, _round_cotangent_backward)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def layer_norm_maths(x: jax.Array, scale: jax.Array, bias: jax.Array | None, epsilon: float) -> jax.Array:
    """torch's LayerNorm over the last axis (two-pass variance), in the arrays' dtype; no bias when None.

    x `[..., D]`, scale and bias `[D]` -> `[..., D]`. Its gradient keeps what torch's LayerNorm backward keeps: x
    and each row's mean and 1/std (`[..., 1]`), the normalised rows recomputed from them (`_layer_norm_backward`).
    Autodiff through the expression would keep the centred rows and the scale broadcast to `[..., D]` as well:
    in the float32 training step of paper-base at 8,192 tokens, six full `[S, D]` arrays per layer."""
    return _layer_norm_forward(x, scale, bias, epsilon)[0]


def _layer_norm_forward(
    x: jax.Array, scale: jax.Array, bias: jax.Array | None, epsilon: float
) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    inverse_std = jax.lax.rsqrt((centred * centred).mean(axis=-1, keepdims=True) + epsilon)
    scaled = centred * inverse_std * scale
    return (scaled if bias is None else scaled + bias), (x, mean, inverse_std, scale, bias)


def _layer_norm_backward(epsilon: float, saved: tuple[jax.Array, ...], cotangent: jax.Array) -> tuple:
    """dx = (g s - mean(g s) - x̂ mean(g s x̂)) / std per row, with x̂ = (x - mean) / std; d scale = sum(g x̂) and
    d bias = sum(g) over every row."""
    x, mean, inverse_std, scale, bias = saved
    normalised = (x - mean) * inverse_std
    scaled_cotangent = cotangent * scale
    dx = inverse_std * (
        scaled_cotangent
        - scaled_cotangent.mean(axis=-1, keepdims=True)
        - normalised * (scaled_cotangent * normalised).mean(axis=-1, keepdims=True)
    )
    rows = tuple(range(x.ndim - 1))
    d_scale = (cotangent * normalised).sum(axis=rows).astype(scale.dtype)
    d_bias = None if bias is None else cotangent.sum(axis=rows).astype(bias.dtype)
    return dx.astype(x.dtype), d_scale, d_bias


layer_norm_maths.defvjp(_layer_norm_forward, _layer_norm_backward)


@dataclass(frozen=True)
class Compute:
    """The compute dtype of a model (None: its parameters' dtype, no policy) and the operations that round."""

    dtype: jnp.dtype | None = None

    @property
    def active(self) -> bool:
        return self.dtype is not None

    def island_dtype(self, dtype: jnp.dtype) -> jnp.dtype:
        """The dtype float32 islands compute in: float32 under a policy, else the model's `dtype`."""
        return jnp.dtype(ISLAND) if self.active else dtype

    def round(self, x: jax.Array) -> jax.Array:
        """A float32 island's result -> the compute dtype (one rounding to nearest even)."""
        return x if self.dtype is None else rounded(x, self.dtype)

    def widen(self, x: jax.Array) -> jax.Array:
        """The compute (or parameter) dtype -> float32, exactly; its gradient is rounded back on the way out."""
        if self.dtype is None or x.dtype == ISLAND:
            return x
        return widened(x, x.dtype)

    def weight(self, param: jax.Array) -> jax.Array:
        """A parameter as a matmul operand: rounded to the compute dtype (master weights stay float32)."""
        if self.dtype is None or param.dtype == self.dtype:
            return param
        return rounded(param, self.dtype)

    def linear(self, layer: nnx.Linear, x: jax.Array) -> jax.Array:
        """x `[..., in]` -> `[..., out]`: operands in the compute dtype, float32 accumulation, the bias added in
        float32, one rounding (as torch's bfloat16 `F.linear`; the backward rounds dx, dW and db once each)."""
        if self.dtype is None:
            return layer(x)
        product = accumulate(x, self.weight(layer.kernel[...]))
        return self.round(product if layer.bias is None else product + self.widen(self.weight(layer.bias[...])))

    def linears(self, layers: tuple[nnx.Linear, ...], x: jax.Array) -> tuple[jax.Array, ...]:
        """Several linear layers reading the same x (q, k, v). Under a policy, one linear over the concatenated
        kernels: x then has one use, so its gradient is one float32 accumulation rounded once (three separate
        uses would round two partial sums, in an order each framework's autodiff picks)."""
        if self.dtype is None:
            return tuple(layer(x) for layer in layers)
        kernel = jnp.concatenate([self.weight(layer.kernel[...]) for layer in layers], axis=1)
        product = accumulate(x, kernel)
        if all(layer.bias is not None for layer in layers):
            product = product + self.widen(jnp.concatenate([self.weight(layer.bias[...]) for layer in layers]))
        sizes = [layer.out_features for layer in layers]
        return tuple(jnp.split(self.round(product), np.cumsum(sizes)[:-1], axis=-1))

    def fan_out(self, x: jax.Array) -> jax.Array:
        """Marks a tensor read twice (the residual stream: the sum and the sub-layer). Its two gradients are summed
        in float32 and rounded once, as torch's autograd does (JAX's sum of two bfloat16 cotangents may stay float32
        under jit)."""
        return x if self.dtype is None else _round_cotangent(x)

    def matmul(self, a: jax.Array, b: jax.Array) -> jax.Array:
        """a @ b in the compute dtype: float32 accumulation, one rounding."""
        if self.dtype is None:
            return a @ b
        return self.round(accumulate(a, b))

    def island_matmul(self, a: jax.Array, b: jax.Array) -> jax.Array:
        """a @ b of float32 operands holding compute-dtype values (the attention products) -> float32: exact
        products, float32 accumulation, on the compute dtype's GEMM (`island_product`)."""
        if self.dtype is None:
            return a @ b
        return island_product(a, b, self.dtype)

    def add(self, x: jax.Array, y: jax.Array) -> jax.Array:
        """A residual sum: in float32, one rounding (as torch adds bfloat16 tensors)."""
        if self.dtype is None:
            return x + y
        return self.round(self.widen(x) + self.widen(y))

    def norm32(self, layer: nnx.LayerNorm, x: jax.Array) -> jax.Array:
        """LayerNorm inside a float32 island: x float32 (under a policy) -> float32, scale and bias widened
        (`layer_norm_maths`, without a policy too: the layer's parameters hold the values, the maths is ours)."""
        scale = self.widen(layer.scale[...])
        bias = None if layer.bias is None else self.widen(layer.bias[...])
        return layer_norm_maths(x, scale, bias, layer.epsilon)

    def norm(self, layer: nnx.LayerNorm, x: jax.Array) -> jax.Array:
        """LayerNorm of a compute-dtype tensor: statistics and normalisation in float32, one rounding after."""
        return self.round(self.norm32(layer, self.widen(x)))

    def activation(self, function: Callable[[jax.Array], jax.Array], x: jax.Array) -> jax.Array:
        """An elementwise function (GELU, ReLU, tanh) in float32, one rounding after."""
        return self.round(function(self.widen(x)))

    def glu(self, function: Callable[[jax.Array], jax.Array], x: jax.Array, gate: jax.Array) -> jax.Array:
        """A GLU's hidden units `function(x) * gate`: one float32 island, one rounding after."""
        return self.round(function(self.widen(x)) * self.widen(gate))

    def rotary(self, rotate: Callable[[jax.Array, tuple], jax.Array], x: jax.Array, tables: tuple) -> jax.Array:
        """Rotary positions on q or k: a float32 island (tables float32), one rounding after."""
        return self.round(rotate(self.widen(x), tables))
