"""Token shading by leave-one-out conditional entropy (SPEC 5), shared by the audit page and the sweep report:
one colour scale (viridis, 10 bins from 0 to ``h_max`` nats on a square-root scale, so that near-zero entropy
stands apart from a fraction of a nat; low entropy = dark = memorised) and its legend."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

#: viridis at 10 evenly spaced points: bin 0 (near-zero entropy) is the darkest
PALETTE = ("#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b",
           "#fde725")
#: bins whose colour is dark enough to need white text
DARK_BINS = 5


def scale_max(entropies: Sequence[float], vocab_size: int) -> float:
    """Top of the colour scale: the largest finite entropy seen, at least 0.5 nats, at most ``log V``, rounded up
    to a multiple of 0.5 nats so that the legend reads in round numbers."""
    finite = [h for h in entropies if h is not None and math.isfinite(h)]
    top = max(finite, default=0.5)
    top = min(max(top, 0.5), math.log(max(vocab_size, 2)))
    return math.ceil(top * 2 - 1e-9) / 2


def bin_of(h: float | None, h_max: float) -> int | None:
    """The colour bin of entropy ``h`` (None off the real tokens)."""
    if h is None or not math.isfinite(h):
        return None
    return min(len(PALETTE) - 1, max(0, int(math.sqrt(max(h, 0.0) / h_max) * len(PALETTE))))


def bin_edges(h_max: float) -> list[float]:
    """The lower edge of each bin in nats: ``h_max (i / n)²``."""
    n = len(PALETTE)
    return [h_max * (i / n) ** 2 for i in range(n + 1)]


def css() -> str:
    """CSS classes ``.h0`` .. ``.h9`` (background per bin) and the token box styles."""
    rules = [f".h{i}{{background:{c};color:{'#fff' if i < DARK_BINS else '#111'}}}" for i, c in enumerate(PALETTE)]
    return "\n".join(rules)


def legend_html(h_max: float) -> str:
    """A legend of the scale: one swatch per bin with its range in nats."""
    n, edges = len(PALETTE), bin_edges(h_max)
    cells = []
    for i in range(n):
        lo, hi = edges[i], edges[i + 1]
        label = f"{lo:.2g}–{hi:.2g}" if i < n - 1 else f"≥ {lo:.2g}"
        cells.append(f'<span class="sw h{i}" title="{html.escape(label)} nats">{html.escape(label)}</span>')
    return ('<div class="legend"><b>leave-one-out entropy (nats)</b> ' + "".join(cells)
            + ' <span class="lnote">dark = the model is certain of the token (memorised)</span></div>')


def tokens_html(texts: Sequence[str], entropies: Sequence[float | None], h_max: float,
                special: Sequence[bool] | None = None, marks: Sequence[str] | None = None) -> str:
    """One ``<span>`` per token shaded by its entropy (title: entropy in nats); special tokens boxed, runs of one
    special token off the real tokens (entropy None, e.g. PAD) collapsed to ``[PAD]×n``. ``marks``: an extra CSS
    class per token (e.g. ``chg`` for a corrupted position)."""
    out: list[str] = []
    i, n = 0, len(texts)
    while i < n:
        sp = bool(special[i]) if special is not None else False
        j = i + 1
        while sp and entropies[i] is None and j < n and special[j] and texts[j] == texts[i] and entropies[j] is None:
            j += 1
        b = bin_of(entropies[i], h_max)
        cls = ["t", "sp" if sp else "", f"h{b}" if b is not None else "", marks[i] if marks else ""]
        title = "special token" if b is None else f"H = {entropies[i]:.3g} nats"
        blank = not texts[i].strip() and not sp  # a space token: a shaded gap
        label = texts[i] if blank else texts[i].strip() + (f"×{j - i}" if j - i > 1 else "")
        lead = " " if (texts[i][:1].isspace() and not blank) or sp else ""
        out.append(f'{lead}<span class="{" ".join(c for c in cls if c)}" title="{html.escape(title)}">'
                   f"{html.escape(label)}</span>")
        i = j
    return "".join(out)
