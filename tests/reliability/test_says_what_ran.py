"""Issue 25: what basinlab trains or converts reads back, and what it writes says what ran. Round trips that were
refused (a time-unconditioned run's export, an MDLM model whose tokenizer holds its own [MASK], a headerless MDLM
.ckpt told by its rows), a probe that fails late keeps the rows before it, a sweep's scorer path may be fixed on a
rerun, and warnings where an option would otherwise be ignored silently.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

import basinlab
from basinlab.cli import main
from basinlab.config import load_config
from basinlab.interop import convert
from basinlab.training.trainer import train
from tests.interop.duo_reference import duo_param_names, random_duo_params
from tests.reliability._refusal import NB, NH, SMALL, TOY, C, D, L, train_toy

pytestmark = pytest.mark.reliability

#: a BERT-style vocabulary with its own [MASK] (id 4): V = 37 tokens
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *[f"w{i}" for i in range(32)]]


def _toy_run(path: Path, *extra: str) -> Path:
    return train_toy(path, path.parent / "cache", *extra)


def _same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_time_unconditioned_run_exports_and_converts_back(tmp_path):
    """model.time_conditioning=false: export --format duo-hf writes time_conditioning false, and convert reads its
    own export back into a run with the same switch and the same log x_theta (sigma = 0 whatever t)."""
    run = _toy_run(tmp_path / "run", "model.time_conditioning=false")
    assert main(["export", "--checkpoint", str(run), "--out", str(tmp_path / "exp"), "--format", "duo-hf"]) == 0
    assert json.loads((tmp_path / "exp" / "config.json").read_text())["time_conditioning"] is False
    assert main(["convert", str(tmp_path / "exp"), "--out", str(tmp_path / "back")]) == 0
    a, b = basinlab.load(str(run)), basinlab.load(str(tmp_path / "back"))
    assert b.config.model.time_conditioning is False
    z = torch.randint(0, 12, (3, 12), generator=torch.Generator().manual_seed(0))
    for t in (0.1, 0.9):
        tt = torch.full((3,), t, dtype=torch.float64)
        assert torch.equal(a.denoiser(z, tt), b.denoiser(z, tt))
    assert main(["export", "--checkpoint", str(tmp_path / "back"), "--out", str(tmp_path / "exp2"),
                 "--format", "duo-hf"]) == 0
    _same_weights(tmp_path / "exp", tmp_path / "exp2")


def _mdlm_dir(path: Path, params: dict, vocab: list[str] | None) -> Path:
    path.mkdir(parents=True)
    hf = {"model_type": "mdlm", "vocab_size": params["vocab_embed.embedding"].shape[0], "model_length": L,
          "hidden_dim": D, "cond_dim": C, "n_blocks": NB, "n_heads": NH, "dropout": 0.0, "time_conditioning": True}
    (path / "config.json").write_text(json.dumps(hf))
    save_file({f"backbone.{k}": v.contiguous() for k, v in params.items()}, str(path / "model.safetensors"))
    if vocab is not None:
        (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return path


def test_mdlm_with_its_tokenizers_own_mask_converts_exports_and_reads_back(tmp_path):
    """An MDLM model whose tokenizer holds [MASK] keeps V = the tokenizer's size (MDLM's rule): convert takes the
    mask at its id; export --format mdlm-hf writes vocab_size = the weights' rows (not V + 1); convert reads the
    export back bit for bit."""
    params = random_duo_params(len(VOCAB), D, C, NB, NH, seed=3)
    src = _mdlm_dir(tmp_path / "mdlm", params, VOCAB)
    convert(src, tmp_path / "run")
    tm = basinlab.load(str(tmp_path / "run"))
    assert tm.vocab_size == len(VOCAB) and tm.process.mask_index == VOCAB.index("[MASK]")
    assert tm.model.embed.weight.shape[0] == len(VOCAB)
    assert main(["export", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "exp"),
                 "--format", "mdlm-hf"]) == 0
    hf = json.loads((tmp_path / "exp" / "config.json").read_text())
    rows = load_file(str(tmp_path / "exp" / "model.safetensors"))["backbone.vocab_embed.embedding"].shape[0]
    assert hf["vocab_size"] == rows == len(VOCAB)
    assert main(["convert", str(tmp_path / "exp"), "--out", str(tmp_path / "back")]) == 0
    assert basinlab.load(str(tmp_path / "back")).process.mask_index == VOCAB.index("[MASK]")
    assert main(["export", "--checkpoint", str(tmp_path / "back"), "--out", str(tmp_path / "exp2"),
                 "--format", "mdlm-hf"]) == 0
    _same_weights(tmp_path / "exp", tmp_path / "exp2")
    z = torch.full((2, L), VOCAB.index("[MASK]"))
    logp = tm.denoiser(z, torch.full((2,), 0.5, dtype=torch.float64))
    assert torch.isinf(logp[..., VOCAB.index("[MASK]")]).all()  # SUBS: the mask is never predicted


def test_headerless_mdlm_ckpt_is_told_by_its_rows_with_a_tokenizer(tmp_path):
    """No hyper-parameters, weights of V + 1 rows, a tokenizer of V tokens (no [MASK]): MDLM's appended mask."""
    vocab = [t for t in VOCAB if t != "[MASK]"]  # 36 tokens; the weights have 37 rows
    params = random_duo_params(len(vocab) + 1, D, C, NB, NH, seed=4)
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    shadow = [params[n].clone() for n in duo_param_names(NB)]
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in params.items()},
                "ema": {"decay": 0.999, "num_updates": 1, "shadow_params": shadow}}, tmp_path / "bare.ckpt")
    assert main(["convert", str(tmp_path / "bare.ckpt"), "--out", str(tmp_path / "run"), "--tokenizer",
                 str(tmp_path / "vocab.txt"), "--n-heads", str(NH), f"data.seq_len={L}",
                 "model.time_conditioning=true"]) == 0
    tm = basinlab.load(str(tmp_path / "run"))
    assert tm.process.name == "masked" and tm.vocab_size == len(vocab) and tm.process.mask_index == len(vocab)


