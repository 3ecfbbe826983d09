"""basinlab's ``paper`` protocol beside the study's own evaluation routines, on one network (issue 16).

The study (Lemon-cmd/Associative-Memory-and-Language-Diffusion) evaluates its Duo models with ``eval_fixed_point.py``
(basin and fixed-point tests), ``eval_entropy_multi.py`` (conditional entropy and its gap), ``generate_multi.py``
(samples), ``eval_entropy_overtime.py`` (trajectory statistics) and ``trainer_base.py``/``algo.py`` (Duo's model:
noise, ``q_xt``, the posterior, the NELBO integrand). This script imports those modules from ``--study-dir``, puts
basinlab's trained network in as the study model's ``backbone`` and runs both on the same sequences:

- deterministic quantities, compared exactly (to float32 rounding): ``x_θ``, the posterior ``q(z_s | z_t, x_θ)``,
  the NELBO integrand at fixed ``z_t``, the chain's grid entry for every ``t``;
- measured quantities (each side draws its own corruptions and chains), compared within 3 standard errors
  ``sqrt(se_study² + se_basinlab²)`` of the per-sequence values: on ``train``, ``test`` and ``random``, the basin
  test at every ``t`` (recovery, unstable rate, exact match, the entropy of the four token groups), fixed points at
  every ``t`` and the conditional entropy at every ``t`` (basinlab's ``t_grid``), the entropy at ``t = 1e-5`` and
  the gap of generated samples against ``train``, the NELBO, and the trajectory statistics along the chain from
  ``t = 1`` (the study's loop run one sequence per batch, so that its means are per-sequence). The NELBO is Duo's
  validation loss (``TrainerBase._loss``: the integrand summed over the dataloader's attention mask, divided by its
  count) beside ``paper``'s, both over the attention mask basinlab's data gives (BOS/EOS in, PAD out): the
  positions counted are compared exactly, the token-weighted means of the per-sequence values within 3 standard
  errors of their per-sequence differences (both sides score the same sequences).

The study's model is built without its ``__init__`` (which builds the study's own DiT and loads GPT-2 for its
metrics): the script sets the attributes ``TrainerBase.__init__`` sets, with the study's ``LogLinear`` noise and
its sampling defaults (``configs/config.yaml``: ancestral predictor, float64 posterior, ``p_nucleus = 1``; the
basin test ends with ``noise_removal: ancestral``, generation with ``greedy`` as in ``generate_multi.sh``). Its
``dataloader``, ``metrics``, ``models`` and ``utils`` modules are replaced by small stand-ins when they cannot be
imported: none of their code is on the measured path (``utils.print_nans`` and ``utils.get_logger`` excepted,
whose stand-ins print NaNs and log). Needs the study's stack: ``pip install lightning hydra-core``.

    python bench/study_side_by_side.py --study-dir ../Associative-Memory-and-Language-Diffusion --checkpoint R
    python bench/study_side_by_side.py --study-dir S --checkpoint R --m 128 --steps 25 --samples 256 --json out.json

Prints one line per comparison and a verdict; exits 1 if a deterministic quantity differs or a measured one lies
beyond 3 standard errors. With some 160 measured lines, about 0.4 lie beyond 3 by chance alone (more on the
trajectory, whose seven statistics of the same chains move together): rerun with another ``--seed`` to tell chance
from a difference, which stays where it is. Uniform-noise models with the log-linear schedule (``eps = 1e-3``)
only: the study's.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import math
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import torch

STUDY_MODULES = ("trainer_base", "algo", "eval_fixed_point", "eval_entropy_multi", "eval_entropy_overtime",
                 "generate_multi")
STAND_INS = ("dataloader", "metrics", "models", "utils")
ENTROPY_T = 1e-5  # eval_entropy_multi.py's default eval_times, and basinlab's probe.entropy_t
Z_MAX = 3.0
MIN_GROUP = 5  # sequences with tokens in a basin-outcome group, on each side, before its entropy is compared
ATOL = 1e-5  # deterministic quantities: float32 rounding of one forward pass


# ---- the study's code ---------------------------------------------------------------------------------------------


def _stand_in(name: str) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__doc__ = f"basinlab bench stand-in for the study's {name} module (not on the measured path)"
    if name == "utils":
        def print_nans(tensor, name):
            if torch.isnan(tensor).any():
                print(name, tensor)

        def top_k_top_p_filtering(*args, **kwargs):
            raise NotImplementedError("nucleus sampling is off here (p_nucleus = 1)")

        mod.print_nans, mod.top_k_top_p_filtering = print_nans, top_k_top_p_filtering
        mod.get_logger = lambda name=__name__, level=logging.INFO: logging.getLogger(name)
    return mod


def import_study(study_dir: Path) -> dict[str, types.ModuleType]:
    """The study's modules, imported from ``study_dir``; stand-ins for its data/metrics/backbone/utils modules when
    they are missing there or cannot be imported (they pull in flash-attn, timm, GPT-2 downloads...)."""
    missing = [n for n in STUDY_MODULES if not (study_dir / f"{n}.py").exists()]
    if missing:
        sys.exit(f"error: {study_dir} lacks the study's {', '.join(m + '.py' for m in missing)}; pass --study-dir "
                 "a checkout of Lemon-cmd/Associative-Memory-and-Language-Diffusion")
    sys.path.insert(0, str(study_dir))
    for name in STAND_INS:
        if (study_dir / f"{name}.py").exists() or (study_dir / name).is_dir():
            try:
                importlib.import_module(name)
                continue
            except Exception:  # any failure of a module off the measured path: use the stand-in
                sys.modules.pop(name, None)
        sys.modules[name] = _stand_in(name)
    return {n: importlib.import_module(n) for n in STUDY_MODULES}


def study_config(steps: int, seed: int, batch_size: int):
    """The study's settings (its configs/config.yaml and the eval scripts' ``+eval.*`` options)."""
    from omegaconf import OmegaConf

    return OmegaConf.create({
        "seed": seed,
        "sampling": {"predictor": "ancestral", "steps": steps, "noise_removal": "ancestral", "use_float64": True,
                     "p_nucleus": 1.0, "deterministic_posterior": False},
        "training": {"antithetic_sampling": True, "sampling_eps": 1e-3},
        "eval": {"batch_size": batch_size, "perform_perturb": True, "skip_special_tokens": False},
    })


class _Tokenizer:
    """``decode`` for ``_compare_sequences``'s texts (not measured): basinlab's decoding of the run's data."""

    def __init__(self, data):
        self.data = data

    def decode(self, ids, skip_special_tokens=False):
        return self.data.decode(torch.as_tensor(ids).reshape(1, -1))[0]


