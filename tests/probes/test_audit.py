"""The audit probe and the membership AUC (basinlab.probes.audit): the AUC and DeLong's interval against a brute
force over all pairs, the memorising oracle separating its own training set from unseen data, and the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from basinlab.cli import main
from basinlab.config import load_config
from basinlab.data import build_dataset
from basinlab.diffusion import get_schedule
from basinlab.oracles import EmpiricalDenoiser, MarkovDenoiser
from basinlab.probes.audit import (
    auc_table,
    audit,
    membership_auc,
    membership_rows_from_arrays,
    membership_rows_from_results,
    roc_curve,
)
from basinlab.probes.results import ProbeResult


def _brute(pos, neg):
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    auc = psi.mean()
    v10, v01 = psi.mean(1), psi.mean(0)
    se = math.sqrt(v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg))
    return auc, se


def test_membership_auc_matches_pairs_and_delong():
    g = np.random.default_rng(0)
    pos = g.integers(0, 6, 40).astype(float)  # many ties
    neg = g.integers(0, 5, 55).astype(float)
    r = membership_auc(pos, neg)
    auc, se = _brute(pos, neg)
    assert r["value"] == pytest.approx(auc, abs=1e-12)
    assert r["std"] == pytest.approx(se, abs=1e-12)
    assert r["ci_low"] == pytest.approx(auc - 1.959963984540054 * se)
    assert r["n"] == 95
    flipped = membership_auc(pos, neg, direction=-1)
    assert flipped["value"] == pytest.approx(1 - auc, abs=1e-12)
    with_nan = membership_auc(np.r_[pos, np.nan], np.r_[neg, np.nan, np.nan])
    assert with_nan["value"] == r["value"] and with_nan["n"] == 95
    fpr, tpr = roc_curve(pos, neg)
    assert np.trapezoid(tpr, fpr) == pytest.approx(auc, abs=1e-12)
    perfect = membership_auc([3.0, 4.0], [1.0, 2.0, 2.5])
    assert perfect["value"] == 1.0 and perfect["ci_low"] == 1.0
    assert membership_auc([], [1.0])["value"] is None


@pytest.fixture(scope="module")
def markov(tmp_path_factory):
    cfg = load_config("demo", ["data.markov_pool=600", "data.n_test=64", "data.n_train=16",
                               f"data.cache_dir={tmp_path_factory.mktemp('cache')}"])
    return build_dataset(cfg.data), get_schedule("loglinear", 1e-3)


def test_memoriser_audit_separates_its_training_set(markov):
    """The exact memoriser of D_16: its own sequences have zero leave-one-out entropy and are fixed points, unseen
    ones are not -> AUC 1 on those scores; the Markov generaliser does not know D_16 -> AUC near 1/2."""
    data, sched = markov
    train, test = data.train(16), data.test[:48]
    seqs = torch.cat([train, test])
    groups = ["member"] * 16 + ["nonmember"] * 48
    mem = audit(EmpiricalDenoiser(train, data.vocab_size, sched), seqs, groups=groups, ts=(0.1,), steps=10,
                nelbo_times=2, reference=train)
    aucs = auc_table(mem)
    assert set(aucs) == {"entropy", "recovery@0.1", "fixed_point", "nelbo", "nn_hamming_reference"}
    assert aucs["entropy"]["auc"] == 1.0 and aucs["fixed_point"]["auc"] == 1.0
    assert aucs["nn_hamming_reference"]["auc"] == 1.0  # members are at distance 0 from the reference
    assert aucs["recovery@0.1"]["auc"] > 0.9
    gen = audit(MarkovDenoiser(data.source, sched), seqs, groups=groups, ts=(0.1,), steps=10, nelbo_times=2)
    for name, a in auc_table(gen).items():  # 16 members: sampling noise alone moves the AUC by ~0.1
        assert abs(a["auc"] - 0.5) < 0.3, (name, a)
    # per-group summary rows and per-sequence arrays
    assert mem.get("entropy", set_name="member")["value"] == pytest.approx(0.0, abs=1e-9)
    assert mem.arrays["score/entropy"].shape == (64,)


def test_membership_rows_from_probe_results(markov):
    """The sweep's rows: one membership_auc row per score, named by probe and t."""
    from basinlab import probes

    data, sched = markov
    den = EmpiricalDenoiser(data.train(16), data.vocab_size, sched)
    res = {}
    for name, seqs in (("train", data.train(16)), ("test", data.test[:32])):
        res[name] = {
            "basins": probes.basin_test(den, seqs, ts=[0.25], steps=5),
            "fixed_points": probes.fixed_point_test(den, seqs, steps=5),
            "entropy": probes.conditional_entropy(den, seqs, ts=[1e-5]),
        }
    rows = membership_rows_from_results(res["train"], res["test"], t_start=1.0)
    combined = ProbeResult()
    for name in ("train", "test"):
        for probe, r in res[name].items():
            combined.extend(r, prefix=f"{probe}/{name}/")
    assert membership_rows_from_arrays(combined.arrays, t_start=1.0) == rows
    auc = [r for r in rows if r["metric"] == "membership_auc"]
    assert [(r["probe"], r["t"]) for r in auc] == [("entropy", 1e-5), ("basins", 0.25), ("fixed_points", 1.0)]
    assert all(r["set"] == "train_vs_test" for r in rows) and auc[0]["value"] == 1.0
    # each score also gains its TPR at 1% and 0.1% FPR (the memoriser: entropy 0 on all 16 members, > 0 on test)
    assert [r["metric"] for r in rows[:3]] == ["membership_auc", "tpr_at_fpr_0.01", "tpr_at_fpr_0.001"]
    assert rows[1]["value"] == 1.0 and rows[2]["value"] == 1.0 and rows[1]["probe"] == "entropy"


