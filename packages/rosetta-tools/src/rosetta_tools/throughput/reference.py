"""The float64 reference every implementation is checked against before it is timed.

`python -m rosetta_tools.throughput.reference DEVICE WEIGHTS LR INPUTS OUT [INPUTS OUT ...]` runs rosetta_torch in
float64 (which the test suite holds to 1e-10 of the NumPy oracle, gradients included) in its own process and
writes, per input file: the output `[B, S, D]` and the losses before and after one AdamW step.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from rosetta_common import load_canonical
from rosetta_torch import from_canonical


def reference(weights: str, inputs: str, device: str, lr: float) -> dict[str, np.ndarray]:
    config, tensors = load_canonical(weights)
    model = from_canonical(config, {name: value.astype(np.float64) for name, value in tensors.items()}, device=device)
    data = np.load(inputs)
    token_ids = torch.from_numpy(data["token_ids"]).to(device)
    padding_mask = torch.from_numpy(data["padding_mask"]).to(device)
    model.train()  # dropout is 0: train and eval compute the same function
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    output = model(token_ids, padding_mask)
    loss = _loss(output, padding_mask)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        loss_after = _loss(model(token_ids, padding_mask), padding_mask)
    return {
        "output": output.detach().cpu().numpy(),
        "losses": np.array([loss.item(), loss_after.item()], dtype=np.float64),
    }


def _loss(output: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
    """The harness's loss, in float64."""
    valid = (~padding_mask).to(output.dtype)[..., None]
    return (output.square() * valid).sum() / (valid.sum() * output.shape[-1])


def main(argv: list[str]) -> int:
    device, weights, lr, *pairs = argv
    torch.backends.cuda.matmul.allow_tf32 = False
    for inputs, out in zip(pairs[::2], pairs[1::2], strict=True):
        np.savez(out, **reference(weights, inputs, device, float(lr)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
