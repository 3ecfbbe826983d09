"""Packed reverse chains (basinlab.diffusion.packed): the counter RNG, exact draws, packing invariance, and the
packed basin test against the loop one (same distribution)."""

import math

import pytest
import torch

from basinlab.data.markov import MarkovSource
from basinlab.diffusion import LogLinearSchedule, posterior
from basinlab.diffusion.packed import (
    categorical_blocks,
    chain_keys,
    chain_uniform,
    packed_chains,
    splitmix64,
    step_chains,
)
from basinlab.oracles import MarkovDenoiser
from basinlab.probes import basin_test


def _splitmix_ref(x: int) -> int:
    m = (1 << 64) - 1
    x = (x + 0x9E3779B97F4A7C15) & m
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & m
    return x ^ (x >> 31)


def test_splitmix64_matches_the_reference():
    xs = [0, 1, 12345, 2**40 + 7, -1, -(2**62)]
    got = splitmix64(torch.tensor(xs, dtype=torch.long)).tolist()
    assert [g & ((1 << 64) - 1) for g in got] == [_splitmix_ref(x & ((1 << 64) - 1)) for x in xs]
    assert _splitmix_ref(0) == 0xE220A8397B1DCDAF  # SplitMix64's first output from state 0


def test_chain_uniforms_are_uniform_and_keyed():
    keys = chain_keys(3, torch.arange(400))
    u = chain_uniform(keys, torch.zeros(400, dtype=torch.long), 2, 250)  # 100,000 numbers
    assert u.dtype == torch.float64 and (u >= 0).all() and (u < 1).all()
    assert abs(u.mean().item() - 0.5) < 0.005 and abs(u.var().item() - 1 / 12) < 0.002
    hist = torch.histc(u.float(), bins=10, min=0, max=1)
    assert (hist - 10_000).abs().max() < 500  # ~5 sigma
    # The same (key, step, stream) gives the same numbers in any batch; other steps/streams differ.
    again = chain_uniform(keys[7:8], torch.zeros(1, dtype=torch.long), 2, 250)
    assert torch.equal(again[0], u[7])
    assert not torch.equal(chain_uniform(keys[:1], torch.ones(1, dtype=torch.long), 2, 250)[0], u[0])
    assert not torch.equal(chain_uniform(keys[:1], torch.zeros(1, dtype=torch.long), 3, 250)[0], u[0])


def test_categorical_blocks_draws_the_softmax(gen):
    V, n = 300, 40_000  # two blocks of 256, the second padded
    logits = torch.randn(V, generator=gen, dtype=torch.float64) * 2
    logits[[5, 260, 299]] = -math.inf  # exact zeros are never drawn
    keys = chain_keys(0, torch.arange(n))
    step = torch.zeros(n, dtype=torch.long)
    draws = categorical_blocks(logits.float().expand(n, 1, V), chain_uniform(keys, step, 4, 1),
                               chain_uniform(keys, step, 5, 1)).flatten()
    p = torch.softmax(logits, 0)
    freq = torch.bincount(draws, minlength=V).double()
    assert freq[[5, 260, 299]].sum() == 0
    chi2 = ((freq - n * p)[p > 0] ** 2 / (n * p[p > 0])).sum().item()
    dof = int((p > 0).sum()) - 1
    assert chi2 < dof + 5 * math.sqrt(2 * dof)


def test_one_step_draws_the_exact_posterior(gen):
    """``step_chains`` draws q(z_s | z_t, x_θ) of SPEC 3 (stay / x_θ / uniform), checked by frequencies."""
    V, n = 6, 60_000
    log_x = torch.log_softmax(torch.randn(V, generator=gen, dtype=torch.float64), 0)
    z = torch.full((n, 1), 2, dtype=torch.long)
    a_t, a_s = torch.full((n,), 0.3, dtype=torch.float64), torch.full((n,), 0.6, dtype=torch.float64)
    keys = chain_keys(1, torch.arange(n))
    zs = step_chains(z, log_x.float().expand(n, 1, V), a_t, a_s, keys, torch.zeros(n, dtype=torch.long))
    ref = posterior(z[:1], log_x.exp()[None, None], 0.3, 0.6)[0, 0]
    freq = torch.bincount(zs.flatten(), minlength=V).double() / n
    assert (freq - ref).abs().max() < 5 * math.sqrt(0.25 / n)


@pytest.fixture(scope="module")
def markov():
    src = MarkovSource(vocab_size=32, successors=8, seed=0)
    return src, MarkovDenoiser(src, LogLinearSchedule())


@pytest.mark.parametrize("final_greedy", [True, False])
def test_packing_does_not_change_any_chain(markov, final_greedy):
    """Chains of mixed t packed 3 per call give exactly the results of each chain run alone."""
    src, den = markov
    x = src.sample(7, 32, generator=torch.Generator().manual_seed(3))
    ts = [1.0, 0.05, 0.5, 0.1, 0.25, 1.0, 0.05]
    keys = chain_keys(11, torch.arange(7))
    z_all, out_all = packed_chains(den, x, ts, keys, steps=40, batch_size=3, final_greedy=final_greedy)
    for i in range(7):
        z1, out1 = packed_chains(den, x[i : i + 1], ts[i : i + 1], keys[i : i + 1], steps=40, batch_size=1,
                                 final_greedy=final_greedy)
        assert torch.equal(z1[0], z_all[i]) and torch.equal(out1[0], out_all[i])
    assert (z_all != x).any() and not torch.equal(z_all, out_all)


def test_packed_basin_test_matches_the_loop_in_distribution(markov):
    """Same recovery rates (within sampling error) from the packed and the loop engines."""
    src, den = markov
    x = src.sample(200, 32, generator=torch.Generator().manual_seed(5))
    kw = dict(ts=(0.1, 0.5), steps=40, batch_size=64, n_boot=0, seed=2)
    loop = basin_test(den, x, engine="loop", **kw).arrays["recovery"]
    packed = basin_test(den, x, engine="packed", **kw).arrays["recovery"]
    for i in range(2):
        a, b = loop[i][~loop[i].isnan()], packed[i][~packed[i].isnan()]
        se = math.sqrt(a.var().item() / a.numel() + b.var().item() / b.numel())
        assert abs(a.mean().item() - b.mean().item()) < 4 * se + 1e-9
    assert not torch.equal(loop, packed)  # different random numbers, same distribution
