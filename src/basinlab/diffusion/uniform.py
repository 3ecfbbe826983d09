"""The uniform forward process (SPEC 2-4) as a :class:`~basinlab.diffusion.forward.ForwardProcess`.

A thin object over the functions of :mod:`basinlab.diffusion.process` and :mod:`basinlab.diffusion.nelbo`, which
stay the one place its mathematics lives: every method calls them with the same arguments in the same order, so
results (and random streams) are those of the functions themselves.
"""

from __future__ import annotations

from typing import Any

import torch

from basinlab.diffusion import nelbo as _nelbo
from basinlab.diffusion import process as _process
from basinlab.diffusion.forward import ForwardProcess


class UniformProcess(ForwardProcess):
    """``q_t(z | x) = α_t onehot(x) + (1 - α_t)/V`` (SPEC 2); ``x_θ`` is the leave-one-out prediction (SPEC 4)."""

    name = "uniform"
    packed_fast_path = True
    corrupted_word = "redrawn"
    cheap_objective_note = ("SPEC 4: the same optimum as the NELBO, the leave-one-out posterior, with far lower "
                            "variance")
    nelbo_name = "the continuous-time NELBO (SPEC 4)"
    oracles = {"empirical": "basinlab.oracles.memoriser:EmpiricalDenoiser",
               "markov": "basinlab.oracles.markov:MarkovDenoiser"}

    def corrupt(self, x: torch.Tensor, alpha_t: Any, generator: torch.Generator | None = None,
                return_mask: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """SPEC 2: each position redrawn uniformly over all ``V`` with prob ``1 - α_t``; the mask is "redrawn"."""
        return _process.corrupt(x, alpha_t, self.vocab_size, generator=generator, return_mask=return_mask)

    def prior_sample(self, n: int, length: int, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu") -> torch.Tensor:
        """Uniform random tokens (the prior at ``α_1 ≈ 0``)."""
        return torch.randint(0, self.vocab_size, (n, length), generator=generator, device=device)

    def parameterise(self, logits: torch.Tensor, z_t: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        """``log_softmax`` of the logits in float32: the network's ``x_θ`` is leave-one-out by training (SPEC 4)."""
        return torch.log_softmax(logits.float(), dim=-1)

    def leave_one_out(self, denoiser: Any, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``x_θ(z_t)`` itself: the uniform denoiser's output already leaves each token out (SPEC 4)."""
        return denoiser(z_t, t)

    def step(self, z_t: torch.Tensor, log_x_theta: torch.Tensor, alpha_t: Any, alpha_s: Any, greedy: bool = False,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """SPEC 3: the three-way mixture, drawn exactly, or its argmax."""
        if greedy:
            return _process.greedy_posterior(z_t, log_x_theta, alpha_t, alpha_s)
        return _process.sample_posterior(z_t, log_x_theta, alpha_t, alpha_s, generator=generator)

    def log_posterior(self, log_x_theta: torch.Tensor, z_t: torch.Tensor, alpha_t: Any) -> torch.Tensor:
        """The Bayes combination ``∝ e_t(z_l | v) x_θ,l(v)`` (SPEC 3)."""
        return _process.bayes_log_posterior(log_x_theta, z_t, alpha_t)

    def nelbo_integrand(self, x: torch.Tensor, z_t: torch.Tensor, log_x_theta: torch.Tensor, alpha_t: Any,
                        dalpha_t: Any) -> torch.Tensor:
        """SPEC 4's ``f`` (:func:`basinlab.diffusion.nelbo.nelbo_integrand`)."""
        return _nelbo.nelbo_integrand(x, z_t, log_x_theta, alpha_t, dalpha_t)

    def cheap_loss(self, x: torch.Tensor, log_x_theta: torch.Tensor, corrupted: torch.Tensor) -> torch.Tensor:
        """The redrawn-positions cross-entropy (SPEC 4)."""
        return _nelbo.redrawn_cross_entropy(x, log_x_theta, corrupted)

    def prior_kl(self, alpha_1: float) -> float:
        """``KL(q_1(. | x) || uniform)`` per token."""
        return _nelbo.prior_kl(alpha_1, self.vocab_size)
