"""The bounds rosetta proves (DESIGN.md, "Tolerances"): max absolute difference on outputs of order 1."""

FLOAT64 = 1e-10
"""float64 torch vs float64 flax vs the float64 NumPy oracle (measured: ~1e-15)."""

FLOAT32_CROSS = 1e-5
"""float32 torch vs float32 flax."""

FLOAT32_ORACLE = 1e-4
"""float32 torch or flax vs the float64 oracle."""

GRADIENT_FLOAT64_RELATIVE = 1e-10
"""float64 gradients, every parameter, relative to the parameter's largest gradient entry."""


def output_bound(dtype_name: str, against_oracle: bool) -> float:
    """The DESIGN.md bound for comparing outputs computed in `dtype_name` ('float64' or 'float32')."""
    if dtype_name == "float64":
        return FLOAT64
    if dtype_name == "float32":
        return FLOAT32_ORACLE if against_oracle else FLOAT32_CROSS
    raise ValueError(f"no stated bound for dtype {dtype_name!r}")
