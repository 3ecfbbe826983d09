#!/usr/bin/env python
"""Sweep throughput (SPEC 7): runs per hour of a preset with one worker and with several workers on one device.

Runs ``basinlab sweep --preset P [overrides] --devices DEV*K`` into a fresh temporary directory for each ``K`` of
``--workers`` (same runs, same overrides), one after the other, and prints wall time, runs per hour and the ratio
to one worker. Small models leave a GPU mostly idle (a step of the markov preset is launch-bound), so several
workers per GPU should finish more runs per hour; on a CPU, ``cpu*K`` gives each worker ``cores / K`` threads::

    python bench/sweep_throughput.py --preset markov --device cuda:0 --workers 1,4 train.steps=200 probe.m=128
    python bench/sweep_throughput.py --preset markov --device cpu --workers 1,2 train.steps=50 probe.m=32

Runs from the source tree (it puts ``src`` on ``PYTHONPATH`` for the workers).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_sweep(preset: str, device: str, workers: int, overrides: list[str], out: Path) -> tuple[float, int]:
    """Wall seconds of one sweep and the number of runs it finished."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("HF_HUB_OFFLINE", "1")
    if device == "cpu" and workers == 1:
        env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    devices = device if workers == 1 else f"{device}*{workers}"
    cmd = [sys.executable, "-m", "basinlab.cli", "sweep", "--preset", preset, *overrides, "train.progress=false",
           f"--devices={devices}", "--out", str(out), "--quiet"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    dt = time.perf_counter() - t0
    runs = len(list((out / "runs").glob("*/examples.json")))
    return dt, runs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="markov")
    ap.add_argument("--device", default="cuda:0", help="the one device all workers share (cuda:0 or cpu)")
    ap.add_argument("--workers", default="1,4", help="worker counts to compare, comma-separated (first = baseline)")
    ap.add_argument("overrides", nargs="*", help="section.key=value overrides of the preset (shorten it)")
    args = ap.parse_args(argv)
    base = None
    with tempfile.TemporaryDirectory(prefix="sweep_bench_") as tmp:
        cache = f"data.cache_dir={Path(tmp) / 'cache'}"
        for k in [int(w) for w in args.workers.split(",")]:
            dt, runs = run_sweep(args.preset, args.device, k, [*args.overrides, cache], Path(tmp) / f"w{k}")
            rate = runs * 3600 / dt
            base = base or rate
            print(f"preset={args.preset} device={args.device} workers={k}: {runs} runs in {dt:.1f} s, "
                  f"{rate:.1f} runs/hour ({rate / base:.2f}x one worker)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
