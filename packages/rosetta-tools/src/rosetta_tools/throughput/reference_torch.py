"""The float64 reference in rosetta_torch (see `reference`)."""

from __future__ import annotations

import numpy as np
import torch

from rosetta_common import load_canonical
from rosetta_common.training import AdamWConfig
from rosetta_tools.throughput.loss_torch import masked_mean_square
from rosetta_torch import from_canonical
from rosetta_torch.training import build_optimizer


def reference(weights: str, inputs: str, device: str, adamw: AdamWConfig | None) -> dict[str, np.ndarray]:
    """`output` of the weights on the inputs, and `losses` before and after one AdamW step (NaN when `adamw` is
    None: a forward-only run, no gradients), in float64 (inputs holding `segment_ids` are packed rows: the model
    takes those instead of the mask)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    config, tensors = load_canonical(weights)
    model = from_canonical(config, {name: value.astype(np.float64) for name, value in tensors.items()}, device=device)
    data = np.load(inputs)
    token_ids = torch.from_numpy(data["token_ids"]).to(device)
    padding_mask = torch.from_numpy(data["padding_mask"]).to(device)
    if "segment_ids" in data:  # packed rows (the lengths case)
        segment_ids = torch.from_numpy(data["segment_ids"]).to(device)
        forward = lambda: model(token_ids, segment_ids=segment_ids)
    else:
        forward = lambda: model(token_ids, padding_mask)
    model.train()  # dropout is 0: train and eval compute the same function
    if adamw is None:
        with torch.no_grad():
            return {"output": forward().cpu().numpy(), "losses": np.full(2, np.nan)}
    optimizer = build_optimizer(adamw, model)
    output = forward()
    loss = masked_mean_square(output, padding_mask, torch.float64)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        loss_after = masked_mean_square(forward(), padding_mask, torch.float64)
    return {
        "output": output.detach().cpu().numpy(),
        "losses": np.array([loss.item(), loss_after.item()], dtype=np.float64),
    }
