"""Exploration: packed 8,192-token rows with and without skipping (not a test)."""
import sys, time
import jax, jax.numpy as jnp, numpy as np, torch
from flax import nnx
import rosetta_torch, rosetta_flax
import rosetta_torch.attention as ta
from rosetta_common import EncoderConfig
from rosetta_common.vectors import random_tensors

S, SEG = 8192, int(sys.argv[1]) if len(sys.argv) > 1 else 512
config = EncoderConfig(vocab_size=1000, d_model=512, n_heads=8, n_layers=6, d_ff=2048, max_len=S, dropout=0.0)
weights = random_tensors(config, seed=0, dtype=np.float32)
ids = np.random.default_rng(0).integers(2, 1000, (1, S))
segments = np.repeat(np.arange(1, S // SEG + 1), SEG)[None]
torch.set_num_threads(2)

def timed(f, n=3):
    f(); ts = []
    for _ in range(n):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return min(ts)

tm = rosetta_torch.from_canonical(config, weights).eval()
tids, tseg = torch.as_tensor(ids), torch.as_tensor(segments)
with torch.no_grad():
    on = timed(lambda: tm(tids, segment_ids=tseg))
    real = ta.only_needed_keys
    ta.only_needed_keys = lambda k, v, a: (k, v, a)
    off = timed(lambda: tm(tids, segment_ids=tseg))
    ta.only_needed_keys = real
    dense = timed(lambda: tm(tids))
print(f"torch eager, S={S}, segments of {SEG}: skip {S/on:,.0f} tok/s, no skip {S/off:,.0f}, dense one sequence {S/dense:,.0f}; skip/no-skip {off/on:.2f}x")

fm = rosetta_flax.from_canonical(config, weights); fm.eval()
fids, fseg = jnp.asarray(ids), jnp.asarray(segments)
def run(model, ids, seg):
    return model(ids, segment_ids=seg)
on = timed(lambda: nnx.jit(run)(fm, fids, fseg).block_until_ready())
real_cond = jax.lax.cond
jax.lax.cond = lambda pred, t, f, *ops: t(*ops)
off = timed(lambda: nnx.jit(lambda m, i, s: m(i, segment_ids=s))(fm, fids, fseg).block_until_ready())
jax.lax.cond = real_cond
dense = timed(lambda: nnx.jit(lambda m, i: m(i))(fm, fids).block_until_ready())
print(f"flax jit, S={S}, segments of {SEG}: skip {S/on:,.0f} tok/s, no skip {S/off:,.0f}, dense one sequence {S/dense:,.0f}; skip/no-skip {off/on:.2f}x")
