"""The implementations the harness can time: what each builds, which framework runs it, in which modes and where."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from rosetta_common import EncoderConfig, WeightFormatError
from rosetta_common.name_tables import TORCH_NN
from rosetta_tools import frameworks
from rosetta_tools.throughput import hf_bert, hf_modernbert

# The rosetta package each worker framework needs (`rosetta_tools.frameworks` names): torch rows run
# rosetta_torch, JAX rows rosetta_flax.
PACKAGE_OF = {"torch": "torch", "jax": "flax"}


class Model(Enum):
    """What an implementation builds and times."""

    ROSETTA = "rosetta"  # its framework's rosetta Encoder
    TORCH_ENCODER = "torch.nn.TransformerEncoder"  # torch's own encoder holding the same weights
    HF_BERT = "hf-bert"  # transformers' BERT encoder stack behind rosetta's embedding
    HF_MODERNBERT = "hf-modernbert"  # transformers' whole ModernBertModel
    GEMM = "gemm"  # the matmul-ceiling probe


@dataclass(frozen=True)
class Impl:
    """One timed implementation; the workers build it from these attributes, never from its name."""

    name: str
    framework: str  # "torch" or "jax": decides which worker module runs it
    model: Model
    description: str
    attention: str  # how it computes attention, reported with its results
    modes: tuple[str, ...] = ("forward", "train")
    compiled: bool = False  # under torch.compile (every JAX row is jitted anyway)
    fastpath: bool = False  # nn.TransformerEncoder's inference fast path, nested tensors for padding
    attention_implementation: str | None = None  # jax.nn.dot_product_attention's `implementation`, every layer
    baseline: bool = False  # a row every other row's speed may be compared with (`baseline_of`)
    packed: bool = False  # runs the lengths case packed (`model(token_ids, segment_ids=...)`), not padded

    @property
    def peer(self) -> bool:
        """Another library's encoder (not rosetta's), holding the same weights."""
        return self.model in (Model.TORCH_ENCODER, Model.HF_BERT, Model.HF_MODERNBERT)

    @property
    def ceiling(self) -> bool:
        """The matmul-rate probe rather than an encoder."""
        return self.model is Model.GEMM

    @property
    def package(self) -> str:
        """The `rosetta_tools.frameworks` name of the rosetta package this row needs installed."""
        return PACKAGE_OF[self.framework]

    def skip_reason(self, mode: str, device: str, dtype: str, model: EncoderConfig) -> str | None:
        """Why this implementation is not run for `mode` on `device` in `dtype` for `model`, or None."""
        if not frameworks.installed(self.package):
            return frameworks.missing_message(self.package, self.name)
        if mode not in self.modes:
            return f"{self.name} has no {mode} mode"
        if self.attention_implementation == "cudnn" and (device != "cuda" or dtype != "bfloat16"):
            return "cuDNN attention needs a GPU and bfloat16"
        if self.model is Model.HF_BERT:
            return hf_bert.skip_reason(model, self.framework)
        if self.model is Model.HF_MODERNBERT:
            return hf_modernbert.skip_reason(model)
        if self.model is Model.TORCH_ENCODER:
            try:
                TORCH_NN.entries(model)
            except WeightFormatError as err:
                return str(err)
        return None


_ALL = (
    Impl(
        "rosetta_torch",
        "torch",
        Model.ROSETTA,
        "rosetta_torch.Encoder, eager",
        "F.scaled_dot_product_attention, additive float mask",
    ),
    Impl(
        "rosetta_torch.compile",
        "torch",
        Model.ROSETTA,
        "rosetta_torch.Encoder under torch.compile (inductor)",
        "F.scaled_dot_product_attention, additive float mask, inside the inductor graph",
        compiled=True,
    ),
    Impl(
        "rosetta_flax.jit",
        "jax",
        Model.ROSETTA,
        "rosetta_flax.Encoder, jax.jit over nnx.split state",
        "matmul + exp, softmax normalised after the value matmul (XLA fuses)",
    ),
    Impl(
        "rosetta_flax.jit.cudnn",
        "jax",
        Model.ROSETTA,
        "rosetta_flax.Encoder, jax.jit, attention via jax.nn.dot_product_attention(implementation='cudnn')",
        "jax.nn.dot_product_attention(implementation='cudnn')",
        attention_implementation="cudnn",
    ),
    Impl(
        "rosetta_torch.packed",
        "torch",
        Model.ROSETTA,
        "rosetta_torch.Encoder, eager, on packed rows (segment_ids)",
        "F.scaled_dot_product_attention, segment mask",
        packed=True,
    ),
    Impl(
        "rosetta_torch.compile.packed",
        "torch",
        Model.ROSETTA,
        "rosetta_torch.Encoder under torch.compile (inductor), on packed rows (segment_ids)",
        "F.scaled_dot_product_attention, segment mask, inside the inductor graph",
        compiled=True,
        packed=True,
    ),
    Impl(
        "rosetta_flax.jit.packed",
        "jax",
        Model.ROSETTA,
        "rosetta_flax.Encoder, jax.jit over nnx.split state, on packed rows (segment_ids)",
        "matmul + exp in query blocks, segment mask",
        packed=True,
    ),
    Impl(
        "nn.TransformerEncoder",
        "torch",
        Model.TORCH_ENCODER,
        "torch.nn.TransformerEncoder (same weights), eager, inference fast path disabled",
        "nn.MultiheadAttention -> F.scaled_dot_product_attention (fast path off)",
    ),
    Impl(
        "nn.TransformerEncoder.fastpath",
        "torch",
        Model.TORCH_ENCODER,
        "torch.nn.TransformerEncoder, eval + inference_mode fast path, nested tensors for padding",
        "torch._transformer_encoder_layer_fwd (fused native MHA, nested tensors)",
        modes=("forward",),
        fastpath=True,
    ),
    Impl(
        "nn.TransformerEncoder.compile",
        "torch",
        Model.TORCH_ENCODER,
        "torch.nn.TransformerEncoder under torch.compile",
        "nn.MultiheadAttention -> F.scaled_dot_product_attention, traced by inductor",
        compiled=True,
        baseline=True,
    ),
    Impl(
        "hf.BertEncoder",
        "torch",
        Model.HF_BERT,
        "HF transformers BertEncoder (same weights, SDPA attention) behind rosetta's embedding, eager",
        "BertSdpaSelfAttention -> F.scaled_dot_product_attention, additive float mask",
    ),
    Impl(
        "hf.FlaxBertEncoder",
        "jax",
        Model.HF_BERT,
        "HF transformers FlaxBertEncoder (same weights, linen) behind rosetta's embedding, jax.jit",
        "FlaxBertSelfAttention: flax.linen dot_product_attention_weights (einsum, softmax)",
    ),
    Impl(
        "hf.ModernBertModel",
        "torch",
        Model.HF_MODERNBERT,
        "HF transformers ModernBertModel (same weights, sdpa attention), eager",
        "ModernBertAttention sdpa -> F.scaled_dot_product_attention, [B, 1, S, S] window masks on local layers",
        baseline=True,
    ),
    Impl("matmul.torch", "torch", Model.GEMM, "GEMM ceiling probe: torch.matmul", "-", modes=("gemm",)),
    Impl("matmul.jax", "jax", Model.GEMM, "GEMM ceiling probe: jnp.matmul under jax.jit", "-", modes=("gemm",)),
)

IMPLS: dict[str, Impl] = {impl.name: impl for impl in _ALL if not impl.ceiling}
CEILINGS: dict[str, Impl] = {impl.name: impl for impl in _ALL if impl.ceiling}
ALL: dict[str, Impl] = {**IMPLS, **CEILINGS}
BASELINES = tuple(impl.name for impl in _ALL if impl.baseline)  # ratios are against the first of these that ran
BASELINE = BASELINES[0]


def baseline_of(ran: set[str]) -> str:
    """The row a run's ratios are against: the first baseline that ran (nn.TransformerEncoder.compile; for models
    it cannot hold, such as ModernBERT's, transformers' own model), else the first baseline."""
    return next((name for name in BASELINES if name in ran), BASELINE)
