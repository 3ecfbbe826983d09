#!/usr/bin/env python
"""Probe throughput: sequence-steps/s of the basin test (SPEC 5) for a DiT preset and for the memoriser (SPEC 6).

A *sequence-step* is one sequence through one denoiser call plus one reverse step (the basin test's unit of work:
``M x (steps + 1)`` of them per ``t``). The DiT has random weights (speed only); the memoriser holds ``N`` random
training sequences (default ``N = 65,536``, ``L = 128``) and is queried with corrupted training rows. Runs from the
source tree with only torch installed::

    python bench/probe_throughput.py --preset micro --seq-len 128 --vocab 8192 --batch 64 --steps 10
    python bench/probe_throughput.py --skip-dit --mem-n 65536 --mem-vocab 32 8192
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

from basinlab.diffusion.process import corrupt  # noqa: E402
from basinlab.diffusion.sampler import reverse_chain  # noqa: E402
from basinlab.diffusion.schedules import LogLinearSchedule  # noqa: E402
from basinlab.oracles.memoriser import EmpiricalDenoiser  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def chain_rate(denoiser, x: torch.Tensor, t_start: float, steps: int, greedy: bool, device: torch.device) -> float:
    """Sequence-steps/s of one reverse chain from ``t_start`` over a ``steps``-point grid (calls x batch / s)."""
    sched = denoiser.schedule
    g = torch.Generator(device=device).manual_seed(0)
    z = corrupt(x, float(sched.alpha(t_start)), denoiser.vocab_size, generator=g)
    calls = [0]
    _sync(device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        reverse_chain(denoiser, z, t_start, steps, greedy=greedy, generator=g,
                      callback=lambda *_: calls.__setitem__(0, calls[0] + 1))
    _sync(device)
    return calls[0] * x.shape[0] / (time.perf_counter() - t0)


def bench_dit(args: argparse.Namespace, device: torch.device) -> None:
    from basinlab.models.denoiser import NetworkDenoiser
    from basinlab.models.presets import build_model

    torch.manual_seed(0)
    model = build_model(args.preset, args.vocab, args.seq_len)
    den = NetworkDenoiser(model, LogLinearSchedule(), device=device, precision=args.precision,
                          batch_size=args.batch)
    x = torch.randint(0, args.vocab, (args.batch, args.seq_len), device=device)
    chain_rate(den, x, 1.0, 2, False, device)  # warm-up
    for greedy in (False, True):
        rate = chain_rate(den, x, 1.0, args.steps, greedy, device)
        kind = "greedy" if greedy else "stochastic"
        print(f"dit {args.preset:6s} L={args.seq_len} V={args.vocab} B={args.batch} {kind:10s}: "
              f"{rate:10.1f} sequence-steps/s")


def bench_memoriser(args: argparse.Namespace, device: torch.device) -> None:
    for V in args.mem_vocab:
        g = torch.Generator().manual_seed(0)
        train = torch.randint(0, V, (args.mem_n, args.seq_len), generator=g)
        t0 = time.perf_counter()
        mem = EmpiricalDenoiser(train, V, LogLinearSchedule(), device=device, top_k=args.top_k)
        mem._sparse_blocks()
        _sync(device)
        build = time.perf_counter() - t0
        print(f"memoriser N={args.mem_n} L={args.seq_len} V={V}: index built in {build:.2f} s")
        x = train[: args.batch].to(device)
        for t in args.mem_ts:
            z = corrupt(x, float(mem.schedule.alpha(t)), V, generator=torch.Generator(device=device).manual_seed(1))
            tt = torch.full((args.batch,), t, dtype=torch.float64, device=device)
            mem(z, tt)  # warm-up
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(args.mem_reps):
                out = mem(z, tt)
            _sync(device)
            dt = (time.perf_counter() - t0) / args.mem_reps
            assert not torch.isnan(out).any()
            print(f"memoriser N={args.mem_n} L={args.seq_len} V={V} B={args.batch} t={t:<6g}: {dt:7.3f} s/call, "
                  f"{args.batch / dt:9.1f} sequence-steps/s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="micro")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=8192, help="DiT vocabulary")
    ap.add_argument("--batch", type=int, default=64, help="sequences per denoiser call")
    ap.add_argument("--steps", type=int, default=10, help="T of the timed DiT chains (from t = 1)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--mem-n", type=int, default=65_536, help="memoriser training sequences N")
    ap.add_argument("--mem-vocab", type=int, nargs="+", default=[32], help="memoriser vocabularies to time")
    ap.add_argument("--mem-ts", type=float, nargs="+", default=[1e-5, 0.1, 0.5], help="times t of the queries")
    ap.add_argument("--mem-reps", type=int, default=3)
    ap.add_argument("--top-k", type=int, default=None, help="memoriser top-K (default exact)")
    ap.add_argument("--skip-dit", action="store_true")
    ap.add_argument("--skip-memoriser", action="store_true")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}")
    if not args.skip_dit:
        bench_dit(args, device)
    if not args.skip_memoriser:
        bench_memoriser(args, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
