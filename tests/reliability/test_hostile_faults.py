"""Issue 18's hostile-user findings 3 and 10 (faults) and the fixes of 2, 4, 5, 6, 8 and 11 that are not refusals.

- a second ``basinlab train`` on a run directory that one is training is refused in one line, and a killed holder
  (SIGKILL) leaves no stuck lock;
- a full disk (ENOSPC: a real tmpfs of a few hundred KB, mounted for the test; skipped where mounting needs a root
  this user is not) during ``train``, ``sweep``, ``report``, ``export`` and ``convert`` ends in one line with exit
  code 1, leaves the last checkpoint and the recorded results intact, and a rerun with space finishes (training
  bit-exactly as an uninterrupted run);
- a failing worker of a multi-worker sweep has its error line in the launcher's one line;
- convert takes float16/bfloat16 weights (as float32) and says which weights it took; convert/export again into
  their own earlier output; audit warns about few or shared members and texts cut to ``L - 2`` tokens, strips a BOM,
  and removes a stale ``auc.json``/``roc.png``; help texts and ``report``/``probe`` print what they should.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from basinlab.cli import main
from basinlab.config import load_config
from basinlab.interop.duo import convert
from basinlab.io import LOCK_FILE
from basinlab.training.checkpoint import find_checkpoint, verify_checkpoint
from basinlab.training.trainer import train
from tests.interop.duo_reference import random_duo_params

from .conftest import fork_child, tiny_config

pytestmark = pytest.mark.reliability

V, D, C, NB, NH, L = 37, 32, 24, 2, 4, 12
TOY = ["data.source=markov", "data.seq_len=12", "data.markov_vocab=12", "data.markov_successors=3",
       "data.markov_pool=300", "data.n_test=20", "data.n_train=16", "model.n_layer=1", "model.d_model=32",
       "model.n_head=2", "model.d_cond=16", "train.steps=2", "train.batch_size=8", "train.warmup_steps=1",
       "train.device=cpu", "train.progress=false"]


def _one_line(capsys) -> str:
    """The one error line on stderr (progress and INFO lines may precede it), without a traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("basinlab: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _save(cfg, path: Path) -> Path:
    path.write_text(cfg.to_yaml())
    return path


# ---- finding 3: one writer per run directory ----------------------------------------------------------------


def test_second_trainer_of_a_run_directory_is_refused_and_a_killed_one_leaves_no_lock(tmp_path, capsys):
    run = tmp_path / "run"
    first = tiny_config(tmp_path, steps=1_000_000, log_every=1)
    pid = fork_child(lambda: train(first, out_dir=run, progress=False))
    try:
        deadline = time.monotonic() + 120
        while not ((run / "metrics.csv").is_file() and len((run / "metrics.csv").read_text().splitlines()) > 2):
            assert time.monotonic() < deadline, "the first trainer did not start"
            time.sleep(0.2)
        second = _save(tiny_config(tmp_path, steps=3, lr=0.01), tmp_path / "second.yaml")
        rc = main(["train", str(second), "--out", str(run), "--quiet"])
        line = _one_line(capsys)
        assert rc == 2
        assert "in use by another basinlab process" in line and f"pid {pid}" in line and str(run) in line
        assert load_config(run / "config.yaml").train.lr == first.train.lr  # the first run's files stand
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert (run / LOCK_FILE).exists()  # SIGKILL left the file, but the kernel dropped the lock
    assert main(["train", str(second), "--out", str(run), "--quiet", "--no-resume"]) == 0
    assert not (run / LOCK_FILE).exists()
    assert find_checkpoint(run).name == "ckpt-00000003"


# ---- finding 10: a full disk ------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """``mount(size)``: a tmpfs of ``size`` at ``tmp_path/fs`` (remounted when called again); unmounted after."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    mounted: list[bool] = []

    def mount(size: int) -> Path:
        opts = f"remount,size={size}" if mounted else f"size={size}"
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mnt)], capture_output=True, text=True)
        if res.returncode:
            pytest.skip(f"cannot mount a small tmpfs here (needs root): {res.stderr.strip()}")
        mounted.append(True)
        return mnt

    yield mount
    if mounted:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _pages(path: Path) -> int:
    return sum(-(-f.stat().st_size // 4096) * 4096 for f in path.rglob("*") if f.is_file())


def test_full_disk_during_train_keeps_the_checkpoint_and_resumes_exactly(tmp_path, small_disk, capsys):
    cfg = tiny_config(tmp_path, steps=6, ckpt_every=2, log_every=1)
    ref = train(cfg, out_dir=tmp_path / "ref", progress=False)
    one = _pages(ref.checkpoint_path)
    disk = small_disk(int(one * 1.5) + 16 * 4096)  # one checkpoint fits, not the second beside it
    path = _save(cfg, tmp_path / "cfg.yaml")
    rc = main(["train", str(path), "--out", str(disk / "run"), "--quiet"])
    line = _one_line(capsys)
    assert rc == 1 and "no space left on the device" in line and str(disk) in line, line
    kept = find_checkpoint(disk / "run")
    assert kept is not None and kept.name == "ckpt-00000002"
    verify_checkpoint(kept)  # complete: every file matches its manifest
    assert not [p for p in (disk / "run").iterdir() if p.name.startswith(".ckpt-")]  # no half-written temporary
    small_disk(16 * 2**20)
    assert main(["train", str(path), "--out", str(disk / "run"), "--quiet"]) == 0
    got, want = (load_file(str(find_checkpoint(d) / "ema.safetensors")) for d in (disk / "run", tmp_path / "ref"))
    assert all(torch.equal(got[k], want[k]) for k in want)  # resumed bit-exactly
    steps = [r.split(",")[0] for r in (disk / "run" / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == [r.split(",")[0] for r in (tmp_path / "ref" / "metrics.csv").read_text().splitlines()[1:]]


def test_full_disk_during_export_and_convert_is_one_line_and_leaves_nothing_half_written(tmp_path, small_disk,
                                                                                         capsys):
    run = tmp_path / "run"
    train(load_config(None, [*TOY, f"data.cache_dir={tmp_path / 'cache'}"]), out_dir=run, progress=False)
    disk = small_disk(24 * 1024)
    rc = main(["export", "--checkpoint", str(run), "--out", str(disk / "hf"), "--format", "duo-hf"])
    assert rc == 1 and "no space left on the device" in _one_line(capsys)
    assert sorted(p.name for p in (disk / "hf").iterdir()) == []  # no partial model.safetensors, no temporary
    src = tmp_path / "src"
    assert main(["export", "--checkpoint", str(run), "--out", str(src), "--format", "duo-hf"]) == 0
    capsys.readouterr()
    rc = main(["convert", str(src), "--out", str(disk / "conv")])
    assert rc == 1 and "no space left on the device" in _one_line(capsys)
    assert find_checkpoint(disk / "conv") is None
    assert not [p for p in (disk / "conv").iterdir() if p.name.startswith(".ckpt-")]


def test_full_disk_during_sweep_and_report(tmp_path, small_disk, capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "study"))
    from test_golden import TOY as SWEEP_TOY

    disk = small_disk(400 * 1024)
    out = disk / "sweep"
    argv = ["sweep", "--preset", "markov", "--out", str(out), "--devices", "cpu", "--quiet", *SWEEP_TOY,
            f"data.cache_dir={tmp_path / 'cache'}"]
    rc = main(argv)
    line = _one_line(capsys)
    assert rc == 1 and "no space left on the device" in line, line
    small_disk(32 * 2**20)
    assert main(argv) == 0  # the rerun resumes what the full disk stopped
    capsys.readouterr()
    used = _pages(out)
    small_disk(used + 64 * 1024)  # the results fit, the report's plots do not
    digest = hashlib.sha256((out / "results.sqlite").read_bytes()).hexdigest()
    rc = main(["report", str(out)])
    line = _one_line(capsys)
    assert rc == 1 and "no space left on the device" in line, line
    assert hashlib.sha256((out / "results.sqlite").read_bytes()).hexdigest() == digest
    assert not (out / "report.html").exists()
    small_disk(32 * 2**20)
    assert main(["report", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "N*" in printed and "report:" in printed  # finding 11: report prints N* too


# ---- finding 8: a failing worker's error in the launcher's line -------------------------------------------


def test_failing_sweep_worker_error_is_in_the_launchers_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2] / "src") + os.pathsep
                       + os.environ.get("PYTHONPATH", ""))
    out = tmp_path / "sweep"
    argv = ["sweep", "--preset", "markov", "--out", str(out), "--quiet", *TOY, f"data.cache_dir={tmp_path / 'c'}",
            "sweep.sizes=[16]", "sweep.seeds=[0]", "sweep.oracles=false"]
    assert main([*argv, "--plan"]) == 0
    name = capsys.readouterr().out.split()[0]
    (out / "runs").mkdir()
    (out / "runs" / name).write_text("a file where the run directory belongs\n")
    rc = main([*argv, "--devices", "cpu,cpu"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("basinlab: error:")]
    assert rc == 2 and len(err) == 1, err
    assert "sweep worker" in err[0] and "is a file" in err[0] and "worker-" in err[0], err[0]


# ---- findings 2, 4, 11: convert and export fixes ------------------------------------------------------------


def _hf(path: Path, params: dict, **extra) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "duo", "vocab_size": V, "model_length": L,
                                                  "hidden_dim": D, "cond_dim": C, "n_blocks": NB, "n_heads": NH,
                                                  "dropout": 0.0, **extra}))
    save_file({f"backbone.{k}": v.contiguous() for k, v in params.items()}, str(path / "model.safetensors"))
    return path


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights_convert_to_float32_exactly(tmp_path, dtype):
    params = random_duo_params(V, D, C, NB, NH)
    half = {k: v.to(dtype) for k, v in params.items()}  # the rotary buffer too: checked at its precision
    wide = {k: v.float() for k, v in half.items()} | {"rotary_emb.inv_freq": params["rotary_emb.inv_freq"]}
    convert(_hf(tmp_path / "half", half), tmp_path / "a")
    convert(_hf(tmp_path / "wide", wide), tmp_path / "b")
    a, b = (load_file(str(find_checkpoint(tmp_path / d) / "ema.safetensors")) for d in "ab")
    assert all(a[k].dtype == torch.float32 and torch.equal(a[k], b[k]) for k in b)


