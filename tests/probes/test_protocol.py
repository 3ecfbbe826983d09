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
from basinlab.diffusion import T_MIN, LogLinearSchedule, n_denoiser_calls, prior_kl, start_index, time_grid
from basinlab.errors import BasinlabError
from basinlab.oracles import EmpiricalDenoiser, MarkovDenoiser
from basinlab.probes import (
    basin_test,
    conditional_entropy,
    fixed_point_test,
    generate_samples,
    likelihood,
    protocol_options,
    resolve_n_samples,
    run_suite,
)
from basinlab.probes.protocol import gap_sets, resolve_weights
from basinlab.probes.t_grid import t_grid
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
    fns = {"basins": basin_test, "fixed_points": fixed_point_test, "t_grid": t_grid, "generate": generate_samples,
           "entropy": conditional_entropy, "likelihood": likelihood}
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
    drawn_only = {**PAPER["basins"], "entry": "nearest"}  # the final step alone (paper's entry adds a step)
    for opts, expected in (({}, greedy), (drawn_only, drawn)):
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


# ---- 5. grid entry: the smallest grid point >= t, at least one step -----------------------------------------------


def _study_start(steps: int, t: float, eps: float = T_MIN) -> int:
    """The study's rule, restated: ``searchsorted`` (left) of ``t`` in the ascending float32 grid, mirrored, then
    clamped to ``[0, T - 1]``."""
    grid = torch.linspace(1, eps, steps + 1)  # float32, as the study builds it
    j = int(torch.searchsorted(grid.flip(0), torch.tensor([t], dtype=grid.dtype)).item())
    return max(0, min(steps - j, steps - 1))


def test_paper_grid_entry_is_the_first_point_above_t():
    # by hand: T = 25, t = 0.25 lies between 0.28 (k = 18) and 0.24 (k = 19): nearest 19, the study 18
    g25 = time_grid(25)
    assert start_index(g25, 0.25) == 19 and start_index(g25, 0.25, "above") == 18
    # T = 10, t = 0.05: nearest is t_min itself (no reverse step); the study takes one step from 0.1
    g10 = time_grid(10)
    assert start_index(g10, 0.05) == 10 and n_denoiser_calls(10, 0.05) == 1
    assert start_index(g10, 0.05, "above") == 9 and n_denoiser_calls(10, 0.05, entry="above") == 2
    assert start_index(g10, 1.0, "above") == 0 and start_index(g10, 1e-7, "above") == 9
    for steps in (1, 4, 10, 25, 100, 1000):
        grid = time_grid(steps)
        for t in (0.05, 0.1, 0.2, 0.25, 0.3, 0.5, 0.77, 1.0):
            assert start_index(grid, t, "above") == _study_start(steps, t), (steps, t)
    with pytest.raises(ValueError, match="grid entry"):
        start_index(g10, 0.5, "below")


def test_paper_basin_and_fixed_point_chains_enter_above(mem):
    """Counted denoiser calls: a chain from ``t`` makes ``T - k0 + 1`` of them, ``k0`` by the protocol's rule."""
    calls: list[int] = []

    class Counting:
        vocab_size, schedule, process = mem.vocab_size, mem.schedule, mem.process

        def __call__(self, z, t):
            calls.append(1)
            return mem(z, t)

    seqs = TRAIN[:2]
    for opts, want in (({}, 1), (PAPER["basins"], 2)):
        calls.clear()
        basin_test(Counting(), seqs, ts=(0.05,), steps=10, batch_size=2, n_boot=0,
                   **{k: v for k, v in opts.items() if k != "restored_entropy"})
        assert len(calls) == want, opts
    for opts, want in (({}, 1), (PAPER["fixed_points"], 2)):
        calls.clear()
        fixed_point_test(Counting(), seqs, t_start=0.05, steps=10, batch_size=2, **opts)
        assert len(calls) == want, opts


