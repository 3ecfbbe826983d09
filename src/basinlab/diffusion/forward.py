"""The forward process as one object (SPEC 2, 2b, 3, 4): what a trainer, a sampler or a probe asks of it.

A :class:`ForwardProcess` holds everything that differs between the uniform process (SPEC 2) and the masked one
(SPEC 2b): the corruption ``z_t ~ q_t(. | x)``, the prior sample ``z_1``, the network's output parameterisation,
the reverse step given ``x_θ`` (greedy or drawn), the final step, the NELBO integrand and its cheap twin (SPEC 4),
the leave-one-out conditional the entropy probe reads, and the size of the network's vocabulary. A denoiser carries
its process next to its schedule (``denoiser.process``); every denoiser carries one (:func:`process_of`).

Conventions shared by every process:

- ``vocab_size`` is ``V``, the number of *clean* tokens; clean sequences lie in ``[0, V)``. A denoiser returns
  ``log x_θ`` over those ``V`` tokens, ``[B, L, V]``, whatever its process; the network itself may have more
  inputs/outputs (``n_outputs``: ``V + 1`` for the masked process, whose ``[MASK]`` is ``mask_index = V``).
- ``alpha``-like arguments are Python floats or ``[B]`` tensors (float64 arithmetic); generators as in
  ``torch.rand``.

Add a process: subclass :class:`ForwardProcess` and register it in :data:`basinlab.registry.PROCESSES`
(``@PROCESSES.register("NAME")``; docs/ARCHITECTURE.md, "Add a forward process"). Code asks a process what it can
do (the capabilities below), never its name.
"""

from __future__ import annotations

from typing import Any

import torch

from basinlab.errors import BasinlabError
from basinlab.registry import PROCESSES


