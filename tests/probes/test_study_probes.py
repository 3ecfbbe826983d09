"""The study's measurements beyond SPEC 5's core (issue 16): fixed points and entropy over a grid of ``t``, the
basin test on random sequences, statistics of ``x_θ`` along the reverse chain, and the generative perplexity of
samples under a local causal LM. Each is pinned by hand or against an independent float64 computation."""

from __future__ import annotations

import math

import pytest
import torch

from basinlab.config import ProbeConfig
from basinlab.data.markov import MarkovSource
from basinlab.data.sequences import SequenceData
from basinlab.diffusion import LogLinearSchedule
from basinlab.oracles import MarkovDenoiser
from basinlab.probes import conditional_entropy, fixed_point_test, run_suite
from basinlab.probes.protocol import protocol_options
from basinlab.probes.t_grid import t_grid
from basinlab.probes.trajectory import METRICS, prediction_stats, trajectory_stats
from tests.probes._helpers import TargetDenoiser

SCHED = LogLinearSchedule()


def _rows(res, probe=None):
    return {(r["set"], r["t"], r["metric"]): r for r in res.rows if probe is None or r["probe"] == probe}


@pytest.fixture(scope="module")
def markov():
    src = MarkovSource(vocab_size=5, successors=2, seed=3)
    return src, MarkovDenoiser(src, SCHED, dtype=torch.float64)


# ---- t grid --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["exact", "paper"])
def test_t_grid_is_the_fixed_point_test_and_entropy_at_each_t(markov, protocol):
    src, den = markov
    x = src.sample(24, 6, generator=torch.Generator().manual_seed(0))
    opts = protocol_options(protocol)["fixed_points"]
    ts = (0.1, 0.5, 1.0)
    res = t_grid(den, x, set_name="test", ts=ts, steps=7, seed=4, batch_size=24, **opts)
    rows = _rows(res)
    ent = conditional_entropy(den, x, ts=ts, seed=4, batch_size=24)
    for i, t in enumerate(ts):
        fp = fixed_point_test(den, x, t_start=t, steps=7, batch_size=24, **opts)
        assert rows[("test", t, "grid_fixed_point_rate")]["value"] == fp.rows[0]["value"]
        assert torch.equal(res.arrays["fixed"][i], fp.arrays["fixed"])
        assert rows[("test", t, "grid_entropy")]["value"] == pytest.approx(ent.rows[i]["value"], rel=1e-12)
    # by hand: a denoiser whose x_θ is a point mass on the input keeps every sequence at every t, entropy 0
    keep = t_grid(TargetDenoiser(x, 5), x, ts=ts, steps=7, batch_size=24)
    assert all(r["value"] == (1.0 if r["metric"] == "grid_fixed_point_rate" else 0.0) for r in keep.rows)


# ---- random-sequence basins ----------------------------------------------------------------------------------------


def test_suite_runs_basins_t_grid_and_trajectory_on_the_sets(markov):
    src, den = markov
    pool = src.sample(30, 6, generator=torch.Generator().manual_seed(1))
    data = SequenceData(train_pool=pool[:20], test=pool[20:], vocab_size=5, source=src, n_train=20)
    cfg = ProbeConfig(m=8, ts=[0.25, 1.0], steps=4, batch_size=8, n_samples=4)
    res = run_suite(den, data, cfg, n_train=20)
    have = {(r["probe"], r["set"]) for r in res.rows}
    for s in ("train", "test", "random"):
        assert ("basins", s) in have and ("t_grid", s) in have
    assert ("trajectory", "train") in have and ("trajectory", "test") in have and ("trajectory", "random") not in have
    assert not any(r["probe"] == "gen_ppl" for r in res.rows)  # no scorer named
    assert res.arrays["basins/random/corrupted"].shape == (2, 8, 6)
    off = run_suite(den, data, ProbeConfig(m=8, ts=[0.25], steps=4, batch_size=8, n_samples=4,
                                           trajectory_stats=False), n_train=20, probes=["trajectory"])
    assert off.rows == []


# ---- trajectory statistics ----------------------------------------------------------------------------------------