def test_convert_and_export_again_into_their_own_output(tmp_path, capsys, caplog):
    src = _hf(tmp_path / "hf", random_duo_params(V, D, C, NB, NH))
    for _ in range(2):
        assert main(["convert", str(src), "--out", str(tmp_path / "run")]) == 0
    for _ in range(2):
        assert main(["export", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "hf2"),
                     "--format", "duo-hf"]) == 0
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="basinlab"):
        assert main(["convert", str(tmp_path / "hf2"), "--out", str(tmp_path / "back")]) == 0
    assert "(duo, ema weights)" in caplog.text  # finding 11: an EMA export is called EMA
    assert json.loads((find_checkpoint(tmp_path / "back") / "meta.json").read_text())["converted_from"][
        "weights"] == "ema"


def test_help_texts(capsys):
    for argv in (["audit", "--help"], ["sweep", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
    out = capsys.readouterr().out
    assert "95%%" not in out and "95% interval" in out
    assert "text-demo" in out


def test_empirical_oracle_says_which_n(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc = main(["probe", "fixed-points", "--oracle", "empirical", *TOY[:7], f"data.cache_dir={tmp_path / 'c'}",
               "--n", "4", "--steps", "2", "--quiet"])
    assert rc == 0
    assert "memorises N = 16 training sequences" in capsys.readouterr().out


# ---- findings 5 and 6: audit ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("audit-run")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(load_config(None, [*TOY, f"data.cache_dir={base / 'cache'}"]), out_dir=base / "run", progress=False)
    finally:
        torch.set_num_threads(before)
    return base / "run"


def test_audit_out_on_a_read_only_file_system_is_refused_before_scoring(toy_run, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], capture_output=True)
    if res.returncode:
        pytest.skip("cannot mount a read-only tmpfs here (needs root)")
    try:
        (tmp_path / "t.txt").write_text(_ids([[1] * L]))
        rc = main(["audit", "--checkpoint", str(toy_run), "--texts", str(tmp_path / "t.txt"), "--format", "ids",
                   "--out", str(ro / "audit")])
        line = _one_line(capsys)
        assert rc == 2 and "cannot write" in line and "Read-only" in line, line
        assert not capsys.readouterr().out  # refused before scoring: nothing printed, nothing scored
    finally:
        subprocess.run(["umount", "-l", str(ro)], capture_output=True)


def test_full_disk_during_audit_is_one_line(toy_run, tmp_path, small_disk, capsys):
    disk = small_disk(8 * 1024)
    rows = torch.randint(0, 12, (40, L), generator=torch.Generator().manual_seed(2)).tolist()
    (tmp_path / "t.txt").write_text(_ids(rows))
    rc = main(["audit", "--checkpoint", str(toy_run), "--members", str(tmp_path / "t.txt"), "--nonmembers",
               str(tmp_path / "t.txt"), "--format", "ids", "--out", str(disk / "a"), "--steps", "2",
               "--nelbo-times", "2", "--quiet"])
    line = _one_line(capsys)
    assert rc == 1 and "no space left on the device" in line, line
    assert not [p for p in (disk / "a").iterdir() if p.name.startswith(".")]  # no temporary left behind


def _ids(rows: list[list[int]]) -> str:
    return "".join(" ".join(map(str, r)) + "\n" for r in rows)


def test_audit_warns_about_few_and_shared_members_and_strips_a_bom(toy_run, tmp_path, capsys, caplog):
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(0, 12, (3, L), generator=g).tolist()
    (tmp_path / "m.txt").write_bytes(b"\xef\xbb\xbf" + _ids(rows).encode())  # a UTF-8 BOM
    (tmp_path / "n.txt").write_text(_ids(rows[:2]))
    with caplog.at_level(logging.WARNING, logger="basinlab"):
        rc = main(["audit", "--checkpoint", str(toy_run), "--members", str(tmp_path / "m.txt"), "--nonmembers",
                   str(tmp_path / "n.txt"), "--format", "ids", "--out", str(tmp_path / "a"), "--steps", "2",
                   "--nelbo-times", "2", "--quiet"])
    assert rc == 0
    assert "3 members and 2 non-members" in caplog.text and "unreliable" in caplog.text
    assert "2 member texts also appear among the non-members" in caplog.text
    text = (tmp_path / "a" / "scores.csv").read_text(encoding="utf-8")
    assert "\ufeff" not in text


def test_audit_of_texts_removes_the_stale_auc_of_an_earlier_audit(toy_run, tmp_path, capsys):
    rows = torch.randint(0, 12, (4, L), generator=torch.Generator().manual_seed(1)).tolist()
    (tmp_path / "t.txt").write_text(_ids(rows))
    common = ["--checkpoint", str(toy_run), "--format", "ids", "--out", str(tmp_path / "a"), "--steps", "2",
              "--nelbo-times", "2", "--quiet"]
    assert main(["audit", "--members", str(tmp_path / "t.txt"), "--nonmembers", str(tmp_path / "t.txt"),
                 *common]) == 0
    assert (tmp_path / "a" / "auc.json").exists() and (tmp_path / "a" / "roc.png").exists()
    assert main(["audit", "--texts", str(tmp_path / "t.txt"), *common]) == 0
    assert not (tmp_path / "a" / "auc.json").exists() and not (tmp_path / "a" / "roc.png").exists()
    assert (tmp_path / "a" / "scores.csv").exists()


def test_audit_says_how_many_texts_were_cut(caplog):
    from basinlab.cli.audit_input import warn_cut
    from basinlab.data.tokenizer import Tokenizer, bert_vocab_path

    tok = Tokenizer.from_file(bert_vocab_path())
    texts = ["a short one", "word " * 40, "another rather long text " * 10]
    with caplog.at_level(logging.WARNING, logger="basinlab"):
        warn_cut(texts, tok, 16, "t.txt")
    assert "2 of 3 texts in t.txt are longer than the model's 14 tokens" in caplog.text

