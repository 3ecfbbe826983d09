"""Bad input to the probe, sample, nll, sweep, report and merge commands (issue 10): each is refused with exit
code 2 and one line on stderr naming the problem, without a traceback, and nothing is written.

CASES is the table that docs/RELIABILITY.md counts (scripts/reliability_counts.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from basinlab.cli import main
from basinlab.config import load_config
from basinlab.training.trainer import train
from tests.reliability._refusal import assert_refused_in_one_line

#: Markov data small enough for seconds (oracle commands rebuild it, from the cache outside the work directory).
TOY = ["data.source=markov", "data.seq_len=12", "data.markov_vocab=12", "data.markov_successors=3",
       "data.markov_pool=300", "data.n_test=20", "data.n_train=16"]
SMALL = ["model.n_layer=1", "model.d_model=32", "model.n_head=2", "model.d_cond=16", "train.steps=2",
         "train.batch_size=8", "train.warmup_steps=1", "train.device=cpu", "train.progress=false"]

# (id, argv, words the one line must contain). {CK}: a trained run; {FILE}: a regular file; {SWEEP}: a sweep dir
# with another config; {EMPTY}: an empty directory; {T}: the toy data overrides (with their cache dir).
CASES = [
    ("no-command-choice", ["frobnicate"], ["invalid choice"]),
    ("probe-no-source", ["probe", "basins"], ["--checkpoint", "--oracle"]),
    ("probe-bad-test", ["probe", "bogus", "--oracle", "markov"], ["invalid choice"]),
    ("probe-not-an-int", ["probe", "basins", "--oracle", "markov", "--n", "abc"], ["invalid int"]),
    ("probe-markov-on-text", ["probe", "basins", "--oracle", "markov", "data.source=brown"], ["Markov data"]),
    ("probe-unknown-preset", ["probe", "basins", "--oracle", "empirical", "nosuchpreset"], ["unknown preset"]),
    ("probe-unknown-key", ["probe", "basins", "--oracle", "markov", "{T}", "data.bogus=1"], ["unknown config key"]),
    ("probe-two-configs", ["probe", "basins", "--oracle", "markov", "a.yaml", "b.yaml"], ["at most one CONFIG"]),
    ("probe-missing-checkpoint", ["probe", "basins", "--checkpoint", "no/such/run"], ["no/such/run"]),
    ("probe-checkpoint-data-override", ["probe", "basins", "--checkpoint", "{CK}", "data.n_train=5"], ["probe.*"]),
    ("probe-checkpoint-and-config", ["probe", "basins", "--checkpoint", "{CK}", "markov"], ["drop the CONFIG"]),
    ("probe-n-zero", ["probe", "basins", "--checkpoint", "{CK}", "--n", "0"], ["probe.m"]),
    ("probe-steps-zero", ["probe", "basins", "--checkpoint", "{CK}", "--steps", "0"], ["probe.steps"]),
    ("probe-batch-zero", ["probe", "basins", "--checkpoint", "{CK}", "--batch-size", "0"], ["probe.batch_size"]),
    ("probe-ts-out-of-range", ["probe", "basins", "--checkpoint", "{CK}", "--ts", "0,2"], ["--ts"]),
    ("probe-ts-not-numbers", ["probe", "basins", "--checkpoint", "{CK}", "--ts", "a,b"], ["--ts"]),
    ("probe-samples-negative", ["probe", "novelty", "--checkpoint", "{CK}", "--samples", "-1"], ["n_samples"]),
    ("probe-show-negative", ["probe", "basins", "--checkpoint", "{CK}", "--show", "-1"], ["--show"]),
    ("probe-show-t-zero", ["probe", "basins", "--checkpoint", "{CK}", "--show-t", "0"], ["--show-t"]),
    # basins run on random since issue 16; the trajectory statistics do not
    ("probe-trajectory-on-random", ["probe", "trajectory", "--checkpoint", "{CK}", "--set", "random"],
     ["trajectory", "train"]),
    ("probe-out-is-a-file", ["probe", "basins", "--checkpoint", "{CK}", "--out", "{FILE}"], ["is a file"]),
    ("probe-out-under-a-file", ["probe", "basins", "--checkpoint", "{CK}", "--out", "{FILE}/x"], ["not a directory"]),
    ("probe-empty-memoriser", ["probe", "basins", "--oracle", "empirical", "{T}", "data.n_train=0"], ["n_train"]),
    ("probe-top-k-zero", ["probe", "basins", "--oracle", "empirical", "{T}", "--top-k", "0"], ["top_k"]),
    ("probe-batch-too-large", ["probe", "fixed-points", "--set", "random", "--oracle", "markov", "{T}",
                               "data.markov_vocab=2000", "--n", "10000000", "--batch-size", "10000000"],
     ["probe.batch_size", "GiB"]),
    ("sample-n-zero", ["sample", "--checkpoint", "{CK}", "--n", "0"], ["--n"]),
    ("sample-steps-zero", ["sample", "--checkpoint", "{CK}", "--steps", "0"], ["--steps"]),
    ("sample-missing-checkpoint", ["sample", "--checkpoint", "no/such/run"], ["no/such/run"]),
    ("sample-out-is-a-dir", ["sample", "--checkpoint", "{CK}", "--out", "{EMPTY}"], ["is a directory"]),
    ("sample-out-under-a-file", ["sample", "--checkpoint", "{CK}", "--out", "{FILE}/s.txt"], ["not a directory"]),
    ("nll-times-zero", ["nll", "--checkpoint", "{CK}", "--times", "0"], ["--times"]),
    ("nll-bad-set", ["nll", "--checkpoint", "{CK}", "--set", "random"], ["invalid choice"]),
    ("sweep-no-config", ["sweep", "--out", "s"], ["CONFIG"]),
    ("sweep-no-out", ["sweep", "--preset", "markov"], ["--out"]),
    ("sweep-unknown-preset", ["sweep", "--preset", "nosuch", "--out", "s"], ["unknown preset"]),
    ("sweep-missing-config", ["sweep", "no/such.yaml", "--out", "s"], ["not found"]),
    ("sweep-config-and-preset", ["sweep", "a.yaml", "--preset", "markov", "--out", "s"], ["not both"]),
    ("sweep-bad-shard", ["sweep", "--preset", "markov", "--out", "s", "--shard", "3/2"], ["--shard"]),
    ("sweep-shard-not-a-fraction", ["sweep", "--preset", "markov", "--out", "s", "--shard", "x"], ["--shard"]),
    ("sweep-no-seeds", ["sweep", "--preset", "markov", "--out", "s", "sweep.seeds=[]"], ["sweep.seeds"]),
    ("sweep-bad-sizes", ["sweep", "--preset", "markov", "--out", "s", "sweep.sizes=abc"], ["sweep.sizes"]),
    ("sweep-sizes-over-pool", ["sweep", "--preset", "markov", "--out", "s", "{T}", "sweep.sizes=[16,100000]",
                               "sweep.oracles=false", "sweep.devices=[]"], ["pool"]),
    ("sweep-out-is-a-file", ["sweep", "--preset", "markov", "--out", "{FILE}"], ["is a file"]),
    ("sweep-other-config", ["sweep", "--preset", "markov", "--out", "{SWEEP}", "train.steps=7"], ["another config"]),
    ("report-missing-dir", ["report", "no/such/dir"], ["does not exist"]),
    ("report-empty-dir", ["report", "{EMPTY}"], ["no sweep results"]),
    ("report-bad-t", ["report", "{SWEEP}", "--t", "2"], ["--t"]),
    ("merge-no-dirs", ["merge", "--out", "m"], ["DIR"]),
    ("merge-not-a-sweep", ["merge", "{EMPTY}", "--out", "m"], ["not a sweep directory"]),
    ("merge-into-itself", ["merge", "{SWEEP}", "--out", "{SWEEP}"], ["both an input and --out"]),
    # issue 18, finding 9: --plan checked no --devices; CUDA workers failed one by one on a machine without them
    ("sweep-plan-negative-workers", ["sweep", "--preset", "markov", "--out", "s", "--plan", "--devices", "cpu*-1"],
     ["cpu*-1"]),
    ("sweep-plan-unknown-device", ["sweep", "--preset", "markov", "--out", "s", "--plan", "--devices", "tpu"],
     ["tpu"]),
    ("sweep-missing-gpu", ["sweep", "--preset", "markov", "--out", "s", "{T}", "--devices", "cuda:0,cuda:99"],
     ["not available", "CUDA device"]),
    ("probe-data-path-with-markov", ["probe", "basins", "--oracle", "markov", "{T}", "data.path=/nonexistent"],
     ["data.path", "data.source=markov"]),
    ("sweep-steps-hex", ["sweep", "--preset", "markov", "--out", "s", "train.steps=0x10"], ["train.steps"]),
]


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    """A trained toy run, a sweep directory (config only), a file and an empty directory, outside the work dir."""
    base = tmp_path_factory.mktemp("bad-inputs")
    cache = base / "cache"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = load_config(None, [*TOY, *SMALL, f"data.cache_dir={cache}"])
        train(cfg, out_dir=base / "ck", progress=False)
    finally:
        torch.set_num_threads(before)
    assert main(["sweep", "--preset", "markov", "--out", str(base / "sweep"), "--plan", f"data.cache_dir={cache}"]) == 0
    (base / "file.txt").write_text("not a directory\n")
    (base / "empty").mkdir()
    return {"{CK}": str(base / "ck"), "{SWEEP}": str(base / "sweep"), "{FILE}": str(base / "file.txt"),
            "{EMPTY}": str(base / "empty"), "cache": str(cache), "base": base}


@pytest.mark.parametrize(("argv", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_in_one_line(fixtures, tmp_path, monkeypatch, capsys, argv, words):
    assert_refused_in_one_line(argv, words, fixtures, TOY, tmp_path, monkeypatch, capsys)


# ---- issue 18, finding 9: misleading output ---------------------------------------------------------------------


def test_too_many_cpu_workers_are_capped_with_a_warning(caplog):
    """`cpu*6` on 2 cores started 6 workers: now one per core, and a warning says so."""
    from basinlab.study.sweep import expand_devices

    cores = os.cpu_count() or 1
    with caplog.at_level("WARNING", logger="basinlab"):
        assert expand_devices([f"cpu*{cores + 4}"]) == ["cpu"] * cores
    assert f"{cores + 4} CPU workers" in caplog.text and f"running {cores}" in caplog.text
    assert expand_devices(["cpu"] * (cores + 1), check=False) == ["cpu"] * (cores + 1)  # --plan: syntax only


def test_sample_out_onto_a_symlink_writes_through_it(fixtures, tmp_path, capsys):
    """`sample --out LINK` replaced the link by a file; now the file it points to receives the samples."""
    target = tmp_path / "target.txt"
    target.write_text("old\n")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    assert main(["sample", "--checkpoint", fixtures["{CK}"], "--n", "3", "--steps", "2", "--out", str(link)]) == 0
    assert link.is_symlink() and link.resolve() == target.resolve()
    assert len(target.read_text().splitlines()) == 3
    loop = tmp_path / "loop.txt"
    loop.symlink_to(loop)
    assert main(["sample", "--checkpoint", fixtures["{CK}"], "--n", "1", "--out", str(loop)]) == 2
    assert "link loop" in capsys.readouterr().err and loop.is_symlink()


def test_ctrl_c_during_probe_does_not_promise_a_resume(fixtures, tmp_path):
    """SIGINT during `basinlab probe` said "finished work is saved and a rerun resumes"; probe does not resume."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"))
    cmd = [sys.executable, "-m", "basinlab.cli", "probe", "all", "--checkpoint", fixtures["{CK}"],
           "--samples", "100000", "--steps", "200", "--out", str(tmp_path / "p"), "--quiet", "--device", "cpu"]
    # A child inherits an ignored SIGINT (the suite run as a background job: `.ci/run &`), and Python then installs no
    # KeyboardInterrupt handler; a user's terminal delivers Ctrl-C with the default disposition, so restore it.
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(6.0)  # past the imports, into the probes (seconds on a busy CPU)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    assert "resumes" not in err and "Traceback" not in err, err[-2000:]
    assert "does not resume" in err or err.strip() == "basinlab: interrupted", err[-2000:]
