"""Where rosetta_torch rounds under a mixed-precision policy (`rosetta_common.precision`; common/DESIGN.md,
"Mixed precision"). Mirrors `rosetta_flax.precision`: the same methods, rounding at the same places.

`Compute(None)` is a model without a policy: every method is the plain operation in the parameters' dtype.
`Compute(torch.bfloat16)` rounds as the policy says. Eager torch rounds every op's result to its dtype, so the
rounding points are the ops' dtypes: a bfloat16 op computes in float32 and rounds once (`F.linear` rounds the
float32 accumulation plus bias once; `x + y` rounds the float32 sum once), and the backward rounds each gradient
where the forward changed dtype. (`torch.compile` keeps float32 between fused ops unless
`torch._inductor.config.emulate_precision_casts` is set: compiled runs are held to the oracle bound only.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

ISLAND = torch.float32
"""What the float32 islands (embedding front, LayerNorm, softmax, activation, logits, loss) compute in."""


@dataclass(frozen=True)
class Compute:
    """The compute dtype of a model (None: its parameters' dtype, no policy) and the operations that round."""

    dtype: torch.dtype | None = None

    @property
    def active(self) -> bool:
        return self.dtype is not None

    def island_dtype(self, dtype: torch.dtype) -> torch.dtype:
        """The dtype float32 islands compute in: float32 under a policy, else the model's `dtype`."""
        return ISLAND if self.active else dtype

    def round(self, x: torch.Tensor) -> torch.Tensor:
        """A float32 island's result -> the compute dtype (one rounding to nearest even)."""
        return x if self.dtype is None else x.to(self.dtype)

    def widen(self, x: torch.Tensor) -> torch.Tensor:
        """The compute (or parameter) dtype -> float32, exactly; its gradient is rounded back on the way out."""
        return x if self.dtype is None else x.to(ISLAND)

    def weight(self, param: torch.Tensor) -> torch.Tensor:
        """A parameter as a matmul operand: rounded to the compute dtype (master weights stay float32)."""
        return param if self.dtype is None else param.to(self.dtype)

    def linear(self, layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        """x `[..., in]` -> `[..., out]`: operands in the compute dtype, float32 accumulation, the bias added in
        float32, one rounding (torch's bfloat16 `F.linear`; its backward rounds dx, dW and db once each)."""
        if self.dtype is None:
            return layer(x)
        return F.linear(x, self.weight(layer.weight), None if layer.bias is None else self.weight(layer.bias))

    def linears(self, layers: tuple[nn.Linear, ...], x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Several linear layers reading the same x (q, k, v). Under a policy, one linear over the concatenated
        weights: x then has one use, so its gradient is one float32 accumulation rounded once (three separate
        uses would round two partial sums, in an order each framework's autodiff picks)."""
        if self.dtype is None:
            return tuple(layer(x) for layer in layers)
        weight = torch.cat([self.weight(layer.weight) for layer in layers])
        biased = all(layer.bias is not None for layer in layers)
        bias = torch.cat([self.weight(layer.bias) for layer in layers]) if biased else None
        return F.linear(x, weight, bias).split([layer.out_features for layer in layers], dim=-1)

    def fan_out(self, x: torch.Tensor) -> torch.Tensor:
        """Marks a tensor read twice (the residual stream: the sum and the sub-layer). Its two gradients are summed
        in float32 and rounded once: what torch's autograd does by itself (bfloat16 + bfloat16)."""
        return x

    def matmul(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """a @ b in the compute dtype: float32 accumulation, one rounding."""
        return a @ b

    def island_matmul(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """a @ b of float32 operands holding compute-dtype values (the attention scores) -> float32: exact products,
        float32 accumulation. The float32 matmul itself: torch has no CPU GEMM from bfloat16 operands to a float32
        result (`aten::mm.dtype` is not implemented there), where `rosetta_flax.precision.island_product` runs
        XLA's."""
        return a @ b

    def add(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """A residual sum: in float32, one rounding (torch adds bfloat16 tensors exactly so)."""
        return x + y

    def norm32(self, layer: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
        """LayerNorm inside a float32 island: x float32 (under a policy) -> float32, scale and bias widened."""
        if self.dtype is None:
            return layer(x)
        bias = None if layer.bias is None else self.widen(layer.bias)
        return F.layer_norm(x, layer.normalized_shape, self.widen(layer.weight), bias, layer.eps)

    def norm(self, layer: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
        """LayerNorm of a compute-dtype tensor: statistics and normalisation in float32, one rounding after."""
        return self.round(self.norm32(layer, self.widen(x)))

    def activation(self, function: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """An elementwise function (GELU, ReLU, tanh) in float32, one rounding after."""
        return self.round(function(self.widen(x)))

    def glu(
        self, function: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, gate: torch.Tensor
    ) -> torch.Tensor:
        """A GLU's hidden units `function(x) * gate`: one float32 island, one rounding after."""
        return self.round(function(self.widen(x)) * self.widen(gate))

    def rotary(
        self, rotate: Callable[[torch.Tensor, tuple], torch.Tensor], x: torch.Tensor, tables: tuple
    ) -> torch.Tensor:
        """Rotary positions on q or k: a float32 island (tables float32), one rounding after."""
        return self.round(rotate(self.widen(x), tables))
