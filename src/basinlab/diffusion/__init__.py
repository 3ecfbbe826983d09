"""The mathematics of uniform discrete diffusion (SPEC 2-4). Imports nothing else from basinlab."""

from basinlab.diffusion.nelbo import (
    estimate_nelbo,
    nelbo_integrand,
    nelbo_integrand_reference,
    prior_kl,
    redrawn_cross_entropy,
    sample_times,
)
from basinlab.diffusion.process import (
    bayes_log_posterior,
    corrupt,
    emission_log_bonus,
    greedy_posterior,
    mixture_weights,
    posterior,
    sample_posterior,
)
from basinlab.diffusion.sampler import (
    T_MIN,
    Denoiser,
    final_step,
    generate,
    n_denoiser_calls,
    reverse_chain,
    sample_noise,
    start_index,
    time_grid,
)
from basinlab.diffusion.schedules import CosineSchedule, LogLinearSchedule, Schedule, get_schedule

__all__ = [
    "T_MIN",
    "CosineSchedule",
    "Denoiser",
    "LogLinearSchedule",
    "Schedule",
    "bayes_log_posterior",
    "corrupt",
    "emission_log_bonus",
    "estimate_nelbo",
    "final_step",
    "generate",
    "get_schedule",
    "greedy_posterior",
    "mixture_weights",
    "n_denoiser_calls",
    "nelbo_integrand",
    "nelbo_integrand_reference",
    "posterior",
    "prior_kl",
    "redrawn_cross_entropy",
    "reverse_chain",
    "sample_noise",
    "sample_posterior",
    "sample_times",
    "start_index",
    "time_grid",
]
