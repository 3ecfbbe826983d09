"""DDP: ``torchrun --nproc_per_node 2`` on gloo (CPU) equals one process on the same global batch (dropout 0)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from basinlab.data import build_dataset
from basinlab.training.checkpoint import find_checkpoint, load_weights
from basinlab.training.trainer import train

from .conftest import markov_config

SCRIPT = """
import json, os, sys
from basinlab.config import load_config
from basinlab.training.trainer import train

cfg = load_config(sys.argv[1])
res = train(cfg, out_dir=sys.argv[2], progress=False)
if os.environ["RANK"] == "0":
    with open(sys.argv[3], "w") as fh:
        json.dump({"losses": res.losses, "world": int(os.environ["WORLD_SIZE"])}, fh)
"""


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="needs torch.distributed with gloo")
def test_two_processes_equal_one(tmp_path) -> None:
    cfg = markov_config(tmp_path, steps=4, objective="nelbo", ce_warmup_steps=2, ckpt_every=2)
    cfg.model.dropout = 0.0
    cfg.train.grad_accum = 2  # 16 = 2 ranks x 2 micro-batches x 4
    cfg_path = tmp_path / "cfg.yaml"
    cfg.save(cfg_path)
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
         str(cfg_path), str(tmp_path / "ddp"), str(tmp_path / "ddp.json")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = json.loads((tmp_path / "ddp.json").read_text())
    assert ddp["world"] == 2

    cfg.train.grad_accum = 1
    single = train(cfg, build_dataset(cfg.data), out_dir=tmp_path / "single")
    assert ddp["losses"] == pytest.approx(single.losses, abs=1e-5)
    for ema in (False, True):
        a = load_weights(find_checkpoint(tmp_path / "ddp"), ema)
        b = load_weights(find_checkpoint(tmp_path / "single"), ema)
        for k in a:
            assert torch.allclose(a[k], b[k], atol=1e-5), k
    # only rank 0 wrote: one checkpoint, one metrics file with one row per step
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir() if p.name.startswith("ckpt-")) == ["ckpt-00000004"]
    rows = (tmp_path / "ddp" / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 4
