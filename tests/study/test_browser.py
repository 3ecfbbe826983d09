"""audit.html and report.html in a real browser (issue 17): headless Chromium through the DevTools protocol
(bench/headless.py) loads each page from disk, and the test checks that it loads without console
errors, that the token spans and the sortable, filterable table are there and work, and saves screenshots under
the test's temporary directory. Skips only where no Chromium is installed (``.ci/run`` installs Debian's)."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

from basinlab.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from headless import Browser, find_chromium

pytestmark = pytest.mark.skipif(find_chromium() is None,
                                reason="no chromium on the PATH (.ci/run installs it: apt-get install chromium)")


@pytest.fixture(scope="module")
def audit_dir(tmp_path_factory) -> Path:
    """``basinlab audit`` of a converted toy run with a WordPiece vocabulary: members, non-members and texts."""
    from tests.probes.test_audit import _toy_run

    tmp = tmp_path_factory.mktemp("audit")
    words = [f"w{i}" for i in range(28)]
    vocab = tmp / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<", ">", "&", "b", *words]) + "\n")
    run, _ = _toy_run(tmp, tokenizer=vocab)
    (tmp / "m.txt").write_text("w1 w2 w3 w4 w5\nw4 w5\nw7 <b>&amp;</b> w8\n")
    (tmp / "n.txt").write_text("w9 w9 w9 w9\nw0\nw11 w12 w13\n")
    (tmp / "t.txt").write_text("w20 w21 w27\n")
    out = tmp / "out"
    assert main(["audit", "--checkpoint", str(run), "--members", str(tmp / "m.txt"), "--nonmembers",
                 str(tmp / "n.txt"), "--texts", str(tmp / "t.txt"), "--out", str(out), "--steps", "3",
                 "--nelbo-times", "1", "--quiet"]) == 0
    return out


def _rows(b: Browser) -> list[dict]:
    return b.eval("Array.from(document.querySelectorAll('#rows tr')).map(tr => ({m: +tr.dataset.m, "
                  "group: tr.dataset.group, hidden: tr.hidden}))")


def test_audit_page_in_chromium(audit_dir, tmp_path):
    tokens = pd.read_parquet(audit_dir / "tokens.parquet")
    scores = pd.read_csv(audit_dir / "scores.csv")
    with Browser() as b:
        b.open(audit_dir / "audit.html")
        assert b.eval("window.auditReady") is True
        assert b.errors == []
        b.screenshot(tmp_path / "audit.png", full_page=True)
        # one span per token, runs of one special token (the [PAD] tail) collapsed to one span each
        same = (tokens["special"] & ~tokens["real"] & ~tokens["real"].shift(fill_value=True)
                & (tokens["token_id"] == tokens["token_id"].shift())
                & (tokens["text_index"] == tokens["text_index"].shift()))
        assert b.eval("document.querySelectorAll('#rows .t').length") == int((~same).sum()) < len(tokens)
        assert b.eval("document.querySelectorAll('#rows .t.sp').length") >= len(scores)  # [CLS] per text at least
        # user text is escaped: the member line with <b> shows it as text, no element is created
        assert b.eval("document.querySelectorAll('#rows b').length") == 0
        assert "<" in b.eval("document.getElementById('rows').textContent")
        # sort by the entropy column: ascending, then descending on a second click
        ent = scores["entropy"].to_list()
        b.eval("document.querySelector('th[data-key=s0]').click()")
        order = [r["m"] for r in _rows(b)]
        assert [ent[m] for m in order] == sorted(ent)
        b.eval("document.querySelector('th[data-key=s0]').click()")
        assert [ent[m] for m in (r["m"] for r in _rows(b))] == sorted(ent, reverse=True)
        b.eval("document.querySelector('th[data-key=group]').click()")
        assert [r["group"] for r in _rows(b)] == sorted(scores["group"])
        # filter by group
        b.eval("const s = document.getElementById('group'); s.value = 'nonmember'; "
               "s.dispatchEvent(new Event('change'))")
        shown = [r for r in _rows(b) if not r["hidden"]]
        assert len(shown) == 3 and all(r["group"] == "nonmember" for r in shown)
        assert b.eval("document.getElementById('shown').textContent").startswith("3 of 7")
        # hovering a token shows its entropy, top-5 and the basin outcome
        b.eval("const e = document.querySelector('#rows tr:not([hidden]) .t:not(.sp)'); "
               "e.scrollIntoView({block: 'center'}); const r = "
               "e.getBoundingClientRect(); e.dispatchEvent(new MouseEvent('mouseover', {bubbles: true, "
               "clientX: r.left + 2, clientY: r.top + 2}))")
        tip = b.eval("document.getElementById('tip').innerText")
        assert "nats" in tip and "top-5" in tip and "basin test at t = 0.25" in tip
        assert b.eval("getComputedStyle(document.getElementById('tip')).display") == "block"
        b.screenshot(tmp_path / "audit_hover.png")
        assert b.errors == []
    assert (tmp_path / "audit.png").stat().st_size > 10_000


@pytest.fixture(scope="module")
def report_path(tmp_path_factory, toy_sweep) -> Path:
    import shutil

    from basinlab.study.report import write_report

    return write_report(shutil.copytree(toy_sweep, tmp_path_factory.mktemp("sweep") / "sweep"))


def test_report_page_in_chromium(report_path, tmp_path):
    with Browser() as b:
        b.open(report_path)
        assert b.errors == []
        assert b.eval("document.images.length") >= 4
        assert b.eval("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        assert b.eval("document.querySelectorAll('.tok').length") > 0  # the restoration examples' tokens
        # the examples' sentences shaded by entropy at the smallest and largest N, test and training sentences
        shaded = b.eval("Array.from(document.querySelectorAll('table.ex th')).filter(th => "
                        "th.textContent.startsWith('entropy, N = ') || /^N = \\d+ \\(mean/.test(th.textContent))"
                        ".map(th => th.textContent.split(' (')[0])")
        assert {"entropy, N = 8", "entropy, N = 32", "N = 8", "N = 32"} <= set(shaded), shaded
        assert b.eval("document.querySelectorAll('table.ex .t[class*=h]').length") > 20
        assert b.eval("document.querySelector('.legend') !== null")
        heads = b.eval("Array.from(document.querySelectorAll('h2')).map(h => h.textContent)")
        assert "Training" in heads and "Provenance" in heads
        assert "basinlab" in b.eval("document.body.innerText.split('Provenance')[1]")
        b.screenshot(tmp_path / "report.png", full_page=True)
    assert (tmp_path / "report.png").stat().st_size > 10_000
