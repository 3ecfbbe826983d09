#!/usr/bin/env python
"""Size and load time of ``audit.html`` at 1,000 texts of 128 tokens (issue 17): can a researcher open it?

Builds an audit result of the requested size with synthetic per-token data (no model: the page's cost depends
only on the numbers it shows): half members with near-zero entropy and a certain top-1, half non-members with
entropies of 0-3 nats and five plausible predictions, a vocabulary of 8,192 word-like tokens, a [PAD] tail on
every fifth text. Renders the page (``render_audit_page``), writes it, and loads it in headless Chromium
(``basinlab.study.html.headless``) ``--repeat`` times, printing the page size, the render time, the load time
(navigation to the load event: parse + script that builds every token span) and the time of one sort of the
table by a score. Needs ``chromium`` on the PATH::

    python bench/audit_page.py                      # 1,000 texts x 128 tokens
    python bench/audit_page.py --texts 100 --len 32 # seconds
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402
from headless import Browser, find_chromium  # noqa: E402  (bench/headless.py, beside this script)

from basinlab.probes.audit import Score, _audit_result  # noqa: E402
from basinlab.study.html.audit_page import render_audit_page  # noqa: E402

V = 8192
PAD = 0


def synthetic_result(M: int, L: int, seed: int = 0):
    """An audit result of ``M`` texts of ``L`` tokens with made-up scores and per-token data (see the docstring)."""
    g = torch.Generator().manual_seed(seed)
    member = torch.arange(M) < M // 2
    seqs = torch.randint(4, V, (M, L), generator=g)
    mask = torch.ones(M, L, dtype=torch.bool)
    seqs[::5, L * 3 // 4:] = PAD
    mask[::5, L * 3 // 4:] = False
    H = torch.where(member[:, None], torch.rand(M, L, generator=g) * 1e-3, torch.rand(M, L, generator=g) * 3.0)
    top_ids = torch.randint(4, V, (M, L, 5), generator=g)
    top_ids[..., 0] = seqs
    p = torch.softmax(torch.randn(M, L, 5, generator=g, dtype=torch.float64) * 2, -1).sort(-1, descending=True).values
    p = torch.where(member[:, None, None], torch.tensor([1.0, 0, 0, 0, 0], dtype=torch.float64), p * 0.9)
    z = torch.where(torch.rand(M, L, generator=g) < 0.25, torch.randint(4, V, (M, L), generator=g), seqs)
    out = torch.where(member[:, None] | (torch.rand(M, L, generator=g) < 0.5), seqs, z)
    h_seq = torch.where(mask, H, 0.0).sum(1) / mask.sum(1)
    scores = [Score("entropy", "entropy", 1e-5, -1, h_seq.double()),
              Score("recovery@0.25", "basins", 0.25, +1, torch.rand(M, generator=g, dtype=torch.float64)),
              Score("fixed_point", "fixed_points", 1.0, +1, member.double()),
              Score("nelbo", "likelihood", None, -1, h_seq.double() * 2 + 1)]
    groups = ["member" if m else "nonmember" for m in member.tolist()]
    res = _audit_result(scores, groups, mask)
    res.arrays.update({"tokens/seqs": seqs, "tokens/mask": mask, "tokens/basin_t": 0.25,
                       "tokens/corrupted_id": z, "tokens/restored_id": out,
                       "tokens/entropy": torch.where(mask, H.double(), torch.nan), "tokens/top_ids": top_ids,
                       "tokens/top_probs": p})
    return res, groups


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--texts", type=int, default=1000)
    ap.add_argument("--len", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if find_chromium() is None:
        print("no chromium on the PATH (apt-get install chromium)")
        return 1
    res, groups = synthetic_result(args.texts, args.len)
    texts = ["[PAD]", "[BOS]", "[EOS]", "[UNK]"] + [f" w{i}" for i in range(4, V)]
    special = [True] * 4 + [False] * (V - 4)
    t0 = time.perf_counter()
    page = render_audit_page(res, groups, texts, special, V, "synthetic")
    render_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "audit.html"
        path.write_text(page, encoding="utf-8")
        size = path.stat().st_size
        loads, sorts, builds = [], [], []
        for _ in range(args.repeat):
            with Browser() as b:
                loads.append(b.open(path))
                assert b.eval("window.auditReady") is True and not b.errors, b.errors
                spans = b.eval("document.querySelectorAll('#rows .t').length")
                builds.append(b.eval("window.auditBuildMs") / 1000)
                sorts.append(b.eval("(() => { const t = performance.now(); "
                                    "document.querySelector('th[data-key=s0]').click(); "
                                    "return (performance.now() - t) / 1000; })()"))
    print(f"audit.html, {args.texts} texts x {args.len} tokens: {size / 1e6:.2f} MB, {spans:,} token spans")
    print(f"render (Python): {render_s:.2f} s")
    print(f"load in headless Chromium (navigation to load event), best of {args.repeat}: {min(loads):.2f} s "
          f"(all: {', '.join(f'{x:.2f}' for x in loads)})")
    print(f"of which the page's script (parse the data, build every span): {min(builds):.2f} s")
    print(f"sort by a score column: {min(sorts):.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
