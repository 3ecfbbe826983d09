#!/usr/bin/env python
"""Probe throughput: sequence-steps/s of the basin test (SPEC 5) for a DiT preset and for the memoriser (SPEC 6).

A *sequence-step* is one sequence through one denoiser call plus one reverse step (the basin test's unit of work:
``M x (steps + 1)`` of them per ``t``). The DiT has random weights (speed only); the memoriser holds ``N`` random
training sequences (default ``N = 65,536``, ``L = 128``) and is queried with corrupted training rows. Runs from the
source tree with only torch installed::

    python bench/probe_throughput.py --preset micro --seq-len 128 --vocab 8192 --batch 64 --steps 10
    python bench/probe_throughput.py --skip-dit --mem-n 65536 --mem-vocab 32 8192
    python bench/probe_throughput.py --skip-dit --threads 1 --mem-vocab 30522 --mem-ts 0.1 0.5 --mem-reps 2

The memoriser lines give the time of the *irreducible pass* (the ``B x N`` Hamming distances by a chunked dense
comparison, ``EmpiricalDenoiser.distances_dense``) and of a memoriser call on the same queries in the same run, and
their ratio (issue 9's target: at most 3 at N = 65,536, L = 128, V = 30,522, B = 64, t = 0.1 and 0.5).
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


def _timed(fn, device: torch.device, reps: int):
    """(wall seconds per call, CPU seconds of this process per call, last result) of ``fn()``, after one untimed
    call. On a shared CPU the CPU time of a single-threaded run is the steadier figure."""
    out = fn()
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(reps):
        del out
        out = fn()
    _sync(device)
    return (time.perf_counter() - t0) / reps, (time.process_time() - c0) / reps, out


def _legacy_check(train, V: int, z: torch.Tensor, tt: torch.Tensor, out: torch.Tensor) -> str:
    """Compare with the pre-issue-9 memoriser (tests/oracles/_memoriser_legacy.py), float64: the contract is
    1e-6 relative above -30, exact zeros stay -inf, dropped entries below e^-66."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.oracles._memoriser_legacy import LegacyEmpiricalDenoiser

    t0 = time.perf_counter()
    old = LegacyEmpiricalDenoiser(train, V, LogLinearSchedule(), dtype=torch.float64)(z.cpu(), tt.cpu())
    dt = time.perf_counter() - t0
    new = out.cpu().double()
    big = old > -30
    rel = ((new[big] - old[big]).abs() / old[big].abs().clamp_min(1e-300)).max().item()
    absd = (new[big] - old[big]).abs().max().item()
    zeros_ok = bool(torch.isneginf(new[torch.isneginf(old)]).all())
    dropped = torch.isneginf(new) & torch.isfinite(old)
    worst = old[dropped].max().item() if dropped.any() else float("-inf")
    return (f"legacy {dt:.1f} s: above -30 max rel {rel:.2e} max abs {absd:.2e}; exact zeros kept {zeros_ok}; "
            f"{int(dropped.sum())} entries dropped, largest {worst:.1f}")


def bench_memoriser(args: argparse.Namespace, device: torch.device) -> None:
    """Memoriser call vs the irreducible pass (the dense chunked B x N Hamming distances), same run, same queries."""
    for V in args.mem_vocab:
        g = torch.Generator().manual_seed(0)
        train = torch.randint(0, V, (args.mem_n, args.seq_len), generator=g)
        t0 = time.perf_counter()
        mem = EmpiricalDenoiser(train, V, LogLinearSchedule(), device=device, top_k=args.top_k)
        mem.index()
        _sync(device)
        print(f"memoriser N={args.mem_n} L={args.seq_len} V={V}: index built in {time.perf_counter() - t0:.2f} s")
        for kind in args.mem_queries:
            x = train[: args.batch] if kind == "train" else torch.randint(0, V, (args.batch, args.seq_len), generator=g)
            for t in args.mem_ts:
                gz = torch.Generator(device=device).manual_seed(1)
                z = corrupt(x.to(device), float(mem.schedule.alpha(t)), V, generator=gz)
                tt = torch.full((args.batch,), t, dtype=torch.float64, device=device)
                t_dist, c_dist, _ = _timed(lambda m=mem, q=z: m.distances_dense(q), device, args.mem_reps)
                t_mem, c_mem, out = _timed(lambda m=mem, q=z, u=tt: m(q, u), device, args.mem_reps)
                assert not torch.isnan(out).any()
                print(f"memoriser N={args.mem_n} L={args.seq_len} V={V} B={args.batch} {kind} t={t:<6g}: "
                      f"irreducible pass {t_dist:7.3f} s (cpu {c_dist:.3f}), memoriser {t_mem:7.3f} s/call "
                      f"(cpu {c_mem:.3f}), ratio {t_mem / t_dist:5.2f} wall, {c_mem / max(c_dist, 1e-9):5.2f} cpu, "
                      f"{args.batch / t_mem:9.1f} sequence-steps/s", flush=True)
                if args.mem_legacy:
                    print("    " + _legacy_check(train, V, z, tt, out), flush=True)
                del out


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
    ap.add_argument("--mem-queries", nargs="+", default=["train"], choices=["train", "unseen"],
                    help="memoriser queries: corrupted training rows and/or corrupted unseen random rows")
    ap.add_argument("--mem-legacy", action="store_true",
                    help="also run the pre-issue-9 memoriser on the same queries and compare (slow)")
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
