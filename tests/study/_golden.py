"""The pinned toy sweep (tests/study/golden) and the one comparison of a ``results.csv`` with it (issue 18).

Used by tests/study/test_golden.py (the reference sweep against the pinned file, within tolerance, on this CPU's
own kernels and on other kernel sets) and by tests/reliability/test_sweep_faults.py (each faulted sweep against the
uninterrupted reference sweep of the same test session, byte for byte).

What is exact and what is not
-----------------------------
Exact: the header, the number and order of rows, and in every row ``N, model, seed, probe, set, t, metric, n``
(as written, character for character), and which cells are empty.

Within :data:`RTOL` / :data:`ATOL`: ``value, std, ci_low, ci_high``, as ``|got - want| <= ATOL + RTOL * |want|``.
Every number of the toy sweep comes from float32 work (training, the denoiser, the chains' probabilities),
reduced in float64. Different CPUs, and different ATen kernel sets of one CPU (``ATEN_CPU_CAPABILITY`` =
``default`` / ``avx2`` / ``avx512``), order and fuse float32 sums differently, so the last bits move and six
training steps carry that into the weights. Measured on an Intel Xeon (AVX-512), the toy sweep under ``default``
and ``avx2`` against the pinned file (written with ``avx512``), max over the rows of each kind:

=============================  =======  =======  ===============================================
rows (value, std, CI ends)     max abs  max rel  why
=============================  =======  =======  ===============================================
likelihood nelbo (+ parts)     9.9e-08  1.1e-07  O(1) sums of float32 log-probabilities
likelihood ppl_bound           5.3e-06  9.9e-08  exp(nelbo): the same relative error
likelihood nelbo_recon         3.6e-08  2.0e-04  ~1e-3 and ~4e-5: small values of O(1)-scale work
entropy means and their CI     1.6e-07  6.5e-08  per-sequence entropies ~ln V = 2.48 (float32)
entropy std, entropy_gap       7.3e-08  9.7e-02  differences of near-equal O(1) entropies (~1e-6)
membership_auc (micro entropy) 2.2e-02  1.1e-01  one swapped pair of noise-tied scores (below)
basins, fixed_points, novelty  0        0        counts and rates; no sampled chain flipped
all oracle:empirical rows      0        0
=============================  =======  =======  ===============================================

The error is absolute on the scale of the inputs (O(1) nats), not relative to the output: a standard deviation of
near-equal entropies (~1e-5) moves by 1e-7 = 1% of itself. Hence an absolute term. ``ATOL = RTOL = 1e-6`` (about
8 float32 ulps of 1.0) allows 10x or more than every measured difference (1.6e-7 abs; 1.1e-7 rel away from zero;
the AMD EPYC of issue 18 showed the same order) and still fails on any change a person would make on purpose
(tests/study/test_golden.py perturbs one number).

Rows compared by count (:data:`COUNT_TOLERANT`)
-----------------------------------------------
A rate over discrete outcomes moves by a whole count when a float32 change flips one outcome. Sampled chains did
not flip on any kernel set measured (``examples.json`` identical; every rate exact), so rates keep the float
tolerance, which for them means exact. One row kind does flip: the ``membership_auc`` of the ``micro`` network's
``entropy`` score. After six training steps its per-sequence entropies all lie within ~1e-5 of ln 12, so two
sequences 1e-7 apart swap rank when the kernels change: under ``avx2`` one (member, non-member) pair of 64
swapped (AUC 0.390625 -> 0.375 for N = 32), and 2-6 of the 64 pairs are closer than 2-4x the measured
per-sequence noise (8.9e-8 .. 1.5e-7). Those rows allow :data:`PAIR_FLIPS` swapped pairs: with ``m = n/2``
members and as many non-members (``p = m^2`` pairs), one swap moves the AUC by ``1/p``, DeLong's standard error
by at most ``sqrt(2)/p`` (one entry of each placement vector moves by ``1/m``) and each clipped 95% CI end by at
most ``(1 + 1.96 sqrt(2))/p``; ``K`` swaps at most ``K`` times that.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from basinlab.config import load_config
from basinlab.study.sweep import run_sweep

HERE = Path(__file__).parent
GOLDEN = HERE / "golden"
GOLDEN_CSV = GOLDEN / "toy_sweep_results.csv"
#: Two sizes, a one-layer DiT, a few steps, tiny probe settings, both oracles on (the TOY sweep of test_sweep).
TOY = [
    "data.source=markov", "data.seq_len=12", "data.markov_vocab=12", "data.markov_successors=3",
    "data.markov_pool=600", "data.n_test=40",
    "model.n_layer=1", "model.d_model=32", "model.n_head=2", "model.d_cond=16",
    "train.steps=6", "train.batch_size=8", "train.warmup_steps=2", "train.ckpt_every=3", "train.log_every=3",
    "train.objective=ce_redrawn", "train.progress=false", "train.device=cpu",
    "probe.m=8", "probe.steps=4", "probe.ts=[0.25, 0.5]", "probe.n_samples=4", "probe.batch_size=8",
    "sweep.sizes=[8, 32]", "sweep.seeds=[0]", "sweep.transition_t=0.25", "sweep.oracles=true",
]

#: Relative and absolute tolerance of the float columns (see the module docstring for the measurements).
RTOL = 1e-6
ATOL = 1e-6
#: The columns compared within tolerance; every other column is compared exactly, as text.
FLOAT_COLUMNS = ("value", "std", "ci_low", "ci_high")
#: (model, probe, metric) of the rows compared by count: a rank statistic of scores tied to float32 noise.
COUNT_TOLERANT = {("micro", "entropy", "membership_auc")}
#: How many (member, non-member) pairs may swap rank in a :data:`COUNT_TOLERANT` row.
PAIR_FLIPS = 4
_Z975 = 1.959963984540054


def run_toy_sweep(tmp: Path) -> Path:
    """The pinned sweep, in this process, on one thread; returns its output directory ``tmp/sweep``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = load_config(None, [*TOY, f"data.cache_dir={tmp / 'cache'}"])
        return run_sweep(cfg, tmp / "sweep", progress=False)
    finally:
        torch.set_num_threads(before)


