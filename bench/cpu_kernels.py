"""Two CPU choices of issue 7, measured: the AdamW kernel for the demo's DiT, and when the memoriser's inverted
index pays against the dense Hamming comparison (docs/PERFORMANCE.md).

    python bench/cpu_kernels.py            # one thread; a few seconds
"""

from __future__ import annotations

import argparse
import time

import torch

from basinlab.config import ModelConfig
from basinlab.diffusion.schedules import get_schedule
from basinlab.models.presets import build_model
from basinlab.oracles.memoriser import EmpiricalDenoiser


def adam_kernels(steps: int) -> None:
    """ms per optimiser step of the demo's 2 x 64 DiT with PyTorch's default, ``foreach`` and ``fused`` AdamW."""
    model = build_model(ModelConfig(preset="micro", n_layer=2, d_model=64, n_head=2), vocab_size=32, seq_len=32)
    for kw in ({}, {"foreach": True}, {"fused": True}):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, **kw)
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        for _ in range(20):
            opt.step()
        t0 = time.perf_counter()
        for _ in range(steps):
            opt.step()
        print(f"AdamW {kw or 'default'}: {(time.perf_counter() - t0) / steps * 1e3:.2f} ms/step")


def distance_paths(queries: int) -> None:
    """Seconds of the inverted and the dense distance pass on the same queries, and the cost ratio per entry."""
    torch.manual_seed(0)
    for n, length, vocab, zipf in ((8192, 64, 300, True), (4096, 32, 32, False), (65536, 128, 30522, False)):
        if zipf:  # text-like: a few tokens at most positions
            probs = 1.0 / torch.arange(1, vocab + 1, dtype=torch.float64) ** 1.1
            train = torch.multinomial(probs / probs.sum(), n * length, replacement=True).reshape(n, length)
        else:
            train = torch.randint(0, vocab, (n, length))
        mem = EmpiricalDenoiser(train, vocab, get_schedule("loglinear"))
        z = train[:queries].clone()
        z[:, ::4] = torch.randint(0, vocab, z[:, ::4].shape)
        ix = mem.index()
        keys = z + torch.arange(length) * vocab
        counts = (ix["crow"][keys + 1] - ix["crow"][keys]).reshape(-1)
        t0 = time.perf_counter()
        inv = mem._distances_inverted(keys.reshape(-1), counts, queries)
        t1 = time.perf_counter()
        dense = mem.distances_dense(z)
        t2 = time.perf_counter()
        assert torch.equal(inv, dense)
        share = counts.sum().item() / (queries * n * length)
        per_entry = ((t1 - t0) / counts.sum().item()) / ((t2 - t1) / (queries * n * length))
        print(f"N={n} L={length} V={vocab}: index entries / (B N L) = {share:.4f}, inverted {t1 - t0:.3f} s, "
              f"dense {t2 - t1:.3f} s, inverted/dense cost per entry {per_entry:.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--adam-steps", type=int, default=300)
    ap.add_argument("--queries", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    adam_kernels(args.adam_steps)
    distance_paths(args.queries)


if __name__ == "__main__":
    main()
