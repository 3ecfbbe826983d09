"""The ``text-demo`` preset at toy scale: its real data and tokeniser, a two-size sweep through the same code
path as ``basinlab sweep --preset text-demo`` (shrunk model, steps and probes), and decoded restorations of
real sentences in the report (issue 7)."""

from __future__ import annotations

import html
import json

import pandas as pd
import pytest
import torch

from basinlab.config import load_config
from basinlab.data import build_dataset
from basinlab.data.corpora import load_sentences
from basinlab.oracles.build import ORACLE_EMPIRICAL
from basinlab.probes.examples import surface_pieces
from basinlab.probes.scorers import smollm2_missing
from basinlab.study.report import write_report
from basinlab.study.sweep import run_sweep

#: Shrinks everything but the data section (the preset's corpus, tokeniser, L and test set are kept).
SHRINK = [
    "model.n_layer=1", "model.d_model=32", "model.n_head=2", "model.d_cond=16",
    "train.steps=4", "train.batch_size=8", "train.warmup_steps=1", "train.ckpt_every=4", "train.log_every=2",
    "train.progress=false", "probe.m=6", "probe.steps=3", "probe.n_samples=3", "probe.batch_size=8",
    "sweep.sizes=[8, 32]", "sweep.devices=[]",
]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory, scorer_cache):
    root = tmp_path_factory.mktemp("text_demo")
    cfg = load_config("text-demo", [*SHRINK, f"data.cache_dir={root / 'cache'}"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BASINLAB_CACHE", str(scorer_cache))  # the preset's gen_ppl_model=auto: smollm2 if installed
        return cfg, run_sweep(cfg, root / "sweep", progress=False)


def test_text_demo_data_is_real_english_nested_and_disjoint(sweep_dir):
    cfg, _ = sweep_dir
    preset = load_config("text-demo")
    assert (cfg.data.source, cfg.data.tokenizer, cfg.data.seq_len) == ("brown", "bpe", preset.data.seq_len)
    data = build_dataset(cfg.data)  # from the cache the sweep wrote
    assert data.vocab_size == data.tokenizer.vocab_size and data.vocab_size <= 512  # a CPU-sized vocabulary
    assert data.train(8).equal(data.train(32)[:8])  # nested subsets: D_8 is the start of D_32
    assert (data.train_pool[:, 0] == data.bos_id).all() and (data.test[:, 0] == data.bos_id).all()
    pool = {tuple(r) for r in data.train_pool.tolist()}
    assert not any(tuple(r) in pool for r in data.test.tolist())  # "unseen" means unseen
    brown = set(load_sentences(cfg.data))
    texts = data.decode(data.test[:20])
    # decoded test rows are Brown sentences (or, when longer than L - 2 tokens, their beginnings)
    assert all(t and (t in brown or any(s.startswith(t) for s in brown)) for t in texts)
    pieces = surface_pieces(data.tokenizer, data.test[0].tolist())
    assert "".join(pieces).strip() == texts[0] and len(pieces) == data.seq_len


def test_text_demo_sweep_records_and_report_shows_decoded_restorations(sweep_dir):
    cfg, out = sweep_dir
    df = pd.read_csv(out / "results.csv")
    assert set(df["model"]) == {cfg.model.preset, ORACLE_EMPIRICAL}  # the memoriser; no Markov oracle on text
    assert set(df["N"]) == {8, 32}
    rec = df[(df["metric"] == "recovery_rate") & (df["t"] == cfg.sweep.transition_t)]
    assert set(rec["set"]) == {"train", "test", "random"} and rec["value"].between(0, 1).all()  # random: issue 16
    # the memoriser restores its own training sequences better than unseen ones at the smallest N
    mem = rec[(rec["model"] == ORACLE_EMPIRICAL) & (rec["N"] == 8)].set_index("set")["value"]
    assert mem["train"] > mem["test"]
    small = json.loads((out / "runs" / "N8-s0" / "examples.json").read_text())
    large = json.loads((out / "runs" / "N32-s0" / "examples.json").read_text())
    assert small["examples"][0]["corrupted"] == large["examples"][0]["corrupted"]  # the same corrupted sentence
    ex = large["examples"][0]
    for which in ("original", "corrupted", "restored"):
        joined = "".join(ex["surface"][which])
        assert "\ufffd" not in joined  # a token holding part of a character shows its bytes, ‹e2 80›
        if "‹" not in joined:
            assert joined.strip() == ex["text"][which]
    assert len(large["train_examples"]) == 4 and all(len(e["entropy"]) == len(e["original"])
                                                     for e in large["train_examples"] + large["examples"])
    page = write_report(out).read_text()
    section = page.split("Restorations at small and large N")[1].split("<h2>")[0]
    assert "restored, N = 8" in section and "restored, N = 32" in section
    # the decoded sentence, not token pieces: a real test sentence's text appears whole, spans marking tokens
    shown = [e for e in large["examples"] if html.escape(e["text"]["original"]) in section]
    assert shown and "class='tok txt'" in section and 'class="chg"' in section
    assert "Ġ" not in section  # no byte-level BPE pieces leak into the text
    assert "\ufffd" not in section
    assert "entropy, N = 8" in section and "entropy, N = 32" in section and "Training sentences" in section
    # gen-PPL against N when the built-in scorer is installed (probe.gen_ppl_model: auto), none otherwise
    ppl = df[(df["probe"] == "gen_ppl") & (df["metric"] == "gen_ppl")]
    if smollm2_missing() is None:
        assert len(ppl) == 4 and (ppl["value"] > 1).all() and "<h2>Generative perplexity</h2>" in page
    else:
        assert ppl.empty and "<h2>Generative perplexity</h2>" not in page
