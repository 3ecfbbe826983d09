#!/usr/bin/env python
"""Basin test throughput (SPEC 5): basinlab's eager path against the packed, compiled, bf16 path, same run.

The study's default basin test for a model is 5 values of t x M = 5,000 sequences x the T = 1,000 grid (a chain from
t runs ~t*T steps, plus the final step). This script times, on one device and in one run:

- **eager**: ``basin_test(engine="loop")`` with ``NetworkDenoiser`` as the study uses it today (bf16 autocast on
  CUDA, no compile), on ``--eager-m`` sequences (a subset: the full test takes minutes eagerly);
- **fast**: ``basin_test(engine="packed")`` (all chains of all t packed into full batches, per-chain RNG, no host
  synchronisation per step) with ``NetworkDenoiser(compile=...)`` and the compiled reverse step, on ``--m``
  sequences, after an untimed warm-up that compiles;

and prints sequence-steps/s of each, the projected time of the full default test (``--full-m`` sequences) and the
speed-up. Random weights (speed only). Runs from the source tree with only torch installed::

    python bench/basin_throughput.py --preset tiny --vocab 30522 --seq-len 128 --m 2000 --eager-m 256
    python bench/basin_throughput.py --toy      # seconds on a CPU: micro, V=256, L=16, T=10, no compile
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

from basinlab.diffusion import LogLinearSchedule, n_denoiser_calls  # noqa: E402
from basinlab.models import NetworkDenoiser, build_model, resolve_device  # noqa: E402
from basinlab.probes import basin_test  # noqa: E402


def seq_steps(m: int, ts: list[float], steps: int) -> int:
    """Sequence-steps (denoiser rows) of a basin test of ``m`` sequences."""
    return m * sum(n_denoiser_calls(steps, t) for t in ts)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_basin(den, seqs, ts, steps, batch, engine, device, compile_steps=None) -> tuple[float, float]:
    """(wall s, CPU s of this process) of one basin test. On a shared CPU the CPU time is the steadier figure."""
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    basin_test(den, seqs, ts=ts, steps=steps, batch_size=batch, engine=engine, n_boot=0, compile_steps=compile_steps)
    _sync(device)
    return time.perf_counter() - t0, time.process_time() - c0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--vocab", type=int, default=30522)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=1000, help="T")
    ap.add_argument("--ts", type=float, nargs="+", default=[0.05, 0.1, 0.25, 0.5, 1.0])
    ap.add_argument("--m", type=int, default=2000, help="sequences of the timed fast run")
    ap.add_argument("--eager-m", type=int, default=256, help="sequences of the timed eager run")
    ap.add_argument("--eager-ts", type=float, nargs="+", default=None,
                    help="t of the timed eager run (default --ts; its rate per sequence-step hardly depends on t)")
    ap.add_argument("--full-m", type=int, default=5000, help="M of the default test the projections are for")
    ap.add_argument("--batch", type=int, default=512, help="sequences per denoiser call")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    ap.add_argument("--compile", default="max-autotune-no-cudagraphs",
                    help="torch.compile mode of the fast path's denoiser, or 'none'")
    ap.add_argument("--skip-eager", action="store_true")
    ap.add_argument("--toy", action="store_true", help="CPU smoke size: micro, V=256, L=16, T=10, no compile")
    args = ap.parse_args(argv)
    if args.toy:
        args.preset, args.vocab, args.seq_len, args.steps = "micro", 256, 16, 10
        args.m, args.eager_m, args.full_m, args.batch, args.compile = 32, 32, 32, 32, "none"

    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}")
    torch.manual_seed(0)
    model = build_model(args.preset, args.vocab, args.seq_len).to(device)
    sched = LogLinearSchedule()
    seqs = torch.randint(0, args.vocab, (max(args.m, args.eager_m), args.seq_len))
    full = seq_steps(args.full_m, args.ts, args.steps)
    print(f"preset={args.preset} V={args.vocab} L={args.seq_len} T={args.steps} ts={args.ts} batch={args.batch}; "
          f"default test = {args.full_m} x {len(args.ts)} t = {full:,} sequence-steps")

    rate_e = None
    if not args.skip_eager:
        eager = NetworkDenoiser(model, sched, device=device, precision=args.precision, batch_size=args.batch)
        timed_basin(eager, seqs[: min(8, args.eager_m)], args.ts, 2, args.batch, "loop", device)  # warm-up
        ets = args.eager_ts or args.ts
        dt, ct = timed_basin(eager, seqs[: args.eager_m], ets, args.steps, args.batch, "loop", device)
        rate_e = seq_steps(args.eager_m, ets, args.steps) / dt
        cpu_e = ct / seq_steps(args.eager_m, ets, args.steps)
        print(f"eager  (loop, no compile): M={args.eager_m} ts={ets}: {dt:8.2f} s (cpu {ct:.2f} s), {rate_e:10.1f} "
              f"sequence-steps/s, projected default test {full / rate_e:8.1f} s", flush=True)

    mode = None if args.compile == "none" else args.compile
    fast = NetworkDenoiser(model, sched, device=device, precision=args.precision, batch_size=args.batch,
                           compile=mode or False)
    t0 = time.perf_counter()
    warm = seqs[: max(1, args.batch // len(args.ts) + 1)]  # one full batch of chains: compiles both graphs
    timed_basin(fast, warm, args.ts, 3, args.batch, "packed", device, compile_steps=mode is not None)
    print(f"fast warm-up (compilation: {args.compile}): {time.perf_counter() - t0:.1f} s", flush=True)
    dt, ct = timed_basin(fast, seqs[: args.m], args.ts, args.steps, args.batch, "packed", device,
                         compile_steps=mode is not None)
    rate_f = seq_steps(args.m, args.ts, args.steps) / dt
    print(f"fast   (packed, compile={args.compile}): M={args.m}: {dt:8.2f} s (cpu {ct:.2f} s), {rate_f:10.1f} "
          f"sequence-steps/s, projected default test {full / rate_f:8.1f} s")
    if rate_e:
        cpu_f = ct / seq_steps(args.m, args.ts, args.steps)
        print(f"speed-up fast / eager: {rate_f / rate_e:.2f}x wall, {cpu_e / cpu_f:.2f}x cpu time "
              f"(target >= 4x and <= 90 s for tiny on one H100/H200)")
    if device.type == "cuda":
        print(f"max memory allocated {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
