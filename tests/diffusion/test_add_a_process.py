"""docs/ARCHITECTURE.md's guide "Add a forward process", followed literally (issue 22): the guide's module and
registration, run from a temporary directory (no file under src/ changes), give a third process whose maths is
right, which the config, the help texts, the trainer and every probe accept."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from basinlab.cli import main
from basinlab.config import load_config
from basinlab.diffusion import get_schedule
from basinlab.errors import BasinlabError
from basinlab.registry import PROCESSES
from tests._guide import follow_guide

TOY = ["data.source=markov", "data.seq_len=10", "data.markov_vocab=6", "data.markov_successors=2",
       "data.markov_pool=300", "data.n_test=20", "data.n_train=16", "model.n_layer=1", "model.d_model=32",
       "model.n_head=2", "model.d_cond=16", "train.batch_size=16", "train.log_every=10", "train.ckpt_every=20",
       "train.warmup_steps=2"]


@pytest.fixture(scope="module")
def mixture(tmp_path_factory):
    """Step 1 (the module, on sys.path instead of src/) and step 2 (the registration), as the guide gives them."""
    where = tmp_path_factory.mktemp("plugin")
    with follow_guide("Add a forward process", "mixture_process", where, ("MixtureProcess",)) as module:
        yield module.MixtureProcess
    PROCESSES.unregister("mixture")


def _case(proc, seed=0):
    g = torch.Generator().manual_seed(seed)
    V = proc.vocab_size
    x = torch.randint(0, V, (3, 5), generator=g)
    t = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    sched = get_schedule("loglinear", 1e-3)
    z = proc.corrupt(x, sched.alpha(t), generator=g)
    log_x = torch.log_softmax(torch.randn(3, 5, V, generator=g, dtype=torch.float64), -1)
    return x, z, t, sched, log_x


def test_the_nelbo_integrand_is_the_limit_of_the_reverse_steps_kl_rate(mixture):
    proc = mixture(5)
    x, z, t, sched, log_x = _case(proc)
    f = proc.nelbo_integrand(x, z, log_x, sched.alpha(t), sched.dalpha(t))
    truth = torch.nn.functional.one_hot(x, 5).double().log()

    def kl_rate(h):
        a_s = sched.alpha(t - h)
        q, p = proc.posterior(z, truth, sched.alpha(t), a_s), proc.posterior(z, log_x, sched.alpha(t), a_s)
        return (torch.xlogy(q, q) - torch.xlogy(q, p)).sum(-1) / h

    richardson = 2 * kl_rate(5e-5) - kl_rate(1e-4)
    assert torch.allclose(richardson, f, rtol=1e-5, atol=1e-9)
    assert (f > 0).all()
    assert proc.nelbo_integrand(x, z, truth, sched.alpha(t), sched.dalpha(t)).abs().max() < 1e-12


def test_the_reverse_step_keeps_the_marginals(mixture):
    proc = mixture(4)
    x = torch.full((100_000, 1), 2)
    z_t = proc.corrupt(x, 0.3, generator=torch.Generator().manual_seed(1))
    z_s = proc.step(z_t, torch.nn.functional.one_hot(x, 4).double().log(), 0.3, 0.6,
                    generator=torch.Generator().manual_seed(2))
    got = torch.bincount(z_s.flatten(), minlength=5).double() / x.numel()
    want = 0.6 * torch.nn.functional.one_hot(torch.tensor(2), 5).double() + 0.4 * proc.pi("cpu")
    assert torch.allclose(got, want, atol=5e-3)  # ~5 SE of 1e5 draws


def test_the_registered_process_is_listed_by_the_config_and_the_help(mixture, capsys):
    with pytest.raises(BasinlabError, match="mixture"):
        load_config("demo", ["train.process=bogus"])
    assert load_config("demo", ["train.process=mixture"]).train.process == "mixture"
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "mixture" in capsys.readouterr().out


def test_it_trains_and_every_probe_runs_on_it(mixture, tmp_path):
    run, out = tmp_path / "run", tmp_path / "probes"
    assert main(["train", "demo", "train.process=mixture", "train.steps=20", *TOY,
                 f"data.cache_dir={tmp_path / 'cache'}", "--out", str(run), "--quiet"]) == 0
    assert main(["probe", "all", "--checkpoint", str(run), "--quick", "--n", "8", "--steps", "4", "--samples", "4",
                 "--device", "cpu", "--quiet", "--out", str(out)]) == 0
    df = pd.read_csv(out / "results.csv")
    assert {"basins", "fixed_points", "entropy", "novelty", "likelihood"} <= set(df["probe"])
    nelbo = df[(df["probe"] == "likelihood") & (df["metric"] == "nelbo")]["value"]
    assert len(nelbo) and (nelbo > 0).all()
    rec = df[(df["probe"] == "basins") & (df["metric"] == "recovery_rate")]["value"]
    assert len(rec) and rec.between(0, 1).all()
