"""Issue 25: every new path checked up front. gen-PPL scorers that could not score (no weights, no tokenizer, no
EOS, a short context, a config.json that is not JSON, an encoder instead of a causal LM, a tokenizer that cannot
encode the samples), ``probe gen-ppl`` with nothing to do, configs whose ``n_heads`` disagree with the weights,
headerless MDLM checkpoints and contradicting ``--model-type``. Each is refused with exit code 2 and one line on
stderr naming the problem, before any work, without a traceback, and nothing is written.

CASES is the table that docs/RELIABILITY.md counts (scripts/reliability_counts.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from basinlab.cli import main
from tests.interop.duo_reference import duo_param_names, random_duo_params
from tests.reliability._refusal import NB, NH, TOY, C, D, L, V, assert_refused_in_one_line, train_toy, write_hf
from tests.reliability._scorers import build_scorers

pytestmark = pytest.mark.reliability

GEN = ["probe", "gen-ppl", "--checkpoint", "{CK}", "--device", "cpu", "--quiet", "--out", "o"]
ALL = ["probe", "all", "--checkpoint", "{CK}", "--device", "cpu", "--quiet", "--out", "o"]
SWEEP = ["sweep", "--preset", "markov", "--out", "s", "{T}", "sweep.sizes=[16]", "--quiet"]
SCORER = "probe.gen_ppl_model="
CONVERT = ["convert", "--out", "new"]

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
    *[(f"convert-duo-n-heads-{h}-for-4", [*CONVERT, f"{{HEADS{h}}}"], [f"n_heads={h}", "n_heads=4", "inv_freq"])
      for h in (1, 2, 8, 16)],
    *[(f"convert-mdlm-n-heads-{h}-for-4", [*CONVERT, f"{{MHEADS{h}}}"], [f"n_heads={h}", "n_heads=4"])
      for h in (2, 8)],
    ("convert-ckpt-n-heads-8-for-4", [*CONVERT, "{BARE}", "--model-type", "mdlm", "--n-heads", "8",
                                      f"data.seq_len={L}", "model.time_conditioning=false"], ["n_heads=8"]),
    ("convert-edited-duo-export", [*CONVERT, "{EDITED}"], ["n_heads=4", "n_heads=2"]),
    ("convert-headerless-ckpt", [*CONVERT, "{BARE}", "--n-heads", "4", f"data.seq_len={L}"],
     ["no hyper-parameters", "--model-type mdlm"]),
    ("convert-duo-type-for-subs-ckpt", [*CONVERT, "{SUBS}", "--model-type", "duo"],
     ["--model-type duo contradicts", "parameterization: subs"]),
    ("convert-duo-type-for-mdlm-dir", [*CONVERT, "{MHEADS4}", "--model-type", "duo"],
     ["--model-type duo contradicts", "model_type"]),
    ("convert-unknown-model-type", [*CONVERT, "{SEDD}"], ["unknown model_type 'sedd'", "mdlm"]),
]


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    pytest.importorskip("transformers")
    base = tmp_path_factory.mktemp("new-paths")
    cache = base / "cache"
    train_toy(base / "ck", cache)
    fx = {"{CK}": str(base / "ck"), "cache": str(cache), "base": base, **build_scorers(base / "scorers"),
          **_sources(base / "sources")}
    assert main(["export", "--checkpoint", str(base / "ck"), "--out", str(base / "edited"), "--format", "duo-hf"]) == 0
    cfg = json.loads((base / "edited" / "config.json").read_text())
    (base / "edited" / "config.json").write_text(json.dumps({**cfg, "n_heads": 4}))  # the run has 2 heads
    return {**fx, "{EDITED}": str(base / "edited")}


def _ckpt(path: Path, params: dict, hyper: dict) -> str:
    shadow = [params[n].clone() for n in duo_param_names(NB)]
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in params.items()},
                "ema": {"decay": 0.999, "num_updates": 1, "shadow_params": shadow}, "global_step": 3,
                "hyper_parameters": hyper}, path)
    return str(path)


def _sources(base: Path) -> dict[str, str]:
    """Weights of 4 heads (the rotary buffer of head size 8) under configs that say otherwise; an MDLM .ckpt
    without hyper-parameters; one that says SUBS; a config.json of an unknown model_type."""
    base.mkdir()
    params = random_duo_params(V, D, C, NB, NH)
    out = {f"{{HEADS{h}}}": write_hf(base / f"duo-{h}", params, n_heads=h) for h in (1, 2, 8, 16)}
    out.update({f"{{MHEADS{h}}}": write_hf(base / f"mdlm-{h}", params, n_heads=h, model_type="mdlm",
                                      time_conditioning=False) for h in (2, 4, 8)})
    out["{BARE}"] = _ckpt(base / "bare.ckpt", params, {})
    out["{SUBS}"] = _ckpt(base / "subs.ckpt", params, {"config": {"parameterization": "subs",
                                                                  "model": {"n_heads": NH, "length": L}}})
    out["{SEDD}"] = write_hf(base / "sedd", params, model_type="sedd")
    return out


@pytest.mark.parametrize(("argv", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_new_path_is_refused_in_one_line(fixtures, tmp_path, monkeypatch, capsys, argv, words):
    assert_refused_in_one_line(argv, words, fixtures, TOY, tmp_path, monkeypatch, capsys)
