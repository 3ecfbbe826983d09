"""CPU time of the masked process's exact oracles (SPEC 2b, 6) at the sizes the sweeps use: one call on masked
copies of training / test sequences at several masking rates, and the one-pass leave-one-out of clean sequences,
beside the uniform oracles' calls on the same sequences.

    python bench/masked_oracles.py            # one thread; about a minute
"""

from __future__ import annotations

import argparse
import time

import torch

from basinlab.data.markov import MarkovSource
from basinlab.diffusion import LogLinearSchedule
from basinlab.oracles import EmpiricalDenoiser, MarkovDenoiser, MaskedEmpiricalDenoiser, MaskedMarkovDenoiser


def _cpu(fn, *args) -> float:
    t0 = time.process_time()
    fn(*args)
    return time.process_time() - t0


def _line(N: int, L: int, name: str, query: str, secs: list[float]) -> str:
    cells = " ".join(f"{v:>{w}.2f}" for v, w in zip(secs, (11, 14, 12, 15), strict=True))
    return f"{N:>5} {L:>4} {name:>5} {query:>12} {cells}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    V, B = 32, args.queries
    src = MarkovSource(vocab_size=V, successors=8, seed=0)
    sched = LogLinearSchedule()
    t = torch.full((B,), 0.25, dtype=torch.float64)
    print(f"CPU seconds per {B} queries, {args.threads} thread(s); Markov source V = {V}, 8 successors")
    print(f"{'N':>5} {'L':>4} {'set':>5} {'query':>12} {'masked mem':>11} {'masked markov':>14} "
          f"{'uniform mem':>12} {'uniform markov':>15}")
    for N, L in ((4096, 32), (2048, 128)):
        train, test = src.sample(N, L), src.sample(B, L)
        mm, mk = MaskedEmpiricalDenoiser(train, V, sched), MaskedMarkovDenoiser(src, sched)
        um, uk = EmpiricalDenoiser(train, V, sched), MarkovDenoiser(src, sched)
        for name, x in (("train", train[:B]), ("test", test)):
            for p in (0.05, 0.25, 1.0):
                z = torch.where(torch.rand(x.shape) < p, V, x)
                zu = torch.where(z == V, torch.randint(0, V, x.shape), z)  # the uniform process's counterpart
                print(_line(N, L, name, f"mask {p:g}", [_cpu(mm, z, t), _cpu(mk, z, t), _cpu(um, zu, t),
                                                       _cpu(uk, zu, t)]))
            tt = torch.full((B,), 1e-5, dtype=torch.float64)
            print(_line(N, L, name, "loo, clean", [_cpu(mm.leave_one_out, x, tt), _cpu(mk.leave_one_out, x, tt),
                                                   _cpu(um, x, tt), _cpu(uk, x, tt)]))

if __name__ == "__main__":
    main()
