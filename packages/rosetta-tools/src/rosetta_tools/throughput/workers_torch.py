"""The torch side of the harness: rosetta_torch (eager, compiled), torch.nn.TransformerEncoder peers, torch GEMM.

Imported only inside a torch worker process (never next to JAX). Every forward runs under inference_mode;
`--dtype bfloat16` is autocast (float32 weights, bfloat16 matmuls), except the inference fast path, which
autocast disables: it runs on bfloat16 copies of the weights instead.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch._functorch.config
import torch._inductor.config

from rosetta_common import EncoderConfig
from rosetta_tools.throughput import hf_bert
from rosetta_tools.throughput.timing import time_calls
from rosetta_tools.throughput.worker import Prepared
from rosetta_torch import Encoder, load, to_canonical
from rosetta_torch.attention import attention_bias
from rosetta_torch.interop import to_torch_modules

Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

ATTENTION = {
    "rosetta_torch": "F.scaled_dot_product_attention, additive float mask",
    "rosetta_torch.compile": "F.scaled_dot_product_attention, additive float mask, inside the inductor graph",
    "nn.TransformerEncoder": "nn.MultiheadAttention -> F.scaled_dot_product_attention (fast path off)",
    "nn.TransformerEncoder.fastpath": "torch._transformer_encoder_layer_fwd (fused native MHA, nested tensors)",
    "nn.TransformerEncoder.compile": "nn.MultiheadAttention -> F.scaled_dot_product_attention, traced by inductor",
    "hf.BertEncoder": "BertSdpaSelfAttention -> F.scaled_dot_product_attention, additive float mask",
    "matmul.torch": "-",
}


def compile_settings(choice: str, mode: str, device: str) -> dict[str, Any]:
    """How the compiled rows (rosetta's and the peer's alike) call torch.compile for one setup.

    "auto" is "freeze-dynamic" for a CPU forward, else "default". Freezing (weights as constants) applies to
    inference graphs only; with a dynamic batch dimension inductor packs frozen float32 weights for oneDNN,
    with static shapes for MKL, whose sgemm ran at half oneDNN's rate on the AMD CPU this was tuned on.
    "aot-eager" traces through dynamo and AOTAutograd (forward and backward graphs) but runs them eagerly instead of
    generating inductor kernels: the same harness path at a fraction of the compile time, for smoke tests only.
    """
    if choice == "auto":
        choice = "freeze-dynamic" if device == "cpu" and mode == "forward" else "default"
    kwargs: dict[str, Any] = {}
    if choice == "freeze-dynamic":
        kwargs["dynamic"] = True
    elif choice == "max-autotune":
        kwargs["mode"] = "max-autotune"
    elif choice == "aot-eager":
        kwargs["backend"] = "aot_eager"
    return {"choice": choice, "freezing": choice.startswith("freeze") and mode == "forward", "kwargs": kwargs}


class DeviceUnavailable(RuntimeError):
    """The requested device does not exist on this machine."""


def masked_mean_square(output: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
    """The training loss (same in every implementation): mean of output^2 over real positions and features."""
    valid = (~padding_mask).to(torch.float32)[..., None]
    return (output.float().square() * valid).sum() / (valid.sum() * output.shape[-1])


class Backend:
    """Builds the prepared call for one torch implementation; global settings are made once per process."""

    def __init__(self, impl: str, device: str, dtype: str, tf32: bool) -> None:
        if device == "cuda" and not torch.cuda.is_available():
            raise DeviceUnavailable(
                f"--device cuda, but torch sees no CUDA GPU (torch {torch.__version__}, built for CUDA "
                f"{torch.version.cuda}); run on a machine with a GPU or use --device cpu"
            )
        self.impl, self.device, self.dtype, self.tf32 = impl, torch.device(device), dtype, tf32
        self._gemms: dict[tuple, Prepared] = {}
        if device == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
        # nn.TransformerEncoder's fast path is the "fastpath" row only. The compiled peer runs without it too:
        # traced by torch.compile the fused native op hides its matmuls from inductor (measured slower) and
        # ignores CPU autocast.
        fastpath = impl == "nn.TransformerEncoder.fastpath"
        torch.backends.mha.set_fastpath_enabled(fastpath)
        # Every setup compiles from scratch (its first-call time is a compilation), no graph reused from a cache.
        torch._inductor.config.fx_graph_cache = False
        torch._functorch.config.enable_autograd_cache = False

    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "torch": torch.__version__,
            "num_threads": torch.get_num_threads(),
            "num_interop_threads": torch.get_num_interop_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "mkldnn": torch.backends.mkldnn.is_available(),
            "mha_fastpath": torch.backends.mha.get_fastpath_enabled(),
            "attention": ATTENTION[self.impl],
            "precision": "autocast bfloat16" if self.dtype == "bfloat16" else "float32",
        }
        if self.impl == "nn.TransformerEncoder.fastpath" and self.dtype == "bfloat16":
            info["precision"] = "bfloat16 weights (autocast disables the fast path)"
        if self.device.type == "cuda":
            info.update(
                device_name=torch.cuda.get_device_name(self.device),
                cuda=torch.version.cuda,
                cudnn=torch.backends.cudnn.version(),
                allow_tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                allow_tf32_cudnn=torch.backends.cudnn.allow_tf32,
                sdpa_backends={
                    "flash": torch.backends.cuda.flash_sdp_enabled(),
                    "mem_efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
                    "math": torch.backends.cuda.math_sdp_enabled(),
                    "cudnn": torch.backends.cuda.cudnn_sdp_enabled(),
                },
            )
        return info

    def release(self) -> None:
        """Forget the previous setup: compiled graphs, models, cached device memory (the GEMM probe keeps its own)."""
        if self.impl == "matmul.torch":
            return
        torch._dynamo.reset()
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def sync(self, _result: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype == "bfloat16" and self.impl != "nn.TransformerEncoder.fastpath":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def prepare(self, spec: dict[str, Any]) -> Prepared:
        if self.impl == "matmul.torch":
            key = (*spec["gemm_shape"], spec.get("torch_compile", "auto"))
            if key not in self._gemms:  # the same probe serves every mode of a case
                self._gemms = {key: self._gemm(*key)}
            return self._gemms[key]
        config = EncoderConfig.from_dict(spec["config"])
        inputs = np.load(spec["inputs"])
        token_ids = torch.from_numpy(inputs["token_ids"]).to(self.device)
        padding_mask = torch.from_numpy(inputs["padding_mask"]).to(self.device)
        model = load(spec["weights"], device=self.device)
        training = spec["mode"] == "train"
        self.compile = compile_settings(spec.get("torch_compile", "auto"), spec["mode"], self.device.type)
        torch._inductor.config.freezing = self.compile["freezing"]
        module, forward = self._forward(config, model, training)
        module.train(training)
        if training:
            return self._train_step(module, forward, token_ids, padding_mask, spec["lr"])

        def call() -> torch.Tensor:
            with torch.inference_mode(), self.autocast():
                return forward(token_ids, padding_mask)

        return Prepared(call, self.sync, lambda out: out.float().cpu().numpy(), self._details())

    def _details(self) -> dict[str, Any]:
        return {"torch_compile": self.compile} if self.impl.endswith(".compile") else {}

    def _forward(self, config: EncoderConfig, model: Encoder, training: bool) -> tuple[torch.nn.Module, Forward]:
        """(the module holding the parameters, the forward function to call) for this implementation."""
        if self.impl == "rosetta_torch":
            return model, model
        if self.impl == "rosetta_torch.compile":
            return model, torch.compile(model, **self.compile["kwargs"])
        if self.impl == "hf.BertEncoder":
            return hf_bert_peer(config, model)
        nested = self.impl == "nn.TransformerEncoder.fastpath"
        embedding, encoder = to_torch_modules(model, enable_nested_tensor=nested)
        pair = torch.nn.ModuleList([embedding, encoder]).to(self.device)
        if nested and self.dtype == "bfloat16":
            pair = pair.to(torch.bfloat16)
        scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        table = model.positional.table.to(embedding.weight.dtype)

        def peer(token_ids: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
            x = embedding(token_ids) * scale + table[: token_ids.shape[1]]
            return encoder(x, src_key_padding_mask=padding_mask)

        compiled = self.impl == "nn.TransformerEncoder.compile"
        return pair, torch.compile(peer, **self.compile["kwargs"]) if compiled else peer

    def _train_step(
        self, module: torch.nn.Module, forward: Forward, token_ids: torch.Tensor, padding_mask: torch.Tensor, lr: float
    ) -> Prepared:
        """forward + masked mean-square loss + backward + AdamW (torch's fused kernel, CPU and CUDA alike)."""
        optimizer = torch.optim.AdamW(
            module.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, fused=True
        )

        def call() -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            with self.autocast():
                loss = masked_mean_square(forward(token_ids, padding_mask), padding_mask)
            loss.backward()
            optimizer.step()
            return loss.detach()

        return Prepared(call, self.sync, lambda loss: loss.cpu().numpy(), self._details())

    def _gemm(self, m: int, k: int, n: int, torch_compile: str) -> Prepared:
        """The faster of torch.matmul and a compiled bias-free Linear (the compiled rows' forward GEMM path)."""
        dtype = torch.bfloat16 if self.dtype == "bfloat16" else torch.float32
        generator = torch.Generator().manual_seed(0)
        a = torch.randn(m, k, generator=generator).to(self.device, dtype)
        b = torch.randn(k, n, generator=generator).to(self.device, dtype)
        linear = torch.nn.Linear(k, n, bias=False, device=self.device, dtype=dtype)
        linear.weight.data = b.T.contiguous()
        settings = compile_settings(torch_compile, "forward", self.device.type)
        torch._inductor.config.freezing = settings["freezing"]
        compiled = torch.compile(linear, **settings["kwargs"])
        candidates = {
            "torch.matmul": lambda: torch.matmul(a, b),
            f"compiled nn.Linear ({settings['choice']})": lambda: compiled(a),
        }
        best_s = {}
        with torch.inference_mode():
            for name, candidate in candidates.items():
                self.sync(candidate())  # compiles
                best_s[name] = min(time_calls(candidate, self.sync, 5))
        chosen = min(best_s, key=best_s.get)
        chosen_call = candidates[chosen]

        def call() -> torch.Tensor:
            with torch.inference_mode():
                return chosen_call()

        details = {"gemm_candidates_best_s": best_s, "gemm_used": chosen}
        return Prepared(call, self.sync, lambda out: out.float().cpu().numpy(), details)


def hf_bert_peer(config: EncoderConfig, model: Encoder) -> tuple[torch.nn.Module, Forward]:
    """transformers' BertEncoder (SDPA attention) holding `model`'s layers, behind `model`'s own embedding and
    positional encoding; in `model`'s dtype and on its device. Kernels are transposed to torch's `[out, in]`."""
    from transformers import BertConfig
    from transformers.models.bert.modeling_bert import BertEncoder

    bert_config = BertConfig(**hf_bert.bert_config_kwargs(config))
    bert_config._attn_implementation = "sdpa"
    weight = model.embedding.weight
    bert = BertEncoder(bert_config).to(weight.device, weight.dtype)
    state = {}
    for name, value in hf_bert.encoder_tensors(to_canonical(model)).items():
        stem, leaf = name.rsplit(".", 1)
        state[f"{stem}.{'bias' if leaf == 'bias' else 'weight'}"] = torch.from_numpy(
            value.T.copy() if leaf == "kernel" else value
        )
    bert.load_state_dict(state, strict=True)

    def forward(token_ids: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        x = model.positional(model.embedding(token_ids))
        return bert(x, attention_mask=attention_bias(padding_mask, x.dtype)).last_hidden_state

    return torch.nn.ModuleList([model.embedding, bert]), forward
