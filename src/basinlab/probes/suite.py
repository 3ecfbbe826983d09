"""The probe suite (SPEC 5): which probe runs on which set. The one place the CLI (``basinlab probe``), the sweep
(``basinlab sweep``) and the Python API (:func:`run_suite`) share, so all three give the same rows for the same
config.

The plan (:data:`PLAN`):

- ``basins`` on ``train``, ``test`` and ``random``: a uniform random sequence is no memory, so its basin is the
  baseline that shows a basin on ``train`` is not just "the model returns anything to itself" (as the study runs it).
- ``fixed_points`` on ``train``, ``test`` and ``random``.
- ``novelty`` once, on ``probe.n_samples`` samples generated from noise, against ``D_N`` and the test set.
- ``entropy`` at ``probe.entropy_t`` on ``train`` and ``test``, split by that set's basin outcome, with the gap
  ``generated - test`` (generated minus real held-out data).
- ``likelihood`` on ``train`` and ``test``, except for the memoriser (:func:`probes_for`): its NELBO on any
  sequence outside ``D_N`` is infinite, and leave-one-out makes ``D_N`` itself unseen.
- ``t_grid`` on ``train``, ``test`` and ``random`` when ``probe.t_grid``: fixed points and conditional entropy at
  every ``t`` of ``probe.ts`` (probes/t_grid.py).
- ``trajectory`` on ``train`` and ``test`` when ``probe.trajectory_stats``: statistics of ``x_θ`` along the reverse
  chain from ``t = 1`` (probes/trajectory.py).
- ``gen_ppl`` once, on the generated samples, when ``probe.gen_ppl_model`` names a local causal LM: generative
  perplexity and unigram entropy (probes/gen_ppl.py).
- ``membership_auc`` rows (set ``train_vs_test``, one per per-sequence score of the probes above): how well each
  score tells ``train`` from ``test`` (probes/audit.py), each with its ``tpr_at_fpr_0.01`` and ``tpr_at_fpr_0.001``
  rows (the TPR at 1% and 0.1% FPR), when the suite ran whole (at least basins, fixed points
  and entropy) on both sets: the sweep and ``probe all``, not a single-probe command.

The sets are drawn by :func:`draw_sets` (``random`` with the generator seed ``PROBE_SET_SEED + seed``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

import torch

from basinlab.config import ProbeConfig
from basinlab.data.sequences import SequenceData
from basinlab.diffusion import Denoiser, process_of, with_process, with_sampler, with_self_conditioning
from basinlab.errors import BasinlabError
from basinlab.oracles.build import ORACLE_EMPIRICAL
from basinlab.probes._common import denoiser_device
from basinlab.probes.audit import membership_rows_from_arrays
from basinlab.probes.basins import basin_test
from basinlab.probes.entropy import conditional_entropy
from basinlab.probes.fixed_points import fixed_point_test
from basinlab.probes.gen_ppl import check_scorer, gen_ppl
from basinlab.probes.likelihood import likelihood
from basinlab.probes.novelty import generate_samples, novelty
from basinlab.probes.protocol import gap_sets, protocol_options, resolve_n_samples
from basinlab.probes.results import ProbeResult
from basinlab.probes.t_grid import t_grid
from basinlab.probes.trajectory import trajectory_stats

#: The probes, in the order the suite runs them.
PROBES = ("basins", "fixed_points", "novelty", "entropy", "likelihood", "t_grid", "trajectory", "gen_ppl")
#: The sets of SPEC 5.
SETS = ("train", "test", "random")
#: Which sets each probe runs on (``generated``: the samples the suite draws).
PLAN: dict[str, tuple[str, ...]] = {
    "basins": ("train", "test", "random"),
    "fixed_points": ("train", "test", "random"),
    "novelty": ("generated",),
    "entropy": ("train", "test"),
    "likelihood": ("train", "test"),
    "t_grid": ("train", "test", "random"),
    "trajectory": ("train", "test"),
    "gen_ppl": ("generated",),
}
#: Probes added with :func:`register_probe` (docs/ARCHITECTURE.md, "Add a probe"): name -> function.
EXTRA: dict[str, Callable[..., ProbeResult]] = {}
#: The ``random`` set of a probe run with seed ``s`` is drawn with the generator seed ``PROBE_SET_SEED + s``.
PROBE_SET_SEED = 1_000_003


def register_probe(name: str, fn: Callable[..., ProbeResult], sets: tuple[str, ...]) -> None:
    """Add a probe to the suite: ``fn(denoiser, seqs, *, set_name, seed, batch_size, real_mask, progress, config)``
    (``config``: the :class:`ProbeConfig`) returning a :class:`ProbeResult`, run on ``sets`` after the built-in
    probes. The CLI's ``probe NAME`` and ``probe all`` and the sweep then run it too."""
    if name in PLAN and name not in EXTRA:
        raise BasinlabError(f"probe '{name}' exists already; choose another name")
    unknown = sorted(set(sets) - set(SETS))
    if unknown or not sets:
        raise BasinlabError(f"probe '{name}' needs sets among {', '.join(SETS)}, got {sets!r}")
    EXTRA[name] = fn
    PLAN[name] = tuple(sets)


