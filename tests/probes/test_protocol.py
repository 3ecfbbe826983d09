"""``probe.protocol``: ``exact`` (SPEC 5, the default) and ``paper`` (the published study's definitions, SPEC 5
"Protocols"). Each of the four definitions that ``paper`` changes is pinned on an exact oracle with a case computed
by hand or by brute-force enumeration in float64; ``exact`` is checked to stay the default and to pass every probe
its default options (so its results are those of the code before the switch existed)."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from basinlab.config import ProbeConfig, load_config
from basinlab.data.markov import MarkovSource
from basinlab.data.sequences import SequenceData
from basinlab.diffusion import T_MIN, LogLinearSchedule, n_denoiser_calls, prior_kl
from basinlab.errors import BasinlabError
from basinlab.oracles import EmpiricalDenoiser, MarkovDenoiser
from basinlab.probes import (
    basin_test,
    conditional_entropy,
    generate_samples,
    likelihood,
    protocol_options,
    resolve_n_samples,
    run_suite,
)
from tests.oracles._brute import all_sequences, brute_posteriors, log_emission
from tests.probes._helpers import TargetDenoiser

SCHED = LogLinearSchedule()
V, L = 3, 3
#: A memoriser's training set; (0, 1, 2) twice so that no Bayes combination below has a tie.
TRAIN = torch.tensor([[0, 1, 2], [0, 1, 2], [0, 2, 2], [1, 1, 0]])
PAPER = protocol_options("paper")


@pytest.fixture(scope="module")
def mem():
    return EmpiricalDenoiser(TRAIN, V, SCHED, dtype=torch.float64)


def _bayes_final(z: torch.Tensor) -> torch.Tensor:
    """Brute force: the final step's distribution ``p_l(v) ∝ e_{t_min}(z_l | v) x_θ,l(v)`` ``[L, V]``, float64."""
    a0 = float(SCHED.alpha(T_MIN))
    loo, _ = brute_posteriors(torch.zeros(len(TRAIN), dtype=torch.float64), TRAIN, z, a0, V)
    p = loo * log_emission(z[:, None], torch.arange(V)[None, :], a0, V).exp()
    return p / p.sum(1, keepdim=True)


def _expected_recovery(x: torch.Tensor, t: float) -> tuple[float, float]:
    """``E[recovery | something changed]`` of a chain that is only the final step, drawn and greedy (enumeration)."""
    a = float(SCHED.alpha(t))
    drawn = greedy = norm = 0.0
    for z in all_sequences(V, L):
        changed = z != x
        if not changed.any():
            continue
        q = float(log_emission(z, x, a, V).sum().exp())
        p = _bayes_final(z)
        drawn += q * float(p[torch.arange(L), x][changed].mean())
        greedy += q * float((p.argmax(1) == x).to(torch.float64)[changed].mean())
        norm += q
    return drawn / norm, greedy / norm


def _row(res, metric, t=None):
    return next(r for r in res.rows if r["metric"] == metric and (t is None or r["t"] == t))


# ---- the switch ---------------------------------------------------------------------------------------------------


def test_exact_is_the_default_and_passes_only_defaults():
    assert ProbeConfig().protocol == "exact" and load_config(None).probe.protocol == "exact"
    fns = {"basins": basin_test, "generate": generate_samples, "entropy": conditional_entropy,
           "likelihood": likelihood}
    exact = protocol_options("exact")
    assert protocol_options() == exact and set(exact) == set(fns) == set(PAPER)
    for probe, fn in fns.items():
        params = inspect.signature(fn).parameters
        for name, value in exact[probe].items():
            assert params[name].default == value, (probe, name)  # exact = the code's behaviour without the switch
        assert all(PAPER[probe][k] != v for k, v in exact[probe].items())  # paper changes every listed option
    with pytest.raises(BasinlabError, match=r"probe\.protocol.*(exact, paper|one of)"):
        load_config(None, ["probe.protocol=duo"])
    with pytest.raises(BasinlabError, match=r"probe\.protocol.*(exact, paper|one of)"):
        protocol_options("Paper")


