"""The masked (absorbing) forward process of SPEC 2b: NELBO against float64 references, SUBS, the reverse step
(carry-over, ReMDM keeps the marginals), the leave-one-out conditional."""

from __future__ import annotations

import math

import pytest
import torch

from basinlab.diffusion import LogLinearSchedule, MaskedProcess, UniformProcess, get_process, process_of, with_process
from basinlab.diffusion.process import corrupt
from basinlab.errors import BasinlabError


def _setup(B=6, L=7, V=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    proc = MaskedProcess(V)
    x = torch.randint(0, V, (B, L), generator=g)
    logits = torch.randn(B, L, V + 1, generator=g, dtype=torch.float64) * 2
    return proc, x, logits, g


def _mdlm_reference(x, z, logits, alpha, dalpha, mask):
    """MDLM's diffusion.py, literally, in float64: SUBS (mask logit -inf, log-softmax, carry-over), then
    ``L_vb = -log p_theta(x) * dsigma / expm1(sigma)`` with ``sigma = -log alpha``, ``dsigma = -alpha' / alpha``."""
    logits = logits.clone()
    logits[..., mask] = -math.inf
    logp = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    unmasked = z != mask
    logp[unmasked] = -math.inf
    logp[unmasked, z[unmasked]] = 0.0
    sigma = -math.log(alpha)
    dsigma = -dalpha / alpha
    log_p_theta = logp.gather(-1, x[..., None]).squeeze(-1)
    return -log_p_theta * dsigma / math.expm1(sigma) * (z == mask)  # MDLM zeroes the unmasked terms by carry-over


@pytest.mark.parametrize("t", [0.01, 0.3, 0.9])
def test_nelbo_integrand_matches_mdlm_float64(t):
    proc, x, logits, g = _setup()
    sched = LogLinearSchedule()
    a, da = float(sched.alpha(t)), float(sched.dalpha(t))
    z = proc.corrupt(x, a, generator=g)
    ref = _mdlm_reference(x, z, logits, a, da, proc.mask_index)
    f64 = proc.nelbo_integrand(x, z, proc.parameterise(logits, z).double(), a, da)
    f32 = proc.nelbo_integrand(x, z, proc.parameterise(logits.float(), z), a, da)
    assert torch.allclose(f64, ref, rtol=0, atol=1e-10)
    assert (f32.double() - ref).abs().max() <= 1e-6 * max(1.0, float(ref.abs().max()))


def test_nelbo_integrand_is_the_kl_rate():
    """``f = lim_{s -> t} KL(q(z_s | z_t, x) || p_θ(z_s | z_t)) / (t - s)`` (SPEC 2b reverse step), per position."""
    proc, x, logits, g = _setup(seed=1)
    sched = LogLinearSchedule()
    t, dt = 0.4, 1e-7
    a_t, a_s = float(sched.alpha(t)), float(sched.alpha(t - dt))
    z = proc.corrupt(x, a_t, generator=g)
    log_x = proc.parameterise(logits, z).double()
    V, m = proc.vocab_size, proc.mask_index

    def reverse(probs):  # q(z_s | z_t = m, .) over V + 1 states, SPEC 2b
        out = torch.zeros(*probs.shape[:-1], V + 1, dtype=torch.float64)
        out[..., :V] = (a_s - a_t) * probs / (1 - a_t)
        out[..., m] = (1 - a_s) / (1 - a_t)
        return out

    q = reverse(torch.nn.functional.one_hot(x, V).double())
    p = reverse(log_x.exp())
    kl = torch.special.xlogy(q, q).sum(-1) - torch.special.xlogy(q, p).sum(-1)
    kl = torch.where(z == m, kl, 0.0)  # unmasked: both carry over, KL 0
    f = proc.nelbo_integrand(x, z, log_x, a_t, float(sched.dalpha(t)))
    assert torch.allclose(kl / dt, f, rtol=1e-5, atol=1e-9)


def test_nelbo_integrand_nonnegative_and_zero_at_the_truth():
    proc, x, logits, g = _setup(seed=2)
    z = proc.corrupt(x, 0.3, generator=g)
    f = proc.nelbo_integrand(x, z, proc.parameterise(logits, z), 0.3, -0.999)
    assert (f >= 0).all() and (f[z != proc.mask_index] == 0).all() and (f[z == proc.mask_index] > 0).all()
    perfect = torch.nn.functional.one_hot(x, proc.vocab_size).double().log()
    assert (proc.nelbo_integrand(x, z, perfect, 0.3, -0.999) == 0).all()


def test_subs_parameterisation():
    proc, x, logits, g = _setup(seed=3)
    z = proc.corrupt(x, 0.5, generator=g)
    log_x = proc.parameterise(logits, z)
    assert log_x.shape == (*x.shape, proc.vocab_size)  # the mask column dropped: never predicted
    assert torch.allclose(log_x.exp().sum(-1), torch.ones(x.shape, dtype=log_x.dtype), atol=1e-6)
    unmasked = z != proc.mask_index
    assert (log_x[unmasked].argmax(-1) == z[unmasked]).all() and (log_x[unmasked].exp().max(-1).values == 1).all()
    assert proc.n_outputs == proc.vocab_size + 1 and proc.mask_index == proc.vocab_size


def test_mask_inside_the_vocabulary():
    """MDLM's rule for a tokenizer with its own [MASK]: ``V`` outputs, the mask column at zero mass."""
    proc = MaskedProcess(6, mask_index=2)
    assert proc.n_outputs == 6 and proc.mask_index == 2
    g = torch.Generator().manual_seed(0)
    x = torch.tensor([[0, 1, 3, 4, 5, 0, 1]])
    z = proc.corrupt(x, 0.4, generator=g)
    logits = torch.randn(1, 7, 6, generator=g)
    log_x = proc.parameterise(logits, z)
    assert log_x.shape == (1, 7, 6) and (log_x[..., 2] == -math.inf).all()
    masked = z == 2
    ref = torch.log_softmax(logits[..., [0, 1, 3, 4, 5]], -1)
    assert torch.allclose(log_x[masked][:, [0, 1, 3, 4, 5]], ref[masked], atol=1e-6)
    assert get_process("masked", 6, mask_index=2) == proc


def test_corrupt_and_prior():
    proc = MaskedProcess(7)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 7, (4000, 16), generator=g)
    z, masked = proc.corrupt(x, 0.3, generator=g, return_mask=True)
    assert torch.equal(masked, z == 7) and torch.equal(z[~masked], x[~masked])
    assert abs(masked.double().mean().item() - 0.7) < 0.005
    assert (proc.prior_sample(3, 5) == 7).all()


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_reverse_step_keeps_the_marginals(eta):
    """With the true ``x_θ = onehot(x)``, ``z_t ~ q_t`` stepped to ``s`` is ``q_s`` (the masked share is
    ``1 - α_s``), with or without ReMDM remasking; without it, clean tokens never change."""
    proc = MaskedProcess(6, remask=eta)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 6, (4000, 16), generator=g)
    a_t, a_s = 0.4, 0.55
    z = proc.corrupt(x, a_t, generator=g)
    truth = torch.nn.functional.one_hot(x, 6).float().log()
    z_s = proc.step(z, truth, a_t, a_s, generator=g)
    masked_s = z_s == proc.mask_index
    assert abs(masked_s.double().mean().item() - (1 - a_s)) < 0.006
    assert torch.equal(z_s[~masked_s], x[~masked_s])
    kept = z != proc.mask_index
    if eta == 0:
        assert torch.equal(z_s[kept], z[kept])
    else:  # remasked share of the clean tokens: sigma = eta min(1, (1 - a_s) / a_t)
        sigma = eta * min(1.0, (1 - a_s) / a_t)
        assert abs(masked_s[kept].double().mean().item() - sigma) < 0.01