def study_model(study, tm, data, cfg):
    """The study's ``DUO_BASE`` with basinlab's network as its backbone: the attributes ``TrainerBase.__init__``
    sets (trainer_base.py), its ``__init__`` bypassed (it builds the study's DiT and loads GPT-2 for metrics)."""
    import lightning as L

    cls = study["algo"].DUO_BASE
    m = cls.__new__(cls)
    L.LightningModule.__init__(m)
    m.config, m.tokenizer, m.vocab_size = cfg, _Tokenizer(data), int(tm.vocab_size)
    m.sampler = cfg.sampling.predictor
    m.antithetic_sampling = cfg.training.antithetic_sampling
    m.parameterization, m.T, m.ema, m.ignore_bos, m.loss_type = "mean", 0, None, False, "elbo"
    m.backbone = tm.model
    m.deterministic_posterior = cfg.sampling.deterministic_posterior
    m.num_tokens, m.p_nucleus = int(tm.seq_len), cfg.sampling.p_nucleus
    m.noise = study["trainer_base"].LogLinear()
    m.sampling_eps = cfg.training.sampling_eps
    m.time_conditioning = bool(getattr(tm.model, "time_conditioning", True))
    m.neg_infinity = -1000000.0
    return m.eval()


def study_evaluator(study, model, cfg):
    """One object with the methods of the study's four evaluator classes (all are ``BasinEvaluator``s)."""
    cls = type("StudyEvaluator", (study["eval_entropy_multi"].StabilityEvaluator,
                                  study["eval_entropy_overtime"].StabilityOverTime,
                                  study["generate_multi"].SyntheticGenerator), {})
    ev = object.__new__(cls)
    ev.config, ev.device, ev.model, ev.tokenizer, ev.eps = cfg, "cpu", model, model.tokenizer, 1e-5
    ev.logger = logging.getLogger("study")
    return ev


