"""The torch side of the harness: rosetta_torch (eager, compiled), torch.nn.TransformerEncoder peers, HF BERT, GEMM.

Imported only inside a torch worker process (never next to JAX). Every forward runs under inference_mode.
`--dtype bfloat16`: the rosetta rows run the bfloat16-mixed policy (`rosetta_common.precision`: float32 master
weights, bfloat16 compute rounded at the policy's places, common/DESIGN.md); the peers run as their users would,
under autocast (float32 weights, bfloat16 matmuls), except the inference fast path, which autocast disables: it
runs on bfloat16 copies of the weights instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import os
from typing import Any

import numpy as np
import torch
import torch._functorch.config
import torch._inductor.config

from rosetta_common import EncoderConfig
from rosetta_common.precision import POLICIES
from rosetta_tools.throughput import memory
from rosetta_tools.throughput.hf_bert_torch import Forward, hf_bert_peer
from rosetta_tools.throughput.hf_modernbert_torch import hf_modernbert_peer
from rosetta_tools.throughput.impls import Impl, Model
from rosetta_tools.throughput.lengths import read_layout, takes_segment_ids
from rosetta_tools.throughput.loss_torch import masked_mean_square
from rosetta_tools.throughput.protocol import SetupSpec
from rosetta_tools.throughput.timing import time_calls
from rosetta_tools.throughput.torch_compile import CompileSettings, compile_settings
from rosetta_tools.throughput.worker import DeviceUnavailable, Prepared
from rosetta_torch import Encoder, load
from rosetta_torch.interop import to_torch_modules


class Backend:
    """Builds the prepared call for one torch implementation; global settings are made once per process."""

    def __init__(self, impl: Impl, device: str, dtype: str, tf32: bool) -> None:
        if device == "cuda" and not torch.cuda.is_available():
            raise DeviceUnavailable(
                f"--device cuda, but torch sees no CUDA GPU (torch {torch.__version__}, built for CUDA "
                f"{torch.version.cuda}); run on a machine with a GPU or use --device cpu"
            )
        self.impl, self.device, self.dtype, self.tf32 = impl, torch.device(device), dtype, tf32
        policy = dtype == "bfloat16" and impl.model is Model.ROSETTA
        self.precision = POLICIES["bfloat16-mixed"] if policy else None
        self.compile: CompileSettings | None = None  # the current setup's
        self._gemms: dict[tuple[int, int, int, str], Prepared] = {}
        if device == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
        # nn.TransformerEncoder's fast path is the fast-path row's only. The compiled peer runs without it too:
        # traced by torch.compile the fused native op hides its matmuls from inductor (measured slower) and
        # ignores CPU autocast.
        torch.backends.mha.set_fastpath_enabled(impl.fastpath)
        # Every setup compiles from scratch (its first-call time is a compilation), no graph reused from a cache.
        torch._inductor.config.fx_graph_cache = False
        torch._functorch.config.enable_autograd_cache = False

    def info(self) -> dict[str, Any]:
        """Versions, threads and precision settings, for the results."""
        info: dict[str, Any] = {
            "torch": torch.__version__,
            "num_threads": torch.get_num_threads(),
            "num_interop_threads": torch.get_num_interop_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "mkldnn": torch.backends.mkldnn.is_available(),
            "mha_fastpath": torch.backends.mha.get_fastpath_enabled(),
            "attention": self.impl.attention,
            "precision": "autocast bfloat16" if self.dtype == "bfloat16" else "float32",
            "segment_ids": takes_segment_ids(Encoder.forward),
        }
        if self.precision is not None:
            info["precision"] = "bfloat16-mixed policy (float32 master weights, explicit bfloat16 rounding)"
        if self.impl.fastpath and self.dtype == "bfloat16":
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
        if self.impl.ceiling:
            return
        torch._dynamo.reset()
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def reset_peak_memory(self) -> None:
        """Before a block of timed calls: the device allocator's peak on a GPU, the process's RSS peak on a CPU."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            memory.reset_peak_rss()

    def peak_memory_bytes(self) -> int | None:
        """The peak since `reset_peak_memory`: torch's CUDA allocator, or the process's resident set."""
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        return memory.peak_rss_bytes()

    def sync(self, _result: object) -> None:
        """Wait for the device's queued work."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def autocast(self) -> contextlib.AbstractContextManager:
        """bfloat16 autocast for a peer that computes in bfloat16 (the fast path holds bfloat16 weights instead; the
        rosetta rows round where their policy says, without autocast)."""
        if self.dtype == "bfloat16" and not self.impl.fastpath and self.precision is None:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def prepare(self, spec: SetupSpec) -> Prepared:
        """The call to time for `spec`: a forward, a training step, or the GEMM probe."""
        if self.impl.ceiling:
            key = (*spec.gemm_shape, spec.torch_compile)
            if key not in self._gemms:  # the same probe serves every mode of a case
                self._gemms = {key: self._gemm(*key)}
            return self._gemms[key]
        model = load(spec.weights, precision=self.precision, device=self.device)
        training = spec.mode == "train"
        self.compile = compile_settings(spec.torch_compile, spec.mode, self.device.type)
        torch._inductor.config.freezing = self.compile.freezing
        module, forward = self._forward(spec.config, model)
        module.train(training)
        if spec.layout is not None:
            return self._lengths(spec, module, forward, model, training)
        inputs = np.load(spec.inputs)
        token_ids = torch.from_numpy(inputs["token_ids"]).to(self.device)
        padding_mask = torch.from_numpy(inputs["padding_mask"]).to(self.device)
        if training:
            return self._train_step(module, forward, token_ids, padding_mask, spec)

        def call() -> torch.Tensor:
            with torch.inference_mode(), self.autocast():
                return forward(token_ids, padding_mask)

        return Prepared(call, self.sync, lambda out: out.float().cpu().numpy(), self._details())

    def _details(self) -> dict[str, Any]:
        if self.compile is None or not self.impl.compiled:
            return {}
        return {"torch_compile": dataclasses.asdict(self.compile)}

    def _compiled(self, function: Forward) -> Forward:
        """`function` under torch.compile with this setup's settings, where this row is compiled."""
        if self.compile is None or not self.impl.compiled:
            return function
        return torch.compile(function, **self.compile.kwargs)

    def _forward(self, config: EncoderConfig, model: Encoder) -> tuple[torch.nn.Module, Forward]:
        """(the module holding the parameters, the forward function to call) for this implementation."""
        if self.impl.model is Model.ROSETTA:
            return model, self._compiled(model)
        if self.impl.model is Model.HF_BERT:
            return hf_bert_peer(config, model)
        if self.impl.model is Model.HF_MODERNBERT:
            return hf_modernbert_peer(config, model)
        embedding, encoder = to_torch_modules(model, enable_nested_tensor=self.impl.fastpath)
        pair = torch.nn.ModuleList([embedding, encoder]).to(self.device)
        if self.impl.fastpath and self.dtype == "bfloat16":
            pair = pair.to(torch.bfloat16)
        scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        table = model.positional.table.to(embedding.weight.dtype)

        def peer(token_ids: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
            x = embedding(token_ids) * scale + table[: token_ids.shape[1]]
            return encoder(x, src_key_padding_mask=padding_mask)

        return pair, self._compiled(peer)

    def _lengths(
        self, spec: SetupSpec, module: torch.nn.Module, padded: Forward, model: Encoder, training: bool
    ) -> Prepared:
        """A pass over every batch of the lengths case's layout: packed rows call `model(token_ids,
        segment_ids=...)`, padded ones the row's own forward with the padding mask."""
        layout = read_layout(spec.inputs, spec.layout or "padded")
        packed = spec.layout == "packed"
        forward = self._compiled(lambda ids, seg: model(ids, segment_ids=seg)) if packed else padded
        batches = []
        for token_ids, segment_ids in zip(layout.token_ids, layout.segment_ids, strict=True):
            ids, seg = torch.from_numpy(token_ids).to(self.device), torch.from_numpy(segment_ids).to(self.device)
            batches.append((ids, seg if packed else seg == 0, seg == 0))
        if not training:

            def call() -> list[torch.Tensor]:
                with torch.inference_mode(), self.autocast():
                    return [forward(ids, second) for ids, second, _ in batches]

            def to_numpy(outputs: list[torch.Tensor]) -> np.ndarray:
                return layout.gather([output.float().cpu().numpy() for output in outputs])

            return Prepared(call, self.sync, to_numpy, self._details())
        optimizer = self._optimizer(module, spec)

        def step(ids: torch.Tensor, second: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            with self.autocast():
                loss = masked_mean_square(forward(ids, second), padding_mask, torch.float32)
            loss.backward()
            optimizer.step()
            return loss.detach()

        def check_losses() -> tuple[float, float]:
            first = step(*batches[0])
            return float(first), float(step(*batches[0]))

        def call() -> torch.Tensor:
            losses = [step(*batch) for batch in batches]
            return losses[0]

        return Prepared(
            call,
            self.sync,
            lambda loss: loss.cpu().numpy(),
            self._details(),
            check_losses,
        )

    def _optimizer(self, module: torch.nn.Module, spec: SetupSpec) -> torch.optim.Optimizer:
        """AdamW with the run's settings (torch's fused kernel, CPU and CUDA alike)."""
        adamw = spec.adamw
        return torch.optim.AdamW(
            module.parameters(),
            lr=adamw.lr,
            betas=(adamw.b1, adamw.b2),
            eps=adamw.eps,
            weight_decay=adamw.weight_decay,
            fused=True,
        )

    def _train_step(
        self,
        module: torch.nn.Module,
        forward: Forward,
        token_ids: torch.Tensor,
        padding_mask: torch.Tensor,
        spec: SetupSpec,
    ) -> Prepared:
        """forward + masked mean-square loss + backward + AdamW (torch's fused kernel, CPU and CUDA alike)."""
        optimizer = self._optimizer(module, spec)

        def call() -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            with self.autocast():
                loss = masked_mean_square(forward(token_ids, padding_mask), padding_mask, torch.float32)
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
        torch._inductor.config.freezing = settings.freezing
        compiled = torch.compile(linear, **settings.kwargs)
        candidates = {
            "torch.matmul": lambda: torch.matmul(a, b),
            f"compiled nn.Linear ({settings.choice})": lambda: compiled(a),
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