def test_n_samples_default_per_protocol_and_device():
    assert ProbeConfig().n_samples is None
    assert resolve_n_samples(None, "exact", "cpu") == 256 and resolve_n_samples(None, "exact", "cuda") == 256
    assert resolve_n_samples(None, "paper", "cpu") == 256 and resolve_n_samples(None, "paper", None) == 256
    assert resolve_n_samples(None, "paper", "cuda:0") == 20000
    assert resolve_n_samples(7, "paper", "cuda") == 7 and resolve_n_samples(0, "exact", "cpu") == 0
    with pytest.raises(BasinlabError, match="n_samples must be >= 0"):
        resolve_n_samples(-1, "exact", "cpu")


# ---- 1. basin test: drawn final step, every position --------------------------------------------------------------


def test_paper_basin_test_draws_the_final_step(mem):
    """With ``T = 1`` a chain from ``t = 0.5`` enters at ``t_min``: it is the final step alone, so mean recovery
    is ``E_z[mean over changed l of p_l(x_l)]`` (drawn) or of ``1[argmax p_l = x_l]`` (greedy), by enumeration."""
    x = torch.tensor([0, 1, 2])
    assert n_denoiser_calls(1, 0.5) == 1
    drawn, greedy = _expected_recovery(x, 0.5)
    assert drawn == pytest.approx(0.5993, abs=1e-4) and greedy == pytest.approx(0.7435, abs=1e-4)
    seqs = x.repeat(3000, 1)
    for opts, expected in (({}, greedy), (PAPER["basins"], drawn)):
        row = _row(basin_test(mem, seqs, ts=(0.5,), steps=1, batch_size=3000, **opts), "recovery_rate", 0.5)
        se = row["std"] / math.sqrt(row["n"])
        assert abs(row["value"] - expected) < 4 * se, (opts, row["value"], expected)


def test_paper_basin_test_counts_special_positions():
    """Position 0 is a special token (not real) that every restore gets wrong; ``exact`` ignores it, ``paper``
    counts it: rates computed by hand from the corrupted sequences."""
    g = torch.Generator().manual_seed(3)
    M, Lx, Vx = 64, 6, 5
    x = torch.randint(0, Vx, (M, Lx), generator=g)
    real = torch.ones(M, Lx, dtype=torch.bool)
    real[:, 0] = False
    target = x.clone()
    target[:, 0] = (x[:, 0] + 1) % Vx
    den = TargetDenoiser(target, Vx)
    ex = basin_test(den, x, real_mask=real, ts=(0.5,), steps=3, batch_size=M)
    pa = basin_test(den, x, real_mask=real, ts=(0.5,), steps=3, batch_size=M, **PAPER["basins"])
    for res in (ex, pa):
        assert torch.equal(res.arrays["restored"][0], target)
    assert _row(ex, "exact_match", 0.5)["value"] == 1.0 and _row(pa, "exact_match", 0.5)["value"] == 0.0
    assert torch.equal(ex.arrays["real_mask"], real) and bool(pa.arrays["real_mask"].all())
    z = pa.arrays["corrupted"][0]
    changed = z != x
    n_changed = changed.sum(1).double()
    rec = torch.where(n_changed > 0, (changed[:, 1:]).sum(1) / n_changed, math.nan)  # all but position 0 fixed
    unstable = (~changed[:, 0]).double() / (~changed).sum(1).double()  # only position 0 can break
    assert torch.allclose(pa.arrays["recovery"][0], rec, equal_nan=True)
    assert torch.allclose(pa.arrays["unstable"][0], unstable, equal_nan=True)
    assert _row(pa, "recovery_rate", 0.5)["value"] == pytest.approx(float(torch.nanmean(rec)))
    real_changed = changed & real
    ok = real_changed.any(1)
    assert torch.equal(ex.arrays["recovery"][0][ok], torch.ones(int(ok.sum()), dtype=torch.float64))