class _Rows:
    """What the study's loops use of a ``datasets.Dataset`` in torch format: ``len``, ``select(indices)`` and
    ``["input_ids"]`` as a tensor (datasets >= 4 returns a lazy ``Column`` there, which the study's code predates)."""

    def __init__(self, ids: torch.Tensor) -> None:
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, indices) -> _Rows:
        return _Rows(self.ids[torch.as_tensor(list(indices), dtype=torch.long)])

    def __getitem__(self, key: str) -> torch.Tensor:
        if key != "input_ids":
            raise KeyError(key)
        return self.ids


def use_set(ev, seqs: torch.Tensor) -> None:
    ev.eval_subset = _Rows(seqs)
    ev.num_samples = len(seqs)


# ---- the study's measurements ---------------------------------------------------------------------------------------


def study_chain_entry(ev, model, t: float, steps: int, seq: torch.Tensor) -> int:
    """The grid index where the study's ``_run_reverse_process`` enters from ``t``, read off its backbone calls on
    one sequence: ``steps - entry`` reverse steps, the final step and the entropy pass."""
    calls = [0]
    hook = model.backbone.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    old = ev.config.sampling.steps
    try:
        ev.config.sampling.steps = steps
        with torch.no_grad():
            ev._run_reverse_process(seq[None], t)
    finally:
        hook.remove()
        ev.config.sampling.steps = old
    return steps - (calls[0] - 2)


def study_basins(ev, seqs: torch.Tensor, ts: list[float], perturb: bool) -> dict[float, dict[str, np.ndarray]]:
    """``perturb_and_restore`` at every ``t``: eval_fixed_point.sh's basin test (``perturb=True``, drawn chains) or
    eval_greedy.sh's fixed-point test (``perturb=False``, ``deterministic_posterior``: argmax chains). Per-sequence
    columns of its frame."""
    use_set(ev, seqs)
    ev.config.eval.perform_perturb = perturb
    ev.config.sampling.noise_removal = "ancestral"
    ev.model.deterministic_posterior = not perturb  # eval_greedy.sh: perform_perturb=false, deterministic_posterior
    out = {}
    try:
        for t in ts:
            df, _ = ev.perturb_and_restore(t)
            out[t] = {c: df[c].to_numpy(dtype=np.float64) for c in df.columns
                      if c not in ("original", "perturbed", "restored")}
    finally:
        ev.model.deterministic_posterior = False
    return out


def study_entropy(ev, seqs: torch.Tensor, t: float, batch_size: int) -> np.ndarray:
    """``get_cond_entropy`` at ``t`` through ``run_eval_loop``: the per-sequence mean over every position."""
    use_set(ev, seqs)
    h = torch.cat(ev.run_eval_loop(ev.eval_subset, len(seqs), batch_size, t))
    return h.double().mean(1).numpy()


def study_samples(ev, n: int, seq_len: int, batch_size: int) -> torch.Tensor:
    """``generate_batch`` (a chain from ``t = 1`` ending with ``noise_removal: greedy``, as generate_multi.sh)."""
    ev.config.sampling.noise_removal = "greedy"
    try:
        return torch.cat([ev.generate_batch(min(batch_size, n - i), seq_len) for i in range(0, n, batch_size)])
    finally:
        ev.config.sampling.noise_removal = "ancestral"


