"""MarkovDenoiser (SPEC 6) against brute-force enumeration, and SPEC 3's greedy-chain claim."""

import math

import pytest
import torch

from basinlab.data.markov import MarkovSource
from basinlab.diffusion import (
    LogLinearSchedule,
    bayes_log_posterior,
    corrupt,
    final_step,
    reverse_chain,
)
from basinlab.oracles import MarkovDenoiser
from tests.oracles._brute import all_sequences, brute_posteriors


@pytest.mark.parametrize("t", [1e-5, 0.1, 0.5, 0.97])
def test_markov_oracle_matches_enumeration(gen, t):
    V, L = 3, 5
    src = MarkovSource(vocab_size=V, successors=2, seed=3)  # sparse: structural zeros in P
    sched = LogLinearSchedule()
    oracle = MarkovDenoiser(src, sched, dtype=torch.float64)
    xs = all_sequences(V, L)
    log_prior = src.log_prob(xs)
    x = src.sample(4, L, generator=gen)
    a = float(sched.alpha(t))
    z = corrupt(x, a, V, generator=gen)
    z[0] = torch.tensor([0, 1, 2, 0, 1])  # an observation the source cannot emit cleanly
    tt = torch.full((4,), t, dtype=torch.float64)
    loo = oracle(z, tt).exp()
    full = oracle.full_log_posterior(z, tt).exp()
    for b in range(4):
        ref_loo, ref_full = brute_posteriors(log_prior, xs, z[b], a, V)
        torch.testing.assert_close(loo[b], ref_loo, atol=1e-12, rtol=1e-9)
        torch.testing.assert_close(full[b], ref_full, atol=1e-12, rtol=1e-9)
    # The full posterior is the Bayes combination of the leave-one-out one (SPEC 4).
    torch.testing.assert_close(bayes_log_posterior(oracle(z, tt), z, a).exp(), full, atol=1e-12, rtol=1e-9)


def test_markov_oracle_per_row_times_and_no_nan(gen):
    src = MarkovSource(vocab_size=32, successors=8, seed=0)
    oracle = MarkovDenoiser(src, LogLinearSchedule())
    x = src.sample(6, 32, generator=gen)
    t = torch.tensor([1e-5, 1e-3, 0.1, 0.5, 0.9, 1.0], dtype=torch.float64)
    z = corrupt(x, LogLinearSchedule().alpha(t), 32, generator=gen)
    out = oracle(z, t)
    assert not torch.isnan(out).any()
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(6, 32))
    for b in range(6):
        torch.testing.assert_close(out[b : b + 1], oracle(z[b : b + 1], t[b : b + 1]))


def test_greedy_chain_only_final_step_changes_tokens(gen):
    """SPEC 3: a greedy step ``t -> s`` keeps every token unless ``t - s`` is comparable to ``1 - α_s``.

    Keeping loses to moving only if ``(α_s - α_t) max_j x_θ,j > α_t (1 - α_s)/α_s + V α_t x_θ,i``, so on the grid
    (``t - s = 1/T``) every step with ``s >= 2/T`` leaves ``z`` unchanged whatever ``x_θ``; the last two reverse
    steps may move a token whose leave-one-out probability is below ``(α_s - α_t) max_j x_θ,j / (V α_t)`` (e.g. an
    oracle's exact zero: with a sparse source most corrupted sequences have one). Where they move none, the chain
    equals the final step applied to ``z`` at ``t_min``; from clean data (the fixed-point test) that is every
    sequence, and from lightly corrupted data the results agree on nearly every sequence.
    """
    src = MarkovSource(vocab_size=32, successors=8, seed=0)
    sched = LogLinearSchedule()
    oracle = MarkovDenoiser(src, sched)
    V, T, t_min = 32, 100, 1e-5
    x = src.sample(64, 32, generator=gen)
    tvec = torch.full((64,), t_min, dtype=torch.float64)
    for t_start in (1.0, 0.25, 0.05, None):
        z = x.clone() if t_start is None else corrupt(x, float(sched.alpha(t_start)), V, generator=gen)
        seen: list[tuple[int, float, torch.Tensor, torch.Tensor]] = []

        def record(k, t, zz, lx, seen=seen):
            seen.append((k, t, zz.clone(), lx))

        out = reverse_chain(oracle, z, 1.0 if t_start is None else t_start, steps=T, greedy=True,
                            final_greedy=True, callback=record)
        assert seen[-1][0] == T
        for (k, t, z_t, log_x), (_, s, z_s, _) in zip(seen[:-1], seen[1:], strict=False):
            moved = z_s != z_t
            if s >= 2 / T:
                assert not moved.any(), f"step {k} ({t} -> {s}) moved tokens"
            elif moved.any():
                x_theta = log_x.double().exp()
                a_t, a_s = float(sched.alpha(t)), float(sched.alpha(s))
                bound = (a_s - a_t) * x_theta.max(-1).values / (V * a_t)
                assert (x_theta.gather(-1, z_t.unsqueeze(-1)).squeeze(-1)[moved] < bound[moved]).all()
        still = (seen[-1][2] == z).all(1)
        direct = final_step(oracle(z, tvec), z, float(sched.alpha(t_min)))
        assert torch.equal(out[still], direct[still])
        if t_start == 0.05:  # lightly corrupted: the moves of the last step agree with the final step's choices
            assert (out == direct).all(1).float().mean() >= 0.9
        if t_start is None:
            assert still.all() and torch.equal(out, direct)
        else:
            assert not torch.equal(out, z)  # the final step does act


