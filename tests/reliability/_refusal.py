"""What the bad-input tables share (test_bad_inputs_cli.py, test_bad_inputs_hostile.py, test_bad_inputs_new_paths.py):
the toy overrides, expanding a case's argv over the fixtures, a snapshot of what exists, the one check of a
refusal (exit 2, one line, nothing written), the toy run, and a Duo Hugging Face directory of given weights."""

from __future__ import annotations

import json
import os
from pathlib import Path

from safetensors.torch import save_file

from basinlab.cli import main

#: Markov data of V = 12, L = 12, N = 16 and a 1-layer DiT trained for 2 steps: the tables' trained toy run
TOY = ["data.source=markov", "data.seq_len=12", "data.markov_vocab=12", "data.markov_successors=3",
       "data.markov_pool=300", "data.n_test=20", "data.n_train=16"]
SMALL = ["model.n_layer=1", "model.d_model=32", "model.n_head=2", "model.d_cond=16", "train.steps=2",
         "train.batch_size=8", "train.warmup_steps=1", "train.device=cpu", "train.progress=false"]
#: the sizes of the Duo sources: vocabulary, width, conditioning, blocks, heads, length
V, D, C, NB, NH, L = 37, 32, 24, 2, 4, 12


def train_toy(out: Path, cache: Path, *extra: str) -> Path:
    """Train the toy run (:data:`TOY`, :data:`SMALL`, then ``extra`` overrides) into ``out``, on one thread."""
    import torch

    from basinlab.config import load_config
    from basinlab.training.trainer import train

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(load_config(None, [*TOY, *SMALL, f"data.cache_dir={cache}", *extra]), out_dir=out, progress=False)
    finally:
        torch.set_num_threads(before)
    return out


def write_hf(path: Path, params: dict, **cfg) -> str:
    """A Duo Hugging Face directory of ``params`` whose ``config.json`` has the sizes above, ``cfg`` replacing any."""
    path.mkdir(parents=True)
    hf = {"model_type": "duo", "vocab_size": V, "model_length": L, "hidden_dim": D, "cond_dim": C, "n_blocks": NB,
          "n_heads": NH, "dropout": 0.0, **cfg}
    (path / "config.json").write_text(json.dumps(hf))
    save_file({f"backbone.{k}": v.contiguous() for k, v in params.items()}, str(path / "model.safetensors"))
    return str(path)


def expand_argv(argv: list[str], fx: dict, toy: list[str]) -> list[str]:
    """``{T}`` becomes the toy overrides (with the fixtures' cache); every ``{NAME}`` its fixture path."""
    out = []
    for a in argv:
        if a == "{T}":
            out += [*toy, f"data.cache_dir={fx['cache']}"]
            continue
        for k, v in fx.items():
            if k.startswith("{"):
                a = a.replace(k, v)
        out.append(a)
    return out


def snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    """Size and modification time of everything below ``roots`` (links not followed; caches left out)."""
    snap = {}
    for root in roots:
        for p in root.rglob("*"):
            if "cache" in p.relative_to(root).parts:
                continue
            st = p.lstat()
            snap[str(p)] = (st.st_size, st.st_mtime_ns if p.is_file() else 0)
    return snap


def assert_refused_in_one_line(argv, words, fixtures, toy, tmp_path, monkeypatch, capsys) -> None:
    """The CLI run on ``argv`` exits 2 with one ``basinlab: error:`` line holding every word of ``words``, no
    traceback, and writes nothing (neither in the working directory nor among the fixtures)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("BASINLAB_CACHE", fixtures["cache"])
    before = snapshot(tmp_path, fixtures["base"])
    try:
        rc = main(expand_argv(argv, fixtures, toy))
    except SystemExit as exc:  # argparse
        rc = exc.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("basinlab: error:"), err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert snapshot(tmp_path, fixtures["base"]) == before, "a refused command wrote something"
    assert not os.listdir(tmp_path)
