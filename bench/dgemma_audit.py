#!/usr/bin/env python
"""Throughput of auditing a DiffusionGemma directory (issue 23): the leave-one-out entropy pass (one forward per
canvas at ``t = 1e-5``, SPEC 5) and the basin test (``--steps`` reverse steps from ``--t``), in canvas tokens per
second, and the peak memory (the GPU's allocator peak on CUDA, the process's peak RSS on a CPU).

DIR is a Hugging Face directory of a DiffusionGemma (``model_type: diffusion_gemma``), loaded in place as every
``--checkpoint DIR`` is (fp32 on a CPU, bf16 on a GPU; ``device_map`` over several GPUs when one cannot hold it);
without DIR a tiny random one (text width 64, 2 layers, 4 experts, vocabulary 128, canvas 32) is made in a
temporary directory. The texts are random canvases of the model's vocabulary (the cost does not depend on them).

``--canvases K`` also times the whole audit (``audit_canvases``: entropy, basin test, fixed points, NELBO) of
``--n`` texts of one canvas and of ``--n`` texts of ``K`` canvases each (SPEC 2c block layout: canvas ``k`` after
``[BOS]`` + the text's earlier tokens, each such prompt scored in a batch of its own), in text tokens per second::

    python bench/dgemma_audit.py                                   # the tiny model, on the CPU
    python bench/dgemma_audit.py --canvases 4 --n 16               # and the audit of 4-canvas texts
    python bench/dgemma_audit.py path/to/diffusiongemma --device cuda --n 64 --batch-size 8
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

import basinlab  # noqa: E402
from basinlab.probes.basins import basin_test  # noqa: E402
from basinlab.probes.entropy import entropy_per_token  # noqa: E402


def tiny_dir(root: Path) -> Path:
    from basinlab.models.diffusion_gemma import hf_classes, tiny_config

    torch.manual_seed(0)
    hf_classes()[1](tiny_config(128, 32)).save_pretrained(str(root / "tiny"))
    return root / "tiny"


def peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", nargs="?", help="a DiffusionGemma directory (default: a tiny random one)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--n", type=int, default=64, help="canvases audited (default 64)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=25, help="reverse steps of the basin test (default 25)")
    ap.add_argument("--t", type=float, default=0.25, help="corruption level of the basin test (default 0.25)")
    ap.add_argument("--canvases", type=int, default=0, help="also time the audit of texts of this many canvases")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.dir) if args.dir else tiny_dir(Path(tmp))
        start = time.perf_counter()
        tm = basinlab.load(path, device=args.device, batch_size=args.batch_size)
        load_s = time.perf_counter() - start
        dev = tm.denoiser.device
        g = torch.Generator().manual_seed(0)
        seqs = torch.randint(0, tm.vocab_size, (args.n, tm.seq_len), generator=g)
        entropy_per_token(tm.denoiser, seqs[: args.batch_size], 1e-5, batch_size=args.batch_size)  # warm-up
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        h_s = timed(lambda: entropy_per_token(tm.denoiser, seqs, 1e-5, batch_size=args.batch_size), dev)
        b_s = timed(lambda: basin_test(tm.denoiser, seqs, ts=(args.t,), steps=args.steps, n_boot=10,
                                       batch_size=args.batch_size), dev)
        tokens = args.n * tm.seq_len
        n_params = sum(p.numel() for p in tm.model.parameters())
        print(f"model {path} ({n_params / 1e6:,.1f}M parameters, V={tm.vocab_size}, canvas {tm.seq_len}) on {dev}, "
              f"{tm.denoiser.amp_dtype or torch.float32}; loaded in {load_s:.1f} s")
        print(f"leave-one-out entropy: {tokens / h_s:,.0f} tokens/s ({args.n} canvases, batch {args.batch_size})")
        print(f"basin test at t={args.t}, {args.steps} steps: {tokens / b_s:,.0f} tokens/s "
              f"({tokens * (args.steps + 1) / b_s:,.0f} token-forwards/s)")
        print(f"peak memory: {peak_bytes(dev) / 2**30:.2f} GiB ({'GPU allocator' if dev.type == 'cuda' else 'RSS'})")
        if args.canvases > 0:
            for k in sorted({1, args.canvases}):
                texts_s = timed(lambda k=k: audit_texts(tm, args, k), dev)
                print(f"audit of {args.n} texts of {k} canvas(es), {args.steps} steps: "
                      f"{args.n * k * tm.seq_len / texts_s:,.0f} text tokens/s ({texts_s:.1f} s)")


def audit_texts(tm, args: argparse.Namespace, k: int) -> None:
    """``audit_canvases`` of ``args.n`` random texts of ``k`` full canvases each (ids clear of the special ones)."""
    from basinlab.models.canvases import lay_out
    from basinlab.probes.canvases import audit_canvases

    g = torch.Generator().manual_seed(1)
    low = max(tm.special_ids()) + 1
    texts = torch.randint(low, tm.vocab_size, (args.n, k * tm.seq_len), generator=g).tolist()
    net = tm.model
    layout = lay_out(texts, tm.seq_len, net.bos_id, net.pad_id, tm.special_ids())
    audit_canvases(tm.denoiser, layout, ts=(args.t,), steps=args.steps, batch_size=args.batch_size)


if __name__ == "__main__":
    main()
