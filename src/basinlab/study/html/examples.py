"""The report's restoration examples (SPEC 5 basin test, SPEC 7 report): the same corrupted test sentences
restored by the models at the smallest N, near N* and at the largest N, and the sentences shaded token by token
by each model's leave-one-out conditional entropy (:mod:`.shading`), test and training sentences, so that the
transition shows in the text: near-zero entropy on training sentences at small N, finite entropy at large N."""

from __future__ import annotations

import html
import math
from typing import Any

from basinlab.study.html import shading

CSS = """
table.ex{table-layout:fixed;width:100%;margin:.6em 0 1.2em}table.ex th{width:17em;font-weight:500;color:#444}
table.ex td{overflow-wrap:anywhere}
.t{padding:0 1px;border-radius:2px;white-space:pre-wrap}.t.sp{border:1px dashed #888;background:#eee;color:#666;
font-size:.85em}
.legend{margin:.6em 0;font-size:.85em}.legend .sw{display:inline-block;padding:1px 5px;margin-right:1px;font-size:.8em}
.lnote{color:#666}
""" + shading.css()


def pick_runs(examples: list[dict[str, Any]], model: str, seed: int | None,
              n_star: float | None) -> tuple[Any, Any, Any]:
    """``(smallest N, nearest N* in log N (None when that is the smallest or largest), largest N)``."""
    mine = [e for e in examples if e.get("model") == model and (seed is None or e.get("seed") == seed)]
    if not mine:
        return None, None, None
    mine.sort(key=lambda e: e["N"])
    near = None
    if n_star is not None and n_star > 0 and len(mine) > 2:
        near = min(mine, key=lambda e: abs(math.log(e["N"]) - math.log(n_star)))
        near = None if near is mine[0] or near is mine[-1] else near
    return mine[0], near, mine[-1]


def _mark(ids: list[int], ref: list[int], corrupted: list[int] | None, i: int) -> str:
    """CSS class of position ``i``: ``chg`` on the corrupted line where it differs from the original; on a restored
    line ``ok`` (a changed token put back), ``bad`` (a changed token left wrong, or an unchanged one broken)."""
    if corrupted is None:  # the corrupted line itself
        return "chg" if ids[i] != ref[i] else ""
    if corrupted[i] != ref[i]:
        return "ok" if ids[i] == ref[i] else "bad"
    return "bad" if ids[i] != ref[i] else ""


def tokens_line(tokens: list[str], ref: list[int], ids: list[int], corrupted: list[int] | None,
                real: list[bool], surface: list[str] | None = None) -> str:
    """One line of a sequence over its real positions; corrupted positions marked, restored ones green if right and
    red if wrong. With ``surface`` (text data) the decoded sentence with each token's span marked in place, else the
    pieces joined by spaces (Markov states). A run of one special token put at real positions (e.g. ``[PAD]``
    where a word was) shows once, as ``⟨[PAD]×n⟩``."""
    out: list[list[Any]] = []  # [lead, body, cls, count]
    for i, tok in enumerate(tokens):
        if not real[i]:
            continue
        cls = _mark(ids, ref, corrupted, i)
        piece = (" " + tok) if surface is None else surface[i]
        body = piece.lstrip(" ")
        lead = " " * (len(piece) - len(body))
        special = tok.startswith("[") and tok.endswith("]") and len(tok) > 2
        if cls and (not body.strip() or special):  # a changed space or special token: make it visible
            body = f"⟨{tok}⟩" if special else "␣"
        if out and special and body.startswith("⟨") and out[-1][1] == body and out[-1][2] == cls:
            out[-1][3] += 1
            continue
        out.append([lead, body, cls, 1])
    parts = []
    for lead, body, cls, n in out:
        text = body if n == 1 else f"{body[:-1]}×{n}⟩"
        span = f'<span class="{cls}">{html.escape(text)}</span>' if cls else html.escape(text)
        parts.append(html.escape(lead) + span)
    return "".join(parts).strip()


def _restored(e: dict[str, Any], which: str, ref: list[int], corrupted: list[int] | None, real: list[bool]) -> str:
    surface = (e.get("surface") or {}).get(which)
    return tokens_line(e["tokens"][which], ref, e[which], corrupted, real, surface)


def shaded_line(e: dict[str, Any], h_max: float) -> str:
    """The original sentence of an example, each token shaded by its entropy (``e["entropy"]``)."""
    tokens = e["tokens"]["original"]
    surface = (e.get("surface") or {}).get("original")
    own = e.get("token_text")  # each token's own text: a space token is " ", not "" (text data)
    texts = [(" " + t) if surface is None else (own[i] if own else surface[i]) or "␣" for i, t in enumerate(tokens)]
    special = [not r for r in e["real"]]
    texts = [t if not sp else tokens[i] for i, (t, sp) in enumerate(zip(texts, special, strict=True))]
    return shading.tokens_html(texts, e["entropy"], h_max, special).strip()


