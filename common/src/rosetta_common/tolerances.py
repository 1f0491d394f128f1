"""The bounds rosetta proves (common/DESIGN.md, "Tolerances"): max absolute difference on outputs of order 1, and
relative L2 (`relative_l2`) for bfloat16."""

import numpy as np

FLOAT64 = 1e-10
"""float64 torch vs float64 flax vs the float64 NumPy oracle (measured: ~1e-15)."""

FLOAT32_CROSS = 1e-5
"""float32 torch vs float32 flax."""

FLOAT32_ORACLE = 1e-4
"""float32 torch or flax vs the float64 oracle."""

PACKED_FLOAT64 = 1e-12
"""float64: a packed sequence's activations (and gradients, relative to the largest entry) against the same sequence
run alone. The same maths: the other segments' keys get weight exactly 0, and only the GEMMs' shapes, so their
summation orders, change (measured <= 4e-15)."""

GRADIENT_FLOAT64_RELATIVE = 1e-10
"""float64 gradients, every parameter, relative to the parameter's largest gradient entry."""


def output_bound(dtype_name: str, against_oracle: bool) -> float:
    """The common/DESIGN.md bound for comparing outputs computed in `dtype_name` ('float64' or 'float32')."""
    if dtype_name == "float64":
        return FLOAT64
    if dtype_name == "float32":
        return FLOAT32_ORACLE if against_oracle else FLOAT32_CROSS
    raise ValueError(f"no stated bound for dtype {dtype_name!r}")


FLOAT32_ROUNDING_FACTOR = 8.0
"""How many times the oracle's float32 rounding estimate a float32 result may differ, per component."""


def float32_bound(estimate: float, against_oracle: bool) -> float:
    """The float32 bound for one component of one input: max(the fixed bound, 8 x `estimate`).

    `estimate` is `rounding_error.float32_error_estimate` for that component and input: how far float32-sized
    random roundings move the float64 oracle. The fixed bounds (1e-5 torch vs flax, 1e-4 against the oracle)
    hold for outputs of order 1 from ordinary inputs; an input whose LayerNorm sees a small std formed from large
    terms (cancellation in the residual sum) amplifies every rounding, and the estimate grows with it. Measured
    over 300 seeded draws (6,747 comparisons, AMD EPYC, rosetta_flax compiled per sub-layer): |difference| /
    estimate at most 2.8 (99.9% <= 1.9); the issue-11 case 1.12e-5 on another CPU, 3.2x its estimate of 3.5e-6.
    8 leaves a factor 2.5 over the worst ratio seen. The estimate computes each intermediate once; XLA's CPU
    fusion of a whole model recomputes some (up to 2.5e-5 from the oracle at d_model 2, see
    tests/test_property.py::test_flax_compiled_as_one_graph), which the fixed 1e-4 against the oracle covers.
    """
    fixed = FLOAT32_ORACLE if against_oracle else FLOAT32_CROSS
    return max(fixed, FLOAT32_ROUNDING_FACTOR * estimate)


BFLOAT16_ISLAND = 1e-6
"""bfloat16 policies: relative L2 (||a - b|| / ||oracle||) of a float32-island component (the embedding front),
either framework vs the oracle and torch vs flax: float32 rounding of a gather, a scale and a sum or two
(2^-24 = 6e-8 each; measured <= 7.1e-8 vs the oracle, <= 9.1e-8 torch vs flax)."""

BFLOAT16_LAYER = 1e-2
"""bfloat16 policies: relative L2 against the oracle of a component after the front, per sqrt(layers passed). Each
layer rounds its linear outputs, probabilities, residual sums and LayerNorm outputs to bfloat16 (at most 2^-9 =
2e-3 relative each), and independent roundings add up like a random walk over the layers. Measured over the
stored vectors (weights rounded to bfloat16), both policies, torch and flax: <= 4.8e-3 after one layer, <= 6.2e-3
after two or three."""

