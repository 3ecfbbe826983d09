"""Reverse chains from any ``t_start`` and the final denoising step (SPEC 3).

A *denoiser* is any callable ``denoiser(z_t: long [B, L], t: float64 [B]) -> log x_θ [B, L, V]`` returning the
leave-one-out prediction of SPEC 4, with attributes ``vocab_size`` and ``schedule``, and optionally ``process``
(its :class:`~basinlab.diffusion.forward.ForwardProcess`; uniform when absent). Trained networks and the exact
oracles of SPEC 6 both satisfy it; nothing here knows which one it drives. Every process-specific step (prior,
reverse step, final step) is the process's.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch
from tqdm.auto import tqdm

from basinlab.diffusion.forward import ForwardProcess, ProcessView, process_of
from basinlab.diffusion.schedules import Schedule
from basinlab.errors import BasinlabError

T_MIN = 1e-5


@runtime_checkable
class Denoiser(Protocol):
    """``denoiser(z_t, t) -> log x_θ``: the leave-one-out prediction of each token (SPEC 4).

    A denoiser may also carry ``process`` (a :class:`~basinlab.diffusion.forward.ForwardProcess`, read through
    :func:`~basinlab.diffusion.forward.process_of`); one without is uniform.
    """

    vocab_size: int
    schedule: Schedule

    def __call__(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...


StepCallback = Callable[[int, float, torch.Tensor, torch.Tensor], None]


def time_grid(steps: int, t_min: float = T_MIN) -> torch.Tensor:
    """The ``T + 1`` points ``linspace(1, t_min, T + 1)`` in float64 (SPEC 3)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return torch.linspace(1.0, t_min, steps + 1, dtype=torch.float64)


#: How a chain started at ``t`` enters the grid (SPEC 3): ``nearest`` grid point, or ``above``: the smallest grid
#: point ``>= t``, and at least one reverse step (the ``paper`` probe protocol, SPEC 5 "Protocols").
ENTRIES = ("nearest", "above")


def start_index(grid: torch.Tensor, t_start: float, entry: str = "nearest") -> int:
    """Index of the grid point where a chain from ``t_start`` enters the descending ``grid`` (:data:`ENTRIES`).

    ``above``: the last index ``k`` with ``grid[k] >= t_start``, clamped to ``[0, T - 1]`` (so at least one step).
    """
    if entry == "nearest":
        return int(torch.argmin((grid - float(t_start)).abs()).item())
    if entry == "above":
        k = int((grid >= float(t_start)).sum().item()) - 1
        return max(0, min(k, grid.numel() - 2))
    raise ValueError(f"grid entry must be one of {', '.join(ENTRIES)}, got {entry!r}")


def n_denoiser_calls(steps: int, t_start: float, t_min: float = T_MIN, entry: str = "nearest") -> int:
    """Denoiser evaluations of one chain: the reverse steps plus the final step."""
    grid = time_grid(steps, t_min)
    return steps - start_index(grid, t_start, entry) + 1


def _tvec(t: float, z: torch.Tensor) -> torch.Tensor:
    return torch.full((z.shape[0],), float(t), dtype=torch.float64, device=z.device)


def final_step(
    log_x_theta: torch.Tensor,
    z: torch.Tensor,
    alpha_t: torch.Tensor | float,
    greedy: bool = True,
    generator: torch.Generator | None = None,
    bayes: bool = True,
) -> torch.Tensor:
    """Noise removal ``p(x = v | z) ∝ e_t(z | v) x_θ,v`` (SPEC 3), argmax or drawn: the uniform process's
    :meth:`~basinlab.diffusion.forward.ForwardProcess.final_step`.

    ``bayes=False`` uses ``x_θ`` alone instead of the Bayes combination: only for the ``paper`` probe protocol
    (SPEC 5 "Protocols"), which ends its generated samples with ``argmax x_θ``; ``x_θ`` leaves the current token
    out (SPEC 4), so SPEC 3 never does this.
    """
    from basinlab.diffusion.uniform import UniformProcess

    return UniformProcess(log_x_theta.shape[-1]).final_step(log_x_theta, z, alpha_t, greedy, generator, bayes)


