"""The one place that builds an exact oracle (SPEC 6) from a config: the CLI and the sweep both call
:func:`build_oracle`.

An oracle is named by its *kind* (``empirical``: the memoriser of ``D_N``; ``markov``: the Bayes-optimal generaliser
of the Markov source) and recorded in results under its *label* ``oracle:{kind}`` (``oracle:{kind}@masked`` for the
masked process). The forward process (the label's, else the config's ``train.process``) decides which family is
built: the uniform oracles (SPEC 6) or the masked ones (SPEC 2b, :mod:`basinlab.oracles.masked`), so a masked run
is compared with the masked memoriser and generaliser.
"""

from __future__ import annotations

import torch

from basinlab.config import Config
from basinlab.data.sequences import SequenceData
from basinlab.diffusion import Denoiser, get_schedule
from basinlab.errors import BasinlabError
from basinlab.oracles.markov import MarkovDenoiser
from basinlab.oracles.masked import MaskedEmpiricalDenoiser, MaskedMarkovDenoiser
from basinlab.oracles.memoriser import EmpiricalDenoiser

#: Oracle kinds, in the order a sweep runs them.
KINDS = ("empirical", "markov")
ORACLE_EMPIRICAL = "oracle:empirical"
ORACLE_MARKOV = "oracle:markov"


def oracle_label(kind: str, process: str = "uniform") -> str:
    """``'empirical'`` -> ``'oracle:empirical'`` (the ``model`` column of the results); ``'oracle:empirical@masked'``
    for the masked process (``basinlab.study.store.model_label``)."""
    return f"oracle:{kind}" if process == "uniform" else f"oracle:{kind}@{process}"


#: the forward processes with exact oracles here
ORACLE_PROCESSES = ("uniform", "masked")


def oracle_kinds(data_source: str, process: str = "uniform") -> tuple[str, ...]:
    """The oracles that exist for data of ``data.source`` and ``process``: the memoriser always, the generaliser on
    Markov data (none for a process without oracles)."""
    if process not in ORACLE_PROCESSES:
        return ()
    return KINDS if data_source == "markov" else ("empirical",)


def build_oracle(
    kind: str,
    data: SequenceData,
    n_train: int,
    cfg: Config,
    *,
    device: torch.device | str | None = None,
    top_k: int | None = None,
) -> Denoiser:
    """The oracle ``kind`` for ``D_N`` (the first ``n_train`` training sequences of ``data``) with the schedule of
    ``cfg.train`` (SPEC 6), for the forward process named in ``kind`` (``empirical@masked``) or else
    ``cfg.train.process`` (SPEC 2b for ``masked``). ``top_k`` keeps the uniform memoriser's ``K`` nearest training
    rows only (an approximation; the masked memoriser is exact at any ``N`` and takes none)."""
    kind, _, process = kind.removeprefix("oracle:").partition("@")
    process = process or getattr(cfg.train, "process", "uniform")
    if process not in ORACLE_PROCESSES:
        raise BasinlabError(f"no exact oracles for the {process} process here; choose from "
                            f"{', '.join(ORACLE_PROCESSES)}")
    masked = process == "masked"
    schedule = get_schedule(cfg.train.schedule, cfg.train.eps)
    if kind == "markov":
        if data.source is None:
            raise BasinlabError("the markov oracle needs Markov data: use the markov preset or data.source=markov")
        return (MaskedMarkovDenoiser if masked else MarkovDenoiser)(data.source, schedule, device=device)
    if kind == "empirical":
        train = data.train(n_train)
        if train.shape[0] == 0:
            raise BasinlabError("the empirical oracle needs a non-empty training subset: set data.n_train >= 1")
        if masked:
            return MaskedEmpiricalDenoiser(train, data.vocab_size, schedule, device=device)
        return EmpiricalDenoiser(train, data.vocab_size, schedule, top_k=top_k, device=device)
    raise BasinlabError(f"unknown oracle '{kind}'; choose from {', '.join(KINDS)}")
