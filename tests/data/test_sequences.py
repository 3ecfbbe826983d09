"""SPEC 1: the pool, nested training subsets, the disjoint test set, sequence layouts, the Markov source."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from basinlab.config import DataConfig
from basinlab.data import SequenceData, build_dataset, load_sentences
from basinlab.data.sequences import cache_path
from basinlab.data.tokenizer import get_tokenizer
from basinlab.errors import BasinlabError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def shared_rows(a: torch.Tensor, b: torch.Tensor) -> int:
    sa = {tuple(r) for r in a.tolist()}
    return sum(tuple(r) in sa for r in b.tolist())


@pytest.fixture(scope="module")
def brown(tmp_path_factory) -> SequenceData:
    cache = tmp_path_factory.mktemp("cache")
    return build_dataset(DataConfig(source="brown", mode="sentence", seq_len=32, vocab_size=4096, n_test=500,
                                    n_train=64, cache_dir=str(cache)))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    """A small text file (Brown's first 4000 sentences plus duplicates), for fast builds."""
    sents = load_sentences(DataConfig(source="brown"))[:4000]
    sents += sents[:300]  # exact duplicates: some land in test, and their twins must leave the training part
    p = tmp_path_factory.mktemp("corpus") / "c.txt"
    p.write_text("\n".join(sents) + "\n", encoding="utf-8")
    return str(p)


def text_cfg(path: str, cache, **kw) -> DataConfig:
    base = dict(source="text", path=path, seq_len=24, vocab_size=800, n_test=200, n_train=32, cache_dir=str(cache))
    base.update(kw)
    return DataConfig(**base)


@pytest.fixture(scope="module")
def text_ds(corpus, tmp_path_factory) -> tuple[SequenceData, DataConfig]:
    cfg = text_cfg(corpus, tmp_path_factory.mktemp("textcache"))
    return build_dataset(cfg), cfg


def check_sentence_layout(ds: SequenceData, rows: torch.Tensor) -> None:
    assert (rows[:, 0] == ds.bos_id).all()
    for row in rows.tolist():
        eos = row.index(ds.eos_id)
        assert eos >= 1
        assert all(t not in (ds.pad_id, ds.bos_id, ds.eos_id) for t in row[1:eos])
        assert all(t == ds.pad_id for t in row[eos + 1 :])
    mask = ds.real_mask(rows)
    expect = ~((rows == ds.pad_id) | (rows == ds.bos_id) | (rows == ds.eos_id))
    assert torch.equal(mask, expect)


def test_brown_sentence_mode(brown):
    assert brown.test.shape == (500, 32) and brown.seq_len == 32
    assert brown.train_pool.shape[0] > 55_000
    assert brown.train_pool.dtype == torch.long and brown.vocab_size == 4096
    assert brown.train_pool.max() < brown.vocab_size and brown.train_pool.min() >= 0
    check_sentence_layout(brown, brown.train(200))
    check_sentence_layout(brown, brown.test)
    # Nested subsets, default N from the config, and the test set shares no row with the training pool.
    assert torch.equal(brown.train(64)[:16], brown.train(16))
    assert torch.equal(brown.train(), brown.train(64))
    assert shared_rows(brown.test, brown.train_pool) == 0
    assert brown.train(0).shape == (0, 32)
    text = brown.decode(brown.train(3))
    assert len(text) == 3 and all(t and "[PAD]" not in t and "##" not in t for t in text)
    assert brown.decode(brown.test[0]) == brown.decode(brown.test[:1])
    with pytest.raises(BasinlabError, match=r"N=100000 exceeds the training pool of \d+ sequences"):
        brown.train(100_000)


def test_random_set(brown):
    r = brown.random(7, torch.Generator().manual_seed(0))
    assert r.shape == (7, 32) and r.dtype == torch.long
    assert r.min() >= 0 and r.max() < brown.vocab_size
    assert torch.equal(r, brown.random(7, torch.Generator().manual_seed(0)))


def test_text_deterministic_and_cached(text_ds, tmp_path):
    a, cfg = text_ds
    b = build_dataset(text_cfg(cfg.path, tmp_path / "c2"))  # from scratch in another cache
    assert torch.equal(a.train_pool, b.train_pool) and torch.equal(a.test, b.test)
    assert a.tokenizer.to_str() == b.tokenizer.to_str()
    path = cache_path(text_cfg(cfg.path, tmp_path / "c2"))
    assert path.exists() and path.parent.name == "data"
    assert list((tmp_path / "c2" / "tokenizers").glob("wordpiece-800-*.json"))
    mtime = path.stat().st_mtime_ns
    c = build_dataset(text_cfg(cfg.path, tmp_path / "c2", n_train=8))  # cached: n_train is not in the key
    assert path.stat().st_mtime_ns == mtime
    assert torch.equal(c.train_pool, a.train_pool) and c.train().shape[0] == 8
    # A corrupt cache file is rebuilt.
    path.write_bytes(b"garbage")
    e = build_dataset(text_cfg(cfg.path, tmp_path / "c2"))
    assert torch.equal(e.train_pool, a.train_pool)


def test_seed_changes_the_split(text_ds, tmp_path):
    a, cfg = text_ds
    d = build_dataset(text_cfg(cfg.path, tmp_path, seed=1))
    assert not torch.equal(d.test, a.test)
    assert d.train_pool.shape[1] == a.train_pool.shape[1]


def test_duplicates_of_test_rows_leave_the_training_part(text_ds):
    ds, _ = text_ds
    assert ds.test.shape == (200, 24)
    assert shared_rows(ds.test, ds.train_pool) == 0
    # 4300 sentences (300 duplicated), 200 in test: the training twins of test sentences were dropped.
    assert ds.train_pool.shape[0] < 4300 - 200
    check_sentence_layout(ds, ds.train_pool)
    check_sentence_layout(ds, ds.test)


def shuffled_sentences(cfg: DataConfig) -> list[str]:
    """The pool's sentence order: shuffled once by cfg.seed (torch.randperm), test part first."""
    sents = load_sentences(cfg)
    perm = torch.randperm(len(sents), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
    return [sents[i] for i in perm]


def test_sentence_rows_match_the_text_and_tokenizer_saw_only_training_part(text_ds):
    ds, cfg = text_ds
    cache = Path(cfg.cache_dir)
    shuffled = shuffled_sentences(cfg)
    for i in range(0, 200, 37):
        ids = ds.tokenizer.encode(shuffled[i])[:22]
        row = ds.test[i].tolist()
        assert row == [ds.bos_id, *ids, ds.eos_id] + [ds.pad_id] * (24 - len(ids) - 2)
    # The tokenizer was trained on the training part only: asking for exactly that one is a cache hit.
    before = sorted((cache / "tokenizers").iterdir())
    tok = get_tokenizer(cfg, shuffled[200:], cache)
    assert sorted((cache / "tokenizers").iterdir()) == before and tok.to_str() == ds.tokenizer.to_str()


def test_wrap_mode_layout(corpus, tmp_path):
    cfg = text_cfg(corpus, tmp_path, mode="wrap", seq_len=20, tokenizer="bpe", n_test=100)
    ds = build_dataset(cfg)
    assert ds.test.shape == (100, 20)
    for rows in (ds.test, ds.train_pool):
        assert (rows[:, 0] == ds.bos_id).all() and (rows[:, -1] == ds.eos_id).all()
        inner = rows[:, 1:-1]
        assert not ((inner == ds.bos_id) | (inner == ds.pad_id)).any()
        assert (inner == ds.eos_id).any()  # sentence ends inside windows
    assert shared_rows(ds.test, ds.train_pool) == 0
    # Test windows cut the stream "sentence [EOS] sentence [EOS] ..." of the first shuffled sentences.
    stream: list[int] = []
    for sent in shuffled_sentences(cfg):
        stream += [*ds.tokenizer.encode(sent), ds.eos_id]
        if len(stream) >= 100 * 18:
            break
    assert ds.test[:, 1:-1].reshape(-1).tolist() == stream[: 100 * 18]
    mask = ds.real_mask(ds.test)
    assert not mask[:, 0].any() and not mask[:, -1].any()
    assert torch.equal(mask[:, 1:-1], ds.test[:, 1:-1] != ds.eos_id)


def test_markov_follows_the_source(tmp_path):
    cfg = DataConfig(source="markov", seq_len=16, markov_vocab=12, markov_successors=3, markov_pool=3000,
                     n_test=300, n_train=100, cache_dir=str(tmp_path))
    ds = build_dataset(cfg)
    assert ds.source is not None and ds.tokenizer is None and ds.pad_id is None
    assert ds.vocab_size == 12 and ds.test.shape == (300, 16)
    assert 2600 <= ds.train_pool.shape[0] <= 2700
    allx = torch.cat([ds.train_pool, ds.test])
    P = ds.source.P
    assert (P[allx[:, :-1], allx[:, 1:]] > 0).all()
    assert (ds.source.pi[allx[:, 0]] > 0).all()
    assert shared_rows(ds.test, ds.train_pool) == 0
    assert ds.real_mask(ds.test).all()
    assert ds.decode(ds.test[:1])[0] == " ".join(map(str, ds.test[0].tolist()))
    again = build_dataset(DataConfig(**{**cfg.__dict__, "cache_dir": str(tmp_path / "other")}))
    assert torch.equal(again.train_pool, ds.train_pool) and torch.equal(again.test, ds.test)
    with pytest.raises(BasinlabError, match="exceeds the training pool"):
        ds.train(5000)


def test_markov_short_sequences_dedup(tmp_path):
    # L=2 with 2 successors over 4 states: only 8 distinct sequences, so the training part is all duplicates
    # of test rows and must be emptied -> a clear error.
    cfg = DataConfig(source="markov", seq_len=2, markov_vocab=4, markov_successors=2, markov_pool=1000,
                     n_test=800, cache_dir=str(tmp_path))
    with pytest.raises(BasinlabError):
        build_dataset(cfg)


def test_datasets_source_builds(tmp_path):
    pytest.importorskip("datasets")
    sents = load_sentences(DataConfig(source="brown"))[:600]
    p = tmp_path / "c.csv"
    p.write_text("body\n" + "".join('"' + s.replace('"', '""') + '"\n' for s in sents), encoding="utf-8")
    ds = build_dataset(text_cfg(str(p), tmp_path / "cache", source="datasets", text_field="body", n_test=50))
    assert ds.test.shape == (50, 24) and ds.train_pool.shape[0] > 500
    check_sentence_layout(ds, ds.test)


def test_errors(tmp_path, corpus):
    with pytest.raises(BasinlabError, match="unknown data.source"):
        build_dataset(DataConfig(source="wiki", cache_dir=str(tmp_path)))
    with pytest.raises(BasinlabError, match="unknown data.mode"):
        build_dataset(text_cfg(corpus, tmp_path, mode="chunks"))
    with pytest.raises(BasinlabError, match="does not exist"):
        build_dataset(text_cfg(str(tmp_path / "missing.txt"), tmp_path))
    with pytest.raises(BasinlabError, match="seq_len"):
        build_dataset(text_cfg(corpus, tmp_path, seq_len=2))
    with pytest.raises(BasinlabError, match="too small"):
        build_dataset(text_cfg(corpus, tmp_path, n_test=10_000))
    with pytest.raises(BasinlabError, match="no column"):
        pytest.importorskip("datasets")
        p = tmp_path / "c.jsonl"
        p.write_text('{"text": "a b c"}\n')
        build_dataset(text_cfg(str(p), tmp_path, source="datasets", text_field="sentence"))
