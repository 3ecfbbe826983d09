"""SPEC 1: raw corpora (embedded Brown, text files, local `datasets` files) and their errors."""

from __future__ import annotations

import json
import os
import re

import pytest

from basinlab.config import DataConfig
from basinlab.data import load_sentences
from basinlab.data.corpora import brown_bytes, cache_root
from basinlab.errors import BasinlabError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# A word followed by a common Brown tag (``said/vbd``, ``Jury/nn-tl``); ``and/or``, ``1/2`` are real text.
TAG_RESIDUE = re.compile(
    r"\w/(?:at|nns?|in|jj|vbd?|vb[gnz]|np|cc|rb|cs|pps|ppss|cd|dt|md|wdt|bez|bedz|hvd|ppo|ap|ql|rp)"
    r"(?:-tl|-hl|-nc)?[$*]?(?=\s|$)"
)


def test_brown_has_all_sentences_without_tags():
    sents = load_sentences(DataConfig(source="brown"))
    assert len(sents) == 57_340
    assert sents[0].startswith("The Fulton County Grand Jury said Friday an investigation of Atlanta's")
    assert '"no evidence"' in sents[0]
    assert all(s and s == s.strip() and "\n" not in s for s in sents)
    joined = "\n".join(sents)
    assert "``" not in joined
    assert not re.search(r"(^|\s)''(\s|$)", joined, flags=re.M)  # quotes became '"' (10'' inch marks stay)
    assert not TAG_RESIDUE.search(joined), TAG_RESIDUE.search(joined)
    assert not re.search(r" [,.;:?!)](\s|$)", joined, flags=re.M)  # punctuation attached
    assert len(brown_bytes()) < 5_000_000


def test_text_file_skips_blank_lines(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("first line\n\n   \n  second line  \nthird ünïcode\n", encoding="utf-8")
    assert load_sentences(DataConfig(source="text", path=str(p))) == ["first line", "second line", "third ünïcode"]


def test_text_errors(tmp_path):
    with pytest.raises(BasinlabError, match="does not exist"):
        load_sentences(DataConfig(source="text", path=str(tmp_path / "missing.txt")))
    with pytest.raises(BasinlabError, match="needs data.path"):
        load_sentences(DataConfig(source="text"))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    with pytest.raises(BasinlabError, match="no non-blank"):
        load_sentences(DataConfig(source="text", path=str(empty)))
    with pytest.raises(BasinlabError, match="unknown data.source"):
        load_sentences(DataConfig(source="nope"))


def test_datasets_csv_and_jsonl(tmp_path):
    pytest.importorskip("datasets")
    csv = tmp_path / "c.csv"
    csv.write_text('id,sentence\n1,hello world\n2,"a, quoted one"\n3,\n')
    cfg = DataConfig(source="datasets", path=str(csv), text_field="sentence", cache_dir=str(tmp_path / "cache"))
    assert load_sentences(cfg) == ["hello world", "a, quoted one"]
    assert (cache_root(cfg) / "hf_datasets").exists()  # datasets' cache stays inside ours

    jl = tmp_path / "c.jsonl"
    jl.write_text("".join(json.dumps({"text": t, "n": i}) + "\n" for i, t in enumerate(["x y", " z ", ""])))
    cfg = DataConfig(source="datasets", path=str(jl), cache_dir=str(tmp_path / "cache"))
    assert load_sentences(cfg) == ["x y", "z"]

    with pytest.raises(BasinlabError, match="no column 'body'"):
        load_sentences(DataConfig(source="datasets", path=str(jl), text_field="body", cache_dir=str(tmp_path)))
    with pytest.raises(BasinlabError, match="does not exist"):
        load_sentences(DataConfig(source="datasets", path=str(tmp_path / "nope.csv")))


def test_datasets_saved_dir(tmp_path):
    datasets = pytest.importorskip("datasets")
    d = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["a b", "c d"]}),
                              "test": datasets.Dataset.from_dict({"text": ["e f"]})})
    d.save_to_disk(str(tmp_path / "saved"))
    cfg = DataConfig(source="datasets", path=str(tmp_path / "saved"), cache_dir=str(tmp_path / "cache"))
    assert load_sentences(cfg) == ["a b", "c d"]