# ---- 6. special tokens count in the entropy, the fixed-point match and the NELBO -----------------------------------


def test_paper_counts_special_positions_everywhere():
    """Position 0 is special. ``paper``'s means are over every position: by hand from the per-token arrays."""
    src = MarkovSource(vocab_size=5, successors=2, seed=2)
    den = MarkovDenoiser(src, SCHED, dtype=torch.float64)
    x = src.sample(16, 6, generator=torch.Generator().manual_seed(1))
    real = torch.ones_like(x, dtype=torch.bool)
    real[:, 0] = False
    ex = conditional_entropy(den, x, real_mask=real)
    pa = conditional_entropy(den, x, real_mask=real, **{**PAPER["entropy"], "split": "input"})
    H = pa.arrays["entropy"][0]
    assert not H.isnan().any() and ex.arrays["entropy"][0][:, 0].isnan().all()
    assert pa.value("entropy") == pytest.approx(float(H.mean(1).mean()), rel=1e-12)
    assert ex.value("entropy") == pytest.approx(float(H[:, 1:].mean(1).mean()), rel=1e-12)
    lx, lp = likelihood(den, x, real_mask=real, seed=3), likelihood(den, x, real_mask=real, seed=3,
                                                                     count_special=True)
    assert lx.arrays["n_tokens"].tolist() == [5.0] * 16 and lp.arrays["n_tokens"].tolist() == [6.0] * 16
    target = x.clone()
    target[:, 0] = (x[:, 0] + 1) % 5  # every restore gets the special position wrong, the others right
    fx = fixed_point_test(TargetDenoiser(target, 5), x, real_mask=real, steps=3, batch_size=16)
    fp = fixed_point_test(TargetDenoiser(target, 5), x, real_mask=real, steps=3, batch_size=16,
                          **PAPER["fixed_points"])
    assert _row(fx, "fixed_point_rate")["value"] == 1.0 and _row(fp, "fixed_point_rate")["value"] == 0.0


# ---- 7. entropy gap: generated minus train (paper); both gaps, named, under exact ---------------------------------


def test_entropy_gaps_per_protocol():
    src = MarkovSource(vocab_size=4, successors=2, seed=0)
    den = MarkovDenoiser(src, SCHED, dtype=torch.float64)
    pool = src.sample(20, 5, generator=torch.Generator().manual_seed(0))
    data = SequenceData(train_pool=pool[:12], test=pool[12:], vocab_size=4, source=src, n_train=12)
    rows = {}
    for protocol in ("exact", "paper"):
        cfg = ProbeConfig(m=8, ts=[0.5], steps=3, batch_size=8, n_samples=6, protocol=protocol)
        res = run_suite(den, data, cfg, n_train=12, probes=["basins", "fixed_points", "entropy"],
                        sets=("train", "test"))
        rows[protocol] = {(r["set"], r["metric"]): r["value"] for r in res.rows if r["probe"] == "entropy"}
    ex, pa = rows["exact"], rows["paper"]
    gen = ex[("test", "entropy_generated")]
    assert ex[("test", "entropy_gap")] == pytest.approx(gen - ex[("test", "entropy")], rel=1e-12)
    assert ex[("train", "entropy_gap_train")] == pytest.approx(gen - ex[("train", "entropy")], rel=1e-12)
    assert ("train", "entropy_gap") not in ex and ("test", "entropy_gap") not in pa
    assert ("train", "entropy_gap_train") not in pa
    assert pa[("train", "entropy_gap")] == pytest.approx(
        pa[("train", "entropy_generated")] - pa[("train", "entropy")], rel=1e-12)
    assert gap_sets("paper") == {"train": "entropy_gap"}


# ---- 8. weights: EMA under exact, raw under paper -----------------------------------------------------------------


