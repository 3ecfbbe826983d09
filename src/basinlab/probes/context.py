"""What the probe suite hands every probe (SPEC 5): one :class:`ProbeContext` in place of a repeated keyword
signature, and what a probe declares about itself (:class:`ProbeSpec`, registered in
:data:`basinlab.registry.PROBES`).

A probe is ``spec.run(ctx, set_name) -> ProbeResult``. The context holds the denoiser, the data and ``D_N``, the probe
config and its protocol's options, the drawn sets and their real-token masks, the results so far (a probe that
reuses another's output, as ``entropy`` reuses the basin test's, names it in ``needs`` and reads
``ctx.result(probe, set_name)``) and the generated samples, drawn once on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch

from basinlab.config import ProbeConfig
from basinlab.data.sequences import SequenceData
from basinlab.diffusion import Denoiser
from basinlab.probes._common import denoiser_device
from basinlab.probes.novelty import generate_samples
from basinlab.probes.protocol import protocol_options, resolve_n_samples
from basinlab.probes.results import ProbeResult


@dataclass
class ProbeContext:
    """One probe run's shared state (see the module docstring)."""

    denoiser: Denoiser
    data: SequenceData
    cfg: ProbeConfig
    n_train: int
    seed: int = 0
    progress: bool = False
    trajectory: bool = False
    seqs: dict[str, torch.Tensor] = field(default_factory=dict)
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    results: dict[tuple[str, str], ProbeResult] = field(default_factory=dict)

    @property
    def common(self) -> dict[str, Any]:
        """The keywords every probe function takes: ``seed``, ``batch_size``, ``progress``."""
        return {"seed": self.seed, "batch_size": self.cfg.batch_size, "progress": self.progress}

    @cached_property
    def opts(self) -> dict[str, dict[str, Any]]:
        """The protocol's option per probe function (:func:`~basinlab.probes.protocol.protocol_options`)."""
        return protocol_options(self.cfg.protocol)

    def on(self, set_name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The sequences of ``set_name`` and their real-token mask."""
        return self.seqs[set_name], self.masks[set_name]

    def result(self, probe: str, set_name: str) -> ProbeResult | None:
        """The result of ``probe`` on ``set_name`` earlier in this run, if it ran."""
        return self.results.get((probe, set_name))

    @property
    def drawn_samples(self) -> torch.Tensor | None:
        """The generated samples if a probe asked for them in this run, without drawing them."""
        return self.__dict__.get("samples")

    @cached_property
    def samples(self) -> torch.Tensor | None:
        """``probe.n_samples`` samples generated from noise, drawn once (``None`` when there are none to draw)."""
        n = resolve_n_samples(self.cfg.n_samples, self.cfg.protocol, denoiser_device(self.denoiser))
        if n <= 0:
            return None
        return generate_samples(self.denoiser, n, self.data.seq_len, steps=self.cfg.steps, seed=self.seed,
                                batch_size=self.cfg.batch_size, progress=self.progress, **self.opts["generate"])


@dataclass(frozen=True)
class ProbeSpec:
    """A registered probe: its ``name``, the ``sets`` it runs on (``generated``: the samples, once), ``run(ctx,
    set_name)``, the probes whose results it reads (``needs``: run before it when selected), and whether the
    config turns it on (``enabled(cfg)``)."""

    name: str
    sets: tuple[str, ...]
    run: Callable[[ProbeContext, str], ProbeResult | None]
    needs: tuple[str, ...] = ()
    enabled: Callable[[ProbeConfig], bool] = field(default=lambda cfg: True)