def _note(e: dict[str, Any]) -> str:
    d = e.get("nn_train_hamming")
    if d == 0:
        return ", a training sequence"
    return "" if d is None else f", {d} from the nearest training sequence"


def _mean_h(e: dict[str, Any]) -> str:
    h = [v for v in e.get("entropy") or [] if v is not None]
    return f"mean {sum(h) / len(h):.2f} nats" if h else ""


def example_block(runs: list[dict[str, Any]], index: int, h_max: float | None) -> str:
    """One test sentence: original, corrupted, each run's restoration, and (with entropies) each run's shading."""
    first = runs[0]
    a = first["examples"][index]
    ref, real = a["original"], a["real"]
    rows = [("original (test)", _restored(a, "original", ref, None, real)),
            (f"corrupted (t = {first['t']:g})", _restored(a, "corrupted", ref, None, real))]
    for run in runs:
        b = run["examples"][index]
        rows.append((f"restored, N = {run['N']} ({b['recovered']}/{b['changed']}{_note(b)})",
                     _restored(b, "restored", ref, b["corrupted"], real)))
    if h_max is not None:
        for run in runs:
            b = run["examples"][index]
            rows.append((f"entropy, N = {run['N']} ({_mean_h(b)})", shaded_line(b, h_max)))
    return _table(rows, text=bool(a.get("surface")))


def _table(rows: list[tuple[str, str]], text: bool) -> str:
    cls = "tok txt" if text else "tok"
    body = "".join(f"<tr><th>{html.escape(k)}</th><td class='{cls}'>{v}</td></tr>" for k, v in rows)
    return f"<table class='ex'>{body}</table>"


def train_block(runs: list[dict[str, Any]], k: int, h_max: float) -> str:
    """The first ``k`` training sentences (in every run's training set: the sets are nested), shaded by each run's
    entropy."""
    have = [r for r in runs if r.get("train_examples")]
    if not have:
        return ""
    n = min(k, min(len(r["train_examples"]) for r in have))
    blocks = []
    for i in range(n):
        e0 = have[0]["train_examples"][i]
        rows = [(f"N = {r['N']} ({_mean_h(r['train_examples'][i])})", shaded_line(r["train_examples"][i], h_max))
                for r in have]
        blocks.append(_table(rows, text=bool(e0.get("surface"))))
    return "".join(blocks)


def _h_max(runs: list[dict[str, Any]]) -> float | None:
    hs = [v for r in runs for e in r["examples"] + (r.get("train_examples") or []) for v in e.get("entropy") or []]
    if not hs:
        return None
    return shading.scale_max(hs, 1 << 30)


def examples_html(examples: list[dict[str, Any]], model: str, seed: int | None, n_star: float | None,
                  k: int = 3) -> str:
    """The report's section body (see the module docstring)."""
    small, near, large = pick_runs(examples, model, seed, n_star)
    if small is None or small is large or not small.get("examples"):
        return "<p>No example restorations recorded (need at least two sizes).</p>"
    runs = [r for r in (small, near, large) if r is not None]
    n = min(len(r["examples"]) for r in runs)

    def score(i: int) -> float:
        a, b = small["examples"][i], large["examples"][i]
        return b["recovered"] / max(b["changed"], 1) - a["recovered"] / max(a["changed"], 1)

    h_max = _h_max(runs)
    order = sorted(range(n), key=score, reverse=True)[:k]
    blocks = "".join(example_block(runs, i, h_max) for i in order)
    sizes = ", ".join(f"N = {r['N']}" for r in runs)
    text = (
        f"<p>The same test sequences (never seen in training), corrupted with the same noise at t = {small['t']:g}, "
        f"restored by the stochastic reverse chain of the models trained on {sizes} (smallest, "
        f"{'nearest N*, ' if near is not None else ''}largest). <span class='chg'>Changed</span> tokens in the "
        f"corrupted line; in the restored lines <span class='ok'>restored</span> and <span class='bad'>wrong</span> "
        f"tokens. Counts are restored/changed tokens, with the restoration's Hamming distance to the nearest "
        f"training sequence: a model that memorises rewrites an unseen sentence instead of restoring it, and a "
        f"restoration at distance 0 fell into the basin of a training sentence.</p>"
    )
    if h_max is None:
        return text + blocks
    legend = shading.legend_html(h_max)
    shade = ("<p>The <b>entropy</b> rows shade each token of the clean sentence by that model's leave-one-out "
             "conditional entropy (nats; the prediction of the token from all the others at t = 1e-5): a model "
             "that memorised a sentence is certain of every token (dark). Special tokens are boxed.</p>")
    train = train_block(runs, 2, h_max)
    if train:
        train = ("<h3>Training sentences</h3><p>The first training sentences (in every N's training set), "
                 f"shaded by each model's entropy.</p>{train}")
    return text + shade + legend + blocks + train
