"""Issue 25: every new path checked up front. gen-PPL scorers that could not score (no weights, no tokenizer, no
EOS, a short context, a config.json that is not JSON, an encoder instead of a causal LM, a tokenizer that cannot
encode the samples), ``probe gen-ppl`` with nothing to do, configs whose ``n_heads`` disagree with the weights,
headerless MDLM checkpoints and contradicting ``--model-type``. Each is refused with exit code 2 and one line on
stderr naming the problem, before any work, without a traceback, and nothing is written.

CASES is the table that docs/RELIABILITY.md counts (scripts/reliability_counts.py).
"""

from __future__ import annotations

import pytest
import torch

from basinlab.config import load_config
from basinlab.training.trainer import train
from tests.reliability._refusal import assert_refused_in_one_line
from tests.reliability._scorers import build_scorers

pytestmark = pytest.mark.reliability

TOY = ["data.source=markov", "data.seq_len=12", "data.markov_vocab=12", "data.markov_successors=3",
       "data.markov_pool=300", "data.n_test=20", "data.n_train=16"]
SMALL = ["model.n_layer=1", "model.d_model=32", "model.n_head=2", "model.d_cond=16", "train.steps=2",
         "train.batch_size=8", "train.warmup_steps=1", "train.device=cpu", "train.progress=false"]
GEN = ["probe", "gen-ppl", "--checkpoint", "{CK}", "--device", "cpu", "--quiet", "--out", "o"]
ALL = ["probe", "all", "--checkpoint", "{CK}", "--device", "cpu", "--quiet", "--out", "o"]
SWEEP = ["sweep", "--preset", "markov", "--out", "s", "{T}", "sweep.sizes=[16]", "--quiet"]
SCORER = "probe.gen_ppl_model="

# (id, argv, words the one line must contain). {CK}: a trained toy run (Markov, V = 12, L = 12); {GOOD}: a sound
# tiny GPT-2 scorer over the words 0..11; the other {NAME}s: scorers unusable in one way each (_scorers.py).
CASES = [
    ("gen-ppl-scorer-no-weights", [*GEN, SCORER + "{NOWEIGHTS}"], ["holds no weights", "save_pretrained"]),
    ("gen-ppl-scorer-no-tokenizer", [*GEN, SCORER + "{NOTOK}"], ["no tokenizer", "tokenizer.save_pretrained"]),
    ("gen-ppl-scorer-no-eos", [*GEN, SCORER + "{NOEOS}"], ["without an EOS token"]),
    ("gen-ppl-scorer-short-context", [*GEN, SCORER + "{SHORTCTX}"], ["context of 4 tokens", "L = 12"]),
    ("gen-ppl-scorer-config-not-json", [*GEN, SCORER + "{BADJSON}"], ["config.json that is not JSON"]),
    ("gen-ppl-scorer-config-a-list", [*GEN, SCORER + "{LISTJSON}"], ["not a JSON object"]),
    ("gen-ppl-scorer-bert-encoder", [*GEN, SCORER + "{BERT}"], ["BertModel", "not a causal language model"]),
    ("gen-ppl-scorer-cannot-encode", [*GEN, SCORER + "{NOENCODE}"], ["cannot encode the samples"]),
    ("probe-all-scorer-checked-first", [*ALL, SCORER + "{BERT}"], ["not a causal language model"]),
    ("gen-ppl-without-scorer", GEN, ["probe.gen_ppl_model=DIR", "none is named"]),
    ("gen-ppl-no-samples", [*GEN, SCORER + "{GOOD}", "--samples", "0"], ["probe.n_samples is 0", "--samples"]),
    ("sweep-one-worker-bad-scorer", [*SWEEP, "--devices", "cpu", SCORER + "{BERT}"],
     ["not a causal language model"]),
    ("sweep-two-workers-bad-scorer", [*SWEEP, "--devices", "cpu,cpu", SCORER + "{NOWEIGHTS}"],
     ["holds no weights"]),
]


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    pytest.importorskip("transformers")
    base = tmp_path_factory.mktemp("new-paths")
    cache = base / "cache"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(load_config(None, [*TOY, *SMALL, f"data.cache_dir={cache}"]), out_dir=base / "ck", progress=False)
    finally:
        torch.set_num_threads(before)
    return {"{CK}": str(base / "ck"), "cache": str(cache), "base": base, **build_scorers(base / "scorers")}


@pytest.mark.parametrize(("argv", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_new_path_is_refused_in_one_line(fixtures, tmp_path, monkeypatch, capsys, argv, words):
    assert_refused_in_one_line(argv, words, fixtures, TOY, tmp_path, monkeypatch, capsys)
