"""The mathematics of discrete diffusion (SPEC 2-4): the forward processes (uniform, masked), their reverse chains
and NELBO. Imports nothing else from basinlab but its leaves (errors, registry)."""

from basinlab.diffusion.forward import (
    ForwardProcess,
    get_process,
    process_of,
    with_process,
)
from basinlab.diffusion.masked import MaskedProcess
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
    with_sampler,
    with_self_conditioning,
)
from basinlab.diffusion.schedules import CosineSchedule, LogLinearSchedule, Schedule, get_schedule
from basinlab.diffusion.uniform import UniformProcess
from basinlab.registry import PROCESSES

__all__ = [
    "PROCESSES",
    "T_MIN",
    "CosineSchedule",
    "Denoiser",
    "ForwardProcess",
    "LogLinearSchedule",
    "MaskedProcess",
    "Schedule",
    "UniformProcess",
    "bayes_log_posterior",
    "corrupt",
    "emission_log_bonus",
    "estimate_nelbo",
    "final_step",
    "generate",
    "get_process",
    "get_schedule",
    "greedy_posterior",
    "mixture_weights",
    "n_denoiser_calls",
    "nelbo_integrand",
    "nelbo_integrand_reference",
    "posterior",
    "prior_kl",
    "process_of",
    "redrawn_cross_entropy",
    "reverse_chain",
    "sample_noise",
    "sample_posterior",
    "sample_times",
    "start_index",
    "time_grid",
    "with_process",
    "with_sampler",
    "with_self_conditioning",
]