def study_nelbo(model, seqs: torch.Tensor, attention_mask: torch.Tensor, repeats: int,
                batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Duo's validation loss, ``TrainerBase._loss`` run on each batch with its attention mask: ``Diffusion.nll``
    (antithetic ``t`` in ``[eps, 1]`` per batch, ``q_xt``, ``nll_per_token``: the integrand alone, no
    reconstruction or prior term), then ``(loss * mask).sum() / mask.sum()`` over the batch. The per-token loss
    is read off the ``nll`` call inside ``_loss``; per sequence it is averaged over the sequence's mask and the
    ``repeats`` draws. Returns the per-sequence values and their token counts: their token-weighted mean is the
    study's loss (checked on every batch against the ``Loss.loss`` that ``_loss`` returns).

    ``_sample_t`` gives row ``k`` of a batch of ``n`` a ``t`` in the stratum ``[k/n, (k+1)/n)`` (scaled to
    ``[eps, 1]``) every time, so that a sequence kept in place would see one narrow range of ``t`` in all its draws:
    the rows are put in a fresh random order for each draw (the batch's loss, a mean over its rows, is unchanged in
    law), so that a sequence's draws spread over ``[eps, 1]`` as basinlab's do."""
    total = torch.zeros(len(seqs), dtype=torch.float64)
    n_tok = attention_mask.sum(1).to(torch.float64)
    calls = []
    study_nll = model.nll

    def recorded_nll(*args, **kwargs):
        calls.append(study_nll(*args, **kwargs))
        return calls[-1]

    model.nll = recorded_nll  # the instance attribute shadows the method that _loss calls
    try:
        with torch.no_grad():
            for _ in range(repeats):
                order = torch.randperm(len(seqs))
                for i in range(0, len(seqs), batch_size):
                    rows = order[i:i + batch_size]
                    m = attention_mask[rows].long()  # the dataloader's mask (an int tensor)
                    calls.clear()
                    batch_loss = float(model._loss(seqs[rows], m).loss)
                    per_seq = (calls[0].double() * m).sum(1) / m.sum(1)
                    ours = float((per_seq * m.sum(1)).sum() / m.sum())
                    if not math.isclose(batch_loss, ours, rel_tol=1e-5, abs_tol=1e-6):
                        raise RuntimeError(f"the study's batch loss {batch_loss} is not the token-weighted mean "
                                           f"{ours} of its per-sequence values")
                    total[rows] += per_seq
    finally:
        del model.nll
    return (total / repeats).numpy(), n_tok.numpy()


def study_trajectory(ev, model, seqs: torch.Tensor) -> dict[float, dict[str, tuple[float, float]]]:
    """eval_entropy_overtime.py's loop (``q_xt`` at ``t = 1``, then ``track_trajectory``) run one sequence per batch,
    so that its per-batch means are per-sequence values: ``{t: {stat: (mean, standard error)}}`` over sequences
    (the study's ``groupby("t").mean()`` of equal batches is the same mean)."""
    import pandas as pd

    frames = []
    for x0 in seqs:
        _, alpha_t = model.noise(torch.ones(1, 1))
        frames.append(ev.track_trajectory(model.q_xt(x0[None], alpha_t), 1.0, 1e-5))
    df = pd.concat(frames, ignore_index=True)
    return {float(t): {m: _stats(g[m].to_numpy())[:2] for m in TRAJ} for t, g in df.groupby("t")}


# ---- basinlab's measurements ----------------------------------------------------------------------------------------


def basinlab_rows(tm, data, n_train: int, args, ts: list[float]) -> tuple[dict, dict]:
    """``run_suite`` under ``probe.protocol: paper`` (raw weights, its default), every probe the study has."""
    from basinlab.probes import run_suite

    pc = dataclasses.replace(tm.config.probe, protocol="paper", weights=None, m=args.m, ts=list(ts), steps=args.steps,
                             batch_size=args.batch_size, n_samples=args.samples, entropy_t=ENTROPY_T, t_start=1.0,
                             t_grid=True, trajectory_stats=True, gen_ppl_model=None, quick=False, remask=0.0)
    res = run_suite(tm.denoiser, data, pc, n_train=n_train, seed=args.seed,
                    probes=("basins", "fixed_points", "entropy", "likelihood", "t_grid", "trajectory"))
    rows = {(r["probe"], r["set"], None if r["t"] is None else round(r["t"], 9), r["metric"]): r for r in res.rows}
    return rows, res.arrays


def _se(row: dict) -> float:
    return 0.0 if not row.get("std") or not row.get("n") else row["std"] / math.sqrt(row["n"])


def _weighted(x: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Token-weighted mean of per-sequence values and its ratio-estimator standard error
    ``sqrt(n/(n-1) Σ w²(x - μ)²) / Σ w`` (the one ``basinlab.probes.results.summarize`` gives its interval)."""
    x, w = np.asarray(x, dtype=np.float64), np.asarray(w, dtype=np.float64)
    mu = float(np.sum(w * x) / np.sum(w))
    return mu, float(math.sqrt(x.size / (x.size - 1) * np.sum(w**2 * (x - mu) ** 2)) / np.sum(w))


def _stats(x: np.ndarray) -> tuple[float, float, int]:
    x = np.asarray(x, dtype=np.float64)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return math.nan, 0.0, 0
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else 0.0, int(x.size)


# ---- the comparison -------------------------------------------------------------------------------------------------


class Table:
    """Comparison lines: ``exact`` (a difference against a tolerance) or ``measured`` (a z-score)."""

    def __init__(self) -> None:
        self.lines: list[dict] = []

    def exact(self, what: str, set_name: str, t, study: float, ours: float, tol: float) -> None:
        diff = abs(float(study) - float(ours))
        self.lines.append({"kind": "exact", "quantity": what, "set": set_name, "t": t, "study": float(study),
                           "basinlab": float(ours), "diff": diff, "tol": tol, "ok": bool(diff <= tol)})

    def measured(self, what: str, set_name: str, t, study: tuple[float, float], ours: tuple[float, float],
                 se_paired: float | None = None) -> None:
        """``se_paired``: the standard error of the difference from per-sequence differences, where both sides
        measured the same sequences (it replaces ``sqrt(se_study² + se_basinlab²)``, which is kept as
        ``se_unpaired``)."""
        (s, se_s), (b, se_b) = study, ours
        se_unpaired = math.sqrt(se_s**2 + se_b**2)
        se = se_unpaired if se_paired is None else se_paired
        z = 0.0 if s == b else (s - b) / se if se > 0 else math.inf
        self.lines.append({"kind": "measured", "quantity": what, "set": set_name, "t": t, "study": s, "basinlab": b,
                           "se": se, "se_study": se_s, "se_basinlab": se_b, "se_unpaired": se_unpaired, "z": z,
                           "ok": bool(abs(z) <= Z_MAX)})

    def print(self) -> None:
        print(f"{'quantity':<34} {'set':<7} {'t':>8} {'study':>10} {'basinlab':>10} {'diff':>9} {'SE / tol':>9} "
              f"{'z':>6}  ok")
        for r in self.lines:
            t = "" if r["t"] is None else f"{r['t']:g}"
            d = r["study"] - r["basinlab"]
            scale = r["tol"] if r["kind"] == "exact" else r["se"]
            z = "exact" if r["kind"] == "exact" else f"{r['z']:+.2f}"
            print(f"{r['quantity']:<34} {r['set']:<7} {t:>8} {r['study']:>10.5f} {r['basinlab']:>10.5f} {d:>+9.2e} "
                  f"{scale:>9.2e} {z:>6}  {'yes' if r['ok'] else 'NO'}")
        exact = [r for r in self.lines if r["kind"] == "exact"]
        meas = [r for r in self.lines if r["kind"] == "measured"]
        beyond = [r for r in meas if not r["ok"]]
        print(f"\n{sum(r['ok'] for r in exact)}/{len(exact)} deterministic quantities equal within tolerance; "
              f"{len(meas) - len(beyond)}/{len(meas)} measured quantities within {Z_MAX:g} standard errors "
              f"(about {0.0027 * len(meas):.1f} expected beyond by chance alone); largest |z| "
              f"{max((abs(r['z']) for r in meas), default=0):.2f}")


def _row(rows: dict, probe: str, set_name: str, t, metric: str) -> dict | None:
    if t is not None:
        return rows.get((probe, set_name, round(float(t), 9), metric))
    return next((r for k, r in rows.items() if k[0] == probe and k[1] == set_name and k[3] == metric), None)


def _ours(row: dict) -> tuple[float, float]:
    return float(row["value"]), _se(row)


def compare_deterministic(table: Table, model, tm, seqs: torch.Tensor, steps: int) -> None:
    """``x_θ``, the posterior and the NELBO integrand on the same ``z_t`` (drawn once at ``t = 0.3``)."""
    from basinlab.diffusion.process import posterior

    t, B = 0.3, min(64, len(seqs))
    x = seqs[:B]
    a_t, a_s = tm.schedule.alpha(t), tm.schedule.alpha(t - 1.0 / steps)
    z_t = tm.process.corrupt(x, a_t, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        tt = torch.full((B, 1), t)
        log_s = model.forward(z_t, model._sigma_from_alphat(model.noise(tt)[1]))
        log_b = tm.denoiser(z_t, torch.full((B,), t, dtype=torch.float64))
        table.exact("x_theta, max |dp|", "test", t, (log_s.exp() - log_b.exp()).abs().max().item(), 0.0, ATOL)
        xp = log_b.exp().double()
        xp = xp / xp.sum(-1, keepdim=True)  # the study's closed-form normaliser assumes sum x = 1 exactly
        col = lambda a: torch.full((B, 1), float(a), dtype=torch.float64)  # noqa: E731
        post_s = model._compute_posterior(xp, z_t, col(a_s), col(a_t))
        post_b = posterior(z_t, xp, a_t, a_s)
        table.exact("posterior q(z_s|z_t,x_theta), max |d|", "test", t, (post_s - post_b).abs().max().item(), 0.0,
                    1e-12)
        dalpha = float(tm.schedule.dalpha(t))
        log_x = torch.log_softmax(log_b.double(), -1)  # Duo's closed form, too, assumes sum x = 1 exactly
        f_s = model.nll_per_token(log_x, z_t, x, col(a_t), dalpha)
        f_b = tm.process.nelbo_integrand(x, z_t, log_x, a_t, dalpha)
        rel = ((f_s - f_b).abs() / (1 + f_b.abs())).max().item()
        table.exact("NELBO integrand, max rel |d|", "test", t, rel, 0.0, 1e-9)


def compare_grid_entry(table: Table, ev, model, ts: list[float], seq: torch.Tensor) -> None:
    """The chain's entry index for every ``t`` and ``T`` in {1, 4, 10, 25, 100, 1000}: the study's (read off its
    backbone calls) against basinlab's ``start_index(..., entry="above")``."""
    from basinlab.diffusion.sampler import start_index, time_grid

    for steps in (1, 4, 10, 25, 100, 1000):
        for t in sorted({*ts, 0.28, 0.05, ENTROPY_T}):
            ours = start_index(time_grid(steps), t, entry="above")
            table.exact(f"grid entry index, T={steps}", "-", t, study_chain_entry(ev, model, t, steps, seq), ours, 0)


BASIN_COLUMNS = {"recovery_rate": "recovery_rate", "unstable_rate": "unstable_rate", "is_exact_match": "exact_match"}
ENTROPY_GROUPS = {"entropy_stable": "entropy_stable", "entropy_unstable": "entropy_unstable",
                  "entropy_recovered": "entropy_recovered", "entropy_failed_rec": "entropy_failed"}
TRAJ = ("entropy", "diag", "diag_norm", "interaction", "interaction_norm", "spectral_gap", "max_conf")


def compare_set(table: Table, ev, rows: dict, name: str, seqs: torch.Tensor, ts: list[float], bs: int) -> None:
    """Basins (with the entropy of the four token groups on train/test), fixed points and entropy at every ``t``."""
    basins = study_basins(ev, seqs, ts, perturb=True)
    fixed = study_basins(ev, seqs, ts, perturb=False)
    for t in ts:
        for col, metric in BASIN_COLUMNS.items():
            table.measured(f"basin {metric}", name, t, _stats(basins[t][col])[:2],
                           _ours(_row(rows, "basins", name, t, metric)))
        for col, metric in ENTROPY_GROUPS.items() if name != "random" else ():
            row = _row(rows, "entropy", name, t, metric)
            # a group mean over fewer than MIN_GROUP sequences on either side has no usable standard error
            ok = row is not None and row["value"] is not None
            if ok and min(_stats(basins[t][col])[2], row["n"] or 0) >= MIN_GROUP:
                table.measured(f"basin {metric}", name, t, _stats(basins[t][col])[:2], _ours(row))
        table.exact("fixed-point rate (greedy chains)", name, t, _stats(fixed[t]["is_exact_match"])[0],
                    _row(rows, "t_grid", name, t, "grid_fixed_point_rate")["value"], 0.0)
        table.measured("conditional entropy", name, t, _stats(study_entropy(ev, seqs, t, bs))[:2],
                       _ours(_row(rows, "t_grid", name, t, "grid_entropy")))
    if 1.0 in ts:
        table.exact("fixed-point rate (fixed_points)", name, 1.0, _stats(fixed[1.0]["is_exact_match"])[0],
                    _row(rows, "fixed_points", name, 1.0, "fixed_point_rate")["value"], 0.0)


def compare_entropy_gap(table: Table, ev, rows: dict, sets: dict, n: int, seq_len: int, bs: int) -> None:
    """Entropy at ``t = 1e-5`` on train and test; samples' entropy and the study's gap (generated - train)."""
    h = {s: _stats(study_entropy(ev, sets[s], ENTROPY_T, bs)) for s in ("train", "test")}
    for s in ("train", "test"):
        table.measured("entropy at t=1e-5", s, ENTROPY_T, h[s][:2], _ours(_row(rows, "entropy", s, ENTROPY_T,
                                                                               "entropy")))
    g = _stats(study_entropy(ev, study_samples(ev, n, seq_len, bs), ENTROPY_T, bs))
    gen = _row(rows, "entropy", "train", ENTROPY_T, "entropy_generated")
    table.measured("generated samples' entropy", "gen", ENTROPY_T, g[:2], _ours(gen))
    gap = _row(rows, "entropy", "train", ENTROPY_T, "entropy_gap")
    table.measured("entropy gap (generated - train)", "train", ENTROPY_T, (g[0] - h["train"][0], g[1]),
                   (float(gap["value"]), _se(gen)))


def compare_nelbo(table: Table, model, data, rows: dict, arrays: dict, sets: dict, repeats: int, bs: int) -> None:
    """The ``paper`` NELBO against the study's ``_loss`` on each set, both over the attention mask basinlab's data
    gives (``SequenceData.attention_mask``: PAD out, BOS/EOS in): the positions counted (exact), then the
    token-weighted means of the per-sequence values (the study's loss is a sum over tokens divided by their count).
    Both sides score the same sequences with the same weights, so the difference of the means is the weighted mean
    of the per-sequence differences: its standard error (paired) leaves out how much the sequences differ from one
    another, which dominates the per-side errors of a model that memorises."""
    for s in ("train", "test"):
        per_seq, n_tok = study_nelbo(model, sets[s], data.attention_mask(sets[s]), repeats, bs)
        ours, ours_n = (arrays[f"likelihood/{s}/{k}"].double().numpy() for k in ("per_seq", "n_tokens"))
        table.exact("NELBO positions counted", s, None, float(n_tok.sum()), float(ours_n.sum()), 0.0)
        if not np.array_equal(n_tok, ours_n):
            raise RuntimeError(f"the {s} sequences differ between the two sides (per-sequence token counts)")
        mean, se = _weighted(ours, ours_n)
        row = _row(rows, "likelihood", s, None, "nelbo")
        if not math.isclose(mean, row["value"], rel_tol=1e-9):
            raise RuntimeError(f"basinlab's nelbo row {row['value']} is not the weighted mean {mean} of its arrays")
        table.measured("NELBO (attention-mask mean)", s, None, _weighted(per_seq, n_tok), (row["value"], se),
                       se_paired=_weighted(per_seq - ours, n_tok)[1])


def compare_trajectory(table: Table, ev, model, rows: dict, sets: dict) -> None:
    """The seven trajectory statistics at four of the ``t`` basinlab reports, on train and test."""
    for s in ("train", "test"):
        traj = study_trajectory(ev, model, sets[s])
        ours = sorted({k[2] for k in rows if k[:2] == ("trajectory", s)}, reverse=True)  # the t basinlab reports
        for t in sorted({ours[0], ours[len(ours) // 2], ours[-2], ours[-1]}, reverse=True):
            t_s = min(traj, key=lambda u: abs(u - t))  # the study's float32 grid point
            if abs(t_s - t) > 1e-6:
                continue
            for m in TRAJ:
                table.measured(f"trajectory {m}", s, t, traj[t_s][m], _ours(_row(rows, "trajectory", s, t,
                                                                                  f"traj_{m}")))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study-dir", required=True, help="a checkout of Lemon-cmd/Associative-Memory-and-Language-"
                                                      "Diffusion (its *.py files)")
    p.add_argument("--checkpoint", required=True, help="a basinlab run directory (uniform process, log-linear)")
    p.add_argument("--m", type=int, default=128, help="sequences per set (default 128)")
    p.add_argument("--steps", type=int, default=25, help="T, the reverse grid (default 25, the CPU presets')")
    p.add_argument("--ts", default="0.05,0.1,0.25,0.5,1.0", help="the study's eval times (eval_fixed_point.sh)")
    p.add_argument("--samples", type=int, default=128, help="generated samples for the entropy gap")
    p.add_argument("--nelbo-repeats", type=int, default=8, help="draws of t per sequence for the NELBO")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the comparison lines to this file")
    args = p.parse_args()
    warnings.filterwarnings("ignore", message=".*autocast.*")  # the study's torch.cuda.amp.autocast on a CPU

    study = import_study(Path(args.study_dir))
    import lightning as L

    import basinlab
    from basinlab.probes.protocol import resolve_weights
    from basinlab.probes.suite import draw_sets

    weights = resolve_weights(None, "paper")  # the study never swaps in its EMA: raw
    tm = basinlab.load(args.checkpoint, device="cpu", ema=weights == "ema")
    sched = tm.schedule.to_dict()
    if tm.process.name != "uniform" or sched != {"name": "loglinear", "eps": 1e-3}:
        sys.exit(f"error: the study's Duo code needs a uniform-noise model with the log-linear schedule (eps 1e-3); "
                 f"{args.checkpoint} has a {tm.process.name} process and {sched}")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    L.seed_everything(args.seed, verbose=False)
    data = tm.dataset()
    ts = [float(x) for x in args.ts.split(",")]
    cfg = study_config(args.steps, args.seed, args.batch_size)
    model = study_model(study, tm, data, cfg)
    ev = study_evaluator(study, model, cfg)
    sets = draw_sets(data, int(tm.config.data.n_train), args.m, args.seed)
    print(f"{args.checkpoint}: N={tm.config.data.n_train}, V={tm.vocab_size}, L={tm.seq_len}, weights {weights} on "
          f"both sides; sets of {', '.join(f'{k} {len(v)}' for k, v in sets.items())}; T={args.steps}; t in {ts}; "
          f"special ids {sorted(data.special_ids())}: every position counted by both, except the NELBO's PAD positions "
          f"(the attention mask)")
    table = Table()
    compare_deterministic(table, model, tm, sets["test"], args.steps)
    compare_grid_entry(table, ev, model, ts, sets["test"][0])
    rows, arrays = basinlab_rows(tm, data, int(tm.config.data.n_train), args, ts)
    for name, seqs in sets.items():
        compare_set(table, ev, rows, name, seqs, ts, args.batch_size)
    compare_entropy_gap(table, ev, rows, sets, args.samples, int(tm.seq_len), args.batch_size)
    compare_nelbo(table, model, data, rows, arrays, sets, args.nelbo_repeats, args.batch_size)
    compare_trajectory(table, ev, model, rows, sets)
    table.print()
    if args.json:
        Path(args.json).write_text(json.dumps({"checkpoint": str(args.checkpoint), "args": vars(args),
                                               "lines": table.lines}, indent=1))
    sys.exit(0 if all(r["ok"] for r in table.lines) else 1)


if __name__ == "__main__":
    main()
