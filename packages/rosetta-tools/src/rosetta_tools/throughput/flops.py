"""FLOP conventions (common/DESIGN.md, "Measuring speed"): matmul FLOPs only, one multiply-add = 2 FLOPs."""

from __future__ import annotations

from rosetta_common import EncoderConfig

TRAIN_FACTOR = 3  # a training step ~ forward + backward (2x forward); the optimizer update is not counted

CONVENTIONS = {
    "forward": "n_layers * (2*B*S*(4*d^2 + m*d*d_ff) + 4*B*S^2*d), m = 2 (MLP) or 3 (GLU: in, gate, out): "
    "projections, FFN and the two attention matmuls (all S^2 scores, local layers too, as they are computed); "
    "embedding, softmax, LayerNorm, rotary and padding are not counted (padded positions count as computed)",
    "train": f"{TRAIN_FACTOR} x forward FLOPs (backward ~ 2x forward); the AdamW update is not counted",
    "tokens": "B*S positions per call, padded positions included, so runs with and without padding compare",
    "ceiling": "GEMM [B*S, d] x [d, d_ff] in each framework, same dtype and device, timed in the same rounds "
    "(torch: the faster of torch.matmul and a compiled nn.Linear, as the compiled rows use), each round's block "
    "of GEMMs as long as an encoder's block (as many FLOPs); the machine's ceiling is the best framework's median",
}


def forward_flops(config: EncoderConfig, batch: int, seq: int) -> int:
    d, d_ff = config.d_model, config.d_ff
    ffn_matrices = 3 if config.feed_forward == "glu" else 2
    return config.n_layers * (2 * batch * seq * (4 * d * d + ffn_matrices * d * d_ff) + 4 * batch * seq * seq * d)


def step_flops(config: EncoderConfig, batch: int, seq: int, mode: str) -> int:
    """FLOPs of one call in `mode`: "forward", "train" or "gemm" (the ceiling's matmul)."""
    if mode == "gemm":
        return gemm_flops(*gemm_shape(config, batch, seq))
    return forward_flops(config, batch, seq) * (TRAIN_FACTOR if mode == "train" else 1)


def gemm_shape(config: EncoderConfig, batch: int, seq: int) -> tuple[int, int, int]:
    """(M, K, N) of the ceiling GEMM: the feed-forward up-projection, [B*S, d] x [d, d_ff]."""
    return batch * seq, config.d_model, config.d_ff


def gemm_flops(m: int, k: int, n: int) -> int:
    return 2 * m * k * n


def gemms_per_call(config: EncoderConfig, batch: int, seq: int, mode: str) -> int:
    """How many ceiling GEMMs do the FLOPs of one `mode` call (>= 1): the probe's calls per timed block."""
    return max(1, round(step_flops(config, batch, seq, mode) / gemm_flops(*gemm_shape(config, batch, seq))))