@pytest.fixture(scope="module")
def scorers(tmp_path_factory):
    pytest.importorskip("transformers")
    from tests.reliability._scorers import build_scorers

    base = tmp_path_factory.mktemp("scorers")
    found = build_scorers(base)
    damaged = base / "damaged"
    import shutil

    shutil.copytree(found["{GOOD}"], damaged)
    (damaged / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    return {**found, "{DAMAGED}": str(damaged)}


def test_a_probe_failing_late_keeps_the_rows_before_it(tmp_path, scorers, capsys):
    """A scorer whose weights file is damaged passes every up-front check and fails when gen_ppl loads it, after
    the other probes: one error line that says where their rows are, and results.csv holds them."""
    run = _toy_run(tmp_path / "run")
    out = tmp_path / "probes"
    rc = main(["probe", "all", "--checkpoint", str(run), "--n", "4", "--steps", "3", "--samples", "2", "--device",
               "cpu", "--quiet", "--out", str(out), f"probe.gen_ppl_model={scorers['{DAMAGED}']}"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and len(err) == 1 and "cannot load its weights" in err[0] and "results.csv" in err[0], err
    df = pd.read_csv(out / "results.csv")
    assert {"basins", "fixed_points", "novelty", "entropy", "likelihood"} <= set(df["probe"])
    assert "gen_ppl" not in set(df["probe"])
    assert json.loads((out / "summary.json").read_text())["rows"]


def test_a_sweeps_scorer_path_may_change_on_a_rerun(tmp_path, scorers, capsys):
    """probe.gen_ppl_model is where a file lives, not what is computed: a sweep directory bound with one path
    accepts the same scorer under another (it was refused as "another config")."""
    base = ["sweep", "--preset", "markov", "--out", str(tmp_path / "s"), *TOY, f"data.cache_dir={tmp_path / 'c'}",
            "sweep.sizes=[16]", "--plan"]
    assert main([*base, f"probe.gen_ppl_model={scorers['{GOOD}']}"]) == 0
    assert main([*base, f"probe.gen_ppl_model={scorers['{GOOD2}']}"]) == 0, capsys.readouterr().err
    assert main([*base, "data.seq_len=10"]) == 2  # what is computed still may not change
    assert "another config" in capsys.readouterr().err


def test_remask_on_a_uniform_denoiser_says_it_is_ignored(tmp_path, capsys):
    run = _toy_run(tmp_path / "run")
    assert main(["probe", "basins", "--checkpoint", str(run), "--n", "2", "--steps", "2", "--ts", "0.5",
                 "--device", "cpu", "--quiet", "probe.remask=0.5"]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "probe.remask" in line]
    assert len(err) == 1 and "ignored" in err[0] and "uniform" in err[0], err
    assert main(["probe", "basins", "markov", *TOY, "--oracle", "markov", "--n", "2", "--steps", "2", "--ts", "0.5",
                 "--device", "cpu", "--quiet", "probe.remask=0.5", f"data.cache_dir={tmp_path / 'c'}"]) == 0
    assert "probe.remask=0.5 is ignored" in capsys.readouterr().err


@pytest.fixture(scope="module")
def masked_run(tmp_path_factory):
    return _toy_run(tmp_path_factory.mktemp("masked") / "run", "train.process=masked")


def test_packed_engine_on_a_masked_denoiser_points_at_loop(masked_run):
    from basinlab.errors import BasinlabError
    from basinlab.probes.basins import basin_test

    tm = basinlab.load(str(masked_run))
    seqs = tm.dataset().test[:2]
    with pytest.raises(BasinlabError, match='engine=\\"loop\\"'):
        basin_test(tm.denoiser, seqs, ts=[0.5], steps=2, engine="packed")


def test_audit_of_a_masked_model_says_what_is_1_by_construction_and_shows_every_curve(masked_run, tmp_path,
                                                                                        capsys):
    """fixed_point is 1 for every text of a masked model without remasking: the CLI table, auc.json and
    audit.html say so; the page's ROC draws each curve with its own dash and shift (identical curves visible)."""
    import re

    from basinlab.probes.plots import roc_figure

    out = tmp_path / "audit"
    assert main(["audit", "--checkpoint", str(masked_run), "--train-vs-test", "6", "--ts", "0.5", "--steps", "3",
                 "--nelbo-times", "2", "--device", "cpu", "--quiet", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    fixed = next(line for line in stdout.splitlines() if line.strip().startswith("fixed_point "))
    assert fixed.split()[1] == "0.500" and "by construction" in stdout
    assert "by construction" in json.loads((out / "auc.json").read_text())["scores"]["fixed_point"]["note"]
    page = (out / "audit.html").read_text()
    assert "fixed_point: 1 for every text by construction" in page
    curves = re.findall(r'<polyline class="roc-curve"[^>]*stroke-dasharray="([^"]+)" points="([^"]+)"', page)
    assert len(curves) >= 4
    assert len({d for d, _ in curves}) == len(curves) and len({p for _, p in curves}) == len(curves)
    from basinlab.probes.audit import audit

    tm = basinlab.load(str(masked_run))
    data = tm.dataset()
    seqs = torch.cat([data.train(16)[:4], data.test[:4]])
    res = audit(tm.denoiser, seqs, groups=["member"] * 4 + ["nonmember"] * 4, ts=[0.5], steps=2, nelbo_times=2)
    fig = roc_figure(res, ["member"] * 4 + ["nonmember"] * 4)
    lines = fig.axes[0].get_lines()[1:]
    assert len({ln.get_marker() for ln in lines}) == len(lines)
    assert len({tuple(ln.get_transform().transform((0.5, 0.5))) for ln in lines}) == len(lines)  # shifted apart
    assert all("AUC" in t.get_text() for t in fig.axes[0].get_legend().get_texts())


def test_train_vs_test_on_a_converted_model_says_it_uses_stand_in_data(tmp_path, capsys):
    params = random_duo_params(12, D, C, NB, NH, seed=5)
    src = tmp_path / "duo"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"model_type": "duo", "vocab_size": 12, "model_length": L,
                                                 "hidden_dim": D, "cond_dim": C, "n_blocks": NB, "n_heads": NH,
                                                 "dropout": 0.0}))
    save_file({f"backbone.{k}": v.contiguous() for k, v in params.items()}, str(src / "model.safetensors"))
    assert main(["convert", str(src), "--out", str(tmp_path / "run"), "data.n_train=16", "data.n_test=16",
                 "data.markov_pool=300", f"data.cache_dir={tmp_path / 'c'}"]) == 0
    capsys.readouterr()
    assert main(["audit", "--checkpoint", str(tmp_path / "run"), "--train-vs-test", "4", "--ts", "0.5", "--steps",
                 "2", "--nelbo-times", "2", "--device", "cpu", "--quiet", "--out", str(tmp_path / "a")]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "stand-in" in line]
    assert len(err) == 1 and "not the model's training set" in err[0], err


def test_sample_remasks_a_masked_model_and_refuses_a_uniform_one(masked_run, tmp_path, capsys):
    args = ["sample", "--checkpoint", str(masked_run), "--n", "8", "--steps", "20", "--device", "cpu"]
    assert main(args) == 0
    plain = capsys.readouterr().out
    assert main([*args, "--remask", "1"]) == 0
    assert capsys.readouterr().out != plain  # ReMDM's chain is another chain
    run = _toy_run(tmp_path / "uniform")
    assert main(["sample", "--checkpoint", str(run), "--n", "2", "--steps", "2", "--remask", "0.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing to remask" in err[0]


def test_help_texts_say_what_the_commands_do(capsys):
    for argv, want, never in ((["--help"], "masked", None), (["train", "--help"], "masked", None),
                              (["sample", "--help"], "all [MASK]", "start from uniform noise at t = 1")):
        with pytest.raises(SystemExit):
            main(argv)
        text = " ".join(capsys.readouterr().out.split())
        assert want in text and (never is None or never not in text), (argv, text)


def test_an_unknown_option_points_at_its_subcommands_help(masked_run, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["probe", "basins", "--checkpoint", str(masked_run), "--bogus"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--bogus" in err[0] and "see `basinlab probe --help`" in err[0], err


def test_quiet_silences_transformers_bars(scorers, masked_run, tmp_path, capfd):
    args = ["probe", "gen-ppl", "--checkpoint", str(masked_run), "--samples", "2", "--steps", "2", "--device", "cpu",
            f"probe.gen_ppl_model={scorers['{GOOD}']}"]
    assert main(args) == 0
    loud = capfd.readouterr().err
    assert main([*args, "--quiet"]) == 0
    quiet = capfd.readouterr().err
    assert "Loading weights" in loud and "Loading weights" not in quiet


def test_report_setup_says_which_weights_and_objective_ran():
    """The Setup table: raw weights under probe.protocol=paper (EMA under exact), the masked objective for a
    masked model, and no NELBO "after warm-up" when every step was a warm-up step."""
    import pandas as pd

    from basinlab.config import Config
    from basinlab.study.report import _setup_html

    df = pd.DataFrame({"model": ["micro", "micro@masked"], "N": [16, 16]})
    cfg = Config()
    cfg.train.steps, cfg.train.ce_warmup_steps = 100, 800
    cfg.probe.protocol = "paper"
    page = _setup_html(cfg, df, [], "micro")
    assert "raw weights" in page and "EMA" not in page
    assert "never ran" in page and "after 800 warm-up steps" not in page and "SPEC 4" in page
    cfg.probe.protocol, cfg.train.ce_warmup_steps = "exact", 10
    page = _setup_html(cfg, df, [], "micro@masked")
    assert "EMA weights" in page and "SPEC 2b" in page and "SPEC 4" not in page
    assert "after 10 warm-up steps of cross-entropy over the masked positions" in page


def test_ce_warmup_not_below_steps_is_warned_at_config_time(caplog):
    with caplog.at_level("WARNING", logger="basinlab.config"):
        load_config(None, ["train.steps=7", "train.ce_warmup_steps=9"])
    hits = [r.getMessage() for r in caplog.records if "ce_warmup_steps=9" in r.getMessage()]
    assert len(hits) == 1 and "never runs" in hits[0]


def _metrics(path: Path, steps: list[int]) -> None:
    path.mkdir(parents=True)
    pd.DataFrame({"step": steps, "loss": [2.0 + 0.1 * i for i in range(len(steps))],
                  "objective": "nelbo"}).to_csv(path / "metrics.csv", index=False)


def test_loss_curves_of_a_model_are_its_own_and_one_point_is_drawn(tmp_path):
    """A sweep of both processes: each model's training-loss plot holds its own runs only (one legend entry per
    N), and a run with one logged point is drawn as a visible marker."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from basinlab.study.report_extras import loss_curves, plot_losses

    for name, steps in (("N16-s0", [1, 2, 3]), ("N64-s0", [1]), ("N16-s0-masked", [1, 2]), ("N64-s0-masked", [1, 2]),
                        ("N16-s0-oracle-markov", [1])):
        _metrics(tmp_path / "runs" / name, steps)
    uniform, masked = loss_curves(tmp_path, "micro", 0), loss_curves(tmp_path, "micro@masked", 0)
    assert [(n, len(df)) for n, df in uniform] == [(16, 3), (64, 1)]
    assert [(n, len(df)) for n, df in masked] == [(16, 2), (64, 2)]
    fig = plot_losses(uniform, plt)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["N = 16", "N = 64"]
    single = fig.axes[0].get_lines()[1]
    assert len(single.get_xdata()) == 1 and single.get_marker() not in (None, "None", "")
    plt.close(fig)


def test_masked_run_with_bert_tokenizer_exports_as_mdlm_reads_and_converts_back(tmp_path):
    """The issue's case: `train text-demo train.process=masked data.tokenizer=bert-base-uncased`, then export
    --format mdlm-hf (vocab_size = the 30522 rows, BERT's [MASK] inside), then convert of the export (refused
    before): the same process and weights."""
    cfg = load_config("text-demo", ["train.process=masked", "data.tokenizer=bert-base-uncased", "data.seq_len=16",
                                    "data.n_train=16", "data.n_test=16", *SMALL[:4], "train.steps=1",
                                    "train.batch_size=4", "train.warmup_steps=1", "train.progress=false",
                                    "train.device=cpu", f"data.cache_dir={tmp_path / 'cache'}"])
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(cfg, out_dir=tmp_path / "run", progress=False)
    finally:
        torch.set_num_threads(before)
    tm = basinlab.load(str(tmp_path / "run"))
    assert tm.process.mask_index < tm.vocab_size == 30522  # BERT's own [MASK], no appended row
    assert main(["export", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "exp"),
                 "--format", "mdlm-hf"]) == 0
    assert json.loads((tmp_path / "exp" / "config.json").read_text())["vocab_size"] == 30522
    assert main(["convert", str(tmp_path / "exp"), "--out", str(tmp_path / "back")]) == 0
    back = basinlab.load(str(tmp_path / "back"))
    assert back.process.mask_index == tm.process.mask_index and back.vocab_size == tm.vocab_size
    a, b = tm.model.state_dict(), back.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
