"""The contrast of forward processes (issue 15 item 5): ``sweep.processes: [uniform, masked]`` keys the runs by
process, the uniform rows are those of the same sweep without the masked runs (the golden toy sweep's, pinned),
and the report shows both families side by side."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from basinlab.config import load_config
from basinlab.study.report import write_report
from basinlab.study.store import RunKey, label_process, model_label
from basinlab.study.sweep import plan_runs, run_sweep
from tests.study._golden import TOY

CONTRAST = [*TOY, "sweep.processes=[uniform, masked]"]


def test_labels_and_plan():
    assert model_label("micro") == "micro" and model_label("micro", "masked") == "micro@masked"
    assert label_process("micro@masked") == "masked" and label_process("oracle:markov") == "uniform"
    assert RunKey(16, 0, "micro@masked").name == "N16-s0-masked"
    assert RunKey(16, 0, "oracle:markov@masked").name == "N16-s0-oracle-markov-masked"
    cfg = load_config(None, CONTRAST)
    runs = plan_runs(cfg)
    uniform = plan_runs(load_config(None, TOY))
    assert [k for k in runs if label_process(k.model) == "uniform"] == uniform  # the demo's runs, unchanged
    assert [k.model for k in runs if k.N == 8 and label_process(k.model) == "masked"][0] == "micro@masked"
    assert len({k.name for k in runs}) == len(runs)


@pytest.fixture(scope="module")
def contrast_sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("contrast")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = load_config(None, [*CONTRAST, f"data.cache_dir={tmp / 'cache'}"])
        return run_sweep(cfg, tmp / "sweep", progress=False)
    finally:
        torch.set_num_threads(before)


def _rows(df: pd.DataFrame) -> dict[tuple, float | None]:
    out = {}
    for r in df.to_dict("records"):
        t = None if pd.isna(r["t"]) else float(r["t"])
        out[(r["N"], r["model"], r["probe"], r["set"], t, r["metric"])] = (
            None if pd.isna(r["value"]) else float(r["value"]))
    return out


def test_uniform_rows_are_the_uniform_sweeps(contrast_sweep, toy_sweep):
    """The uniform rows equal this session's uniform-only toy sweep (same machine, so to rounding; that sweep is
    compared with the pinned file within tolerance by test_golden)."""
    got = pd.read_csv(contrast_sweep / "results.csv")
    pinned = _rows(pd.read_csv(toy_sweep / "results.csv"))
    uniform = _rows(got[got["model"].map(label_process) == "uniform"])
    assert uniform.keys() == pinned.keys()
    for k, v in pinned.items():
        assert (v is None) == (uniform[k] is None), k
        assert v is None or math.isclose(uniform[k], v, rel_tol=1e-12, abs_tol=1e-15), k
    masked = got[got["model"] == "micro@masked"]
    assert sorted(masked["N"].unique()) == [8, 32]
    assert not (masked["metric"] == "unstable_rate").any()
    assert (masked["metric"] == "membership_auc").any()
    assert (contrast_sweep / "runs" / "N8-s0-masked" / "examples.json").is_file()


def test_report_shows_both_processes(contrast_sweep):
    page = write_report(contrast_sweep).read_text()
    assert "Forward processes side by side" in page and "micro@masked" in page
    assert (contrast_sweep / "plots" / "contrast.png").is_file()
    assert "impossible by construction" in page
