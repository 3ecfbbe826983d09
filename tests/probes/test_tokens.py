"""Per-token audit data (basinlab.probes.tokens) and TPR at low FPR (basinlab.probes.audit.tpr_at_fpr): against
brute force, against the entropy probe's own per-token values, and the exact memoriser's certainty on its data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from basinlab.config import load_config
from basinlab.data import build_dataset
from basinlab.diffusion import get_schedule
from basinlab.oracles import EmpiricalDenoiser
from basinlab.probes.audit import auc_table, audit, roc_curve, tpr_at_fpr
from basinlab.probes.entropy import conditional_entropy
from basinlab.probes.tokens import token_predictions, token_texts, tokens_frame


def _brute_tpr(pos, neg, level):
    """Every threshold (each distinct value, and +inf): the largest TPR whose FPR is <= level."""
    best = 0.0
    for x in [np.inf, *np.unique(np.r_[pos, neg])]:
        if (neg >= x).mean() <= level + 1e-15:
            best = max(best, (pos >= x).mean())
    return best


@pytest.mark.parametrize("seed", range(6))
def test_tpr_at_fpr_matches_brute_force(seed):
    g = np.random.default_rng(seed)
    pos = g.integers(0, 30, 200).astype(float)  # ties
    neg = g.integers(0, 25, 1000).astype(float) - 3
    for level in (0.0, 0.001, 0.01, 0.1, 1.0):
        for d in (1, -1):
            r = tpr_at_fpr(pos, neg, d, level)
            assert r["value"] == pytest.approx(_brute_tpr(d * pos, d * neg, level), abs=1e-12), (level, d)
            assert r["n"] == 1200
    fpr, tpr = roc_curve(pos, neg)  # the same points as the ROC
    assert tpr_at_fpr(pos, neg, 1, 0.01)["value"] == pytest.approx(tpr[fpr <= 0.01].max())
    assert tpr_at_fpr([5.0, 6.0], [1.0, 2.0], level=0.001)["value"] == 1.0  # perfect separation
    assert tpr_at_fpr([1.0, np.nan], [1.0], level=0.5)["value"] == 0.0  # tie: the only point has FPR 1
    assert tpr_at_fpr([], [1.0])["value"] is None


@pytest.fixture(scope="module")
def markov(tmp_path_factory):
    cfg = load_config("demo", ["data.markov_pool=600", "data.n_test=64", "data.n_train=16",
                               f"data.cache_dir={tmp_path_factory.mktemp('cache')}"])
    return build_dataset(cfg.data), get_schedule("loglinear", 1e-3)


def test_token_predictions_are_the_entropy_probes_values(markov):
    data, sched = markov
    den = EmpiricalDenoiser(data.train(16), data.vocab_size, sched)
    seqs = torch.cat([data.train(16)[:5], data.test[:7]])
    mask = torch.ones_like(seqs, dtype=torch.bool)
    mask[:, -2:] = False
    pred = token_predictions(den, seqs, 1e-5, k=3, seed=4, batch_size=5, real_mask=mask)
    probe = conditional_entropy(den, seqs, ts=[1e-5], seed=4, batch_size=5, real_mask=mask)
    torch.testing.assert_close(pred["entropy"], probe.arrays["entropy"][0], equal_nan=True)
    assert pred["entropy"][:, -2:].isnan().all()
    p = pred["top_probs"]
    assert p.shape == (12, seqs.shape[1], 3) and (p[..., :-1] >= p[..., 1:]).all() and (p.sum(-1) <= 1 + 1e-5).all()
    # x_θ from the log-probabilities in float64: the top-k are the k largest entries of the full distribution
    from basinlab.diffusion import corrupt
    from basinlab.probes._common import make_generator
    from basinlab.probes.results import child_seed
    z = corrupt(seqs, float(sched.alpha(1e-5)), data.vocab_size, generator=make_generator(
        child_seed(4, "entropy", 1e-5), torch.device("cpu")))
    full = den(z, torch.full((12,), 1e-5, dtype=torch.float64)).to(torch.float64).exp()
    torch.testing.assert_close(p, full.topk(3, -1).values, atol=1e-6, rtol=1e-6)
    # the memoriser is certain of its own sequences: top-1 = the token, probability 1, entropy 0
    member = pred["entropy"][:5, :-2]
    assert member.abs().max() < 1e-6
    assert (pred["top_ids"][:5, :, 0] == seqs[:5]).all() and (p[:5, :, 0] > 1 - 1e-6).all()


def test_audit_tokens_frame(markov):
    data, sched = markov
    den = EmpiricalDenoiser(data.train(16), data.vocab_size, sched)
    seqs = torch.cat([data.train(16)[:4], data.test[:6]])
    groups = ["member"] * 4 + ["nonmember"] * 6
    res = audit(den, seqs, groups=groups, ts=(0.5, 0.2), steps=6, nelbo_times=1, seed=3)
    texts, special = token_texts(None, data.vocab_size)
    df = tokens_frame(res.arrays, groups, texts, special)
    M, L = seqs.shape
    assert len(df) == M * L and list(df["position"][:L]) == list(range(L))
    assert (df["token_id"].to_numpy() == seqs.numpy().ravel()).all()
    assert df["token"][1] == f" {int(seqs[0, 1])}"
    assert (df["basin_t"] == 0.5).all()
    # corrupted / restored are the basin test's at its first t; the entropy means are the audit's score
    from basinlab.probes.basins import basin_test
    b = basin_test(den, seqs, ts=[0.5, 0.2], steps=6, seed=3)
    assert (df["corrupted"].to_numpy() == b.arrays["changed"][0].numpy().ravel()).all()
    assert (df["restored"].to_numpy() == (b.arrays["restored"][0] == seqs).numpy().ravel()).all()
    per_text = df.groupby("text_index")["entropy"].mean().to_numpy()
    np.testing.assert_allclose(per_text, res.arrays["score/entropy"].numpy(), atol=1e-12)
    assert (df[df.group == "member"]["top1_prob"] > 1 - 1e-6).all()
    assert len(df["top5_ids"][0]) == 5 and df["top1_id"][0] == df["top5_ids"][0][0]
    aucs = auc_table(res)
    assert aucs["entropy"]["tpr_at_fpr_0.01"] == 1.0 and "tpr_at_fpr_0.001" in aucs["nelbo"]


def test_token_texts_show_bytes_of_partial_characters():
    from basinlab.data.tokenizer import train_tokenizer

    sents = ["the cat sat", "the dog ran", "a cafe\u0301 \u2014 ok"] * 3
    bpe = train_tokenizer(sents, "bpe", vocab_size=300)
    texts, special = token_texts(bpe, bpe.vocab_size)
    assert special[bpe.pad_id] and texts[bpe.pad_id] == "[PAD]"
    ids = bpe.encode("\u2014")  # a 3-byte character: byte tokens unless merged
    shown = "".join(texts[i] for i in ids)
    assert "\ufffd" not in "".join(texts)
    assert shown.strip() == "\u2014" or "‹" in shown
    the = bpe.encode("the cat")
    assert "".join(texts[i] for i in the) == " the cat"
    wp = train_tokenizer(sents, "wordpiece", vocab_size=60)
    wt, _ = token_texts(wp, wp.vocab_size)
    ids = wp.encode("the cats")
    assert "".join(wt[i] for i in ids).strip() == wp.decode(ids)
