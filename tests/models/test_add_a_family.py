"""docs/ARCHITECTURE.md's guide "Add a model family", followed literally (issue 22): the guide's module and
registration, run from a temporary directory (no file under src/ changes), give a family that trains, saves, loads
and is probed like the DiT."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import basinlab
from basinlab.cli import main
from basinlab.config import load_config
from basinlab.errors import BasinlabError
from basinlab.registry import FAMILIES
from tests._guide import follow_guide

TOY = ["data.source=markov", "data.seq_len=10", "data.markov_vocab=6", "data.markov_successors=2",
       "data.markov_pool=300", "data.n_test=20", "data.n_train=16", "train.batch_size=16", "train.log_every=10",
       "train.ckpt_every=20", "train.warmup_steps=2"]


@pytest.fixture(scope="module")
def neighbour(tmp_path_factory):
    """Step 1 (the module, on sys.path instead of src/) and step 2 (the registration), as the guide gives them."""
    where = tmp_path_factory.mktemp("plugin")
    with follow_guide("Add a model family", "neighbour_family", where, ("NeighbourFamily",)) as module:
        yield module
    FAMILIES.unregister("neighbour")


def test_the_registered_family_is_listed(neighbour, capsys):
    with pytest.raises(BasinlabError, match="neighbour"):
        load_config("demo", ["model.family=bogus"])
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "neighbour" in capsys.readouterr().out


@pytest.mark.parametrize("process", ["uniform", "masked"])
def test_it_trains_reloads_and_every_probe_runs_on_it(neighbour, tmp_path, process):
    run, out = tmp_path / "run", tmp_path / "probes"
    assert main(["train", "demo", "model.family=neighbour", f"train.process={process}", "train.steps=20", *TOY,
                 f"data.cache_dir={tmp_path / 'cache'}", "--out", str(run), "--quiet"]) == 0
    tm = basinlab.load(str(run))
    assert isinstance(tm.model, neighbour.NeighbourNet) and tm.meta["family"] == "neighbour"
    assert tm.process.name == process
    z = torch.randint(0, 6, (4, 10), generator=torch.Generator().manual_seed(0))
    t = torch.full((4,), 0.5, dtype=torch.float64)
    again = basinlab.load(str(run))
    assert torch.equal(tm.denoiser(z, t), again.denoiser(z, t))
    assert torch.allclose(tm.denoiser(z, t).exp().sum(-1), torch.ones(4, 10), atol=1e-5)
    assert main(["probe", "all", "--checkpoint", str(run), "--quick", "--n", "8", "--steps", "4", "--samples", "4",
                 "--device", "cpu", "--quiet", "--out", str(out)]) == 0
    df = pd.read_csv(out / "results.csv")
    assert {"basins", "fixed_points", "entropy", "novelty", "likelihood"} <= set(df["probe"])