def reverse_chain(
    denoiser: Denoiser,
    z_t: torch.Tensor,
    t_start: float,
    steps: int = 1000,
    greedy: bool = False,
    final_greedy: bool = True,
    generator: torch.Generator | None = None,
    t_min: float = T_MIN,
    callback: StepCallback | None = None,
    final_bayes: bool = True,
    process: ForwardProcess | None = None,
    entry: str = "nearest",
) -> torch.Tensor:
    """Run the reverse chain from ``z_t`` at ``t_start`` down the grid to ``t_min``, then the final step.

    Stochastic chains draw every step exactly from the three-way mixture; greedy chains take the argmax.
    ``callback(k, t, z, log_x_theta)`` sees every denoiser evaluation (e.g. for entropy along the trajectory).
    ``final_greedy``/``final_bayes``: see :func:`final_step`; ``entry``: see :func:`start_index`. ``process``
    (default ``process_of(denoiser)``) takes the steps, e.g. a masked process with remasking. A denoiser with an
    ``own_chain`` (a model's own sampler, ``probe.sampler``; :func:`with_sampler`) runs that instead.
    """
    own = getattr(denoiser, "own_chain", None)
    if own is not None:  # a model's own sampler (probe.sampler, SPEC 2c): it restores z_t its way
        return own(z_t, t_start, steps, generator, greedy=greedy, final_greedy=final_greedy, t_min=t_min,
                   callback=callback, final_bayes=final_bayes, process=process, entry=entry)
    proc = process_of(denoiser) if process is None else process
    grid = time_grid(steps, t_min)
    sched = denoiser.schedule
    k0 = start_index(grid, t_start, entry)
    z = z_t
    for k in range(k0, steps):
        t, s = float(grid[k]), float(grid[k + 1])
        log_x = denoiser(z, _tvec(t, z))
        if callback is not None:
            callback(k, t, z, log_x)
        a_t, a_s = float(sched.alpha(t)), float(sched.alpha(s))
        z = proc.step(z, log_x, a_t, a_s, greedy=greedy, generator=generator)
    log_x = denoiser(z, _tvec(t_min, z))
    if callback is not None:
        callback(steps, t_min, z, log_x)
    return proc.final_step(log_x, z, float(sched.alpha(t_min)), greedy=final_greedy, generator=generator,
                           bayes=final_bayes)


def sample_noise(n: int, length: int, vocab_size: int, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """``z_1``: uniform random tokens (the prior of the uniform process at ``alpha_1 ≈ 0``); see
    :meth:`~basinlab.diffusion.forward.ForwardProcess.prior_sample` for any process."""
    return torch.randint(0, vocab_size, (n, length), generator=generator, device=device)


def generate(
    denoiser: Denoiser,
    n: int,
    length: int,
    steps: int = 1000,
    greedy: bool = False,
    final_greedy: bool = True,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    progress: bool = False,
    final_bayes: bool = True,
    process: ForwardProcess | None = None,
) -> torch.Tensor:
    """Sample ``n`` sequences from the prior (``t = 1``, ``T`` steps, final step greedy by default), batched;
    ``process`` as in :func:`reverse_chain`."""
    proc = process_of(denoiser) if process is None else process

    out = []
    starts = range(0, n, batch_size)
    # outside a terminal no bar: carriage-return updates would fill log files
    for b0 in tqdm(starts, desc="generate", disable=not progress or not sys.stderr.isatty(), leave=False):
        m = min(batch_size, n - b0)
        z = proc.prior_sample(m, length, generator=generator, device=device)
        with torch.inference_mode():
            out.append(reverse_chain(denoiser, z, 1.0, steps, greedy, final_greedy, generator,
                                     final_bayes=final_bayes, process=proc).cpu())
    return torch.cat(out) if out else torch.empty(0, length, dtype=torch.long)


# ---- a model's own chains (SPEC 2c) ----------------------------------------------------------------------------


def with_sampler(denoiser: Any, sampler: str) -> Any:
    """``denoiser`` whose reverse chains are the model's own sampler ``sampler`` (``probe.sampler``, SPEC 2c; e.g.
    DiffusionGemma's ``entropy_bound``), asked of the network (``network.own_sampler(name)``); ``ancestral``
    leaves it unchanged. One line when the model has no such sampler."""
    if sampler == "ancestral":
        return denoiser
    network = getattr(denoiser, "model", None)
    chain = network.own_sampler(sampler) if hasattr(network, "own_sampler") else None
    if chain is None:
        raise BasinlabError(f"probe.sampler={sampler}: this denoiser has no such sampler of its own (DiffusionGemma "
                            "networks have entropy_bound); use probe.sampler=ancestral")
    return ProcessView(denoiser, process_of(denoiser), own_chain=chain)


def with_self_conditioning(denoiser: Any) -> Any:
    """``denoiser`` whose ancestral chains feed each step's logits to the next step, as the model's own sampler does
    (``probe.self_conditioning``, SPEC 2c), asked of the network (``network.self_conditioned()``, a context in
    which its forward remembers its last logits); one line when the network has no self-conditioning."""
    network = getattr(denoiser, "model", None)
    if not hasattr(network, "self_conditioned"):
        raise BasinlabError("probe.self_conditioning: this denoiser's network has no self-conditioning input "
                            "(DiffusionGemma's has); set probe.self_conditioning=false")

    def chain(z_t: torch.Tensor, t_start: float, steps: int, generator: Any = None, **options: Any) -> torch.Tensor:
        with network.self_conditioned():
            return reverse_chain(denoiser, z_t, t_start, steps, generator=generator, **options)

    return ProcessView(denoiser, process_of(denoiser), own_chain=chain)