def test_prediction_stats_against_the_softmax_jacobian():
    """Float64 reference: ``J = diag(p) - p pᵀ``; diagonal ``p_v (1 - p_v)``, off-diagonal ``-p_u p_v``."""
    g = torch.Generator().manual_seed(0)
    V = 7
    logits = torch.randn(3, 4, V, generator=g, dtype=torch.float64) * 2
    got = prediction_stats(torch.log_softmax(logits, -1))
    for b in range(3):
        for l in range(4):
            p = torch.softmax(logits[b, l], -1)
            J = torch.diag(p) - torch.outer(p, p)
            off = J - torch.diag(torch.diag(J))
            upper = torch.triu(torch.outer(p, p), diagonal=1)
            srt = p.sort(descending=True).values
            want = {
                "traj_entropy": float(-(p * p.log()).sum()),
                "traj_diag": float(torch.diag(J).sum()),
                "traj_diag_norm": float(torch.diag(J).norm()),
                "traj_interaction": float(off.sum()) / (V * (V - 1)) / 2,
                "traj_interaction_norm": float(upper.norm()),
                "traj_spectral_gap": float(srt[0] - srt[1]),
                "traj_max_conf": float(srt[0]),
            }
            for k, v in want.items():
                assert float(got[k][b, l]) == pytest.approx(v, rel=1e-10, abs=1e-14), k


def test_trajectory_of_an_iid_source_is_its_marginal_at_every_step():
    """An i.i.d. source: ``x_θ = pi`` whatever ``z`` and ``t``, so every statistic equals that of ``pi``, at each of
    the ``T + 1`` calls from ``t = 1`` to ``t_min``."""
    pi = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    den = MarkovDenoiser(MarkovSource.from_matrix(pi, pi.repeat(3, 1)), SCHED, dtype=torch.float64)
    x = torch.randint(0, 3, (10, 4), generator=torch.Generator().manual_seed(2))
    res = trajectory_stats(den, x, steps=6, batch_size=4, points=100)
    want = {k: float(v) for k, v in prediction_stats(pi.log()[None, None]).items()}
    assert res.arrays["traj_t"].tolist()[0] == 1.0 and res.arrays["traj_t"].shape == (7,)
    assert want["traj_max_conf"] == 0.5 and want["traj_spectral_gap"] == pytest.approx(0.2)
    for name in METRICS:
        assert torch.allclose(res.arrays[name], torch.full((7, 10), want[name], dtype=torch.float64), rtol=1e-9)
    assert {r["metric"] for r in res.rows} == set(METRICS) and len(res.rows) == 7 * len(METRICS)


def test_trajectory_of_a_point_mass_and_special_positions():
    """By hand: a point mass has confidence 1, gap 1, entropy 0, interaction norm ``sqrt(0.5e-12)`` (the clamp).
    Position 0 is special and uniform: only ``count_special`` averages it in (max_conf (3 + 1/3)/4)."""

    class Mixed(TargetDenoiser):
        def __call__(self, z, t):
            out = super().__call__(z, t)
            out[:, 0] = -math.log(3)
            return out

    x = torch.tensor([[0, 1, 2, 1]] * 4)
    real = torch.ones_like(x, dtype=torch.bool)
    real[:, 0] = False
    res = trajectory_stats(Mixed(x, 3), x, real_mask=real, steps=3, batch_size=4)
    assert torch.allclose(res.arrays["traj_max_conf"], torch.ones(4, 4, dtype=torch.float64))
    assert torch.allclose(res.arrays["traj_entropy"], torch.zeros(4, 4, dtype=torch.float64), atol=1e-12)
    assert math.isclose(float(res.arrays["traj_interaction_norm"][0, 0]), math.sqrt(0.5e-12), rel_tol=1e-9)
    pa = trajectory_stats(Mixed(x, 3), x, real_mask=real, steps=3, batch_size=4, count_special=True)
    assert torch.allclose(pa.arrays["traj_max_conf"], torch.full((4, 4), (3 + 1 / 3) / 4, dtype=torch.float64))
    assert torch.allclose(pa.arrays["traj_entropy"], torch.full((4, 4), math.log(3) / 4, dtype=torch.float64))


# ---- generative perplexity -----------------------------------------------------------------------------------------