def all_probes() -> tuple[str, ...]:
    """The built-in probes, then the registered ones."""
    return PROBES + tuple(EXTRA)


def probes_for(model: str) -> tuple[str, ...]:
    """The probes the suite runs for a denoiser recorded as ``model``: all of them but ``likelihood`` for the
    memoriser ``oracle:empirical`` of any process (its NELBO is infinite off ``D_N``, SPEC 6)."""
    return tuple(p for p in all_probes()
                 if not (p == "likelihood" and str(model).partition("@")[0] == ORACLE_EMPIRICAL))


#: Bytes per entry of a ``[B, L, V]`` tensor that a probe step keeps alive at once (a float32 ``log x_θ`` and the
#: float64 posterior and its probabilities, with room for temporaries): an estimate, for refusing impossible runs.
BYTES_PER_ENTRY = 16


def _total_memory(device: torch.device) -> int | None:
    if device.type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(cfg: ProbeConfig, seq_len: int, vocab_size: int, device: torch.device | str | None = None) -> None:
    """Refuse, before any work, a probe batch whose ``[B, L, V]`` tensors cannot fit: ``B = min(batch_size,
    max(m, n_samples))`` sequences at once, :data:`BYTES_PER_ENTRY` bytes per entry, against the device's memory."""
    dev = torch.device(device or "cpu")
    batch = min(int(cfg.batch_size), max(int(cfg.m), int(cfg.n_samples or 0), 1))
    need = batch * int(seq_len) * int(vocab_size) * BYTES_PER_ENTRY
    total = _total_memory(dev)
    if total is not None and need > total:
        raise BasinlabError(
            f"probe.batch_size={cfg.batch_size} needs about {need / 2**30:,.0f} GiB at once ({batch} sequences x "
            f"L={seq_len} x V={vocab_size}), more than the {total / 2**30:,.0f} GiB of {dev.type}; lower "
            "probe.batch_size (--batch-size)"
        )


def draw_sets(
    data: SequenceData, n_train: int, m: int, seed: int, names: Iterable[str] = SETS
) -> dict[str, torch.Tensor]:
    """The SPEC 5 sets: ``train`` = the first ``m`` of ``D_N``, ``test`` = the first ``m`` test sequences,
    ``random`` = ``m`` uniform random sequences drawn with seed ``PROBE_SET_SEED + seed``."""
    out: dict[str, torch.Tensor] = {}
    for name in names:
        if name == "train":
            out[name] = data.train(n_train)[:m]
            if out[name].shape[0] == 0:
                raise BasinlabError("the training subset is empty (data.n_train = 0): leave out the train set")
        elif name == "test":
            out[name] = data.test[:m]
        elif name == "random":
            out[name] = data.random(m, torch.Generator().manual_seed(PROBE_SET_SEED + int(seed)))
        else:
            raise BasinlabError(f"unknown probe set '{name}'; choose from {', '.join(SETS)}")
    return out


def check_selection(probes: Iterable[str], sets: Iterable[str]) -> list[str]:
    """The probe names (``-`` read as ``_``), refused when unknown or when none of ``sets`` is in their plan."""
    names = [p.replace("-", "_") for p in probes]
    unknown = sorted(set(names) - set(all_probes()))
    if unknown:
        raise BasinlabError(f"unknown probe(s) {', '.join(unknown)}; choose from {', '.join(all_probes())}")
    sets = set(sets)
    for p in names:
        if PLAN[p] != ("generated",) and not sets.intersection(PLAN[p]):
            raise BasinlabError(f"the {p} test runs on the {' and '.join(PLAN[p])} sets (SPEC 5); choose one of them")
    return names


