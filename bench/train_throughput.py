#!/usr/bin/env python
"""Training throughput of the DiT: tokens/s and MFU, on random tokens (no data sets needed).

Runs the real training step (forward, NELBO integrand of SPEC 4, backward, clipping, AdamW) on uniform random
tokens with times drawn as in training. Runs from the source tree with only torch installed::

    python bench/train_throughput.py --preset tiny --seq-len 128 --batch 64 --steps 20 --precision bf16

MFU = achieved FLOP/s / peak FLOP/s, with FLOPs per token = 6 N + 12 n_layer d L (PaLM/nanoGPT; see
``basinlab.models.dit.count_flops_per_token``). Peak: ``--peak-tflops``, else MEASURED in the same run: a large
bf16 matmul on a GPU (issue 9: MFU against the measured peak; the datasheet figure is printed beside it), a large
fp32 matmul on a CPU.

``--compile``: ``none`` (eager), ``model`` (``torch.compile`` of the network alone, as ``train.compile`` does
today) or ``step`` (the network, the log-softmax and the loss compiled together, so the ``[B, L, V]`` passes of
the NELBO integrand fuse; backward, clipping and the fused AdamW stay as in the trainer).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from basinlab.diffusion.nelbo import nelbo_integrand, sample_times  # noqa: E402
from basinlab.diffusion.schedules import LogLinearSchedule  # noqa: E402
from basinlab.models.denoiser import autocast, autocast_dtype, resolve_device  # noqa: E402
from basinlab.models.presets import PRESETS, build_model  # noqa: E402

GPU_PEAKS_TFLOPS = {"H100": 989.0, "H200": 989.0, "GH200": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0}


def measure_cpu_peak(n: int = 1024, reps: int = 10) -> float:
    """fp32 matmul FLOP/s of this CPU (all threads torch uses): a practical peak."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def gpu_peak(device: torch.device) -> tuple[float | None, str]:
    name = torch.cuda.get_device_name(device)
    for key, tf in GPU_PEAKS_TFLOPS.items():
        if key in name:
            return tf * 1e12, f"{name}: {tf:g} TFLOP/s bf16 dense (datasheet)"
    return None, f"{name}: unknown peak, pass --peak-tflops"


def measure_gpu_peak(device: torch.device, n: int = 8192, reps: int = 30) -> float:
    """bf16 matmul FLOP/s of this GPU, measured: the best of three timings of ``reps`` ``n x n x n`` products."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(5):
        a @ b
    best = 0.0
    for _ in range(3):
        torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        torch.cuda.synchronize(device)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0))
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="micro", choices=list(PRESETS))
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=64, help="sequences per step")
    ap.add_argument("--steps", type=int, default=10, help="timed steps (after --warmup)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation, allocator)")
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    ap.add_argument("--compile", nargs="?", const="model", default="none", choices=["none", "model", "step"],
                    help="torch.compile: none, model (the network alone) or step (network + loss); bare = model")
    ap.add_argument("--compile-mode", default=None, help="torch.compile mode (default: torch's default)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="peak FLOP/s for MFU, in TFLOP/s")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    amp = autocast_dtype(args.precision, device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    torch.manual_seed(0)
    model = build_model(args.preset, args.vocab, args.seq_len).to(device)
    flops_tok = model.flops_per_token(args.seq_len)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, **({"fused": True} if device.type == "cuda" else {}))
    fwd = torch.compile(model, mode=args.compile_mode) if args.compile == "model" else model
    sched = LogLinearSchedule()

    def loss_fn(z, sigma, x, a, da):
        with autocast(device, amp):
            logits = fwd(z, sigma)
        return nelbo_integrand(x, z, torch.log_softmax(logits.float(), -1), a, da).mean()

    loss_step = torch.compile(loss_fn, mode=args.compile_mode) if args.compile == "step" else loss_fn
    g = torch.Generator().manual_seed(0)
    B, L, V = args.batch, args.seq_len, args.vocab
    x = torch.randint(0, V, (B, L), generator=g).to(device)

    def dev(t: torch.Tensor) -> torch.Tensor:
        """Host -> device without a host synchronisation (pinned, non-blocking), as a fast trainer would."""
        return t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t

    def step() -> None:
        t = sample_times(B, 1e-3, True, g)
        a = sched.alpha(t)
        keep = torch.rand(B, L, generator=g, dtype=torch.float64) < a[:, None]
        z = torch.where(dev(keep), x, dev(torch.randint(0, V, (B, L), generator=g)))
        loss = loss_step(z, dev(sched.sigma(t).float()), x, dev(a), dev(sched.dalpha(t)))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(args.warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    dt = (time.perf_counter() - t0) / args.steps
    tok_s = B * L / dt
    achieved = tok_s * flops_tok

    if args.peak_tflops:
        peak, peak_note = args.peak_tflops * 1e12, f"given: {args.peak_tflops:g} TFLOP/s"
    elif device.type == "cuda":
        sheet, sheet_note = gpu_peak(device)
        peak = measure_gpu_peak(device)
        peak_note = f"MEASURED bf16 matmul peak {peak / 1e12:.0f} TFLOP/s; datasheet {sheet_note}"
        if sheet:
            peak_note += f" (MFU vs datasheet {100 * achieved / sheet:.1f}%)"
    else:
        peak = measure_cpu_peak()
        threads = torch.get_num_threads()
        peak_note = f"MEASURED fp32 matmul peak of this CPU, {peak / 1e9:.1f} GFLOP/s ({threads} threads)"

    if device.type == "cuda":
        dev_name = torch.cuda.get_device_name(device)
    else:
        dev_name = f"cpu ({torch.get_num_threads()} threads)"
    print(f"preset={args.preset} params={model.num_params() / 1e6:.2f}M (non-embedding "
          f"{model.num_params(True) / 1e6:.2f}M) V={V} L={L} batch={B} device={dev_name} "
          f"precision={'bf16' if amp else 'fp32'} compile={args.compile}"
          f"{'' if args.compile_mode is None else ' mode=' + args.compile_mode}")
    print(f"step {dt * 1000:.1f} ms  tokens/s {tok_s:,.0f}  model FLOPs/token {flops_tok / 1e6:.1f}M  "
          f"achieved {achieved / 1e12:.3f} TFLOP/s")
    if peak:
        print(f"MFU {100 * achieved / peak:.1f}%  (peak: {peak_note})")
    else:
        print(f"MFU n/a ({peak_note})")
    if device.type == "cuda":
        print(f"max memory allocated {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