def test_log_matmul_falls_back_when_a_supported_state_underflows():
    P = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.0, 0.0, 1.0]], dtype=torch.float64)
    src = MarkovSource.from_matrix(torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64), P)
    oracle = MarkovDenoiser(src, LogLinearSchedule())
    a = torch.tensor([[0.0, -1000.0, -float("inf")], [-5.0, -2000.0, -1e4]], dtype=torch.float64)
    out = oracle._log_matmul(a, oracle.P)
    half = -1000.0 + math.log(0.5)
    far = float(torch.logaddexp(torch.tensor(-1995.0 + math.log(0.5), dtype=torch.float64),
                                torch.tensor(-9995.0, dtype=torch.float64)))
    r2 = [0.0, -1995.0 + math.log(0.5), far]
    expected = torch.tensor([[0.0, half, half], r2], dtype=torch.float64)
    torch.testing.assert_close(out, expected)


def test_exact_log_space_path_agrees_with_fast_path(gen):
    src = MarkovSource(vocab_size=32, successors=8, seed=0)
    oracle = MarkovDenoiser(src, LogLinearSchedule(), dtype=torch.float64)
    x = src.sample(8, 32, generator=gen)
    t = torch.full((8,), 0.3, dtype=torch.float64)
    z = corrupt(x, 0.7, 32, generator=gen)
    log_f, log_b, log_e = oracle.log_messages(z, t)
    lf, lb = oracle._log_messages_exact(log_e)
    fast = torch.log_softmax(log_f + log_b, -1)
    exact = torch.log_softmax(lf + lb, -1)
    assert torch.equal(torch.isinf(fast), torch.isinf(exact))
    fin = torch.isfinite(exact)
    torch.testing.assert_close(fast[fin], exact[fin], atol=1e-10, rtol=1e-10)


def test_clean_limit_uses_the_exact_path_and_conditions_on_the_neighbours(gen):
    """α_t = 1 in float64 (λ capped at 600): the fast recursion underflows, the log-space one takes over."""
    src = MarkovSource(vocab_size=32, successors=8, seed=0)
    sched = LogLinearSchedule(eps=0.0)
    oracle = MarkovDenoiser(src, sched, dtype=torch.float64)
    x = src.sample(4, 12, generator=gen)
    z = x.clone()
    z[:, 5] = (x[:, 5] + 1) % 32  # a token the clean neighbours may forbid
    t = torch.full((4,), 1e-300, dtype=torch.float64)
    rows = []
    exact = oracle._log_messages_exact
    oracle._log_messages_exact = lambda log_e: rows.append(log_e.shape[0]) or exact(log_e)
    out = oracle(z, t)
    assert sum(rows) == 4  # every row needed the exact path
    assert not torch.isnan(out).any()
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(4, 12, dtype=torch.float64))
    # With (numerically) clean neighbours, position 2's prediction is p(x_2 | x_1, x_3) ∝ P[x_1, v] P[v, x_3].
    w = src.P[z[:, 1]] * src.P[:, z[:, 3]].T
    torch.testing.assert_close(out[:, 2].exp(), w / w.sum(1, keepdim=True), atol=1e-12, rtol=1e-9)
