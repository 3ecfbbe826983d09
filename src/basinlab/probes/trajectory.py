"""Statistics of the model's predictions along the reverse chain (SPEC 5, "Trajectory statistics").

From ``z_1 ~ q_1(. | x)`` run the stochastic reverse chain from ``t = 1`` (``T`` steps, then the final step's
denoiser call at ``t_min``). At each of the ``T + 1`` denoiser calls, with ``p = x_θ`` at a position
(``V`` = vocabulary size; the definitions of the study's ``eval_entropy_overtime.py``):

- ``traj_entropy``: ``H = -Σ_v p_v log p_v`` (nats);
- ``traj_diag``: ``Σ_v p_v (1 - p_v)`` (the diagonal of the softmax Jacobian ``diag(p) - p pᵀ``);
- ``traj_diag_norm``: ``(Σ_v (p_v (1 - p_v))²)^½``;
- ``traj_interaction``: ``-((Σ_v p_v)² - Σ_v p_v²) / (V (V - 1)) / 2`` (the off-diagonal sum ``Σ_{u≠v} -p_u p_v``
  over ``V (V - 1)``, halved as in the study);
- ``traj_interaction_norm``: ``(½ max((Σ_v p_v²)² - Σ_v p_v⁴, 10⁻¹²))^½``;
- ``traj_spectral_gap``: ``p_(1) - p_(2)``, the largest probability minus the second largest;
- ``traj_max_conf``: ``p_(1)``.

Each is averaged over the counted positions of a sequence (real tokens; every position under ``paper``), then
over sequences (rows with an interval at up to ``points`` of the calls, first and last included; every call in
``.arrays``: ``traj_t [K]`` and ``{metric} [K, M]``). Probe ``trajectory``, row ``t`` = the call's ``t``.
"""

from __future__ import annotations

import math

import torch

from basinlab.diffusion import n_denoiser_calls, process_of, reverse_chain
from basinlab.probes._common import batches, check_seqs, denoiser_device, make_generator, progress_bar
from basinlab.probes.results import ProbeResult, child_seed, summarize

PROBE = "trajectory"
METRICS = ("traj_entropy", "traj_diag", "traj_diag_norm", "traj_interaction", "traj_interaction_norm",
           "traj_spectral_gap", "traj_max_conf")


def prediction_stats(log_x_theta: torch.Tensor) -> dict[str, torch.Tensor]:
    """The :data:`METRICS` of ``p = exp(log_x_theta)`` per position, float64 ``[B, L]`` each."""
    p = log_x_theta.to(torch.float64).exp()
    V = p.shape[-1]
    s1, s2, s4 = p.sum(-1), (p**2).sum(-1), (p**4).sum(-1)
    d = p * (1 - p)
    top = torch.topk(p, k=min(2, V), dim=-1).values
    second = top[..., 1] if V > 1 else torch.zeros_like(top[..., 0])
    return {
        "traj_entropy": torch.special.entr(p).sum(-1),
        "traj_diag": d.sum(-1),
        "traj_diag_norm": (d**2).sum(-1).sqrt(),
        "traj_interaction": -(s1**2 - s2) / (V * max(V - 1, 1)) / 2,
        "traj_interaction_norm": (0.5 * (s2**2 - s4).clamp_min(1e-12)).sqrt(),
        "traj_spectral_gap": top[..., 0] - second,
        "traj_max_conf": top[..., 0],
    }


def trajectory_stats(
    denoiser,
    seqs: torch.Tensor,
    *,
    set_name: str = "",
    seed: int = 0,
    batch_size: int = 256,
    real_mask: torch.Tensor | None = None,
    progress: bool = False,
    steps: int = 1000,
    points: int = 26,
    count_special: bool = False,
    device: torch.device | str | None = None,
) -> ProbeResult:
    """The :data:`METRICS` along the stochastic reverse chain from ``t = 1`` started at ``z_1 ~ q_1(. | x)``."""
    V = denoiser.vocab_size
    seqs, mask = check_seqs(seqs, V, None if count_special else real_mask)
    dev = denoiser_device(denoiser, device)
    M = seqs.shape[0]
    K = n_denoiser_calls(steps, 1.0)
    stats = {m: torch.full((K, M), math.nan, dtype=torch.float64) for m in METRICS}
    traj_t = torch.empty(K, dtype=torch.float64)
    g = make_generator(child_seed(seed, PROBE), dev)
    a_1 = float(denoiser.schedule.alpha(1.0))
    bar = progress_bar(K * len(range(0, M, batch_size)), f"trajectory {set_name}".strip(), progress)
    with torch.inference_mode():
        for sl in batches(M, batch_size):
            m = mask[sl].to(torch.float64)
            calls = [0]

            def record(k, t, z, log_x, sl=sl, m=m, calls=calls):
                for name, v in prediction_stats(log_x).items():
                    stats[name][calls[0], sl] = (v.cpu() * m).sum(1) / m.sum(1)
                traj_t[calls[0]] = t
                calls[0] += 1
                bar.update(1)

            z = process_of(denoiser).corrupt(seqs[sl].to(dev), a_1, generator=g)
            reverse_chain(denoiser, z, 1.0, steps, greedy=False, final_greedy=True, generator=g, callback=record)
    bar.close()
    res = ProbeResult()
    keep = sorted(set(range(0, K, max(1, math.ceil(K / max(1, points))))) | {K - 1})
    for name in METRICS:
        for k in keep:
            res.add(PROBE, set_name, float(traj_t[k]), name, summarize(stats[name][k]))
    res.arrays.update(traj_t=traj_t, **stats)
    return res
