"""The pieces of the HTML views (issue 17) that need no browser: the entropy colour scale, token spans (escaping,
special-token runs), the report's restoration lines, the N* interpolation note and the provenance."""

from __future__ import annotations

import math

import pytest

from basinlab.study.html import examples, shading
from basinlab.study.report_extras import interpolation_note, provenance


def test_colour_bins_follow_the_square_root_scale():
    h_max = 2.0
    edges = shading.bin_edges(h_max)
    assert edges[0] == 0 and edges[-1] == pytest.approx(h_max) and len(edges) == len(shading.PALETTE) + 1
    for i in range(len(shading.PALETTE)):
        mid = (edges[i] + edges[i + 1]) / 2
        assert shading.bin_of(mid, h_max) == i
    assert shading.bin_of(0.0, h_max) == 0 and shading.bin_of(50.0, h_max) == len(shading.PALETTE) - 1
    assert shading.bin_of(None, h_max) is None and shading.bin_of(math.nan, h_max) is None
    assert shading.scale_max([0.1, 1.26, None], 10_000) == 1.5
    assert shading.scale_max([9.0], 32) == pytest.approx(math.ceil(math.log(32) * 2) / 2)  # at most log V, rounded


def test_token_spans_escape_and_collapse_padding():
    texts = ["[BOS]", " <b>", "&x", "[PAD]", "[PAD]", "[PAD]"]
    h = [None, 0.001, 1.9, None, None, None]
    out = shading.tokens_html(texts, h, 2.0, special=[True, False, False, True, True, True])
    assert "<b>" not in out and "&lt;b&gt;" in out and "&amp;x" in out
    assert out.count('class="t sp"') == 2 and "[PAD]×3" in out
    assert 'class="t h0"' in out and 'class="t h9"' in out and "H = 0.001 nats" in out


def test_restored_line_marks_and_collapses_special_runs():
    ref = [5, 6, 7, 8, 9]
    corrupted = [5, 1, 1, 1, 9]
    restored = [5, 0, 0, 0, 9]  # three words replaced by [PAD]
    tokens = ["a", "[PAD]", "[PAD]", "[PAD]", "e"]
    line = examples.tokens_line(tokens, ref, restored, corrupted, [True] * 5)
    assert line.count("⟨[PAD]×3⟩") == 1 and 'class="bad"' in line
    ok = examples.tokens_line(["a", "b", "c", "d", "e"], ref, ref, corrupted, [True] * 5)
    assert ok.count('class="ok"') == 3


def test_interpolation_note():
    assert "between N = 128 and N = 1024" in interpolation_note(300.0, [16, 128, 1024, 8192])
    assert interpolation_note(128.0, [16, 128, 1024]) == ""  # on a grid size
    assert interpolation_note(None, [16, 128]) == "" and interpolation_note(9.0, [16, 128]) == ""


def test_provenance_names_version_date_host_and_command():
    import basinlab

    p = provenance()
    assert p["basinlab"] == basinlab.__version__ and p["date"].endswith("UTC") and p["host"] and p["command"]


def test_audit_page_without_members_has_no_roc_and_carries_the_tokens(tmp_path):
    """Texts only (no member/non-member labels): no ROC section; the data block holds every token's entropy."""
    import json

    import torch

    from basinlab.config import load_config
    from basinlab.data import build_dataset
    from basinlab.diffusion import get_schedule
    from basinlab.oracles import EmpiricalDenoiser
    from basinlab.probes.audit import audit
    from basinlab.probes.tokens import token_texts
    from basinlab.study.html.audit_page import render_audit_page

    cfg = load_config("demo", ["data.markov_pool=300", "data.n_test=20", "data.n_train=8",
                               f"data.cache_dir={tmp_path}"])
    data = build_dataset(cfg.data)
    den = EmpiricalDenoiser(data.train(8), data.vocab_size, get_schedule("loglinear", 1e-3))
    seqs = torch.cat([data.train(8)[:3], data.test[:2]])
    res = audit(den, seqs, ts=(0.25,), steps=4, nelbo_times=1)
    texts, special = token_texts(None, data.vocab_size)
    page = render_audit_page(res, ["text"] * 5, texts, special, data.vocab_size, "<run>", markov=True)
    assert "Members against non-members" not in page and "&lt;run&gt;" in page
    blob = json.loads(page.split('<script type="application/json" id="data">')[1].split("</script>")[0])
    assert len(blob["texts"]) == 5 and all(len(r["h"]) == seqs.shape[1] for r in blob["texts"])
    h = res.arrays["tokens/entropy"]
    assert blob["texts"][0]["h"][0] == pytest.approx(float(h[0, 0]), rel=1e-2, abs=1e-9)
    assert max(abs(v) for r in blob["texts"][:3] for v in r["h"]) < 1e-6  # the memoriser's own sequences
