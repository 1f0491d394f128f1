"""Datasheet peaks (dense TFLOP/s) for model-FLOPs utilisation on known GPUs, by device-name substring."""

from __future__ import annotations

# Dense (no sparsity) peaks: bfloat16 tensor cores, TF32 tensor cores, plain float32 (CUDA cores).
PEAKS_TFLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H200", {"bfloat16": 989.0, "tf32": 494.0, "float32": 67.0}),
    ("H100 PCIe", {"bfloat16": 756.0, "tf32": 378.0, "float32": 51.0}),
    ("H100", {"bfloat16": 989.0, "tf32": 494.0, "float32": 67.0}),  # SXM (HBM3); also NVL-class names
    ("A100", {"bfloat16": 312.0, "tf32": 156.0, "float32": 19.5}),
)


def peak_tflops(device_name: str | None, precision: str) -> float | None:
    """The datasheet peak for `device_name` ("NVIDIA H100 80GB HBM3"...) at `precision`, or None if unknown."""
    if not device_name:
        return None
    for key, peaks in PEAKS_TFLOPS:
        if key in device_name:
            return peaks.get(precision)
    return None
