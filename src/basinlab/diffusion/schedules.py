"""Noise schedules of the uniform forward process (SPEC 2).

Each schedule gives ``alpha(t)`` (the probability that a token is kept), its derivative ``dalpha(t)`` and
``sigma(t) = -log alpha(t)``, the quantity that conditions the network. Times are computed in float64.
"""

from __future__ import annotations

import math

import torch

from basinlab.registry import SCHEDULES

Tensorish = torch.Tensor | float


def _as_t(t: Tensorish) -> torch.Tensor:
    return torch.as_tensor(t, dtype=torch.float64)


class Schedule:
    """Base class: subclasses define ``alpha`` and ``dalpha``; ``sigma`` follows."""

    name = "schedule"

    def __init__(self, eps: float = 1e-3) -> None:
        if not 0.0 <= eps < 1.0:
            raise ValueError(f"schedule eps must lie in [0, 1), got {eps}")
        self.eps = float(eps)

    def alpha(self, t: Tensorish) -> torch.Tensor:
        raise NotImplementedError

    def dalpha(self, t: Tensorish) -> torch.Tensor:
        raise NotImplementedError

    def sigma(self, t: Tensorish) -> torch.Tensor:
        """``sigma_t = -log alpha_t`` (SPEC 2)."""
        return -torch.log(self.alpha(t))

    def to_dict(self) -> dict:
        return {"name": self.name, "eps": self.eps}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(eps={self.eps})"


class LogLinearSchedule(Schedule):
    """``alpha_t = 1 - (1 - eps) t`` (SPEC 2, the default)."""

    name = "loglinear"

    def alpha(self, t: Tensorish) -> torch.Tensor:
        return 1.0 - (1.0 - self.eps) * _as_t(t)

    def dalpha(self, t: Tensorish) -> torch.Tensor:
        return torch.full_like(_as_t(t), -(1.0 - self.eps))


class CosineSchedule(Schedule):
    """``alpha_t = 1 - cos(pi/2 (1 - (1 - eps) t))`` (SPEC 2)."""

    name = "cosine"

    def alpha(self, t: Tensorish) -> torch.Tensor:
        return 1.0 - torch.cos(math.pi / 2 * (1.0 - (1.0 - self.eps) * _as_t(t)))

    def dalpha(self, t: Tensorish) -> torch.Tensor:
        return -torch.sin(math.pi / 2 * (1.0 - (1.0 - self.eps) * _as_t(t))) * (math.pi / 2) * (1.0 - self.eps)


def get_schedule(name: str, eps: float = 1e-3) -> Schedule:
    """Schedule by registered name (:data:`basinlab.registry.SCHEDULES`: ``loglinear``, ``cosine``, ...)."""
    if name not in SCHEDULES:
        raise ValueError(SCHEDULES.unknown(name))
    return SCHEDULES.get(name)(eps=eps)