# ---- 2. generated samples end with argmax x_theta alone -----------------------------------------------------------


def test_paper_samples_end_with_argmax_x_theta():
    """An i.i.d. source (every row of ``P`` is ``pi``): ``x_θ = pi`` whatever ``z``. ``argmax x_θ`` makes every
    sample token ``argmax pi = 0``; the Bayes combination keeps the chain's last state, distributed as ``pi``."""
    pi = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    src = MarkovSource.from_matrix(pi, pi.repeat(3, 1))
    den = MarkovDenoiser(src, SCHED, dtype=torch.float64)
    paper = generate_samples(den, 300, 4, steps=8, seed=1, **PAPER["generate"])
    assert torch.equal(paper, torch.zeros(300, 4, dtype=torch.long))
    exact = generate_samples(den, 300, 4, steps=8, seed=1)
    freq = torch.bincount(exact.reshape(-1), minlength=3).double() / exact.numel()
    assert torch.allclose(freq, pi, atol=0.06), freq


# ---- 3. entropy split on the restored sequence, four groups -------------------------------------------------------


def test_paper_entropy_split_on_restored_sequence(mem):
    g = torch.Generator().manual_seed(5)
    seqs = torch.cat([TRAIN[[0, 2]].repeat(40, 1), torch.randint(0, V, (40, L), generator=g)])
    basin = basin_test(mem, seqs, ts=(0.25, 0.75), steps=4, seed=2, **PAPER["basins"])
    res = conditional_entropy(mem, seqs, basin=basin, **PAPER["entropy"])
    a0 = float(SCHED.alpha(T_MIN))
    for j, t in enumerate((0.25, 0.75)):
        z, r = basin.arrays["corrupted"][j], basin.arrays["restored"][j]
        H = torch.stack([torch.special.entr(brute_posteriors(torch.zeros(4, dtype=torch.float64), TRAIN, ri, a0, V)[0])
                         .sum(1) for ri in r])  # entropy of x_θ on each restored sequence at t_min, by enumeration
        assert torch.allclose(basin.arrays["restored_entropy"][j], H, atol=1e-9)
        kept, changed = r == seqs, z != seqs
        groups = {"stable": ~changed & kept, "unstable": ~changed & ~kept, "recovered": changed & kept,
                  "failed": changed & ~kept}
        for name, tok in groups.items():
            per_seq = (H * tok).sum(1) / tok.sum(1)  # NaN where a sequence has none of that group
            want = float(torch.nanmean(per_seq)) if (tok.sum(1) > 0).any() else None
            got = _row(res, f"entropy_{name}", t)["value"]
            assert (got is None and want is None) or got == pytest.approx(want, abs=1e-9), (t, name)
    # By hand: on (0, 1, 2) the training set's position 1 is 1, 1, 2 among the sequences that agree elsewhere.
    is_a = (basin.arrays["restored"][0] == TRAIN[0]).all(1)
    assert is_a.any()
    h_pos1 = basin.arrays["restored_entropy"][0][is_a, 1]
    hand = -(2 / 3) * math.log(2 / 3) - (1 / 3) * math.log(1 / 3)
    assert torch.allclose(h_pos1, torch.full_like(h_pos1, hand), atol=1e-4)
    exact = conditional_entropy(mem, seqs, basin=basin)
    assert {r["metric"] for r in exact.rows} == {"entropy", "entropy_recovered", "entropy_failed"}
    with pytest.raises(BasinlabError, match="restored_entropy=True"):
        conditional_entropy(mem, seqs, basin=basin_test(mem, seqs, ts=(0.25,), steps=2), split="restored")


# ---- 4. NELBO = exp(mean integrand), no reconstruction or prior term ----------------------------------------------


