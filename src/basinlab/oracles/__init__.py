"""Exact oracles (SPEC 6): denoisers with no training that return the leave-one-out ``x_θ`` of SPEC 4.

``EmpiricalDenoiser`` is the perfect memoriser of a training set; ``MarkovDenoiser`` the Bayes-optimal generaliser
of a known Markov source. ``MaskedEmpiricalDenoiser`` and ``MaskedMarkovDenoiser`` are the same two under the
masked process (SPEC 2b). All satisfy the ``basinlab.diffusion.Denoiser`` protocol.
"""

from basinlab.oracles.markov import MarkovDenoiser
from basinlab.oracles.masked import MaskedEmpiricalDenoiser, MaskedMarkovDenoiser
from basinlab.oracles.memoriser import EmpiricalDenoiser

__all__ = ["EmpiricalDenoiser", "MarkovDenoiser", "MaskedEmpiricalDenoiser", "MaskedMarkovDenoiser"]
