import pytest

from basinlab.config import Config, load_config, parse_overrides
from basinlab.errors import BasinlabError


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  source: markov\n  seq_len: 16\ntrain:\n  steps: 7\n")
    cfg = load_config(path, ["train.steps=9", "probe.ts=[0.1, 0.5]", "model.dropout=0.0"])
    assert cfg.data.source == "markov" and cfg.data.seq_len == 16
    assert cfg.train.steps == 9
    assert cfg.probe.ts == [0.1, 0.5]
    assert cfg.model.dropout == 0.0


def test_round_trip(tmp_path):
    cfg = load_config(None, ["train.lr=0.001", "out_dir=somewhere"])
    cfg.save(tmp_path / "cfg.yaml")
    again = load_config(tmp_path / "cfg.yaml")
    assert again.to_dict() == cfg.to_dict()
    assert isinstance(again, Config)


def test_unknown_key_names_valid_keys(tmp_path):
    with pytest.raises(BasinlabError, match="unknown config key 'train.stpes'.*steps"):
        load_config(None, ["train.stpes=3"])
    path = tmp_path / "bad.yaml"
    path.write_text("trian:\n  steps: 3\n")
    with pytest.raises(BasinlabError, match="unknown config key 'trian'"):
        load_config(path)


def test_bad_inputs(tmp_path):
    with pytest.raises(BasinlabError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(BasinlabError, match="unknown preset"):
        load_config("no_such_preset")
    with pytest.raises(BasinlabError, match="section.key=value"):
        parse_overrides(["train.steps"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(BasinlabError, match="not valid YAML"):
        load_config(bad)


def test_quick_probe_settings():
    cfg = load_config(None, ["probe.quick=true"])
    assert cfg.probe.m == 128 and cfg.probe.steps == 25 and cfg.probe.n_samples == 64
    cfg = load_config(None, ["probe.quick=true", "probe.m=16", "probe.steps=5", "probe.n_samples=3"])
    assert (cfg.probe.m, cfg.probe.steps, cfg.probe.n_samples) == (16, 5, 3)  # a cap, never a raise
    from basinlab.probes import resolve_probe_config

    pc = load_config(None).probe
    pc.quick = True
    q = resolve_probe_config(pc)
    assert (q.m, q.steps, q.n_samples) == (128, 25, 64) and pc.m == 5000  # a copy


def test_scientific_notation_becomes_float(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 1e-3\n  t_eps: 2e-4\n  steps: 10\n")
    cfg = load_config(path, ["train.eps=1e-4", "train.weight_decay=1"])
    assert cfg.train.lr == 1e-3 and isinstance(cfg.train.lr, float)
    assert cfg.train.t_eps == 2e-4 and cfg.train.eps == 1e-4
    assert isinstance(cfg.train.weight_decay, float) and cfg.train.steps == 10
    with pytest.raises(BasinlabError, match="must be a finite number"):
        load_config(None, ["train.lr=fast"])


def test_a_folder_named_like_a_preset_does_not_hide_it(tmp_path, monkeypatch):
    """`basinlab sweep --preset contrast` run where a folder `contrast/` exists (e.g. an earlier run) still reads the
    packaged preset; a folder with no preset of its name is refused as a directory."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "contrast").mkdir()
    (tmp_path / "mine").mkdir()
    assert load_config("contrast").sweep.processes == ["uniform", "masked"]
    with pytest.raises(BasinlabError, match="is a directory"):
        load_config("mine")