def run_suite(
    denoiser: Denoiser,
    data: SequenceData,
    cfg: ProbeConfig,
    *,
    n_train: int,
    seed: int = 0,
    probes: Iterable[str] | None = None,
    sets: Iterable[str] = SETS,
    progress: bool = False,
    trajectory: bool = False,
) -> ProbeResult:
    """Run ``probes`` of SPEC 5 on ``denoiser`` following :data:`PLAN`, on the sets among ``sets`` (the first
    ``cfg.m`` of each, :func:`draw_sets`), ``D_N`` being the first ``n_train`` training sequences of ``data``.

    Returns one :class:`ProbeResult`: all tidy rows, arrays keyed ``"{probe}/{set}/{name}"`` (and
    ``generated_samples``). ``trajectory`` adds the entropy along the reverse chain from ``t = 1``.
    """
    sets = [s for s in SETS if s in set(sets)]
    probes = check_selection(all_probes() if probes is None else probes, sets)
    check_memory(cfg, data.seq_len, denoiser.vocab_size, denoiser_device(denoiser))
    if "gen_ppl" in probes and cfg.gen_ppl_model:
        check_scorer(cfg.gen_ppl_model)  # before any long work
    on = {p: [s for s in PLAN[p] if s in sets] for p in probes}
    seqs = draw_sets(data, n_train, cfg.m, seed, sorted({s for p in probes for s in on[p] if s != "generated"},
                                                         key=SETS.index))
    masks = {k: data.real_mask(v) for k, v in seqs.items()}
    denoiser = _sampler_process(denoiser, cfg)
    common = {"seed": seed, "batch_size": cfg.batch_size, "progress": progress}
    opts = protocol_options(cfg.protocol)  # exact (SPEC 5) or the study's definitions (SPEC 5 "Protocols")
    out = ProbeResult()
    counted = _limit_counters(denoiser)
    basins = {}
    for name in on.get("basins", []):
        basins[name] = basin_test(denoiser, seqs[name], set_name=name, real_mask=masks[name], ts=list(cfg.ts),
                                  steps=cfg.steps, **common, **opts["basins"])
        out.extend(basins[name], prefix=f"basins/{name}/")
    for name in on.get("fixed_points", []):
        out.extend(fixed_point_test(denoiser, seqs[name], set_name=name, real_mask=masks[name], t_start=cfg.t_start,
                                    steps=cfg.steps, **common, **opts["fixed_points"]), prefix=f"fixed_points/{name}/")
    samples = _samples(denoiser, data, cfg, seed, progress) if {"novelty", "entropy", "gen_ppl"} & set(probes) else None
    if samples is not None:
        out.arrays["generated_samples"] = samples
    if "novelty" in probes and samples is not None:
        train_all = data.train(n_train)
        out.extend(novelty(denoiser, samples, train=train_all, test=data.test, set_name="generated",
                           real_mask=data.real_mask(samples), train_mask=data.real_mask(train_all),
                           test_mask=data.real_mask(data.test), t_start=cfg.t_start, steps=cfg.steps, **common),
                   prefix="novelty/generated/")
    gaps = gap_sets(cfg.protocol)  # generated minus test and/or train, per protocol
    h_gen = None  # the samples' entropies: computed for the first gap, reused for the other (same draw)
    for name in on.get("entropy", []):
        gen = samples if name in gaps else None
        out.extend(conditional_entropy(denoiser, seqs[name], set_name=name, real_mask=masks[name],
                                       ts=[cfg.entropy_t], steps=cfg.steps, basin=basins.get(name), generated=gen,
                                       generated_mask=None if gen is None else data.real_mask(gen),
                                       generated_entropy=h_gen, gap_name=gaps.get(name, "entropy_gap"),
                                       trajectory=trajectory, **common, **opts["entropy"]), prefix=f"entropy/{name}/")
        if gen is not None:
            h_gen = out.arrays[f"entropy/{name}/generated_entropy"]
    for name in on.get("likelihood", []):
        out.extend(likelihood(denoiser, seqs[name], set_name=name, real_mask=masks[name], **common,
                              **opts["likelihood"]), prefix=f"likelihood/{name}/")
    if {"train", "test"} <= set(seqs) and {"basins", "fixed_points", "entropy"} <= set(probes):
        out.rows += membership_rows_from_arrays(out.arrays, t_start=cfg.t_start)  # train vs test, per score
    _study_probes(out, denoiser, data, cfg, probes, on, seqs, masks, samples, common)
    for probe in (p for p in probes if p in EXTRA):
        for name in on[probe]:
            out.extend(EXTRA[probe](denoiser, seqs[name], set_name=name, real_mask=masks[name], config=cfg, **common),
                       prefix=f"{probe}/{name}/")
    _add_limit_rows(out, counted, _limit_counters(denoiser))
    return out