def test_weights_default_per_protocol():
    assert resolve_weights(None, "exact") == "ema" and resolve_weights(None, "paper") == "raw"
    assert resolve_weights("ema", "paper") == "ema" and resolve_weights("raw", "exact") == "raw"
    assert ProbeConfig().weights is None
    with pytest.raises(BasinlabError, match="probe.weights"):
        load_config(None, ["probe.weights=shadow"])
    with pytest.raises(BasinlabError, match="probe.weights"):
        resolve_weights("EMA", "exact")


# ---- 8. masked models: the entropy of x_θ at its input (the study's SUBS output), issue 26 ------------------------


def _masked_memoriser():
    from basinlab.oracles.masked import MaskedEmpiricalDenoiser

    return MaskedEmpiricalDenoiser(TRAIN, V, SCHED, dtype=torch.float64)


@pytest.mark.parametrize("t", [0.25, 0.6])
def test_paper_entropy_of_a_masked_model_is_its_output_and_zero_where_visible(t):
    """Reference: the same ``z_t`` (the probe's own generator, replayed), ``x_θ(z_t)`` of the oracle in float64,
    its entropy by ``-Σ p log p``; zero at every visible position by construction (SUBS: ``x_θ = onehot(z_t)``).
    ``exact`` reads the leave-one-out conditional, non-zero at visible positions of the memoriser's ambiguous
    tokens."""
    from basinlab.diffusion import process_of
    from basinlab.probes._common import make_generator
    from basinlab.probes.results import child_seed

    den = _masked_memoriser()
    x = TRAIN.repeat(8, 1)
    ex = conditional_entropy(den, x, ts=[t], seed=5)
    pa = conditional_entropy(den, x, ts=[t], seed=5, **{**PAPER["entropy"], "split": "input"})
    g = make_generator(child_seed(5, "entropy", t), torch.device("cpu"))
    z = process_of(den).corrupt(x, float(SCHED.alpha(t)), generator=g)
    p = den(z, torch.full((x.shape[0],), t, dtype=torch.float64)).exp()
    ref = -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(-1)
    H = pa.arrays["entropy"][0]
    assert torch.allclose(H, ref, atol=1e-12)
    visible = z != den.mask_index
    assert visible.any() and (~visible).any() and (H[visible] == 0).all()
    assert (ex.arrays["entropy"][0][visible] > 1e-6).any()  # the leave-one-out conditional is not one-hot there
    assert pa.value("entropy") < ex.value("entropy")


def test_entropy_of_output_and_leave_one_out_agree_where_they_must():
    """At ``t = 1`` every position of a masked ``z_t`` is masked, so masking one more changes nothing; for the
    uniform process ``x_θ`` leaves each token out already (SPEC 4): both definitions give the same numbers."""
    den = _masked_memoriser()
    x = TRAIN.repeat(4, 1)
    a = conditional_entropy(den, x, ts=[1.0], seed=2)
    b = conditional_entropy(den, x, ts=[1.0], seed=2, entropy_of="output")
    assert torch.allclose(a.arrays["entropy"], b.arrays["entropy"], atol=1e-12)
    uni = EmpiricalDenoiser(TRAIN, V, SCHED, dtype=torch.float64)
    a = conditional_entropy(uni, x, ts=[0.25], seed=2)
    b = conditional_entropy(uni, x, ts=[0.25], seed=2, entropy_of="output")
    assert torch.equal(a.arrays["entropy"], b.arrays["entropy"])
    with pytest.raises(BasinlabError, match="entropy_of must be one of leave_one_out, output"):
        conditional_entropy(uni, x, ts=[0.25], entropy_of="subs")


