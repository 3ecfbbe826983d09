"""``basinlab audit --checkpoint DIR`` on LLaDA and Dream directories loaded in place (SPEC 2c, issue 24): texts of
any length scored at their own length, and ``tokens.parquet``'s entropies equal to the official architecture's
leave-one-out conditional (position ``l`` masked alone) in float64."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from basinlab.cli import main
from tests.models.masked_lm_reference import LOGITS, loo_log_probs, official_tensors, write


def _lines(seed: int, n: int) -> list[list[int]]:
    g = np.random.default_rng(seed)
    return [g.integers(0, 40, size=int(g.integers(4, 10))).tolist() for _ in range(n)]


@pytest.mark.parametrize("kind", ["llada", "dream"])
def test_audit_entropies_equal_the_architecture_at_each_texts_own_length(tmp_path, kind, capsys):
    ckpt = write(kind, tmp_path / kind)
    members, nonmembers = _lines(1, 3), _lines(2, 3)
    for name, rows in (("m.txt", members), ("n.txt", nonmembers)):
        (tmp_path / name).write_text("".join(" ".join(map(str, r)) + "\n" for r in rows))
    out = tmp_path / "audit"
    assert main(["audit", "--checkpoint", str(ckpt), "--members", str(tmp_path / "m.txt"), "--nonmembers",
                 str(tmp_path / "n.txt"), "--format", "ids", "--out", str(out), "--steps", "4", "--nelbo-times", "2",
                 "--reference", str(tmp_path / "m.txt"), "--quiet", "--device", "cpu"]) == 0
    frame = pd.read_parquet(out / "tokens.parquet")
    cfg, tensors = json.loads((ckpt / "config.json").read_text()), official_tensors(ckpt)
    texts = members + nonmembers
    assert len(frame) == sum(map(len, texts))  # no rows for padding
    for i, ids in enumerate(texts):
        rows = frame[frame["text_index"] == i].sort_values("position")
        assert rows["token_id"].tolist() == ids
        logp = loo_log_probs(LOGITS[kind], cfg, tensors, torch.tensor([ids]))[0]  # the text alone, its own length
        p = logp.exp()
        ref = -(p * torch.where(p > 0, logp, torch.zeros_like(logp))).sum(-1)
        assert np.allclose(rows["entropy"].to_numpy(), ref.numpy(), atol=1e-4, rtol=0)
    auc = json.loads((out / "auc.json").read_text())
    assert auc["members"] == 3 and "entropy" in auc["scores"]
    scores = pd.read_csv(out / "scores.csv")  # the members are their own reference: distance 0
    assert scores.loc[scores["group"] == "member", "nn_hamming_reference"].tolist() == [0.0, 0.0, 0.0]
    assert (scores.loc[scores["group"] == "nonmember", "nn_hamming_reference"] > 0).all()


def test_probe_runs_on_a_directory_loaded_in_place_with_a_configs_data(tmp_path, capsys):
    ckpt = write("llada", tmp_path / "llada")
    out = tmp_path / "probe"
    assert main(["probe", "entropy", "demo", "data.n_train=16", "data.markov_pool=200", "data.n_test=8",
                 "--checkpoint", str(ckpt), "--n", "4", "--steps", "4", "--set", "train", "--device", "cpu",
                 "--quiet", "--out", str(out)]) == 0
    rows = pd.read_csv(out / "results.csv")
    assert (rows["metric"] == "entropy").any() and np.isfinite(rows.loc[rows["metric"] == "entropy", "value"]).all()
    assert main(["probe", "entropy", "--checkpoint", str(ckpt)]) == 2
    assert "loaded in place, without data: give a CONFIG" in capsys.readouterr().err
    assert main(["probe", "entropy", "demo", "data.markov_vocab=44", "--checkpoint", str(ckpt)]) == 2
    assert "the data hold the model's mask id 40" in capsys.readouterr().err


def test_text_audit_with_the_tokenizer_beside_the_weights(tmp_path):
    """A ``tokenizer.json`` beside the weights: ``--format text`` encodes ``[BOS] text [EOS]``, each text scored at
    its own length (one ``tokens.parquet`` row per token of ``[BOS] text [EOS]``, none for padding)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    ckpt = write("dream", tmp_path / "dream")
    words = ["[PAD]", "[BOS]", "[EOS]", "[UNK]"] + [f"w{i}" for i in range(20)]
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.add_special_tokens(words[:4])
    tk.save(str(ckpt / "tokenizer.json"))
    texts = ["w1 w2 w3", "w4 w5 w6 w7 w8 w9", "w10 w11"]
    (tmp_path / "t.txt").write_text("\n".join(texts) + "\n")
    out = tmp_path / "audit"
    assert main(["audit", "--checkpoint", str(ckpt), "--texts", str(tmp_path / "t.txt"), "--out", str(out),
                 "--steps", "4", "--nelbo-times", "2", "--quiet", "--device", "cpu"]) == 0
    frame = pd.read_parquet(out / "tokens.parquet")
    assert frame.groupby("text_index").size().tolist() == [len(t.split()) + 2 for t in texts]
    assert frame.loc[frame["real"], "token_id"].tolist() == [words.index(w) for t in texts for w in t.split()]


def test_audit_by_length_equals_each_length_alone_and_the_page_shows_no_padding(tmp_path):
    """``audit(..., lengths=...)``: a row's scores are those of an audit of its own length alone (same seed), and
    the audit page lists each text's own tokens only."""
    from basinlab.probes.audit import audit
    from basinlab.probes.tokens import token_texts
    from basinlab.study.html.audit_page import page_data
    from basinlab.training.checkpoint import load_trained

    tm = load_trained(write("llada", tmp_path / "llada"), device="cpu")
    rows = [[1, 2, 3, 4, 5], [6, 7, 8], [9, 10, 11, 12, 13]]
    seqs = torch.tensor([r + [0] * (5 - len(r)) for r in rows])
    kw = {"ts": (0.5,), "steps": 4, "nelbo_times": 2, "seed": 3}
    res = audit(tm.denoiser, seqs, lengths=torch.tensor([5, 3, 5]), **kw)
    alone = audit(tm.denoiser, seqs[[1], :3], **kw)
    for s in res.arrays["scores"]:
        mine = next(a for a in alone.arrays["scores"] if a.name == s.name)
        assert torch.allclose(s.values[1], mine.values[0], equal_nan=True), s.name
    assert torch.equal(res.arrays["tokens/entropy"][1, :3], alone.arrays["tokens/entropy"][0])
    assert torch.isnan(res.arrays["tokens/entropy"][1, 3:]).all()
    texts, special = token_texts(None, tm.vocab_size, tm.process.mask_index)
    page = page_data(res.arrays, ["text"] * 3, texts, special, res.arrays["scores"])
    assert [t["ids"] for t in page["texts"]] == rows and [len(t["h"]) for t in page["texts"]] == [5, 3, 5]