class ForwardProcess:
    """Base class of the forward processes; subclasses implement every method (see the module docstring)."""

    #: the name saved in checkpoints and configs (``train.process``)
    name = "process"
    #: the cheap objective with the NELBO's optimum (SPEC 4): ``ce_redrawn`` on the positions the process corrupted
    has_cheap_objective = True
    #: whether a clean token can change during the reverse chain (``unstable_rate`` means something)
    can_change_clean = True
    #: whether the packed chains of ``diffusion/packed.py`` (the basin test's GPU fast path) run this process
    packed_fast_path = False
    #: whether :meth:`with_remask` gives a remasking sampler (ReMDM, SPEC 2b)
    supports_remask = False
    #: the tokenizer's special token this process uses when the tokenizer has one (``[MASK]``), else ``None``
    tokenizer_token: str | None = None
    #: the exact oracles of this process (SPEC 6): oracle kind -> ``"module:Class"`` (imported on use)
    oracles: dict[str, str] = {}
    #: how the report names what training optimised: the corrupted positions, the cheap objective, the NELBO
    corrupted_word = "corrupted"
    cheap_objective_note = "the NELBO's optimum, the leave-one-out posterior (SPEC 4)"
    nelbo_name = "the process's continuous-time NELBO"
    #: whether ``x_θ`` is one-hot at every position ``z_t`` leaves visible (MDLM's SUBS carry-over): its entropy at its
    #: input is then 0 there by construction (the ``paper`` protocol's entropy, SPEC 5 "Protocols")
    output_one_hot_where_visible = False

    def __init__(self, vocab_size: int) -> None:
        if int(vocab_size) < 1:
            raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
        self.vocab_size = int(vocab_size)

    # ---- sizes ------------------------------------------------------------------------------------------------

    @property
    def n_outputs(self) -> int:
        """The network's vocabulary (input embedding rows and output logits)."""
        return self.vocab_size

    @property
    def mask_index(self) -> int | None:
        """The ``[MASK]`` token's id, or ``None`` for a process without one."""
        return None

    # ---- forward ----------------------------------------------------------------------------------------------

    def corrupt(self, x: torch.Tensor, alpha_t: Any, generator: torch.Generator | None = None,
                return_mask: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``z_t ~ q_t(. | x)``; with ``return_mask`` also the bool ``[B, L]`` mask of corrupted positions."""
        raise NotImplementedError

    def prior_sample(self, n: int, length: int, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu") -> torch.Tensor:
        """``z_1``: the chain's starting point, long ``[n, length]``."""
        raise NotImplementedError

    # ---- the network's output ------------------------------------------------------------------------------------

    def parameterise(self, logits: torch.Tensor, z_t: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        """``log x_θ`` float32 ``[B, L, V]`` from the network's logits ``[B, L, n_outputs]`` at input ``z_t`` and
        noise level ``sigma = -log α_t`` ``[B]`` (a score parameterisation such as SEDD's needs it)."""
        raise NotImplementedError

    def leave_one_out(self, denoiser: Any, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``log x_θ,l``: the prediction of each token ``l`` from the others (SPEC 4, 2b), ``[B, L, V]``: the
        conditional whose entropy the entropy probe measures."""
        raise NotImplementedError

    # ---- reverse ----------------------------------------------------------------------------------------------

    def step(self, z_t: torch.Tensor, log_x_theta: torch.Tensor, alpha_t: Any, alpha_s: Any, greedy: bool = False,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """One reverse step ``z_s ~ q(z_s | z_t, x_θ)`` (``s < t``), drawn or its argmax (``greedy``)."""
        raise NotImplementedError

    def log_posterior(self, log_x_theta: torch.Tensor, z_t: torch.Tensor, alpha_t: Any) -> torch.Tensor:
        """``log p(x_l = v | z_t)`` ``[B, L, V]``: the prediction of the clean token given all of ``z_t``."""
        raise NotImplementedError

    def final_step(self, log_x_theta: torch.Tensor, z: torch.Tensor, alpha_t: Any, greedy: bool = True,
                   generator: torch.Generator | None = None, bayes: bool = True) -> torch.Tensor:
        """Noise removal at ``t_min`` (SPEC 3): :meth:`log_posterior` (or ``x_θ`` alone with ``bayes=False``),
        argmax or drawn."""
        logp = self.log_posterior(log_x_theta, z, alpha_t) if bayes else log_x_theta
        if greedy:
            return logp.argmax(-1)
        B, L, V = logp.shape
        return torch.multinomial(logp.exp().reshape(B * L, V), 1, generator=generator).reshape(B, L)

    # ---- objective --------------------------------------------------------------------------------------------

    def nelbo_integrand(self, x: torch.Tensor, z_t: torch.Tensor, log_x_theta: torch.Tensor, alpha_t: Any,
                        dalpha_t: Any) -> torch.Tensor:
        """The per-position continuous-time NELBO integrand ``f >= 0``, ``[B, L]``."""
        raise NotImplementedError

    def cheap_loss(self, x: torch.Tensor, log_x_theta: torch.Tensor, corrupted: torch.Tensor) -> torch.Tensor:
        """``-log x_θ,l(x_l)`` on the positions the forward process corrupted (``corrupt(..., return_mask=True)``),
        0 elsewhere, ``[B, L]``: the ``ce_redrawn`` objective, with the NELBO's optimum (SPEC 4, 2b)."""
        nll = -log_x_theta.float().gather(-1, x.unsqueeze(-1)).squeeze(-1)
        return torch.where(corrupted, nll, torch.zeros_like(nll))

    def prior_kl(self, alpha_1: float) -> float:
        """The prior term of the NELBO per token, nats."""
        raise NotImplementedError

    # ---- capabilities -----------------------------------------------------------------------------------------

    @classmethod
    def tokenizer_options(cls, token_to_id: Any) -> dict[str, Any]:
        """Options taken from a tokenizer (``token_to_id(str) -> int | None``): the id of :attr:`tokenizer_token`
        as ``mask_index`` when the tokenizer has it (MDLM's rule, SPEC 2b), else none."""
        if cls.tokenizer_token is None or token_to_id is None:
            return {}
        idx = token_to_id(cls.tokenizer_token)
        return {} if idx is None else {"mask_index": int(idx)}

    def with_remask(self, eta: float) -> ForwardProcess:
        """The same process with a remasking sampler of strength ``eta`` (:attr:`supports_remask`)."""
        raise BasinlabError(f"the {self.name} process has nothing to remask: remasking (--remask, probe.remask) "
                            f"drives processes with a [MASK], such as masked")

    def oracle_class(self, kind: str) -> Any:
        """The class of this process's exact oracle ``kind`` (SPEC 6), or ``None`` when it has none."""
        import importlib

        path = self.oracles.get(kind)
        if path is None:
            return None
        module, _, attr = path.partition(":")
        return getattr(importlib.import_module(module), attr)

    # ---- identity ---------------------------------------------------------------------------------------------

    def options(self) -> dict[str, Any]:
        """The process's options beyond ``vocab_size`` (what :func:`get_process` takes back)."""
        return {}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "vocab_size": self.vocab_size, **self.options()}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ForwardProcess) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.to_dict().items())))

    def __repr__(self) -> str:
        opts = "".join(f", {k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}(V={self.vocab_size}{opts})"


def get_process(name: str, vocab_size: int, **options: Any) -> ForwardProcess:
    """The registered process ``name`` (:data:`basinlab.registry.PROCESSES`) over ``vocab_size`` clean tokens."""
    if name not in PROCESSES:
        raise ValueError(PROCESSES.unknown(name))
    return PROCESSES.get(name)(vocab_size, **options)


def process_of(denoiser: Any) -> ForwardProcess:
    """The denoiser's forward process, ``denoiser.process``: every denoiser carries one (an oracle included)."""
    proc = getattr(denoiser, "process", None)
    if not isinstance(proc, ForwardProcess):
        raise BasinlabError(f"{type(denoiser).__name__} has no forward process: give it a `process` attribute, e.g. "
                            f"basinlab.diffusion.get_process('uniform', V)")
    return proc


class ProcessView:
    """A denoiser seen through another process of the same vocabulary (:func:`with_process`), or driven by a
    model's own sampler (:func:`with_sampler`: ``own_chain``)."""

    def __init__(self, denoiser: Any, process: ForwardProcess, own_chain: Any = None) -> None:
        self._inner, self.process, self.own_chain = denoiser, process, own_chain

    def __call__(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self._inner(z_t, t)

    def __getattr__(self, name: str) -> Any:  # vocab_size, schedule, device, ...: the wrapped denoiser's
        return getattr(self._inner, name)

    def __repr__(self) -> str:
        return f"{self._inner!r} with {self.process!r}"


def with_process(denoiser: Any, process: ForwardProcess) -> Any:
    """``denoiser`` whose chains take ``process``'s steps (e.g. a masked process with ReMDM remasking): the same
    ``x_θ``, another sampler. ``process`` must have the denoiser's vocabulary and network outputs."""
    own = process_of(denoiser)
    if (own.name, own.vocab_size) != (process.name, process.vocab_size):
        raise ValueError(f"cannot drive a denoiser of {own!r} with {process!r}")
    return ProcessView(denoiser, process)