WORDS = [str(i) for i in range(12)] + ["a", "b", "c"]


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    """A tiny randomly initialised GPT-2 and a word-level tokenizer (EOS ``<|endoftext|>``), saved as a local
    Hugging Face directory: nothing downloaded."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["<|endoftext|>", *WORDS])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>",
                                               unk_token="<|endoftext|>")
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=len(vocab), n_positions=64, n_embd=16,
                                                                 n_layer=1, n_head=2, bos_token_id=0,
                                                                 eos_token_id=0))
    path = tmp_path_factory.mktemp("scorer")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path, model.eval(), vocab


def test_gen_ppl_is_the_nll_per_counted_token(scorer):
    """Reference: each text alone, unpadded, float64 log-softmax by hand; the shorter text of the batch is padded
    with EOS, and its first EOS is a counted token (the study's rule); truncation at ``max_length``."""
    from basinlab.probes.gen_ppl import gen_ppl, unigram_entropy

    path, model, vocab = scorer
    texts = ["1 2 3 a b 4 5", "c 7", "0 1 2 3 4 5 6 7 8 9 10 11"]
    samples = torch.tensor([[1, 1, 2, 3], [0, 1, 2, 3], [2, 2, 2, 2]])
    res = gen_ppl(samples, texts, path, batch_size=2, max_length=9)
    total_nll, total_n, per = 0.0, 0, []
    for i, text in enumerate(texts):
        ids = [vocab[w] for w in text.split()][:9]
        padded = i == 1  # batch [0, 1]: text 1 is shorter; batch [2] alone: no padding
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
        nll = -sum(float(logp[j, ids[j + 1]]) for j in range(len(ids) - 1)) - (float(logp[-1, 0]) if padded else 0)
        n = len(ids) - 1 + padded
        total_nll, total_n = total_nll + nll, total_n + n
        per.append((nll, n))
    assert res.arrays["n_tokens"].tolist() == [n for _, n in per] == [6, 2, 8]
    assert torch.allclose(res.arrays["nll"], torch.tensor([v for v, _ in per], dtype=torch.float64), rtol=1e-5)
    assert res.value("gen_nll") == pytest.approx(total_nll / total_n, rel=1e-5)
    assert res.value("gen_ppl") == pytest.approx(math.exp(total_nll / total_n), rel=1e-5)
    h = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert unigram_entropy(samples).tolist() == pytest.approx([h, math.log(4), 0.0])
    assert res.value("sample_entropy") == pytest.approx((h + math.log(4)) / 3)


def test_suite_scores_generated_samples_and_refuses_a_missing_scorer(scorer, markov, tmp_path):
    from basinlab.errors import BasinlabError

    src, den = markov
    pool = src.sample(30, 6, generator=torch.Generator().manual_seed(1))
    data = SequenceData(train_pool=pool[:20], test=pool[20:], vocab_size=5, source=src, n_train=20)
    cfg = ProbeConfig(m=4, ts=[0.5], steps=3, batch_size=4, n_samples=5, gen_ppl_model=str(scorer[0]))
    res = run_suite(den, data, cfg, n_train=20, probes=["gen_ppl"])
    rows = _rows(res, "gen_ppl")
    assert {k[2] for k in rows} == {"gen_ppl", "gen_nll", "sample_entropy"}
    assert rows[("generated", None, "gen_ppl")]["n"] == 5
    cfg.gen_ppl_model = str(tmp_path / "nope")
    with pytest.raises(BasinlabError, match="gen_ppl_model.*not a local Hugging Face model directory"):
        run_suite(den, data, cfg, n_train=20)


def test_probe_all_quick_gives_the_study_rows(scorer, tmp_path):
    """``basinlab probe all --checkpoint R --quick`` with ``probe.gen_ppl_model``: rows for the t-grid fixed points,
    the random-sequence basins, the trajectory statistics, and the generative perplexity and sample entropy."""
    import pandas as pd

    from basinlab.cli import main
    from basinlab.config import load_config
    from basinlab.training.trainer import train

    cfg = load_config(None, ["data.source=markov", "data.seq_len=8", "data.n_train=16", "data.n_test=16",
                             "data.markov_pool=100", f"data.cache_dir={tmp_path / 'cache'}", "model.n_layer=1",
                             "model.d_model=32", "model.n_head=2", "model.d_cond=16", "train.steps=2",
                             "train.batch_size=8", "train.warmup_steps=1", "train.device=cpu",
                             "train.progress=false"])
    train(cfg, out_dir=tmp_path / "run", progress=False)
    out = tmp_path / "probes"
    assert main(["probe", "all", f"probe.gen_ppl_model={scorer[0]}", "--checkpoint", str(tmp_path / "run"),
                 "--quick", "--n", "4", "--steps", "3", "--samples", "3", "--device", "cpu", "--quiet",
                 "--out", str(out)]) == 0
    df = pd.read_csv(out / "results.csv")
    have = set(zip(df["probe"], df["set"], df["metric"], strict=True))
    for s in ("train", "test", "random"):
        assert ("t_grid", s, "grid_fixed_point_rate") in have and ("basins", s, "recovery_rate") in have
    assert ("trajectory", "test", "traj_spectral_gap") in have
    assert {("gen_ppl", "generated", m) for m in ("gen_ppl", "sample_entropy")} <= have