BFLOAT16_LAYER_MAX_ABS = 2**-4
"""bfloat16 policies: max-abs difference against the oracle of a component after the front, per sqrt(layers
passed), on outputs of order 1. One bfloat16 unit is 2^-4 at magnitudes 8-16 and 2^-6 at 2-4 (LayerNorm outputs
reach a few units), so a few units' error at the largest element. Measured over the stored vectors: <= 0.023 after
one layer, <= 0.038 after two or three. The float32 front is held to the float32 bound (FLOAT32_ORACLE)."""

BFLOAT16_CROSS_FRACTION = 0.25
"""bfloat16 policies: torch vs flax at most this fraction of the smaller of the two relative-L2 distances to the
oracle (both frameworks round at the same places), for each sub-layer given the same input and for the gradients
of the small test models. Measured on an AVX512-BF16 CPU: sub-layers bit-identical up to d_model 512 (0.10 for a
d_ff-3072 feed-forward, K = 3072); gradients <= 2.1e-5 of the distance."""

BFLOAT16_CASCADE_FRACTION = 1.5
"""bfloat16 policies: torch vs flax in a whole run, every component after the float32 front, as a fraction of the
smaller distance to the oracle. Rounding at the same places is not enough for bit-identical results at scale:
torch's bfloat16 GEMM (oneDNN) and XLA's (YNNPACK) accumulate in float32 in their own orders, so now and then a
result within a float32 error of a bfloat16 rounding boundary rounds apart. Each such one-unit flip perturbs every
output of the next matmul a little, and the next roundings turn some of those perturbations into flips again,
within a layer and across layers: the difference grows with depth towards that of two independent bfloat16 runs
(sqrt(2) x the distance to the oracle in expectation). Measured at d_model 512: 0.008 after the first attention
sub-layer, 0.44 after two layers, 0.89 after six; at d_model 128, 0.11 after the first attention sub-layer (one
flipped row) and 0.27 after four layers; the stored vectors bit-identical."""

FLOAT32_ISLAND_COMPONENTS = ("embedding", "positional", "embedding_norm")
"""The components a bfloat16 policy computes in float32 (the embedding front)."""


def bfloat16_max_abs_bound(component: str, n_layers: int) -> float:
    """The max-abs bound of one component under a bfloat16 policy against the oracle: `FLOAT32_ORACLE` for the
    float32 front, `BFLOAT16_LAYER_MAX_ABS * sqrt(layers passed)` after it."""
    if component in FLOAT32_ISLAND_COMPONENTS:
        return FLOAT32_ORACLE
    return BFLOAT16_LAYER_MAX_ABS * _layers_passed(component, n_layers) ** 0.5


def _layers_passed(component: str, n_layers: int) -> int:
    """ "layers.{i}.*": i + 1; final_norm, output, pooler: n_layers."""
    return int(component.split(".")[1]) + 1 if component.startswith("layers.") else n_layers


def bfloat16_bound(component: str, n_layers: int) -> float:
    """The relative-L2 bound of one component under a bfloat16 policy against the oracle: `BFLOAT16_ISLAND` for the
    embedding front, `BFLOAT16_LAYER * sqrt(layers passed)` after it ("layers.{i}.*": i + 1; the rest: n_layers)."""
    if component in FLOAT32_ISLAND_COMPONENTS:
        return BFLOAT16_ISLAND
    return BFLOAT16_LAYER * _layers_passed(component, n_layers) ** 0.5


def relative_l2(a: np.ndarray, b: np.ndarray, reference: np.ndarray) -> float:
    """||a - b|| / ||reference|| in float64 (0 for equal arrays, inf for unequal ones against a zero reference)."""
    norm = float(np.linalg.norm(np.asarray(reference, dtype=np.float64)))
    diff = float(np.linalg.norm(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)))
    return diff / norm if norm > 0 else (0.0 if diff == 0 else float("inf"))
