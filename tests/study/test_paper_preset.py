"""The `paper` preset (issue 7, item 4): the study's protocol and model sizes, the study's data (LM1B) read
through `datasets` from a local path, and one sweep of it that trains, probes and reports at reduced steps."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from basinlab.cli import main
from basinlab.config import load_config
from basinlab.data import build_dataset
from basinlab.models.presets import resolve_arch

datasets = pytest.importorskip("datasets")

#: Sentences in LM1B's layout (one sentence per row, column `text`), enough for a few windows of 128 tokens.
WORDS = ("the model restores corrupted sentences from its training set", "a memory of unseen text",
         "diffusion language models are associative memories", "basins of attraction grow with data")


def _lm1b_like(path, n: int = 120) -> list[str]:
    rows = [f"{WORDS[i % len(WORDS)]} number {i} ." for i in range(n)]
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": rows}),
                          "test": datasets.Dataset.from_dict({"text": ["held out by lm1b itself ."]})}
                         ).save_to_disk(str(path))
    return rows


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_paper_preset_is_the_study_setting():
    cfg = load_config("paper")
    assert cfg.probe.protocol == "paper" and cfg.probe.n_samples is None  # 20000 samples on a GPU
    assert (cfg.data.source, cfg.data.mode, cfg.data.seq_len, cfg.data.tokenizer) == (
        "brown", "wrap", 128, "bert-base-uncased")  # the embedded corpus unless data.source/path say otherwise
    assert resolve_arch(cfg.model) == {"n_layer": 8, "d_model": 256, "n_head": 8, "d_cond": 128, "dropout": 0.1}


def test_paper_preset_reads_lm1b_from_a_local_datasets_dir(tmp_path):
    rows = _lm1b_like(tmp_path / "lm1b")
    cfg = load_config("paper", ["data.source=datasets", f"data.path={tmp_path / 'lm1b'}", "data.n_test=2",
                                f"data.cache_dir={tmp_path / 'cache'}"])
    data = build_dataset(cfg.data)
    assert data.vocab_size == 30522 and data.seq_len == 128  # bert-base-uncased, L = 128
    pool = torch.cat([data.train(data.pool_size), data.test])
    assert pool.shape[1] == 128 and pool.shape[0] >= 6
    assert (pool[:, 0] == 101).all() and (pool[:, -1] == 102).all()  # wrap: [CLS] + 126 tokens + [SEP]
    text = " ".join(data.decode(pool))
    assert "number 7" in text and "associative memories" in text and "held out by lm1b" not in text
    words = sum(len(r.split()) for r in rows)
    assert pool.shape[0] * 126 <= 2 * words  # only the train split, wrapped (no padding windows)


def test_paper_preset_trains_probes_and_reports(tmp_path):
    """`basinlab sweep --preset paper` through the real code path, shrunk: 2 steps of a one-layer DiT, windows of
    16 tokens (every probe works on ``[B, L, 30522]`` tensors, so L = 128 would cost minutes on a CPU)."""
    _lm1b_like(tmp_path / "lm1b")
    out = tmp_path / "sweep"
    rc = main(["sweep", "--preset", "paper", "--out", str(out), "--report", "--quiet",
               "data.source=datasets", f"data.path={tmp_path / 'lm1b'}", "data.n_test=2", "data.seq_len=16",
               f"data.cache_dir={tmp_path / 'cache'}",
               "model.n_layer=1", "model.d_model=32", "model.n_head=2", "model.d_cond=16",
               "train.steps=2", "train.batch_size=2", "train.warmup_steps=1", "train.ce_warmup_steps=1",
               "train.ckpt_every=2", "train.log_every=1", "train.device=cpu", "train.progress=false",
               "probe.m=2", "probe.steps=2", "probe.ts=[0.5]", "probe.n_samples=2", "probe.batch_size=2",
               "sweep.sizes=[2, 4]"])
    assert rc == 0
    df = pd.read_csv(out / "results.csv")
    nets = df[df.model == "tiny"]
    assert sorted(nets.N.unique()) == [2, 4]
    metrics = set(nets.metric)
    # the study's definitions (SPEC 5 "Protocols"): four entropy groups, NELBO without reconstruction/prior terms
    assert {"entropy_stable", "entropy_unstable", "entropy_recovered", "entropy_failed", "ppl_bound"} <= metrics
    assert "nelbo_recon" not in metrics and "recovery_rate" in metrics and "copy_rate" in metrics
    assert set(df.model) == {"tiny", "oracle:empirical"}
    assert load_config(out / "sweep_config.yaml").probe.protocol == "paper"
    assert (out / "report.html").stat().st_size > 10_000
    assert "protocol paper" in (out / "report.html").read_text()