def test_paper_threads_the_output_entropy_through_basins_and_the_t_grid():
    """Under ``paper`` a masked model's restored-sequence entropy (at ``t_min``, nothing masked) is 0 everywhere,
    and its grid entropy at ``t`` is the output's; ``exact``'s restored-sequence entropy is the leave-one-out one."""
    den = _masked_memoriser()
    x = TRAIN.repeat(4, 1)
    pb = basin_test(den, x, ts=[0.5], steps=4, batch_size=16, **PAPER["basins"])
    eb = basin_test(den, x, ts=[0.5], steps=4, batch_size=16, **{**PAPER["basins"], "entropy_of": "leave_one_out"})
    assert (pb.arrays["restored_entropy"] == 0).all() and (eb.arrays["restored_entropy"] > 0).any()
    tg = t_grid(den, x, ts=[0.5], steps=4, batch_size=16, seed=1, **PAPER["t_grid"])
    ce = conditional_entropy(den, x, ts=[0.5], seed=1, count_special=True, entropy_of="output")
    assert tg.arrays["entropy_seq"][0].tolist() == pytest.approx(ce.arrays["entropy_seq"][0].tolist(), abs=1e-12)


# ---- 9. the paper NELBO over the study's attention mask: BOS/EOS counted, PAD not (issue 26) -----------------------


def test_paper_nelbo_averages_over_the_attention_mask_float64_restatement():
    """A padded text-like set (PAD 0, BOS 1, EOS 2, words 3..5): the study's NELBO is the integrand summed over the
    non-PAD positions of the drawn ``z_t``, divided by their number and the number of draws. Restated here from
    SPEC 4's literal formula (:func:`nelbo_integrand_reference`, float64) on the same draws (``estimate_nelbo``'s
    generator replayed)."""
    from basinlab.diffusion import nelbo_integrand_reference, sample_times
    from basinlab.diffusion.uniform import UniformProcess

    Vt = 6
    src = MarkovSource(vocab_size=Vt, successors=Vt, seed=4)  # every transition: x_θ > 0, as the reference needs
    den = MarkovDenoiser(src, SCHED, dtype=torch.float64)
    rows = [[1, 3, 4, 5, 2, 0, 0, 0], [1, 5, 2, 0, 0, 0, 0, 0], [1, 4, 4, 3, 5, 3, 2, 0], [1, 3, 2, 0, 0, 0, 0, 0]]
    x = torch.tensor(rows * 3)
    data = SequenceData(train_pool=x, test=x, vocab_size=Vt, pad_id=0, bos_id=1, eos_id=2)
    attn = data.attention_mask(x)
    assert attn.tolist()[0] == [True] * 5 + [False] * 3  # BOS and EOS count, PAD does not
    n_times, seed = 3, 7
    got = likelihood(den, x, seed=seed, n_times=n_times, batch_size=64, real_mask=data.real_mask(x),
                     attention_mask=attn, **PAPER["likelihood"])
    g = torch.Generator().manual_seed(seed)
    total = torch.zeros((), dtype=torch.float64)
    for _ in range(n_times):
        t = sample_times(x.shape[0], 1e-3, antithetic=True, generator=g)
        a, da = SCHED.alpha(t), SCHED.dalpha(t)
        z = UniformProcess(Vt).corrupt(x, a, generator=g)
        probs = den(z, t).exp()
        for i in range(x.shape[0]):
            f = nelbo_integrand_reference(x[i:i + 1], z[i:i + 1], probs[i:i + 1], float(a[i]), float(da[i]))[0]
            total += (f * attn[i]).sum()
    want = float(total / (n_times * attn.sum()))
    assert got.value("nelbo") == pytest.approx(want, rel=1e-9)
    assert got.arrays["n_tokens"].tolist() == attn.sum(1).double().tolist()
    every = likelihood(den, x, seed=seed, n_times=n_times, batch_size=64, **PAPER["likelihood"])
    assert every.arrays["n_tokens"].tolist() == [8.0] * 12 and every.value("nelbo") != pytest.approx(want)


def test_report_says_the_paper_entropy_of_a_masked_model_is_zero_where_visible():
    from basinlab.study.report_probes import entropy_note

    note = entropy_note("masked", "paper")
    assert "0 at every visible (unmasked) position by construction" in note and "cannot separate" in note
    assert entropy_note("masked", "exact") == "" and entropy_note("uniform", "paper") == ""