def test_paper_nelbo_is_the_plain_mean_integrand():
    """By hand: the memoriser of one sequence predicts it exactly whatever ``z`` (``x_θ = onehot(x)``), so the
    integrand and the reconstruction term vanish and the SPEC 4 NELBO is the prior term alone, ``KL(q_1 || u)``,
    while the study's is 0 (``ppl_bound`` 1)."""
    x = torch.tensor([[2, 0, 1, 1]])
    one = EmpiricalDenoiser(x, V, SCHED, dtype=torch.float64)
    seqs = x.repeat(16, 1)
    exact, paper = likelihood(one, seqs), likelihood(one, seqs, **PAPER["likelihood"])
    eps = float(SCHED.alpha(1.0))
    p_x, u = eps + (1 - eps) / V, (1 - eps) / V
    kl = p_x * math.log(p_x * V) + (V - 1) * u * math.log(u * V)
    assert kl == pytest.approx(prior_kl(eps, V), rel=1e-12)
    assert exact.value("nelbo") == pytest.approx(kl, abs=1e-9) and exact.value("nelbo_prior") == pytest.approx(kl)
    assert abs(paper.value("nelbo")) < 1e-9 and paper.value("ppl_bound") == pytest.approx(1.0, abs=1e-9)
    assert {r["metric"] for r in paper.rows} == {"nelbo", "ppl_bound"}


def test_paper_nelbo_drops_the_terms_and_the_time_weight():
    """Same draws: the study's NELBO is the diffusion term without its ``1 - t_eps`` weight; ``ppl_bound = exp``."""
    src = MarkovSource(vocab_size=6, successors=2, seed=1)
    den = MarkovDenoiser(src, SCHED, dtype=torch.float64)
    seqs = src.sample(24, 8, generator=torch.Generator().manual_seed(0))
    exact, paper = likelihood(den, seqs, seed=3), likelihood(den, seqs, seed=3, **PAPER["likelihood"])
    mean_f = exact.value("nelbo_diffusion") / (1 - 1e-3)
    assert paper.value("nelbo") == pytest.approx(mean_f, rel=1e-12)
    assert paper.value("ppl_bound") == pytest.approx(math.exp(mean_f), rel=1e-12)
    terms = sum(exact.value(f"nelbo_{k}") for k in ("diffusion", "recon", "prior"))
    assert exact.value("nelbo") == pytest.approx(terms, rel=1e-12) and paper.value("nelbo") != exact.value("nelbo")
    per_seq = paper.arrays["per_seq"]
    assert float((per_seq * 8).sum() / (8 * 24)) == pytest.approx(mean_f, rel=1e-12)


# ---- the probe suite threads the switch ---------------------------------------------------------------------------


def test_run_suite_paper_protocol():
    pi = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    src = MarkovSource.from_matrix(pi, pi.repeat(3, 1))
    den = MarkovDenoiser(src, SCHED, dtype=torch.float64)
    seqs = src.sample(12, 5, generator=torch.Generator().manual_seed(0))
    cfg = ProbeConfig(m=12, ts=[0.5], steps=4, batch_size=12, n_samples=6, protocol="paper")
    data = SequenceData(train_pool=seqs, test=seqs[:6], vocab_size=3, source=src, n_train=12)
    res = run_suite(den, data, cfg, n_train=12, sets=("train",))
    metrics = {r["metric"] for r in res.rows}
    assert {"entropy_stable", "entropy_unstable", "entropy_recovered", "entropy_failed"} <= metrics
    assert "nelbo_recon" not in metrics and "nelbo" in metrics
    assert torch.equal(res.arrays["generated_samples"], torch.zeros(6, 5, dtype=torch.long))  # argmax x_θ = 0
    assert res.arrays["basins/train/restored_entropy"].shape == (1, 12, 5)
    exact = run_suite(den, data, ProbeConfig(m=12, ts=[0.5], steps=4, batch_size=12, n_samples=6), n_train=12,
                      sets=("train",))
    assert "entropy_stable" not in {r["metric"] for r in exact.rows}
    assert "nelbo_recon" in {r["metric"] for r in exact.rows}
