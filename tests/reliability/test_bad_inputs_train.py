"""Bad input to ``basinlab train`` (and to what reads a run: ``nll``, ``basinlab.load``): every case is refused with
exit code 2, one line on stderr, no traceback, and nothing written or deleted (issue 10, items 2, 5-9 and 12).

The tables below are counted in docs/RELIABILITY.md: keep ``VALUE_CASES``, ``FILE_CASES`` and ``RUN_CASES`` flat.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import yaml

from basinlab.cli import main
from basinlab.training.checkpoint import find_checkpoint

from .conftest import TINY

pytestmark = pytest.mark.reliability

#: (id, overrides, what the line must say); a fresh run directory that must not be created
VALUE_CASES = [
    ("lr-nan", ["train.lr=nan"], "train.lr"),
    ("beta1-2", ["train.beta1=2"], "train.beta1"),
    ("seed-huge", ["train.seed=99999999999999999999"], "train.seed"),
    ("schedule-list", ["train.schedule=[1]"], "train.schedule"),
    ("preset-list", ["model.preset=[micro]"], "model.preset"),
    ("out-dir-list", ["out_dir=[1,2]"], "out_dir"),
    ("sweep-seed-path", ["sweep.seeds=['../../x']"], "sweep.seeds"),
    ("antithetic-maybe", ["train.antithetic=maybe"], "train.antithetic"),
    ("grad-clip-nan", ["train.grad_clip=nan"], "train.grad_clip"),
    ("sizes-fraction", ["sweep.sizes=[16.7]"], "sweep.sizes"),
    ("probe-ts-2", ["probe.ts=[2.0]"], "probe.ts"),
    ("markov-vocab-huge", ["data.markov_vocab=1000000"], "data.markov_vocab=1000000 needs about"),
    ("model-huge", ["model.d_model=16384", "model.n_head=64", "model.n_layer=64"], "needs about"),
    ("steps-negative", ["train.steps=-1"], "train.steps"),
    ("objective-unknown", ["train.objective=ce_all"], "train.objective"),
    ("key-unknown", ["train.stpes=3"], "train.stpes"),
    ("source-unknown", ["data.source=nope"], "data.source"),
    ("accum-indivisible", ["train.batch_size=10", "train.grad_accum=4"], "train.batch_size"),
    ("preset-unknown", ["model.preset=huge"], "model preset"),
    ("device-unknown", ["train.device=tpu"], "train.device"),
    ("lr-word", ["train.lr=fast"], "train.lr"),
    ("n-train-too-big", ["data.n_train=100000"], "data.n_train"),
    ("dropout-1", ["model.dropout=1.0"], "model.dropout"),
    ("ema-1", ["train.ema=1"], "train.ema"),
    ("warmup-float", ["train.warmup_steps=2.5"], "train.warmup_steps"),
    ("lr-decay-unknown", ["train.lr_decay=step"], "train.lr_decay"),
    # issue 18, finding 9: YAML 1.1 number forms and non-ASCII digits were read as numbers
    ("steps-hex", ["train.steps=0x10"], "train.steps"),
    ("steps-underscore", ["train.steps=1_000"], "train.steps"),
    ("steps-octal", ["train.steps=010"], "train.steps"),
    ("steps-arabic-indic", ["train.steps=\u0661\u0660"], "train.steps"),
    ("lr-underscore", ["train.lr=1_0.5"], "train.lr"),
    ("path-with-markov", ["data.path=/nonexistent"], "data.path"),
    # finding 1: `16:32` was the base-60 integer 992; in a list it is no integer
    ("sizes-base-60-in-a-list", ["sweep.sizes=[16:32]"], "sweep.sizes"),
    ("sizes-not-a-range", ["sweep.sizes=16:32:2:2"], "sweep.sizes"),
]


def _config(tmp_path: Path, **extra) -> Path:
    path = tmp_path / "cfg.yaml"
    values = {"data": {"cache_dir": str(tmp_path.parent / "cache")}, "train": {"steps": 2}}
    for section, items in extra.items():
        values.setdefault(section, {}).update(items)
    path.write_text(yaml.safe_dump(values))
    return path


def _snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every file and directory under ``root`` with its size and content hash: 'nothing written or deleted'."""
    if not root.exists():
        return {}
    if root.is_file():
        return {".": (root.stat().st_size, hashlib.sha256(root.read_bytes()).hexdigest())}
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = (0, "dir") if p.is_dir() else (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def _refused(capsys, argv: list[str], match: str, watch: Path) -> None:
    before = _snapshot(watch)
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("basinlab: error:"), err
    assert "Traceback" not in err and match in err, err
    assert _snapshot(watch) == before, f"something was written or deleted under {watch}"


@pytest.mark.parametrize("case", VALUE_CASES, ids=[c[0] for c in VALUE_CASES])
def test_bad_values_are_refused(case, tmp_path, capsys) -> None:
    _, overrides, match = case
    out = tmp_path / "run"
    argv = ["train", _config(tmp_path), *TINY, *overrides]
    if not any(o.startswith("out_dir=") for o in overrides):
        argv += ["--out", out]
    _refused(capsys, argv + ["--quiet"], match, out)
    assert not out.exists()


def test_bad_values_in_a_config_file(tmp_path, capsys) -> None:
    """The same validation for a YAML file as for overrides (probe.ts=[2.0] was accepted from a file)."""
    cfg = _config(tmp_path, probe={"ts": [2.0]})
    _refused(capsys, ["train", cfg, *TINY, "--out", tmp_path / "run"], "probe.ts", tmp_path / "run")


def _alias_bomb(levels: int) -> str:
    """A YAML "billion laughs" inside one value: 9 strings, then each level 9 copies of the one below."""
    inner = "&a0 [" + ", ".join(["lol"] * 9) + "]"
    for i in range(1, levels + 1):
        inner = f"&a{i} [{inner}" + f", *a{i - 1}" * 8 + "]"
    return inner


@pytest.mark.parametrize(("name", "text", "match"), [
    ("empty", "# nothing here\n", "is empty"),
    ("duplicate-key", "train:\n  steps: 5\n  lr: 0.001\n  steps: 7\n", "given twice"),
    ("sizes-unquoted-range", "sweep:\n  sizes: 16:32:2:2\n", "sweep.sizes"),
    ("alias-bomb-in-one-value", f"data:\n  path: {_alias_bomb(9)}\n", "aliases expand"),
    ("small-alias-bomb-in-one-value", f"data:\n  path: {_alias_bomb(4)}\n", "data.path"),
])
def test_bad_config_files(tmp_path, name, text, match) -> None:
    """Issue 18, findings 7 and 9: an empty file gave all defaults, a duplicate key kept the last, an alias bomb in
    data.path hung while the error message printed its expansion. Each is one short line, at once (a child process
    with a timeout: the bug was a hang)."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(text)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"))
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "basinlab.cli", "train", str(cfg), "--out", str(out), "--quiet"],
                          env=env, capture_output=True, text=True, timeout=120)
    err = done.stderr.strip()
    assert done.returncode == 2, err[-2000:]
    assert len(err.splitlines()) == 1 and match in err and len(err) < 400, err[:2000]
    assert not out.exists()


def test_grid_ranges_are_ranges_not_base_60(tmp_path) -> None:
    """Issue 18, finding 1: `sweep.sizes=16:32` planned N = 992 (YAML 1.1 read 16:32 as 16*60+32). It is the
    documented geometric range now, unquoted, as an override or in a file."""
    from basinlab.config import load_config, resolve_sizes

    for given, sizes in (("16:32", [16, 32]), ("2:8", [2, 4, 8]), ("16:32:2", [16, 32]),
                         ("16:1024:4", [16, 64, 256, 1024])):
        assert resolve_sizes(load_config(None, [f"sweep.sizes={given}"]).sweep.sizes) == sizes, given
    path = tmp_path / "grid.yaml"
    path.write_text("sweep:\n  sizes: 16:64\n")
    assert resolve_sizes(load_config(path).sweep.sizes) == [16, 32, 64]


def test_one_validation_for_the_python_api(tmp_path) -> None:
    from basinlab.config import Config
    from basinlab.errors import BasinlabError
    from basinlab.training.trainer import train

    cfg = Config()
    cfg.probe.ts = [2.0]
    with pytest.raises(BasinlabError, match=r"probe\.ts"):
        train(cfg, out_dir=tmp_path / "run")
    cfg = Config()
    cfg.train.antithetic = "maybe"
    with pytest.raises(BasinlabError, match="train.antithetic"):
        cfg.validate()
    assert not (tmp_path / "run").exists()


# ---- the file system ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 2-step run, copied by each test that damages it."""
    tmp = tmp_path_factory.mktemp("trained")
    assert main(["train", str(_config(tmp)), *TINY, "--out", str(tmp / "run"), "--quiet"]) == 0
    return tmp


def _copy_run(trained: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(trained / "run", run, symlinks=True)
    return run




def test_out_is_a_file(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    out.write_text("my notes\n")
    _refused(capsys, ["train", _config(tmp_path), *TINY, "--out", out], "is a file", out)


def test_out_below_a_file(tmp_path, capsys) -> None:
    (tmp_path / "notes").write_text("my notes\n")
    _refused(capsys, ["train", _config(tmp_path), *TINY, "--out", tmp_path / "notes" / "run"], "not writable",
             tmp_path / "notes")


def test_cache_dir_is_a_file(tmp_path, capsys) -> None:
    cache = tmp_path / "cachefile"
    cache.write_text("not a directory\n")
    _refused(capsys, ["train", _config(tmp_path), *TINY, f"data.cache_dir={cache}", "--out", tmp_path / "run"],
             "data.cache_dir", cache)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["latest", "metrics.csv"])
def test_a_directory_where_a_file_belongs(trained, tmp_path, capsys, name) -> None:
    run = _copy_run(trained, tmp_path)
    (run / name).unlink()
    (run / name).mkdir()
    (run / name / "keep.txt").write_text("mine\n")
    _refused(capsys, ["train", _config(tmp_path, train={"steps": 4}), *TINY, "--out", run], "is a directory", run)


def test_config_is_a_directory(tmp_path, capsys) -> None:
    (tmp_path / "conf.d").mkdir()
    _refused(capsys, ["train", tmp_path / "conf.d", "--out", tmp_path / "run"], "is a directory", tmp_path)


def test_config_is_binary(tmp_path, capsys) -> None:
    blob = tmp_path / "weights.yaml"
    blob.write_bytes(bytes(range(256)) * 8)
    _refused(capsys, ["train", blob, "--out", tmp_path / "run"], "not text", tmp_path)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_read_only_run_directory(tmp_path) -> None:
    """As an unprivileged user (root writes anywhere): a run directory it cannot write is one line, exit 2."""
    tmp_path = Path(tempfile.mkdtemp(prefix="basinlab-ro-", dir="/tmp"))  # pytest's tmp is private to root
    try:
        _read_only_run(tmp_path)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def _read_only_run(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    run = tmp_path / "run"
    run.mkdir(mode=0o755)
    cfg = _config(tmp_path)
    cache = tmp_path / "cache2"
    cache.mkdir(mode=0o777)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), HOME=str(cache))
    cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "basinlab.cli",
           "train", str(cfg), *TINY, f"data.cache_dir={cache}", "--out", str(run), "--quiet"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "not writable" in lines[0], res.stderr
    assert list(run.iterdir()) == []


# ---- checkpoints --------------------------------------------------------------------------------------------


def test_latest_leading_outside_the_run(trained, tmp_path, capsys) -> None:
    run = _copy_run(trained, tmp_path)
    other = tmp_path / "other"
    shutil.copytree(trained / "run", other)
    (run / "latest").write_text("../other/ckpt-00000002\n")
    _refused(capsys, ["train", _config(tmp_path, train={"steps": 4}), *TINY, "--out", run], "latest", tmp_path)
    (run / "latest").write_text("ckpt-00000009\n")
    shutil.rmtree(run / "ckpt-00000002")
    (run / "ckpt-00000009").symlink_to(other / "ckpt-00000002")
    _refused(capsys, ["train", _config(tmp_path, train={"steps": 4}), *TINY, "--out", run], "outside", tmp_path)
    _refused(capsys, ["nll", "--checkpoint", run, "--n", "4"], "outside", tmp_path)


def _rewrite_manifest(ckpt: Path) -> None:
    manifest = json.loads((ckpt / "manifest.json").read_text())
    for name, entry in manifest["files"].items():
        data = (ckpt / name).read_bytes()
        entry.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    (ckpt / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(("key", "value"), [("model", {"n_layer": 2}), ("train", {"schedule": "cosine"}),
                                            ("data", {"seq_len": 16})])
def test_an_edited_checkpoint_config_is_refused(trained, tmp_path, capsys, key, value) -> None:
    """Issue 18, finding 9: a checkpoint's config.yaml edited (its manifest re-hashed) to disagree with meta.json
    was used; now every reader refuses it, and nothing is written."""
    run = _copy_run(trained, tmp_path)
    ckpt = find_checkpoint(run)
    values = yaml.safe_load((ckpt / "config.yaml").read_text())
    values[key].update(value)
    (ckpt / "config.yaml").write_text(yaml.safe_dump(values))
    _rewrite_manifest(ckpt)
    word = f"{key}.{next(iter(value))}"
    _refused(capsys, ["nll", "--checkpoint", run, "--n", "4"], word, tmp_path)
    _refused(capsys, ["train", _config(tmp_path, train={"steps": 4}), *TINY, "--out", run], word, tmp_path)


def test_resume_from_weights_of_the_wrong_shape(trained, tmp_path, capsys) -> None:
    from safetensors.torch import load_file, save_file

    run = _copy_run(trained, tmp_path)
    ckpt = find_checkpoint(run)
    for name in ("model.safetensors", "ema.safetensors"):
        w = load_file(str(ckpt / name))
        w = {k: torch.zeros(*(2 * s for s in v.shape)) for k, v in w.items()}  # every tensor twice as large
        save_file(w, str(ckpt / name))
    _rewrite_manifest(ckpt)
    _refused(capsys, ["train", _config(tmp_path, train={"steps": 4}), *TINY, "--out", run], "do not fit", run)


def test_a_checkpoint_basinlab_did_not_complete_is_never_overwritten(trained, tmp_path, capsys) -> None:
    """latest and manifest.json gone: train used to restart at step 0 and delete the intact weights."""
    run = _copy_run(trained, tmp_path)
    (run / "latest").unlink()
    (find_checkpoint(run) / "manifest.json").unlink()
    _refused(capsys, ["train", _config(tmp_path, train={"steps": 4}), *TINY, "--out", run], "ckpt-00000002", run)
    _refused(capsys, ["train", _config(tmp_path, train={"steps": 4}), *TINY, "--out", run, "--no-resume"],
             "ckpt-00000002", run)


def test_saves_delete_only_what_basinlab_wrote(trained, tmp_path, capsys) -> None:
    run = _copy_run(trained, tmp_path)
    for name in ("ckpt-best", "ckpt-00000001-notes", "ckpt-1"):
        (run / name).mkdir()
        (run / name / "keep.txt").write_text("mine\n")
    (run / "ckpt-notes.txt").write_text("mine\n")
    cfg = _config(tmp_path, train={"steps": 5, "ckpt_every": 1})
    assert main(["train", str(cfg), *TINY, "--out", str(run), "--quiet"]) == 0
    capsys.readouterr()
    names = sorted(p.name for p in run.iterdir() if p.name.startswith("ckpt"))
    assert names == ["ckpt-00000001-notes", "ckpt-00000005", "ckpt-1", "ckpt-best", "ckpt-notes.txt"]
    assert main(["train", str(cfg), *TINY, "--out", str(run), "--quiet", "--no-resume"]) == 0
    names = sorted(p.name for p in run.iterdir() if p.name.startswith("ckpt"))
    assert names == ["ckpt-00000001-notes", "ckpt-00000005", "ckpt-1", "ckpt-best", "ckpt-notes.txt"]
    assert all((run / n / "keep.txt").read_text() == "mine\n" for n in ("ckpt-best", "ckpt-1"))


# ---- the data a run was trained on --------------------------------------------------------------------------


def _sentences(shift: int) -> str:
    nouns = ["cat", "dog", "bird", "fish", "horse", "mouse", "lion", "bear", "wolf", "fox", "owl", "crow"]
    verbs = ["sees", "likes", "chases", "follows", "hears", "finds", "meets", "helps"]
    lines = [f"the {a} {v} the {b}" for a in nouns for v in verbs for b in nouns[shift:shift + 4] if a != b]
    return "\n".join(lines) + "\n"


def test_a_changed_data_file_is_refused(tmp_path, capsys) -> None:
    text = tmp_path / "corpus.txt"
    text.write_text(_sentences(0))
    cfg = _config(tmp_path, data={"source": "text", "path": str(text), "n_test": 20, "n_train": 64, "seq_len": 8,
                                  "vocab_size": 48})
    base = ["train", str(cfg), "model.n_layer=1", "model.d_model=32", "model.n_head=2", "model.d_cond=16",
            "train.batch_size=8", "train.device=cpu"]
    run = tmp_path / "run"
    assert main([*base, "--out", str(run), "--quiet"]) == 0
    assert (find_checkpoint(run) / "tokenizer.json").is_file()  # the run carries its own tokenizer
    assert main(["nll", "--checkpoint", str(run), "--n", "4", "--times", "1", "--device", "cpu"]) == 0
    capsys.readouterr()
    text.write_text(_sentences(4))  # same size of vocabulary, other words: ids would be remapped silently
    _refused(capsys, ["nll", "--checkpoint", run, "--n", "4", "--times", "1", "--device", "cpu"], str(text), run)
    _refused(capsys, [*base, "train.steps=4", "--out", run], str(text), run)
    text.write_text(_sentences(0))  # restored: the run works again
    assert main(["nll", "--checkpoint", str(run), "--n", "4", "--times", "1", "--device", "cpu"]) == 0
