"""One registry per concept: the names basinlab accepts, and what each name is.

Every name a user can type for a seam of the field lives here, once: forward processes (SPEC 2, 2b), model
families (SPEC 2c), exact oracles (SPEC 6), probe protocols and weights (SPEC 5), noise schedules (SPEC 2) and
checkpoint formats. Config validation, the CLI's choices and help texts and the code read the same
:class:`Registry`. A leaf: it imports only :mod:`basinlab.errors`; built-in entries are registered here as
``"module:attribute"`` strings and imported on first use, so that reading a name costs nothing.

Add an entry with one line or one decorator, anywhere before it is used::

    from basinlab.registry import PROCESSES

    @PROCESSES.register("mixture")
    class MixtureProcess(ForwardProcess): ...

(docs/ARCHITECTURE.md, "Add a forward process" and "Add a model family").
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any

from basinlab.errors import BasinlabError


class Registry:
    """Names of one concept and their entries (an object, or a lazy ``"module:attribute"`` path)."""

    def __init__(self, concept: str, key: str | None = None) -> None:
        self.concept, self.key = concept, key
        self._entries: dict[str, Any] = {}

    def register(self, name: str, entry: Any = None, *, replace: bool = False) -> Any:
        """Register ``entry`` under ``name``; without ``entry``, a decorator that registers what it decorates."""
        if entry is None:
            return lambda obj: self.register(name, obj, replace=replace)
        if not isinstance(name, str) or not name or any(c.isspace() or c in "@:," for c in name):
            raise ValueError(f"a {self.concept} name is a word without spaces, '@', ':' or ',', got {name!r}")
        if name in self._entries and not replace and self._entries[name] is not entry:
            raise ValueError(f"{self.concept} '{name}' is registered already (pass replace=True to replace it)")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests that register a toy entry clean up with this)."""
        self._entries.pop(name, None)

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> Any:
        """The entry of ``name`` (imported on first use); an unknown name is one line listing the known ones."""
        if name not in self._entries:
            raise BasinlabError(self.unknown(name))
        entry = self._entries[name]
        if isinstance(entry, str):
            module, _, attr = entry.partition(":")
            entry = getattr(importlib.import_module(module), attr)
            self._entries[name] = entry
        return entry

    def items(self) -> list[tuple[str, Any]]:
        """``(name, entry)`` for every name, each entry imported."""
        return [(n, self.get(n)) for n in self.names()]

    def unknown(self, name: Any) -> str:
        """The one-line message for a name that is not registered."""
        where = f"{self.key}: " if self.key else ""
        return f"{where}unknown {self.concept} {name!r}; choose one of {', '.join(self.names())}"

    def check(self, name: Any, key: str | None = None) -> str:
        """``name`` when registered, else :class:`BasinlabError` naming ``key`` and the registered names."""
        if name not in self._entries:
            where = key or self.key or self.concept
            raise BasinlabError(f"unknown {where} {name!r}; choose one of {', '.join(self.names())}")
        return name

    def help(self) -> str:
        """``a | b | c``: for help texts."""
        return " | ".join(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.concept!r}: {', '.join(self.names())})"


def _lazy(registry: Registry, entries: dict[str, str]) -> Registry:
    for name, path in entries.items():
        registry.register(name, path)
    return registry


#: the process of a config, a label or a checkpoint that names none (SPEC 2)
DEFAULT_PROCESS = "uniform"

#: forward processes (SPEC 2, 2b): ``ForwardProcess`` subclasses, built by ``diffusion.get_process``
PROCESSES = _lazy(Registry("forward process", "train.process"), {
    "uniform": "basinlab.diffusion.uniform:UniformProcess",
    "masked": "basinlab.diffusion.masked:MaskedProcess",
})

#: model families (SPEC 2c): ``ModelFamily`` instances (``basinlab.models.family``)
FAMILIES = _lazy(Registry("model family", "model.family"), {
    "dit": "basinlab.models.family:DIT",
    "llada": "basinlab.models.llada:FAMILY",
    "dream": "basinlab.models.dream:FAMILY",
    "diffusion_gemma": "basinlab.models.diffusion_gemma:FAMILY",
})

#: exact oracles (SPEC 6): ``OracleKind`` instances (``basinlab.oracles.build``)
ORACLES = _lazy(Registry("oracle", "--oracle"), {
    "empirical": "basinlab.oracles.build:EMPIRICAL",
    "markov": "basinlab.oracles.build:MARKOV",
})

#: probe protocols (SPEC 5 "Protocols"): ``Protocol`` records (``basinlab.probes.protocol``)
PROTOCOLS = _lazy(Registry("probe protocol", "probe.protocol"), {
    "exact": "basinlab.probes.protocol:EXACT",
    "paper": "basinlab.probes.protocol:PAPER",
})

#: the probes of the suite (SPEC 5), in the order it runs them: ``ProbeSpec`` records (``basinlab.probes.context``);
#: ``probes.suite.register_probe`` adds one
PROBES = _lazy(Registry("probe", "probe"), {
    name: f"basinlab.probes.suite:{name.upper()}"
    for name in ("basins", "fixed_points", "novelty", "entropy", "likelihood", "t_grid", "trajectory", "gen_ppl")
})

#: which weights of a trained run the probes read (SPEC 5 "Protocols")
WEIGHTS = _lazy(Registry("weights", "probe.weights"), {
    "ema": "basinlab.probes.protocol:EMA",
    "raw": "basinlab.probes.protocol:RAW",
})

#: noise schedules (SPEC 2): ``Schedule`` classes
SCHEDULES = _lazy(Registry("schedule", "train.schedule"), {
    "loglinear": "basinlab.diffusion.schedules:LogLinearSchedule",
    "cosine": "basinlab.diffusion.schedules:CosineSchedule",
})

#: checkpoint formats of other projects that ``basinlab export --format`` writes: ``export(run, out)`` functions
FORMATS = _lazy(Registry("checkpoint format", "--format"), {
    "duo-hf": "basinlab.interop.duo:export_duo_hf",
    "mdlm-hf": "basinlab.interop.mdlm:export_mdlm_hf",
    "hf": "basinlab.interop.family_hf:export_hf",
})


def listing(*registries: Registry) -> str:
    """Lines ``concept (key): a | b | c`` for help texts: the names registered when the parser is built."""
    return "\n".join(f"  {r.concept} ({r.key}): {r.help()}" for r in registries)


def choices(registry: Registry) -> Callable[[], tuple[str, ...]]:
    """A callable giving ``registry``'s names now (argparse reads choices when it parses, after plug-ins load)."""
    return registry.names
