"""Associative-memory probes (SPEC 5). Each takes any denoiser and a set of sequences; none imports training or
models, so a trained network and an exact oracle (SPEC 6) are probed the same way.

:func:`run_suite` (probes/suite.py) decides which probe runs on which set; the CLI, the sweep and Python callers
all go through it. Every probe has the signature ``probe(denoiser, seqs, *, set_name="", seed=0, batch_size=256,
real_mask=None, progress=False, **options) -> ProbeResult`` (novelty takes samples and ``train=``/``test=``); the
result holds tidy rows (``probe, set, t, metric, value, std, ci_low, ci_high, n``) and per-sequence / per-token arrays.
"""

from __future__ import annotations

import dataclasses

from basinlab.config import ProbeConfig, apply_quick
from basinlab.probes.audit import audit, membership_auc
from basinlab.probes.basins import basin_area, basin_radius, basin_test
from basinlab.probes.canvases import audit_canvases
from basinlab.probes.context import ProbeContext, ProbeSpec
from basinlab.probes.entropy import conditional_entropy, token_entropy
from basinlab.probes.examples import EXAMPLE_SEED, restore_examples
from basinlab.probes.fixed_points import fixed_point_test, greedy_restore
from basinlab.probes.likelihood import likelihood
from basinlab.probes.novelty import generate_samples, nearest_hamming, novel_ngram_rate, novelty
from basinlab.probes.protocol import PROTOCOLS, protocol_options, resolve_n_samples
from basinlab.probes.results import ROW_KEYS, ProbeResult, make_row, rows_to_frame, summarize
from basinlab.probes.suite import PROBE_SET_SEED, SETS, draw_sets, plan, probes_for, register_probe, run_suite
from basinlab.registry import PROBES


def resolve_probe_config(cfg: ProbeConfig) -> ProbeConfig:
    """A copy with ``quick`` applied (:func:`basinlab.config.apply_quick`, as ``load_config`` does)."""
    return apply_quick(dataclasses.replace(cfg))


__all__ = [
    "EXAMPLE_SEED",
    "PROBES",
    "PROBE_SET_SEED",
    "PROTOCOLS",
    "ROW_KEYS",
    "SETS",
    "ProbeContext",
    "ProbeResult",
    "ProbeSpec",
    "audit",
    "audit_canvases",
    "basin_area",
    "basin_radius",
    "basin_test",
    "conditional_entropy",
    "draw_sets",
    "fixed_point_test",
    "generate_samples",
    "greedy_restore",
    "likelihood",
    "make_row",
    "membership_auc",
    "nearest_hamming",
    "novel_ngram_rate",
    "novelty",
    "plan",
    "probes_for",
    "protocol_options",
    "register_probe",
    "resolve_n_samples",
    "resolve_probe_config",
    "restore_examples",
    "rows_to_frame",
    "run_suite",
    "summarize",
    "token_entropy",
]
