"""Associative-memory probes (SPEC 5). Each takes any denoiser and a set of sequences; none imports training or
models, so a trained network and an exact oracle (SPEC 6) are probed the same way.

Every probe has the signature ``probe(denoiser, seqs, *, set_name="", seed=0, batch_size=256, real_mask=None,
progress=False, **options) -> ProbeResult`` (novelty takes samples and ``train=``/``test=``); the result holds tidy
rows (``probe, set, t, metric, value, std, ci_low, ci_high, n``) and per-sequence / per-token arrays.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from basinlab.config import ProbeConfig
from basinlab.probes import _common
from basinlab.probes.audit import audit, membership_auc
from basinlab.probes.basins import basin_area, basin_radius, basin_test
from basinlab.probes.entropy import conditional_entropy, token_entropy
from basinlab.probes.fixed_points import fixed_point_test, greedy_restore
from basinlab.probes.likelihood import likelihood
from basinlab.probes.novelty import generate_samples, nearest_hamming, novel_ngram_rate, novelty
from basinlab.probes.protocol import PROTOCOLS, protocol_options, resolve_n_samples
from basinlab.probes.results import ROW_KEYS, ProbeResult, make_row, rows_to_frame, summarize

PROBES = ("basins", "fixed_points", "entropy", "novelty", "likelihood")


def resolve_probe_config(cfg: ProbeConfig) -> ProbeConfig:
    """``quick`` caps ``m`` at 256 and ``steps`` at 100 (as ``basinlab.config.load_config`` does)."""
    import dataclasses

    if cfg.quick:
        cfg = dataclasses.replace(cfg, m=min(cfg.m, 256), steps=min(cfg.steps, 100))
    return cfg


def run_all(
    denoiser,
    sets: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor | None] | None,
    cfg: ProbeConfig,
    *,
    probes: Iterable[str] = PROBES,
    train: torch.Tensor | None = None,
    train_mask: torch.Tensor | None = None,
    test: torch.Tensor | None = None,
    test_mask: torch.Tensor | None = None,
    samples: torch.Tensor | None = None,
    samples_mask: torch.Tensor | None = None,
    seed: int = 0,
    progress: bool = False,
    device: torch.device | str | None = None,
    trajectory: bool = False,
) -> ProbeResult:
    """Run the chosen probes of SPEC 5 on every named set (the first ``cfg.m`` sequences of each).

    ``basins`` (``cfg.ts``, ``cfg.steps``), ``fixed_points`` (``cfg.t_start``), ``entropy`` (at ``cfg.entropy_t``,
    split by that set's basin result when basins ran, with the gap to the generated samples when novelty ran),
    ``likelihood`` per set; ``novelty`` once, on ``samples`` (or ``cfg.n_samples`` generated ones) against ``train``
    (the whole training subset; default: the ``train`` set) and ``test``. ``cfg.protocol`` (``exact`` or ``paper``)
    picks the definitions (:func:`~basinlab.probes.protocol.protocol_options`). Returns one :class:`ProbeResult`: all
    rows, arrays keyed ``"{probe}/{set}/{name}"`` (``generated_samples`` holds the samples).
    """
    cfg = resolve_probe_config(cfg)
    opts = protocol_options(cfg.protocol)
    probes = [p.replace("-", "_") for p in probes]
    unknown = sorted(set(probes) - set(PROBES))
    if unknown:
        from basinlab.errors import BasinlabError

        raise BasinlabError(f"unknown probe(s) {', '.join(unknown)}; choose from {', '.join(PROBES)}")
    masks = dict(masks or {})
    out = ProbeResult()
    common = {"seed": seed, "batch_size": cfg.batch_size, "progress": progress, "device": device}

    gen = None
    if "novelty" in probes or ("entropy" in probes and samples is not None):
        ref = train if train is not None else sets.get("train")
        L = ref.shape[1] if ref is not None else next(iter(sets.values())).shape[1]
        if samples is None:
            n_samples = resolve_n_samples(cfg.n_samples, cfg.protocol, _common.denoiser_device(denoiser, device))
            samples = generate_samples(denoiser, n_samples, L, steps=cfg.steps, seed=seed, batch_size=cfg.batch_size,
                                       device=device, progress=progress, **opts["generate"])
            samples_mask = None
        gen = samples
        out.arrays["generated_samples"] = samples
        if "novelty" in probes and ref is not None:
            r = novelty(denoiser, samples, train=ref, test=test, real_mask=samples_mask,
                        train_mask=train_mask if train is not None else masks.get("train"), test_mask=test_mask,
                        t_start=cfg.t_start, steps=cfg.steps, **common)
            out.extend(r, prefix="novelty/generated/")

    for name, seqs in sets.items():
        seqs = seqs[: cfg.m]
        mask = masks.get(name)
        mask = None if mask is None else mask[: cfg.m]
        kw = dict(common, set_name=name, real_mask=mask)
        basin = None
        if "basins" in probes:
            basin = basin_test(denoiser, seqs, ts=cfg.ts, steps=cfg.steps, **kw, **opts["basins"])
            out.extend(basin, prefix=f"basins/{name}/")
        if "fixed_points" in probes:
            out.extend(fixed_point_test(denoiser, seqs, t_start=cfg.t_start, steps=cfg.steps, **kw),
                       prefix=f"fixed_points/{name}/")
        if "entropy" in probes:
            r = conditional_entropy(denoiser, seqs, ts=(cfg.entropy_t,), steps=cfg.steps, basin=basin,
                                    generated=gen, generated_mask=samples_mask if gen is not None else None,
                                    trajectory=trajectory, **kw, **opts["entropy"])
            out.extend(r, prefix=f"entropy/{name}/")
        if "likelihood" in probes:
            out.extend(likelihood(denoiser, seqs, **kw, **opts["likelihood"]), prefix=f"likelihood/{name}/")
    return out


__all__ = [
    "PROBES",
    "PROTOCOLS",
    "ROW_KEYS",
    "ProbeResult",
    "audit",
    "basin_area",
    "basin_radius",
    "basin_test",
    "conditional_entropy",
    "fixed_point_test",
    "generate_samples",
    "greedy_restore",
    "likelihood",
    "make_row",
    "membership_auc",
    "nearest_hamming",
    "novel_ngram_rate",
    "novelty",
    "protocol_options",
    "resolve_n_samples",
    "resolve_probe_config",
    "rows_to_frame",
    "run_all",
    "summarize",
    "token_entropy",
]
