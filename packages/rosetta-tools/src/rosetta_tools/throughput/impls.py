"""The implementations the harness can time: which framework runs each, in which modes and where."""

from __future__ import annotations

from dataclasses import dataclass

from rosetta_common import EncoderConfig
from rosetta_tools.throughput import hf_bert


@dataclass(frozen=True)
class Impl:
    """One timed implementation. `peer` marks torch's own encoder; `ceiling` the matmul-rate probe."""

    name: str
    framework: str  # "torch" or "jax": decides which worker module runs it
    description: str
    modes: tuple[str, ...] = ("forward", "train")
    peer: bool = False
    ceiling: bool = False
    needs: str = ""  # "cuda-bf16": only meaningful on a GPU in bfloat16; "hf-bert": transformers, post-norm

    def skip_reason(self, mode: str, device: str, dtype: str, model: EncoderConfig) -> str | None:
        """Why this implementation is not run for `mode` on `device` in `dtype` for `model`, or None."""
        if mode not in self.modes:
            return f"{self.name} has no {mode} mode"
        if self.needs == "cuda-bf16" and (device != "cuda" or dtype != "bfloat16"):
            return "cuDNN attention needs a GPU and bfloat16"
        if self.needs == "hf-bert":
            return hf_bert.skip_reason(model, self.framework)
        return None


_ALL = (
    Impl("rosetta_torch", "torch", "rosetta_torch.Encoder, eager"),
    Impl("rosetta_torch.compile", "torch", "rosetta_torch.Encoder under torch.compile (inductor)"),
    Impl("rosetta_flax.jit", "jax", "rosetta_flax.Encoder, jax.jit over nnx.split state"),
    Impl(
        "rosetta_flax.jit.cudnn",
        "jax",
        "rosetta_flax.Encoder, jax.jit, attention via jax.nn.dot_product_attention(implementation='cudnn')",
        needs="cuda-bf16",
    ),
    Impl(
        "nn.TransformerEncoder",
        "torch",
        "torch.nn.TransformerEncoder (same weights), eager, inference fast path disabled",
        peer=True,
    ),
    Impl(
        "nn.TransformerEncoder.fastpath",
        "torch",
        "torch.nn.TransformerEncoder, eval + inference_mode fast path, nested tensors for padding",
        modes=("forward",),
        peer=True,
    ),
    Impl("nn.TransformerEncoder.compile", "torch", "torch.nn.TransformerEncoder under torch.compile", peer=True),
    Impl(
        "hf.BertEncoder",
        "torch",
        "HF transformers BertEncoder (same weights, SDPA attention) behind rosetta's embedding, eager",
        peer=True,
        needs="hf-bert",
    ),
    Impl(
        "hf.FlaxBertEncoder",
        "jax",
        "HF transformers FlaxBertEncoder (same weights, linen) behind rosetta's embedding, jax.jit",
        peer=True,
        needs="hf-bert",
    ),
    Impl("matmul.torch", "torch", "GEMM ceiling probe: torch.matmul", modes=("gemm",), ceiling=True),
    Impl("matmul.jax", "jax", "GEMM ceiling probe: jnp.matmul under jax.jit", modes=("gemm",), ceiling=True),
)

IMPLS: dict[str, Impl] = {impl.name: impl for impl in _ALL if not impl.ceiling}
CEILINGS: dict[str, Impl] = {impl.name: impl for impl in _ALL if impl.ceiling}
BASELINE = "nn.TransformerEncoder.compile"  # ratios are against this one
ALL: dict[str, Impl] = {**IMPLS, **CEILINGS}