def toy_config(tmp: Path) -> Path:
    """The pinned sweep's settings as a YAML file ``tmp/toy.yaml`` (its data cache under ``tmp``)."""
    cfg = load_config(None, [*TOY, f"data.cache_dir={tmp / 'cache'}"])
    path = tmp / "toy.yaml"
    cfg.save(path)
    return path


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a ``basinlab`` child process: this tree's sources first, one thread."""
    src = str(HERE.resolve().parents[1] / "src")
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""),
                **extra)


def sweep_cmd(config: Path, out: Path, *extra: str) -> list[str]:
    """``basinlab sweep CONFIG --out OUT --quiet EXTRA...`` in a child Python."""
    return [sys.executable, "-m", "basinlab.cli", "sweep", str(config), "--out", str(out), "--quiet", *extra]


def _read(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def _pairs(n: str) -> int:
    m = int(n) // 2
    return max(1, m * (int(n) - m))


def _allowed(column: str, want: float, row: dict[str, str]) -> float:
    """How far ``column`` of ``row`` may move: the float tolerance, or :data:`PAIR_FLIPS` swapped pairs."""
    tol = ATOL + RTOL * abs(want)
    if (row.get("model"), row.get("probe"), row.get("metric")) in COUNT_TOLERANT and row.get("n"):
        per_flip = {"value": 1.0, "std": math.sqrt(2.0)}.get(column, 1.0 + _Z975 * math.sqrt(2.0))
        tol = max(tol, PAIR_FLIPS * per_flip / _pairs(row["n"]))
    return tol


def _cell_problem(column: str, got: str, want: str, row: dict[str, str]) -> str | None:
    if column not in FLOAT_COLUMNS or not got or not want:
        return None if got == want else f"{column}: {got!r} != {want!r} (exact)"
    g, w = float(got), float(want)
    if not (math.isfinite(g) and math.isfinite(w)):
        return None if got == want else f"{column}: {got} != {want} (exact: not finite)"
    tol = _allowed(column, w, row)
    return None if abs(g - w) <= tol else f"{column}: {got} != {want} (|diff| {abs(g - w):.3g} > {tol:.3g})"


def compare_results(got: Path, want: Path) -> list[str]:
    """Every difference between two ``results.csv`` beyond what this module allows (empty: they agree)."""
    a, b = _read(Path(got)), _read(Path(want))
    if not a or not b or a[0] != b[0]:
        return [f"header: {a[:1]} != {b[:1]}"]
    if len(a) != len(b):
        return [f"{len(a) - 1} rows != {len(b) - 1} rows"]
    head = b[0]
    problems = []
    for i, (ra, rb) in enumerate(zip(a[1:], b[1:], strict=True), start=2):
        row = dict(zip(head, rb, strict=False))
        found = [p for c, x, y in zip(head, ra, rb, strict=False) if (p := _cell_problem(c, x, y, row))]
        if len(ra) != len(rb):
            found.append(f"{len(ra)} cells != {len(rb)}")
        problems += [f"line {i} ({','.join(rb[:7])}): {p}" for p in found]
    return problems


def assert_results_close(got: Path, want: Path = GOLDEN_CSV) -> None:
    """Fail, naming up to 20 differences, unless ``got`` equals ``want`` as :func:`compare_results` defines."""
    problems = compare_results(got, want)
    assert not problems, f"{len(problems)} differences:\n" + "\n".join(problems[:20])


def _json_problems(got, want, where: str) -> list[str]:
    """Where two parsed ``examples.json`` documents differ: floats (the per-token entropies of issue 17) within
    :data:`RTOL` / :data:`ATOL`, everything else (token ids, texts, keys, lengths) exactly."""
    if isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        same = (math.isnan(got) and math.isnan(want)) or abs(got - want) <= ATOL + RTOL * abs(want)
        return [] if same else [f"{where}: {got!r} != {want!r}"]
    if type(got) is not type(want):
        return [f"{where}: {type(got).__name__} != {type(want).__name__}"]
    if isinstance(want, dict):
        if sorted(got) != sorted(want):
            return [f"{where}: keys {sorted(got)} != {sorted(want)}"]
        return [p for k in want for p in _json_problems(got[k], want[k], f"{where}.{k}")]
    if isinstance(want, list):
        if len(got) != len(want):
            return [f"{where}: length {len(got)} != {len(want)}"]
        pairs = enumerate(zip(got, want, strict=True))
        return [p for i, (g, w) in pairs for p in _json_problems(g, w, f"{where}[{i}]")]
    return [] if got == want else [f"{where}: {got!r} != {want!r}"]


def assert_examples_pinned(out: Path, names: Sequence[str] | None = None) -> None:
    """Each run's ``examples.json`` equals the pinned one: token ids from sampled chains (discrete) and texts
    exactly, the per-token entropies within the tolerance."""
    pinned = sorted(p.name for p in (GOLDEN / "examples").glob("*.json"))
    assert pinned == sorted(f"{d.name}.json" for d in (out / "runs").iterdir())
    for name in names or pinned:
        got = json.loads((out / "runs" / name[: -len(".json")] / "examples.json").read_text())
        problems = _json_problems(got, json.loads((GOLDEN / "examples" / name).read_text()), name)
        assert not problems, "; ".join(problems[:5])


def write_golden(out: Path) -> None:
    """Replace the pinned files with the sweep in ``out`` (``python tests/study/test_golden.py --write``)."""
    shutil.copyfile(out / "results.csv", GOLDEN_CSV)
    for d in (out / "runs").iterdir():
        shutil.copyfile(d / "examples.json", GOLDEN / "examples" / f"{d.name}.json")