def _toy_run(tmp_path, tokenizer=None):
    from tests.interop.duo_reference import random_duo_params
    from tests.interop.test_duo import NB, NH, C, D, V, write_hf

    src = write_hf(tmp_path / "hf", random_duo_params(V, D, C, NB, NH, seed=11))
    args = ["convert", str(src), "--out", str(tmp_path / "run")]
    args += ["--tokenizer", str(tokenizer)] if tokenizer else []
    assert main(args) == 0
    return tmp_path / "run", V


def test_audit_cli_ids(tmp_path, capsys):
    run, V = _toy_run(tmp_path)
    g = torch.Generator().manual_seed(0)
    for name, n in (("members.txt", 6), ("nonmembers.txt", 5), ("more.txt", 2)):
        ids = torch.randint(0, V, (n, 12), generator=g)
        (tmp_path / name).write_text("\n".join(" ".join(map(str, r)) for r in ids.tolist()) + "\n")
    out = tmp_path / "audit"
    rc = main(["audit", "--checkpoint", str(run), "--members", str(tmp_path / "members.txt"), "--nonmembers",
               str(tmp_path / "nonmembers.txt"), "--texts", str(tmp_path / "more.txt"), "--format", "ids",
               "--reference", str(tmp_path / "members.txt"), "--out", str(out), "--steps", "4", "--ts", "0.2,0.5",
               "--nelbo-times", "2", "--quiet"])
    assert rc == 0
    csv = pd.read_csv(out / "scores.csv")
    assert list(csv["group"]) == ["member"] * 6 + ["nonmember"] * 5 + ["text"] * 2
    assert {"entropy", "recovery@0.2", "recovery@0.5", "fixed_point", "nelbo", "nn_hamming_reference"} <= set(csv)
    assert (csv["nn_hamming_reference"][:6] == 0).all()
    assert pd.read_parquet(out / "scores.parquet").shape == csv.shape
    doc = json.loads((out / "auc.json").read_text())
    assert doc["scores"]["nn_hamming_reference"]["auc"] == 1.0
    assert doc["scores"]["nn_hamming_reference"]["tpr_at_fpr_0.01"] == 1.0  # members at distance 0, others not
    assert 0.0 <= doc["scores"]["entropy"]["tpr_at_fpr_0.001"] <= 1.0
    assert (out / "roc.png").stat().st_size > 1000
    tok = pd.read_parquet(out / "tokens.parquet")
    assert len(tok) == 13 * 12 and list(tok["group"][::12]) == list(csv["group"])
    per_text = tok.groupby("text_index")["entropy"].mean().to_numpy()
    np.testing.assert_allclose(per_text, csv["entropy"].to_numpy(), rtol=1e-9)
    page = (out / "audit.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "http://" not in page and "https://" not in page  # offline


def test_audit_cli_text_with_tokenizer(tmp_path):
    words = [f"w{i}" for i in range(32)]
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    run, _ = _toy_run(tmp_path, tokenizer=vocab)
    (tmp_path / "m.txt").write_text("w1 w2 w3\nw4 w5\n")
    (tmp_path / "n.txt").write_text("w9 w9 w9 w9\n\nw0\n")
    out = tmp_path / "audit"
    assert main(["audit", "--checkpoint", str(run), "--members", str(tmp_path / "m.txt"), "--nonmembers",
                 str(tmp_path / "n.txt"), "--out", str(out), "--steps", "3", "--nelbo-times", "1", "--quiet"]) == 0
    csv = pd.read_csv(out / "scores.csv")
    assert list(csv["text"]) == ["w1 w2 w3", "w4 w5", "w9 w9 w9 w9", "w0"]
    assert list(csv["n_tokens"]) == [3, 2, 4, 1]  # [CLS]/[SEP]/[PAD] never count


@pytest.mark.parametrize("case", ["empty", "latin1", "outside", "no_tokenizer"])
def test_audit_bad_input(tmp_path, capsys, case):
    run, V = _toy_run(tmp_path)
    f = tmp_path / "m.txt"
    fmt = "ids"
    if case == "empty":
        f.write_text("\n  \n")
        expect = "is empty"
    elif case == "latin1":
        f.write_bytes("caf\xe9\n".encode("latin-1"))
        expect = "not UTF-8"
    elif case == "outside":
        f.write_text(" ".join(["1"] * 11 + [str(V)]) + "\n")
        expect = f"token id {V} outside the vocabulary"
    else:
        f.write_text("some words\n")
        fmt, expect = "text", "has no tokenizer"
    capsys.readouterr()  # the conversion's progress lines (logging, shown by the CLI) are not the audit's
    rc = main(["audit", "--checkpoint", str(run), "--texts", str(f), "--format", fmt, "--out", str(tmp_path / "a")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and expect in lines[0], lines


def test_audit_cli_train_vs_test_on_a_converted_run(tmp_path):
    """--train-vs-test audits the run's own data; convert's key=value overrides set that data (Markov, V = 37)."""
    from tests.interop.duo_reference import random_duo_params
    from tests.interop.test_duo import NB, NH, C, D, V, write_hf

    src = write_hf(tmp_path / "hf", random_duo_params(V, D, C, NB, NH, seed=12))
    assert main(["convert", str(src), "data.markov_pool=300", "data.n_test=30", "data.n_train=20",
                 f"data.cache_dir={tmp_path / 'cache'}", "--out", str(tmp_path / "run")]) == 0
    out = tmp_path / "audit"
    assert main(["audit", "--checkpoint", str(tmp_path / "run"), "--train-vs-test", "10", "--out", str(out),
                 "--steps", "3", "--nelbo-times", "1", "--quiet"]) == 0
    csv = pd.read_csv(out / "scores.csv")
    assert list(csv["group"]) == ["member"] * 10 + ["nonmember"] * 10
    assert set(json.loads((out / "auc.json").read_text())["scores"]) >= {"entropy", "fixed_point", "nelbo"}
