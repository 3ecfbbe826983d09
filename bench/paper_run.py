"""Time one run (one N) of the `paper` preset and project the whole grid (issue 7, item 4).

A run is what `basinlab sweep --preset paper` does per N: train the `tiny` DiT, then every probe of SPEC 5 under the
study's protocol (`probe.protocol: paper`, 20000 generated samples on a GPU). With the defaults it runs one full N;
`--train-steps` and `--samples` shorten it and the figures are scaled back linearly (training time per step,
probe time per generated sample: both are fixed-cost loops, so linear scaling is exact up to start-up costs).

    python bench/paper_run.py                                   # one full run at the grid's largest N
    python bench/paper_run.py --train-steps 1000 --samples 1024 # about a tenth of it, projected to the full run
    python bench/paper_run.py --n 64 --train-steps 4 --samples 4 data.seq_len=16 probe.m=4 probe.steps=4  # CPU smoke

Prints the measured seconds, the projected seconds of one full run, and the projected time of the grid: one
network run per N and seed (training time does not depend on N; the probes' train set is min(M, N) sequences, so
the smaller N are a little cheaper and the projection is an upper bound), plus the memoriser's runs if
`--oracle` measured one.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="config overrides of the paper preset, e.g. data.path=...")
    p.add_argument("--n", type=int, help="the N of the run (default: the largest of the preset's grid)")
    p.add_argument("--train-steps", type=int, help="steps to train (default: the preset's train.steps)")
    p.add_argument("--samples", type=int, help="generated samples (default: the preset's, 20000 on a GPU)")
    p.add_argument("--oracle", action="store_true", help="also time the memoriser's run at this N")
    p.add_argument("--out", help="sweep directory (default: a temporary one, removed afterwards)")
    args = p.parse_args()

    from basinlab import probes
    from basinlab.config import load_config
    from basinlab.models import resolve_device
    from basinlab.study.store import ResultStore
    from basinlab.study.sweep import resolve_sizes, run_sweep

    full = load_config("paper", args.overrides)
    sizes = resolve_sizes(full.sweep.sizes)
    n = args.n or max(sizes)
    device = resolve_device(full.train.device)
    full_samples = probes.resolve_n_samples(full.probe.n_samples, full.probe.protocol, device)
    steps = args.train_steps or full.train.steps
    samples = full_samples if args.samples is None else args.samples
    warm = round(full.train.ce_warmup_steps * steps / full.train.steps)
    cfg = load_config("paper", [*args.overrides, f"sweep.sizes=[{n}]", "sweep.seeds=[0]",
                                f"sweep.oracles={str(args.oracle).lower()}", f"train.steps={steps}",
                                f"train.ce_warmup_steps={warm}", f"probe.n_samples={samples}"])

    sample_s = [0.0]  # seconds spent in the probes that scale with the number of generated samples

    def timed(fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                sample_s[0] += time.perf_counter() - t0
        return wrapper

    probes.generate_samples, probes.novelty = timed(probes.generate_samples), timed(probes.novelty)
    out = Path(args.out or tempfile.mkdtemp(prefix="paper_run_"))
    t0 = time.perf_counter()
    run_sweep(cfg, out, progress=False)
    wall = time.perf_counter() - t0
    runs = {r["model"]: r["info"] for r in ResultStore(out).runs()}
    net = runs[full.model.preset]
    per_sample = sample_s[0] / samples if samples else 0.0
    probe_full = net["probe_s"] + per_sample * (full_samples - samples)
    run_full = net["train_s"] * full.train.steps / steps + probe_full
    grid = len(sizes) * len(full.sweep.seeds) * run_full
    print(f"device {device}; N = {n}; measured: {steps} steps in {net['train_s']:.1f} s, probes with {samples} "
          f"samples in {net['probe_s']:.1f} s (samples part {sample_s[0]:.1f} s); sweep wall {wall:.1f} s")
    print(f"projected full run ({full.train.steps} steps, {full_samples} samples): train "
          f"{net['train_s'] * full.train.steps / steps:.0f} s + probes {probe_full:.0f} s = {run_full:.0f} s "
          f"= {run_full / 60:.1f} min per run")
    oracle = runs.get("oracle:empirical")
    extra = len(sizes) * oracle["probe_s"] if oracle else 0.0
    print(f"projected grid ({len(sizes)} sizes x {len(full.sweep.seeds)} seed(s), one device): {grid / 3600:.2f} h "
          f"of network runs" + (f" + {extra / 3600:.2f} h of memoriser runs (its samples not rescaled)"
                                if oracle else " (memoriser runs not timed: --oracle)"))
    if not args.out:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
