"""Packed reverse chains (SPEC 3, 5): many chains from different ``t_start`` in one full batch, with per-chain RNG.

The basin test runs ``M`` chains per ``t``; a chain from ``t = 0.05`` needs ~50 grid steps, one from ``t = 1`` needs
1,000. :func:`packed_chains` keeps a batch of ``B`` *slots* full: each slot runs one chain; when a chain takes its
final step its slot is refilled from the queue, so every denoiser call sees ``B`` rows (static shapes for
``torch.compile``/CUDA graphs) until the queue runs dry.

**Per-chain randomness.** Every random number a chain uses is a counter-based hash of ``(chain key, step,
position, stream)`` (SplitMix64), never a shared generator's state: a chain's result is the same whichever slot,
batch or neighbours it runs with (for a denoiser whose rows do not interact, as the oracles and a network in eval
mode). Draws, all exact (SPEC 3): the corruption ``z_t ~ q_t(. | x)``; each reverse step by the three-way mixture
(stay / draw from ``x_θ`` / uniform), the ``x_θ`` draw by a two-level inverse CDF over blocks of the vocabulary (no
host synchronisation, one pass over ``[B, L, V]``); the final step (argmax or drawn) of SPEC 3.

The slot bookkeeping depends only on the ``t_start`` of the chains, so it lives on the host and the device is never
waited for inside the loop. Stochastic chains of the uniform process only (greedy chains, and every other process,
use :func:`~basinlab.diffusion.sampler.reverse_chain`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from basinlab.diffusion.forward import process_of
from basinlab.diffusion.process import emission_log_bonus, mixture_weights
from basinlab.diffusion.sampler import T_MIN, Denoiser, start_index, time_grid

logger = logging.getLogger(__name__)

_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_STREAMS = 8  # random numbers per (chain, step, position)
_BLOCK = 256  # vocabulary block of the two-level categorical draw
# Streams.
CORRUPT_U, CORRUPT_TOKEN, STEP_U, STEP_TOKEN, CAT_BLOCK, CAT_INNER = range(6)


def _signed(c: int) -> int:
    c &= _M64
    return c - (1 << 64) if c >= 1 << 63 else c


def _shr(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's ``>>`` is arithmetic)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def splitmix64(x: torch.Tensor) -> torch.Tensor:
    """The SplitMix64 finaliser on int64 tensors (wrapping arithmetic): a bijective, well-mixed hash."""
    x = x + _signed(_GOLDEN)
    x = (x ^ _shr(x, 30)) * _signed(0xBF58476D1CE4E5B9)
    x = (x ^ _shr(x, 27)) * _signed(0x94D049BB133111EB)
    return x ^ _shr(x, 31)


def chain_keys(seed: int, ids: torch.Tensor) -> torch.Tensor:
    """Per-chain int64 keys from a seed and chain ids (e.g. ``t index · M + sequence index``)."""
    return splitmix64(splitmix64(torch.full_like(ids, _signed(seed))) ^ ids.long())


def chain_uniform(keys: torch.Tensor, step: torch.Tensor, stream: int, length: int) -> torch.Tensor:
    """Float64 uniforms in ``[0, 1)``, ``[B, L]``: a hash of (chain key, step, position, stream)."""
    pos = torch.arange(length, device=keys.device, dtype=torch.long)
    ctr = (step.long()[:, None] * length + pos) * _STREAMS + stream
    h = splitmix64(keys.long()[:, None] ^ splitmix64(ctr))
    return _shr(h, 11).to(torch.float64) * (2.0**-53)


def _uniform_token(u: torch.Tensor, vocab_size: int) -> torch.Tensor:
    return (u * vocab_size).long().clamp_(max=vocab_size - 1)


def categorical_blocks(logits: torch.Tensor, u_block: torch.Tensor, u_inner: torch.Tensor) -> torch.Tensor:
    """A draw from ``softmax(logits)`` per position (``[B, L, V]`` -> long ``[B, L]``) by a two-level inverse CDF:
    the block of ``256`` tokens from the block masses, then the token within it; exact in distribution."""
    B, L, V = logits.shape
    nb = -(-V // _BLOCK)
    p = torch.exp(logits.float() - logits.float().amax(-1, keepdim=True))
    if nb * _BLOCK != V:
        p = torch.nn.functional.pad(p, (0, nb * _BLOCK - V))
    p = p.view(B, L, nb, _BLOCK)
    cb = p.sum(-1).cumsum(-1)  # [B, L, nb]
    j = torch.searchsorted(cb, (u_block * cb[..., -1].double()).float()[..., None], right=True).clamp_(max=nb - 1)
    inner = p.gather(2, j[..., None].expand(B, L, 1, _BLOCK)).squeeze(2).cumsum(-1)  # [B, L, 256]
    k = torch.searchsorted(inner, (u_inner * inner[..., -1].double()).float()[..., None], right=True)
    return (j * _BLOCK + k.clamp_(max=_BLOCK - 1)).squeeze(-1).clamp_(max=V - 1)


def corrupt_chains(x: torch.Tensor, alpha_t: torch.Tensor, keys: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """``z_t ~ q_t(. | x)`` (SPEC 2) with the per-chain counters (step ``-1``)."""
    step = torch.full_like(keys, -1)
    L = x.shape[1]
    redrawn = chain_uniform(keys, step, CORRUPT_U, L) >= alpha_t.to(torch.float64)[:, None]
    noise = _uniform_token(chain_uniform(keys, step, CORRUPT_TOKEN, L), vocab_size)
    return torch.where(redrawn, noise, x)


def step_chains(
    z: torch.Tensor, log_x: torch.Tensor, alpha_t: torch.Tensor, alpha_s: torch.Tensor, keys: torch.Tensor,
    step: torch.Tensor,
) -> torch.Tensor:
    """One exact reverse step ``z_s ~ q(z_s | z_t, x_θ)`` of every row (three-way mixture of SPEC 3)."""
    B, L, V = log_x.shape
    x_i = log_x.gather(-1, z[..., None]).squeeze(-1).double().exp()
    stay, draw, _ = mixture_weights(x_i, alpha_t, alpha_s, V)
    u = chain_uniform(keys, step, STEP_U, L)
    from_x = categorical_blocks(log_x, chain_uniform(keys, step, CAT_BLOCK, L), chain_uniform(keys, step, CAT_INNER, L))
    from_u = _uniform_token(chain_uniform(keys, step, STEP_TOKEN, L), V)
    return torch.where(u < stay, z, torch.where(u < stay + draw, from_x, from_u))


def final_chains(
    z: torch.Tensor, log_x: torch.Tensor, alpha: float, greedy: bool, keys: torch.Tensor, step: torch.Tensor
) -> torch.Tensor:
    """The final step ``p(x = v | z) ∝ e_t(z | v) x_θ,v`` (SPEC 3), argmax or drawn with the chain counters."""
    lam = float(emission_log_bonus(alpha, log_x.shape[-1]))
    logits = log_x.float().scatter_add(-1, z[..., None], torch.full(z.shape + (1,), lam, device=z.device))
    if greedy:
        return logits.argmax(-1)
    L = z.shape[1]
    return categorical_blocks(logits, chain_uniform(keys, step, CAT_BLOCK, L), chain_uniform(keys, step, CAT_INNER, L))


_COMPILED: dict[str, object] = {}


def _compiled_step():
    """``step_chains`` through ``torch.compile`` (made once per process)."""
    if "step" not in _COMPILED:
        _COMPILED["step"] = torch.compile(step_chains, dynamic=False)
    return _COMPILED["step"]


def _to_device(a: np.ndarray, device: torch.device) -> torch.Tensor:
    """A small host array on ``device`` without a host synchronisation (pinned memory, non-blocking copy)."""
    t = torch.from_numpy(np.ascontiguousarray(a))
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def packed_chains(
    denoiser: Denoiser,
    x: torch.Tensor,
    t_starts: Sequence[float],
    keys: torch.Tensor,
    steps: int = 1000,
    batch_size: int = 256,
    final_greedy: bool = True,
    t_min: float = T_MIN,
    compile: bool = False,
    entry: str = "nearest",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Corrupt each ``x[i]`` at ``t_starts[i]`` and run its stochastic reverse chain plus the final step, packed
    ``batch_size`` chains per denoiser call (module docstring). ``keys [M]`` (int64, :func:`chain_keys`) seed each
    chain. ``compile``: the reverse step through ``torch.compile`` (static shapes; its ``[B, L, V]`` passes fuse
    into one). ``entry``: how a chain enters the grid (:func:`~basinlab.diffusion.sampler.start_index`).
    Returns ``(z_t, restored)``, long ``[M, L]`` on ``x``'s device."""
    if not process_of(denoiser).packed_fast_path:
        raise ValueError(f"packed chains run the uniform process only, not {process_of(denoiser)!r}; use reverse_chain")
    step_fn = _compiled_step() if compile else step_chains
    M, L = x.shape
    dev = x.device
    sched = denoiser.schedule
    grid = time_grid(steps, t_min)
    alphas = sched.alpha(grid).to(torch.float64).numpy()
    k0 = np.array([start_index(grid, t, entry) for t in t_starts], dtype=np.int64)
    keys = keys.to(dev)
    z0 = corrupt_chains(x, torch.as_tensor(alphas[k0], device=dev), keys, denoiser.vocab_size)
    restored = torch.empty_like(x)
    B = min(batch_size, M)
    chain = np.full(B, -1, dtype=np.int64)  # chain of each slot (-1: idle)
    kk = np.zeros(B, dtype=np.int64)  # grid index of each slot
    z = torch.zeros(B, L, dtype=torch.long, device=dev)
    queue = 0
    while True:
        free = np.flatnonzero(chain < 0)[: max(0, M - queue)]
        if free.size:  # refill
            new = np.arange(queue, queue + free.size)
            queue += free.size
            chain[free], kk[free] = new, k0[new]
            z[_to_device(free, dev)] = z0[_to_device(new, dev)]
        active = chain >= 0
        if not active.any():
            break
        kc = np.minimum(kk, steps)
        t = _to_device(np.where(kc < steps, grid.numpy()[kc], t_min), dev)
        slot_keys = keys[_to_device(np.maximum(chain, 0), dev)]
        step_t = _to_device(kc, dev)
        log_x = denoiser(z, t)
        fin = np.flatnonzero(active & (kk == steps))
        if fin.size:
            fi = _to_device(fin, dev)
            restored[_to_device(chain[fin], dev)] = final_chains(
                z[fi], log_x[fi], float(alphas[-1]), final_greedy, slot_keys[fi], step_t[fi])
            chain[fin] = -1
        a_t = _to_device(alphas[kc], dev)
        a_s = _to_device(alphas[np.minimum(kc + 1, steps)], dev)
        try:
            z = step_fn(z, log_x, a_t, a_s, slot_keys, step_t)
        except Exception as err:  # a compiler that fails here must not cost the probe: the eager step is exact
            if step_fn is step_chains:
                raise
            logger.warning("compiled reverse step failed (%s: %s); continuing eagerly", type(err).__name__, err)
            step_fn = step_chains
            z = step_fn(z, log_x, a_t, a_s, slot_keys, step_t)
        kk = np.where(active, kk + 1, kk)
    return z0, restored
