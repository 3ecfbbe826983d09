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
- ``gen_ppl`` once, on the generated samples, when ``probe.gen_ppl_model`` names a local causal LM or a built-in
  one (``smollm2``; ``auto``: that one when installed, probes/scorers.py): generative perplexity and unigram
  entropy (probes/gen_ppl.py).
- ``membership_auc`` rows (set ``train_vs_test``, one per per-sequence score of the probes above): how well each
  score tells ``train`` from ``test`` (probes/audit.py), each with its ``tpr_at_fpr_0.01`` and ``tpr_at_fpr_0.001``
  rows (the TPR at 1% and 0.1% FPR), when the suite ran whole (at least basins, fixed points
  and entropy) on both sets: the sweep and ``probe all``, not a single-probe command.

The sets are drawn by :func:`draw_sets` (``random`` with the generator seed ``PROBE_SET_SEED + seed``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable

import torch

from basinlab.config import ProbeConfig
from basinlab.data.sequences import SequenceData
from basinlab.diffusion import Denoiser, process_of, with_process, with_sampler, with_self_conditioning
from basinlab.errors import BasinlabError
from basinlab.probes._common import denoiser_device
from basinlab.probes.audit import membership_rows_from_arrays
from basinlab.probes.basins import basin_test
from basinlab.probes.context import ProbeContext, ProbeSpec
from basinlab.probes.entropy import conditional_entropy
from basinlab.probes.fixed_points import fixed_point_test
from basinlab.probes.gen_ppl import gen_ppl
from basinlab.probes.gen_ppl_check import check_gen_ppl_model
from basinlab.probes.likelihood import likelihood
from basinlab.probes.novelty import novelty
from basinlab.probes.protocol import gap_sets, resolve_n_samples
from basinlab.probes.results import ProbeResult
from basinlab.probes.scorers import resolve_scorer
from basinlab.probes.t_grid import t_grid
from basinlab.probes.trajectory import trajectory_stats
from basinlab.registry import PROBES as REGISTRY

logger = logging.getLogger(__name__)

#: The sets of SPEC 5.
SETS = ("train", "test", "random")
#: The ``random`` set of a probe run with seed ``s`` is drawn with the generator seed ``PROBE_SET_SEED + s``.
PROBE_SET_SEED = 1_000_003


# ---- the built-in probes, each a ProbeSpec over its probe function ------------------------------------------------


def _basins(ctx: ProbeContext, name: str) -> ProbeResult:
    seqs, mask = ctx.on(name)
    return basin_test(ctx.denoiser, seqs, set_name=name, real_mask=mask, ts=list(ctx.cfg.ts), steps=ctx.cfg.steps,
                      **ctx.common, **ctx.opts["basins"])


def _fixed_points(ctx: ProbeContext, name: str) -> ProbeResult:
    seqs, mask = ctx.on(name)
    return fixed_point_test(ctx.denoiser, seqs, set_name=name, real_mask=mask, t_start=ctx.cfg.t_start,
                            steps=ctx.cfg.steps, **ctx.common, **ctx.opts["fixed_points"])


def _novelty(ctx: ProbeContext, name: str) -> ProbeResult | None:
    if ctx.samples is None:
        return None
    data, train_all = ctx.data, ctx.data.train(ctx.n_train)
    return novelty(ctx.denoiser, ctx.samples, train=train_all, test=data.test, set_name="generated",
                   real_mask=data.real_mask(ctx.samples), train_mask=data.real_mask(train_all),
                   test_mask=data.real_mask(data.test), t_start=ctx.cfg.t_start, steps=ctx.cfg.steps, **ctx.common)


def _entropy(ctx: ProbeContext, name: str) -> ProbeResult:
    """Split by the basin test's outcome on the same set; the gap of the generated samples' entropy against the
    protocol's real sets (the samples' entropies computed for the first gap, reused for the other)."""
    seqs, mask = ctx.on(name)
    gaps = gap_sets(ctx.cfg.protocol)
    gen = ctx.samples if name in gaps else None
    earlier = next((r.arrays["generated_entropy"] for s in gaps if s != name
                    and (r := ctx.result("entropy", s)) is not None and "generated_entropy" in r.arrays), None)
    return conditional_entropy(ctx.denoiser, seqs, set_name=name, real_mask=mask, ts=[ctx.cfg.entropy_t],
                               steps=ctx.cfg.steps, basin=ctx.result("basins", name), generated=gen,
                               generated_mask=None if gen is None else ctx.data.real_mask(gen),
                               generated_entropy=earlier if gen is not None else None,
                               gap_name=gaps.get(name, "entropy_gap"), trajectory=ctx.trajectory, **ctx.common,
                               **ctx.opts["entropy"])


def _likelihood(ctx: ProbeContext, name: str) -> ProbeResult:
    seqs, mask = ctx.on(name)
    return likelihood(ctx.denoiser, seqs, set_name=name, real_mask=mask, attention_mask=ctx.data.attention_mask(seqs),
                      **ctx.common, **ctx.opts["likelihood"])


def _t_grid(ctx: ProbeContext, name: str) -> ProbeResult:
    seqs, mask = ctx.on(name)
    return t_grid(ctx.denoiser, seqs, set_name=name, real_mask=mask, ts=list(ctx.cfg.ts), steps=ctx.cfg.steps,
                  **ctx.common, **ctx.opts["t_grid"])


def _trajectory(ctx: ProbeContext, name: str) -> ProbeResult:
    seqs, mask = ctx.on(name)
    return trajectory_stats(ctx.denoiser, seqs, set_name=name, real_mask=mask, steps=ctx.cfg.steps,
                            count_special=ctx.opts["t_grid"]["count_special"], **ctx.common)


def _gen_ppl(ctx: ProbeContext, name: str) -> ProbeResult | None:
    """Scored by ``probe.gen_ppl_model`` resolved (``smollm2``: its cached directory; ``auto``: none when the extra
    is not installed)."""
    scorer = resolve_scorer(ctx.cfg.gen_ppl_model)
    if scorer is None or ctx.samples is None:
        return None
    return gen_ppl(ctx.samples, ctx.data.decode(ctx.samples), scorer, batch_size=ctx.cfg.batch_size,
                   device=denoiser_device(ctx.denoiser))


_ALL = ("train", "test", "random")
BASINS = ProbeSpec("basins", _ALL, _basins)
FIXED_POINTS = ProbeSpec("fixed_points", _ALL, _fixed_points)
NOVELTY = ProbeSpec("novelty", ("generated",), _novelty)
ENTROPY = ProbeSpec("entropy", ("train", "test"), _entropy, needs=("basins",))
LIKELIHOOD = ProbeSpec("likelihood", ("train", "test"), _likelihood)
T_GRID = ProbeSpec("t_grid", _ALL, _t_grid, enabled=lambda cfg: cfg.t_grid)
TRAJECTORY = ProbeSpec("trajectory", ("train", "test"), _trajectory, enabled=lambda cfg: cfg.trajectory_stats)
GEN_PPL = ProbeSpec("gen_ppl", ("generated",), _gen_ppl, enabled=lambda cfg: bool(cfg.gen_ppl_model))


def _legacy(fn: Callable[..., ProbeResult]) -> Callable[[ProbeContext, str], ProbeResult]:
    """A probe function of the classic signature ``fn(denoiser, seqs, *, set_name, seed, batch_size, real_mask,
    progress, config)`` as a context probe."""
    def run(ctx: ProbeContext, name: str) -> ProbeResult:
        seqs, mask = ctx.on(name)
        return fn(ctx.denoiser, seqs, set_name=name, real_mask=mask, config=ctx.cfg, **ctx.common)

    return run


def register_probe(name: str, fn: Callable[..., ProbeResult] | ProbeSpec, sets: tuple[str, ...] = ()) -> None:
    """Add a probe to the suite (:data:`basinlab.registry.PROBES`): a :class:`ProbeSpec`, or a function
    ``fn(denoiser, seqs, *, set_name, seed, batch_size, real_mask, progress, config)`` (``config``: the
    :class:`ProbeConfig`) returning a :class:`ProbeResult`, run on ``sets``. The CLI's ``probe NAME`` and ``probe
    all``, the sweep and :func:`run_suite` then run it too."""
    if name in REGISTRY:
        raise BasinlabError(f"probe '{name}' exists already; choose another name")
    spec = fn if isinstance(fn, ProbeSpec) else ProbeSpec(name, tuple(sets), _legacy(fn))
    unknown = sorted(set(spec.sets) - set(SETS) - {"generated"})
    if unknown or not spec.sets:
        raise BasinlabError(f"probe '{name}' needs sets among {', '.join(SETS)}, got {spec.sets!r}")
    REGISTRY.register(name, spec)


def plan() -> dict[str, tuple[str, ...]]:
    """Which sets each registered probe runs on (``generated``: the samples the suite draws)."""
    return {name: spec.sets for name, spec in REGISTRY.items()}


def all_probes() -> tuple[str, ...]:
    """The registered probes: the built-in ones, then those added with :func:`register_probe`."""
    return REGISTRY.names()


def probes_for(denoiser: Denoiser) -> tuple[str, ...]:
    """The probes the suite runs on ``denoiser``: all of them but ``likelihood`` for a denoiser whose NELBO is
    infinite off its training set (``finite_likelihood = False``: the memoriser of any process, SPEC 6)."""
    finite = getattr(denoiser, "finite_likelihood", True)
    return tuple(p for p in all_probes() if finite or p != "likelihood")


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
    sets, where = set(sets), plan()
    for p in names:
        if where[p] != ("generated",) and not sets.intersection(where[p]):
            raise BasinlabError(f"the {p} test runs on the {' and '.join(where[p])} sets (SPEC 5); choose one of them")
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

    Everything that can be checked is checked before the first probe (:func:`check_run`); a probe that fails
    later raises with the rows of the probes before it attached as the exception's ``partial`` (a
    :class:`ProbeResult`), so that a caller can keep them.
    """
    sets = [s for s in SETS if s in set(sets)]
    probes = _ordered(check_selection(all_probes() if probes is None else probes, sets))
    check_run(denoiser, data, cfg, probes)
    out = ProbeResult()
    try:
        return _run_probes(out, denoiser, data, cfg, n_train=n_train, seed=seed, probes=probes, sets=sets,
                           progress=progress, trajectory=trajectory)
    except Exception as exc:
        exc.partial = out  # type: ignore[attr-defined]  # the probes that finished (issue 25)
        raise


def check_run(denoiser: Denoiser, data: SequenceData, cfg: ProbeConfig, probes: list[str]) -> None:
    """What :func:`run_suite` refuses before any probe runs: a batch that cannot fit, a gen-PPL scorer that could
    not score (:func:`~basinlab.probes.gen_ppl_check.check_gen_ppl_model`, on texts of the test set), and
    ``gen_ppl`` asked for alone with no scorer or no samples; ``probe.remask`` on a denoiser that cannot remask
    gets a warning."""
    check_memory(cfg, data.seq_len, denoiser.vocab_size, denoiser_device(denoiser))
    scorer = resolve_scorer(cfg.gen_ppl_model) if "gen_ppl" in probes else None  # `smollm2`: its cached directory
    if probes == ["gen_ppl"]:
        if not scorer:
            raise BasinlabError("the gen_ppl probe scores samples with a causal LM and none is named: set "
                                "probe.gen_ppl_model=DIR (a local Hugging Face causal LM directory)")
        if resolve_n_samples(cfg.n_samples, cfg.protocol, denoiser_device(denoiser)) <= 0:
            raise BasinlabError("the gen_ppl probe scores generated samples and probe.n_samples is 0: give "
                                "--samples K (probe.n_samples) with K >= 1")
    if scorer:
        check_gen_ppl_model(scorer, data.seq_len, data.decode(data.test[:8]))  # before any long work
    check_remask(denoiser, cfg)


def check_remask(denoiser: Denoiser, cfg: ProbeConfig) -> None:
    """``probe.remask > 0`` drives a process that remasks (SPEC 2b); for any other it changes nothing, said in one
    warning line (not refused: a sweep may probe masked and uniform models under one config)."""
    proc = process_of(denoiser)
    if getattr(cfg, "remask", 0.0) and not proc.supports_remask:
        logger.warning("probe.remask=%g is ignored: it drives ReMDM's remasking sampler of the masked process "
                       "(SPEC 2b), and this denoiser's process is %s, which has nothing to remask", cfg.remask,
                       proc.name)


def _run_probes(
    out: ProbeResult,
    denoiser: Denoiser,
    data: SequenceData,
    cfg: ProbeConfig,
    *,
    n_train: int,
    seed: int,
    probes: list[str],
    sets: list[str],
    progress: bool,
    trajectory: bool,
) -> ProbeResult:
    """The body of :func:`run_suite`, adding rows to ``out`` as each probe finishes."""
    specs = [s for s in (REGISTRY.get(p) for p in probes) if s.enabled(cfg)]
    on = {s.name: [n for n in s.sets if n in sets or n == "generated"] for s in specs}
    drawn = sorted({n for names in on.values() for n in names if n != "generated"}, key=SETS.index)
    seqs = draw_sets(data, n_train, cfg.m, seed, drawn)
    ctx = ProbeContext(_sampler_process(denoiser, cfg), data, cfg, n_train, seed=seed, progress=progress,
                       trajectory=trajectory, seqs=seqs, masks={k: data.real_mask(v) for k, v in seqs.items()})
    counted = _limit_counters(ctx.denoiser)
    for spec in specs:
        for name in on[spec.name]:
            res = spec.run(ctx, name)
            if res is not None:
                ctx.results[(spec.name, name)] = res
                out.extend(res, prefix=f"{spec.name}/{name}/")
    if "generated_samples" not in out.arrays and ctx.drawn_samples is not None:
        out.arrays["generated_samples"] = ctx.drawn_samples
    if {"train", "test"} <= set(seqs) and {"basins", "fixed_points", "entropy"} <= set(probes):
        out.rows += membership_rows_from_arrays(out.arrays, t_start=cfg.t_start)  # train vs test, per score
    _add_limit_rows(out, counted, _limit_counters(ctx.denoiser))
    return out


def _ordered(probes: list[str]) -> list[str]:
    """``probes`` in registration order, each after the probes it ``needs`` that were selected too."""
    chosen = set(probes)
    order = [p for p in all_probes() if p in chosen]
    for p in list(order):
        for need in REGISTRY.get(p).needs:
            if need in chosen and order.index(need) > order.index(p):
                order.remove(need)
                order.insert(order.index(p), need)
    return order


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
    """The denoiser whose chains the probes run: the model's own sampler (``probe.sampler``) and self-conditioning
    (``probe.self_conditioning``) where asked (SPEC 2c), then ReMDM's remasking when ``probe.remask > 0`` and the
    process supports it (SPEC 2b); unchanged otherwise."""
    proc = process_of(denoiser)
    denoiser = with_sampler(denoiser, getattr(cfg, "sampler", "ancestral"))  # a model's own chain (SPEC 2c)
    if getattr(cfg, "self_conditioning", False):
        denoiser = with_self_conditioning(denoiser)
    if not getattr(cfg, "remask", 0.0) or not proc.supports_remask:
        return denoiser
    return with_process(denoiser, proc.with_remask(cfg.remask))
