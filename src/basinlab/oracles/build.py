"""The one place that builds an exact oracle (SPEC 6) from a config: the CLI and the sweep both call
:func:`build_oracle`.

An oracle is named by its *kind*, registered in :data:`basinlab.registry.ORACLES` as an :class:`OracleKind`
(``empirical``: the memoriser of ``D_N``; ``markov``: the Bayes-optimal generaliser of the Markov source). The
class that computes it belongs to the forward process (``process.oracle_class(kind)``: the uniform oracles of
SPEC 6 or the masked ones of SPEC 2b), so a masked run is compared with the masked memoriser and generaliser, and
a process without oracles has none. Results record an oracle under its :class:`~basinlab.labels.ModelLabel`
(``oracle:empirical``, ``oracle:empirical@masked``).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch

from basinlab.config import Config
from basinlab.data.sequences import SequenceData
from basinlab.diffusion import Denoiser, ForwardProcess, get_process, get_schedule
from basinlab.errors import BasinlabError
from basinlab.labels import ModelLabel
from basinlab.registry import ORACLES

ORACLE_EMPIRICAL = str(ModelLabel.oracle("empirical"))
ORACLE_MARKOV = str(ModelLabel.oracle("markov"))


@dataclass(frozen=True)
class OracleKind:
    """One kind of exact oracle: what data it needs and how its class is constructed from them."""

    name: str
    #: ``data.source`` values it exists for (``None``: every source), and how to say what it needs
    sources: tuple[str, ...] | None = None
    needs: str = ""

    def available(self, data_source: str, process: ForwardProcess) -> bool:
        """Whether a sweep runs this oracle for data of ``data_source`` under ``process``."""
        return (self.sources is None or data_source in self.sources) and process.oracle_class(self.name) is not None

    def build(self, cls: Any, data: SequenceData, n_train: int, schedule: Any, process: ForwardProcess,
              device: Any, top_k: int | None) -> Denoiser:
        """The oracle of class ``cls`` (the process's) for ``D_N``."""
        kwargs: dict[str, Any] = {"device": device}
        if "process" in inspect.signature(cls).parameters:
            kwargs["process"] = process
        if self.name == "markov":
            if data.source is None:
                raise BasinlabError(f"the {self.name} oracle needs {self.needs}")
            return cls(data.source, schedule, **kwargs)
        train = data.train(n_train)
        if train.shape[0] == 0:
            raise BasinlabError(f"the {self.name} oracle needs a non-empty training subset: set data.n_train >= 1")
        if top_k is not None and "top_k" in inspect.signature(cls).parameters:
            kwargs["top_k"] = top_k
        return cls(train, data.vocab_size, schedule, **kwargs)


#: the memoriser (every data source) and the generaliser (Markov data), ``ORACLES["empirical"|"markov"]``
EMPIRICAL = OracleKind("empirical")
MARKOV = OracleKind("markov", sources=("markov",), needs="Markov data: use the markov preset or data.source=markov")


def oracle_label(kind: str, process: str | None = None) -> str:
    """``'empirical'`` -> ``'oracle:empirical'`` (the ``model`` column of the results); ``'oracle:empirical@masked'``
    for another process than the default (:class:`~basinlab.labels.ModelLabel`)."""
    return str(ModelLabel.oracle(kind, process))


def oracle_kinds(data_source: str, process: str | None = None) -> tuple[str, ...]:
    """The registered oracles that exist for data of ``data.source`` under ``process`` (a registered name; the
    default process when ``None``): none for a process without oracles."""
    proc = get_process(process or ModelLabel.DEFAULT_PROCESS, 2)
    return tuple(name for name, kind in ORACLES.items() if kind.available(data_source, proc))


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
    ``cfg.train`` (SPEC 6), for the forward process of ``kind``'s label (``empirical@masked``) or else
    ``cfg.train.process``. ``top_k`` keeps the uniform memoriser's ``K`` nearest training rows only (an
    approximation; the masked memoriser is exact at any ``N`` and takes none)."""
    label = ModelLabel.parse(kind if ":" in kind else f"oracle:{kind}")
    entry = ORACLES.get(label.name)
    process = get_process(label.process_or(cfg.train.process), data.vocab_size)
    cls = process.oracle_class(entry.name)
    if cls is None:
        raise BasinlabError(f"the {process.name} process has no {entry.name} oracle (SPEC 6); processes with one: "
                            f"{', '.join(_processes_with(entry.name))}")
    schedule = get_schedule(cfg.train.schedule, cfg.train.eps)
    return entry.build(cls, data, n_train, schedule, process, device, top_k)


def _processes_with(kind: str) -> list[str]:
    from basinlab.registry import PROCESSES

    return [name for name, cls in PROCESSES.items() if kind in getattr(cls, "oracles", {})]
