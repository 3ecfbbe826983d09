"""The masked oracles (SPEC 2b, 6) against brute-force enumeration in float64 (bar 1e-10), the no-consistent-sequence
limit, SUBS carry-over, normalisation, and the one-pass leave-one-out against masking each position in turn."""

import math

import pytest
import torch

from basinlab.data.markov import MarkovSource
from basinlab.diffusion import LogLinearSchedule
from basinlab.oracles.masked import MaskedEmpiricalDenoiser, MaskedMarkovDenoiser
from tests.oracles._brute import all_sequences, brute_masked

V, L = 3, 5
M = V  # [MASK]


def _mask(x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    return torch.where(torch.rand(x.shape, generator=gen) < p, torch.full_like(x, M), x)


def _queries(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Masked copies of ``x`` at several rates, random sequences (often inconsistent), all masked, none masked."""
    rand = torch.randint(0, V, (4, L), generator=gen)
    return torch.cat([_mask(x, 0.3, gen), _mask(x, 0.7, gen), _mask(rand, 0.3, gen), rand,
                      torch.full((1, L), M), x[:2]])


def _check(oracle, z: torch.Tensor, log_prior: torch.Tensor, xs: torch.Tensor) -> tuple[float, int]:
    """Every row of ``oracle(z)`` and ``oracle.leave_one_out(z)`` against enumeration; returns the max abs error
    (probabilities) and the number of queries that needed the ε-limit."""
    t = torch.full((z.shape[0],), 0.5, dtype=torch.float64)
    out, loo = oracle(z, t), oracle.leave_one_out(z, t)
    counted = oracle.no_consistent  # before the per-position calls below
    assert out.shape == loo.shape == (z.shape[0], L, V) and out.dtype == loo.dtype == torch.float64
    assert not torch.isnan(out).any() and not torch.isnan(loo).any()
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(z.shape[0], L, dtype=torch.float64), atol=1e-12, rtol=0)
    err, limit = 0.0, 0
    for b in range(z.shape[0]):
        ref, dmin = brute_masked(log_prior, xs, z[b], M, V)
        limit += dmin > 0 and bool((z[b] == M).any())  # a row without [MASK] predicts nothing: no limit needed
        vis = z[b] != M
        want = torch.where(vis[:, None], torch.nn.functional.one_hot(z[b].clamp(max=V - 1), V).double(), ref)
        assert torch.equal(torch.isneginf(out[b]), want == 0)  # exact zeros are -inf, nothing else is
        err = max(err, float((out[b].exp() - want).abs().max()))
        for l in range(L):  # leave-one-out = position l masked as well
            zl = z[b].clone()
            zl[l] = M
            ref_l, _ = brute_masked(log_prior, xs, zl, M, V)
            assert torch.equal(torch.isneginf(loo[b, l]), ref_l[l] == 0)
            err = max(err, float((loo[b, l].exp() - ref_l[l]).abs().max()))
            torch.testing.assert_close(oracle(zl[None], t[:1])[0, l], loo[b, l], atol=1e-12, rtol=0)
    print(f"{type(oracle).__name__}: max |p - brute| = {err:.1e}")
    assert err < 1e-10, err
    assert counted == limit  # the counter says how often the ε-limit was needed
    return err, limit


@pytest.mark.parametrize("opts", [{}, {"dense_share": 0.0}, {"dense_share": 2.0}, {"max_elements": 7}])
def test_masked_memoriser_matches_enumeration(gen, opts):
    N = 7
    train = torch.randint(0, V, (N, L), generator=gen)
    train[1] = train[0]  # a duplicate counts twice
    oracle = MaskedEmpiricalDenoiser(train, V, LogLinearSchedule(), dtype=torch.float64,
                                     max_elements=opts.get("max_elements", 1 << 24))
    oracle.dense_share = opts.get("dense_share", oracle.dense_share)
    z = _queries(train[:4], gen)
    _, limit = _check(oracle, z, torch.zeros(N, dtype=torch.float64), train)
    assert limit > 0  # the random rows exercised the ε-limit
    masked_rows = int((z == M).any(1).sum())
    assert masked_rows < z.shape[0]  # rows without [MASK] are pure carry-over and not counted
    assert oracle.queries == masked_rows + z.shape[0] * L and oracle.loo_positions == z.numel()


def test_masked_memoriser_unseen_takes_the_nearest_rows():
    """No row agrees with the visible tokens: the rows with the fewest disagreements, uniformly (SPEC 2b)."""
    train = torch.tensor([[0, 0, 0, 0], [0, 1, 1, 1], [2, 1, 1, 1], [2, 2, 2, 2]])
    oracle = MaskedEmpiricalDenoiser(train, 3, LogLinearSchedule(), dtype=torch.float64)
    z = torch.tensor([[3, 1, 0, 1]])  # rows 1 and 2 disagree at one visible position, 0 and 3 at more
    out = oracle(z, torch.tensor([0.5], dtype=torch.float64)).exp()
    torch.testing.assert_close(out[0, 0], torch.tensor([0.5, 0.0, 0.5], dtype=torch.float64), atol=0, rtol=0)
    assert oracle.no_consistent == 1 and oracle.queries == 1


@pytest.mark.parametrize("limit_only", [False, True])
@pytest.mark.parametrize("successors", [2, 3])
def test_masked_markov_matches_enumeration(gen, successors, limit_only, monkeypatch):
    """Both ways: the plain HMM for consistent rows with the ε-expansion for the others, and the ε-expansion for
    every row."""
    src = MarkovSource(vocab_size=V, successors=successors, seed=3)
    oracle = MaskedMarkovDenoiser(src, LogLinearSchedule(), dtype=torch.float64)
    if limit_only:  # every row through the (d, log w) messages
        monkeypatch.setattr(oracle, "_consistent_loo", lambda z: (torch.zeros(*z.shape, V, dtype=torch.float64),
                                                                  torch.zeros(z.shape[0], dtype=torch.bool)))
    xs = all_sequences(V, L)
    z = _queries(src.sample(4, L, generator=gen), gen)
    z = torch.cat([z, torch.tensor([[0, 1, 2, 0, 1], [0, M, 2, M, 1]])])  # observations the source may not emit
    _, limit = _check(oracle, z, src.log_prob(xs), xs)
    assert (limit > 0) == (successors < V)  # a dense source emits everything: the limit is never needed


def test_masked_oracles_default_dtype_and_bad_input(gen):
    train = torch.randint(0, 8, (20, 6), generator=gen)
    mem = MaskedEmpiricalDenoiser(train, 8, LogLinearSchedule())
    z = train.clone()
    z[:, ::2] = 8
    out = mem(z, torch.full((20,), 0.5, dtype=torch.float64))
    assert out.dtype == torch.float32 and out.shape == (20, 6, 8)
    assert (out[:, 1::2].exp().sum(-1) == 1).all() and torch.isfinite(out[z != 8].amax(-1)).all()
    from basinlab.errors import BasinlabError

    with pytest.raises(BasinlabError, match=r"\[0, 8\]"):
        mem(torch.full((1, 6), 9), torch.zeros(1, dtype=torch.float64))
    with pytest.raises(BasinlabError, match="long"):
        mem(torch.zeros(1, 5, dtype=torch.long), torch.zeros(1, dtype=torch.float64))
    assert math.isinf(float(out[0, 1].min()))  # a visible position puts -inf on every other token


def test_build_oracle_follows_the_process_and_the_suite_runs_on_it():
    """``train.process = masked`` gives the masked oracles; the probes run on them (leave-one-out entropy through
    the oracle's one-pass method, which equals masking each position in turn); a memoriser restores its own
    training data, and a masked chain never changes a clean token (no unstable outcome)."""
    from basinlab.config import Config, ProbeConfig
    from basinlab.data.sequences import SequenceData
    from basinlab.diffusion import process_of
    from basinlab.oracles.build import build_oracle
    from basinlab.probes.suite import run_suite

    src = MarkovSource(vocab_size=8, successors=3, seed=1)
    g = torch.Generator().manual_seed(0)
    data = SequenceData(train_pool=src.sample(40, 8, generator=g), test=src.sample(12, 8, generator=g),
                        vocab_size=8, source=src, n_train=12)
    cfg = Config()
    cfg.train.process = "masked"
    mem, gen_ = build_oracle("empirical", data, 12, cfg), build_oracle("oracle:markov", data, 12, cfg)
    assert isinstance(mem, MaskedEmpiricalDenoiser) and isinstance(gen_, MaskedMarkovDenoiser)
    assert process_of(mem).name == process_of(gen_).name == "masked"
    cfg.train.process = "uniform"
    assert not isinstance(build_oracle("empirical", data, 12, cfg), MaskedEmpiricalDenoiser)
    z = data.test[:3]
    t = torch.full((3,), 1e-5, dtype=torch.float64)
    for oracle in (mem, gen_):
        own = process_of(oracle).leave_one_out(oracle, z, t)
        slow = process_of(oracle).leave_one_out(lambda zz, tt, o=oracle: o(zz, tt), z, t)  # L calls, one mask each
        torch.testing.assert_close(own, slow, atol=1e-6, rtol=0)
    pcfg = ProbeConfig(m=12, ts=[0.1, 1.0], steps=20, batch_size=12, n_samples=6)
    res = run_suite(mem, data, pcfg, n_train=12)
    rows = {(r["probe"], r["set"], r["t"], r["metric"]): r for r in res.rows}
    assert not any(k[3] == "unstable_rate" for k in rows)  # a masked chain has no unstable outcome
    assert rows[("basins", "train", 0.1, "recovery_rate")]["value"] > 0.9
    assert rows[("entropy", "train", 1e-5, "entropy")]["value"] == 0.0  # a memoriser is certain of its data ...
    assert rows[("entropy", "test", 1e-5, "entropy")]["value"] > 0.0  # ... and not of unseen sequences
    assert mem.loo_no_consistent > 0  # the test set is unseen: its leave-one-out took the ε-limit
    res = run_suite(gen_, data, pcfg, n_train=12)
    vals = [r["value"] for r in res.rows if r["metric"] in ("recovery_rate", "entropy")]
    assert vals and all(math.isfinite(v) for v in vals)


def test_masked_leave_one_out_is_the_uniform_one_at_t_to_0(gen):
    """SPEC 2b: the masked leave-one-out conditional is the ``t -> 0`` limit of the uniform one (SPEC 4, 6), and two
    independent implementations agree: the uniform oracles at ``t = 1e-12`` (``λ_t ≈ 31``, so a disagreement weighs
    ``e^-31``) against the masked ones, on training rows, unseen rows (the ε-limit) and the source's samples."""
    from basinlab.oracles import EmpiricalDenoiser, MarkovDenoiser

    Vb, Lb = 6, 7
    src = MarkovSource(vocab_size=Vb, successors=3, seed=2)
    train = src.sample(30, Lb, generator=gen)
    x = torch.cat([train[:5], src.sample(5, Lb, generator=gen)])
    t = torch.full((10,), 1e-12, dtype=torch.float64)
    sched = LogLinearSchedule()
    pairs = [(EmpiricalDenoiser(train, Vb, sched, dtype=torch.float64),
              MaskedEmpiricalDenoiser(train, Vb, sched, dtype=torch.float64)),
             (MarkovDenoiser(src, sched, dtype=torch.float64), MaskedMarkovDenoiser(src, sched, dtype=torch.float64))]
    for uniform, masked in pairs:
        torch.testing.assert_close(masked.leave_one_out(x, t).exp(), uniform(x, t).exp(), atol=1e-9, rtol=0)


def test_the_suite_reports_how_often_the_limit_was_needed():
    """SPEC 2b: "report how often that happens": rows ``oracle_limit`` of a masked oracle's probe run."""
    from basinlab.config import Config, ProbeConfig
    from basinlab.data.sequences import SequenceData
    from basinlab.oracles.build import build_oracle
    from basinlab.probes.suite import run_suite

    src = MarkovSource(vocab_size=8, successors=3, seed=1)
    g = torch.Generator().manual_seed(0)
    data = SequenceData(train_pool=src.sample(40, 8, generator=g), test=src.sample(12, 8, generator=g),
                        vocab_size=8, source=src, n_train=12)
    cfg = Config()
    mem = build_oracle("oracle:empirical@masked", data, 12, cfg)
    q0, l0 = mem.queries, mem.loo_positions
    res = run_suite(mem, data, ProbeConfig(m=12, ts=[0.5], steps=10, batch_size=12, n_samples=4), n_train=12,
                    probes=["entropy", "basins"])
    rows = {r["metric"]: r for r in res.rows if r["probe"] == "oracle_limit"}
    assert rows["no_consistent_share"]["n"] == mem.queries - q0 > 0
    n = (12 + 12 + 4) * 8  # train, test and the 4 generated samples (the entropy gap), L = 8
    assert rows["loo_no_consistent_share"]["n"] == mem.loo_positions - l0 == n
    # every test position's leave-one-out took the limit (unseen rows), no train position did
    assert 12 * 8 / n <= rows["loo_no_consistent_share"]["value"] <= 16 * 8 / n
    assert not any(r["probe"] == "oracle_limit" for r in run_suite(
        build_oracle("empirical", data, 12, cfg), data, ProbeConfig(m=12, ts=[0.5], steps=10, batch_size=12,
                                                                    n_samples=4), n_train=12, probes=["basins"]).rows)