def test_greedy_step_and_final_step_carry_over():
    proc, x, logits, g = _setup(B=50, L=9, seed=4)
    z = proc.corrupt(x, 0.5, generator=g)
    log_x = proc.parameterise(logits.float(), z)
    for greedy in (True, False):
        z_s = proc.step(z, log_x, 0.5, 0.9, greedy=greedy, generator=g)
        kept = z != proc.mask_index
        assert torch.equal(z_s[kept], z[kept])
        out = proc.final_step(log_x, z_s, 0.999, greedy=greedy, generator=g)
        assert torch.equal(out[kept], z[kept]) and (out < proc.vocab_size).all()
    # greedy at a large step: masked positions take argmax x_θ
    z_s = proc.step(z, log_x, 0.5, 1.0, greedy=True)
    masked = z == proc.mask_index
    assert torch.equal(z_s[masked], log_x.argmax(-1)[masked])


class _Toy:
    """A masked denoiser whose prediction at each position depends on the visible tokens (sum mod V)."""

    def __init__(self, V=5):
        self.process = MaskedProcess(V)
        self.vocab_size = V
        self.schedule = LogLinearSchedule()
        self.calls = 0

    def __call__(self, z, t):
        self.calls += 1
        V = self.vocab_size
        vis = torch.where(z == V, 0, z + 1).sum(-1, keepdim=True)  # [B, 1]
        logits = torch.cos(vis[..., None] * torch.arange(V) + torch.arange(z.shape[1])[:, None] + t[:, None, None])
        logits = torch.cat([logits, torch.zeros(*z.shape, 1)], -1)
        return self.process.parameterise(logits.float(), z)


def test_leave_one_out_masks_one_position_at_a_time():
    d = _Toy()
    g = torch.Generator().manual_seed(5)
    x = torch.randint(0, 5, (3, 6), generator=g)
    t = torch.full((3,), 1e-5, dtype=torch.float64)
    got = d.process.leave_one_out(d, x, t)
    assert d.calls == 1  # the L maskings in one batch
    for l in range(6):
        z = x.clone()
        z[:, l] = 5
        assert torch.allclose(got[:, l], d(z, t)[:, l])
    assert torch.allclose(got.exp().sum(-1), torch.ones(3, 6), atol=1e-6)
    d.calls = 0
    d.process.loo_entries = 6 * 6 * 5  # one sequence per call, as for a large L L V: the same values
    assert torch.equal(d.process.leave_one_out(d, x, t), got) and d.calls == 3


def test_uniform_process_is_the_functions():
    proc = get_process("uniform", 9)
    x = torch.randint(0, 9, (5, 8), generator=torch.Generator().manual_seed(0))
    a = corrupt(x, 0.3, 9, generator=torch.Generator().manual_seed(1), return_mask=True)
    b = proc.corrupt(x, 0.3, generator=torch.Generator().manual_seed(1), return_mask=True)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    with pytest.raises(BasinlabError, match="has no forward process"):  # every denoiser carries its process
        process_of(type("D", (), {"vocab_size": 9})())


def test_with_process_changes_only_the_sampler():
    d = _Toy()
    r = with_process(d, d.process.with_remask(0.2))
    assert process_of(r).remask == 0.2 and r.vocab_size == 5 and r.schedule is d.schedule
    with pytest.raises(ValueError):
        with_process(d, UniformProcess(5))
