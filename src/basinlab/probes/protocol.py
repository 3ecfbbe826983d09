"""Probe protocols (SPEC 5 "Protocols"): ``exact``, the definitions of SPEC 5, and ``paper``, the published study's.

The study's evaluation code (its ``eval_fixed_point.py``, built on Duo's sampler) departs from SPEC 5 in the
places below. Each is one explicit option of an existing probe, so that both protocols run the same code:

- grid entry: ``exact`` enters the grid at the point nearest to ``t``; ``paper`` at the smallest grid point
  ``>= t``, always taking at least one reverse step -- ``entry="above"`` of the basin and fixed-point tests;
- special tokens: ``paper`` counts every position, BOS/EOS/PAD included, in the basin test, the fixed-point match
  and the conditional entropy, and in the NELBO every position of the study's attention mask (BOS/EOS, not PAD)
  -- ``count_special=True`` (with ``likelihood(attention_mask=...)``);
- entropy of a masked model: ``exact`` reads the leave-one-out conditional; ``paper`` ``x_θ`` at its own input,
  the study's SUBS output, 0 at visible positions by construction (equal for the uniform process) --
  ``entropy_of="output"`` of the entropy probe, the basin test's restored-sequence entropy and the t-grid;

- basin test, final step: ``exact`` takes the greedy Bayes combination; ``paper`` *draws* it (Duo's "ancestral"
  noise removal) -- ``basin_test(final_greedy=False)``;
- generated samples (novelty, entropy gap), final step: ``exact`` the greedy Bayes combination; ``paper``
  ``argmax x_θ`` alone (Duo's "greedy" noise removal) -- ``generate_samples(final_bayes=False)``;
- entropy split by basin outcome: ``exact`` the entropy at ``entropy_t`` of the clean input over the tokens
  recovered / failed; ``paper`` the entropy of ``x_θ`` on the *restored* sequence at ``t_min``, in four groups
  (stable, unstable, recovered, failed) -- ``basin_test(restored_entropy=True)`` and
  ``conditional_entropy(split="restored")``;
- NELBO and ``ppl_bound``: ``exact`` diffusion + reconstruction + prior terms; ``paper`` ``exp(mean integrand)``,
  nothing else (Duo's validation perplexity) -- ``likelihood(integrand_only=True)``;

- entropy gap: ``exact`` reports ``entropy_gap`` (generated minus *test*) and ``entropy_gap_train`` (generated
  minus *train*); ``paper`` the study's, generated minus *train*, as ``entropy_gap`` (:func:`gap_sets`);
- weights: ``probe.weights: null`` (the default) probes the EMA weights under ``exact``, the raw weights under
  ``paper`` (the study never swaps in its EMA) -- :func:`resolve_weights`;

and ``probe.n_samples: null`` (the default) means 256 generated samples, or 20000 under ``paper`` on a GPU.
Everything else (sets, grids, novelty metrics, intervals) is shared.

Two places where the study's code differs for masked models stay basinlab's under both protocols, on purpose
(SPEC 5 "Masked models under the study's code"): masked generation starts from all-``[MASK]`` (the study's starts
from uniform random ids), and the ``random`` set draws over the ``V`` clean ids (the study's over ``V + 1``,
``[MASK]`` included).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from basinlab.errors import BasinlabError
from basinlab.registry import PROTOCOLS, WEIGHTS

#: ``probe.n_samples: null`` resolves to this, except under ``paper`` on a GPU.
DEFAULT_SAMPLES = 256
#: The study's number of generated samples (its GPU runs).
PAPER_GPU_SAMPLES = 20000


@dataclass(frozen=True)
class Protocol:
    """One protocol (registered in :data:`basinlab.registry.PROTOCOLS`): its option per probe function, the entropy
    gaps it reports (``{real set: row name}``), the weights it probes by default and its number of generated
    samples on a GPU."""

    name: str
    options: dict[str, dict[str, Any]]
    gaps: dict[str, str]
    weights: str
    gpu_samples: int = DEFAULT_SAMPLES


@dataclass(frozen=True)
class Weights:
    """Which weights of a trained run the probes load (registered in :data:`basinlab.registry.WEIGHTS`)."""

    name: str
    ema: bool


def _options(paper: bool) -> dict[str, dict[str, Any]]:
    entry = "above" if paper else "nearest"
    entropy_of = "output" if paper else "leave_one_out"
    return {
        "basins": {"final_greedy": not paper, "count_special": paper, "restored_entropy": paper, "entry": entry,
                   "entropy_of": entropy_of},
        "fixed_points": {"count_special": paper, "entry": entry},
        "t_grid": {"count_special": paper, "entry": entry, "entropy_of": entropy_of},
        "generate": {"final_bayes": not paper},
        "entropy": {"split": "restored" if paper else "input", "count_special": paper, "entropy_of": entropy_of},
        "likelihood": {"integrand_only": paper, "count_special": paper},
    }


EXACT = Protocol("exact", _options(False), {"test": "entropy_gap", "train": "entropy_gap_train"}, "ema")
PAPER = Protocol("paper", _options(True), {"train": "entropy_gap"}, "raw", PAPER_GPU_SAMPLES)
EMA, RAW = Weights("ema", True), Weights("raw", False)


def get_protocol(protocol: str | Protocol = "exact") -> Protocol:
    """The registered protocol ``protocol`` (one line naming the registered ones when unknown)."""
    return protocol if isinstance(protocol, Protocol) else PROTOCOLS.get(protocol)


def check_protocol(protocol: str) -> str:
    return get_protocol(protocol).name


def protocol_options(protocol: str = "exact") -> dict[str, dict[str, Any]]:
    """Keyword arguments per probe function for ``protocol`` (see the module docstring).

    Keys: ``basins`` (:func:`~basinlab.probes.basins.basin_test`), ``fixed_points``
    (:func:`~basinlab.probes.fixed_points.fixed_point_test`), ``t_grid`` (:func:`~basinlab.probes.t_grid.t_grid`),
    ``generate``
    (:func:`~basinlab.probes.novelty.generate_samples`), ``entropy``
    (:func:`~basinlab.probes.entropy.conditional_entropy`), ``likelihood``
    (:func:`~basinlab.probes.likelihood.likelihood`). Under ``exact`` every value is the function's default.
    """
    return {k: dict(v) for k, v in get_protocol(protocol).options.items()}


def gap_sets(protocol: str = "exact") -> dict[str, str]:
    """The entropy gaps the suite reports: ``{real set: row name}`` of ``mean(generated) - mean(real set)``.
    ``exact``: ``entropy_gap`` against ``test`` and ``entropy_gap_train`` against ``train``; ``paper``: the study's
    gap, against ``train``, named ``entropy_gap``."""
    return dict(get_protocol(protocol).gaps)


def resolve_weights(weights: str | None, protocol: str = "exact") -> str:
    """``probe.weights`` with ``None`` resolved: the protocol's default (``ema`` under ``exact``, ``raw`` under
    ``paper``)."""
    if weights is None:
        return get_protocol(protocol).weights
    return WEIGHTS.get(WEIGHTS.check(weights, "probe.weights")).name


def resolve_n_samples(n_samples: int | None, protocol: str, device: torch.device | str | None) -> int:
    """``probe.n_samples``, with ``None`` resolved: 20000 under ``paper`` on a CUDA device, else 256."""
    if n_samples is not None:
        if int(n_samples) < 0:
            raise BasinlabError(f"probe.n_samples must be >= 0 (or null for the default), got {n_samples}")
        return int(n_samples)
    on_gpu = device is not None and torch.device(device).type == "cuda"
    return get_protocol(protocol).gpu_samples if on_gpu else DEFAULT_SAMPLES