#: counters of an exact oracle of the masked process (SPEC 2b): queries, and how many needed the ε-limit
_LIMIT_COUNTERS = ("queries", "no_consistent", "loo_positions", "loo_no_consistent")


def _limit_counters(denoiser: Denoiser) -> dict[str, int] | None:
    if not all(isinstance(getattr(denoiser, k, None), int) for k in _LIMIT_COUNTERS):
        return None
    return {k: int(getattr(denoiser, k)) for k in _LIMIT_COUNTERS}


def _add_limit_rows(out: ProbeResult, before: dict[str, int] | None, after: dict[str, int] | None) -> None:
    """For an oracle that counts them (the masked ones): the share of its predictions during this run that no
    sequence consistent with the visible tokens supported (the ε-limit of SPEC 2b), rows ``oracle_limit`` /
    ``all``: ``no_consistent_share`` (per query) and ``loo_no_consistent_share`` (per leave-one-out position)."""
    if before is None or after is None:
        return
    for metric, num, den in (("no_consistent_share", "no_consistent", "queries"),
                             ("loo_no_consistent_share", "loo_no_consistent", "loo_positions")):
        n = after[den] - before[den]
        if n > 0:
            out.add("oracle_limit", "all", None, metric, {"value": (after[num] - before[num]) / n, "n": n})


def _sampler_process(denoiser: Denoiser, cfg: ProbeConfig) -> Denoiser:
    """The denoiser driven by ReMDM's remasking sampler when ``probe.remask > 0`` and its process is masked
    (SPEC 2b); unchanged otherwise (the uniform process has nothing to remask)."""
    proc = process_of(denoiser)
    denoiser = with_sampler(denoiser, getattr(cfg, "sampler", "ancestral"))  # a model's own chain (SPEC 2c)
    if getattr(cfg, "self_conditioning", False):
        denoiser = with_self_conditioning(denoiser)
    if not getattr(cfg, "remask", 0.0) or not proc.supports_remask:
        return denoiser
    return with_process(denoiser, proc.with_remask(cfg.remask))


def _study_probes(out: ProbeResult, denoiser: Denoiser, data: SequenceData, cfg: ProbeConfig, probes: list[str],
                  on: dict[str, list[str]], seqs: dict[str, torch.Tensor], masks: dict[str, torch.Tensor],
                  samples: torch.Tensor | None, common: dict) -> None:
    """The t-grid, trajectory and generative-perplexity probes (the study's measurements beyond SPEC 5's core)."""
    opts = protocol_options(cfg.protocol)["fixed_points"]
    for name in on.get("t_grid", []) if cfg.t_grid else []:
        out.extend(t_grid(denoiser, seqs[name], set_name=name, real_mask=masks[name], ts=list(cfg.ts),
                          steps=cfg.steps, **common, **opts), prefix=f"t_grid/{name}/")
    for name in on.get("trajectory", []) if cfg.trajectory_stats else []:
        out.extend(trajectory_stats(denoiser, seqs[name], set_name=name, real_mask=masks[name], steps=cfg.steps,
                                    count_special=opts["count_special"], **common), prefix=f"trajectory/{name}/")
    if "gen_ppl" in probes and cfg.gen_ppl_model and samples is not None:
        out.extend(gen_ppl(samples, data.decode(samples), cfg.gen_ppl_model, batch_size=cfg.batch_size,
                           device=denoiser_device(denoiser)), prefix="gen_ppl/generated/")


def _samples(denoiser: Denoiser, data: SequenceData, cfg: ProbeConfig, seed: int,
             progress: bool) -> torch.Tensor | None:
    """``probe.n_samples`` samples from noise (``None`` resolved by the protocol; none when it is 0: no novelty
    rows and no entropy gap)."""
    n_samples = resolve_n_samples(cfg.n_samples, cfg.protocol, denoiser_device(denoiser))
    if n_samples <= 0:
        return None
    return generate_samples(denoiser, n_samples, data.seq_len, steps=cfg.steps, seed=seed,
                            batch_size=cfg.batch_size, progress=progress, **protocol_options(cfg.protocol)["generate"])
