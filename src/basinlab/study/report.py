"""The study's report (SPEC 7): one self-contained HTML page, plus each plot as a PNG.

``write_report(out_dir)`` reads the sweep's records (``results.sqlite``, else ``results.csv``), its config and
the example restorations of each run, and writes ``out_dir/report.html`` (images embedded as base64 PNG, no
external file or network needed) and ``out_dir/plots/*.png``:

- basin recovery against ``N`` (train and test, one line per ``t``; oracle lines where they exist) and the
  transition plot at the chosen ``t`` with ``N*`` and its interval marked;
- fixed-point rates (train, test, random);
- conditional entropy (train, test, generated; recovered/failed split);
- NELBO on train and test (log axis);
- novelty of generated samples;
- membership AUC (training vs test sequences) of each per-sequence score against ``N``;
- the same corrupted test sentences restored by the model at the smallest ``N``, nearest ``N*`` and at the largest
  ``N``, with test and training sentences shaded token by token by each model's leave-one-out entropy
  (:mod:`basinlab.study.html.examples`);
- the training loss of every run, the note that ``N*`` is an interpolation where it falls between two grid sizes,
  and the page's provenance (:mod:`basinlab.study.report_extras`).
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from basinlab.config import load_config
from basinlab.errors import BasinlabError
from basinlab.io import atomic_write_bytes, atomic_write_text
from basinlab.labels import ModelLabel
from basinlab.oracles.build import ORACLE_EMPIRICAL, ORACLE_MARKOV
from basinlab.probes.protocol import resolve_weights
from basinlab.registry import PROCESSES
from basinlab.study import report_extras
from basinlab.study.contrast import contrast_section
from basinlab.study.figures import png as _png
from basinlab.study.figures import pyplot as _plt
from basinlab.study.figures import series as _series
from basinlab.study.figures import setup_ax as _setup_ax
from basinlab.study.html import examples as html_examples
from basinlab.study.report_probes import entropy_note, study_probes_section
from basinlab.study.store import CONFIG_NAME, ResultStore, read_results
from basinlab.study.transition import Transition, estimate_all

ORACLE_STYLE = {ORACLE_EMPIRICAL: (":", "memoriser (oracle)"), ORACLE_MARKOV: ("--", "generaliser (oracle)")}


def _oracle_style(o: str) -> tuple[str, str]:
    """Line style and name of an oracle label, whatever its process (``oracle:empirical@masked``)."""
    label = ModelLabel.parse(o)
    style, name = ORACLE_STYLE.get(label.base, ("-.", label.base))
    return style, (f"{label.process} {name}" if label.process else name)


SET_COLORS = {"train": "tab:blue", "test": "tab:orange", "random": "tab:gray", "generated": "tab:green"}


# ---- reading ----------------------------------------------------------------------------------------------


def _models(df: Any) -> tuple[list[str], list[str]]:
    models = sorted(str(m) for m in df["model"].unique())
    oracle = {m: ModelLabel.parse(m).is_oracle for m in models}
    return [m for m in models if not oracle[m]], [m for m in models if oracle[m]]


def _load_cfg(out_dir: Path) -> Any:
    path = out_dir / CONFIG_NAME
    return load_config(path) if path.exists() else None


def _load_examples(out_dir: Path) -> list[dict[str, Any]]:
    found = []
    for path in sorted((out_dir / "runs").glob("*/examples.json")):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    return found


# ---- plots ------------------------------------------------------------------------------------------------


def _mark_nstar(ax: Any, tr: Transition | None) -> None:
    if tr is None or tr.n_star is None:
        return
    ax.axvline(tr.n_star, color="crimson", lw=1.2, alpha=0.8, label=f"N* ≈ {tr.n_star:.0f}")
    if tr.low is not None or tr.high is not None:
        xs = ax.get_xlim()
        lo = tr.low if tr.low is not None else xs[0]
        hi = tr.high if tr.high is not None else xs[1]
        ax.axvspan(lo, hi, color="crimson", alpha=0.08, lw=0)


def _mark_nelbo_peak(fig: Any, tr: Transition | None) -> Any:
    """On the NELBO plot: the test NELBO's peak over N and its 95% range, when the peak is inside the grid."""
    if tr is None or tr.nelbo_peak_status != "inside" or tr.nelbo_peak_n is None:
        return fig
    ax = fig.axes[0]
    ax.axvline(tr.nelbo_peak_n, color="tab:purple", ls="--", lw=1.2,
               label=f"test NELBO peak ≈ {tr.nelbo_peak_n:.0f}")
    xs = ax.get_xlim()
    lo = tr.nelbo_peak_low if tr.nelbo_peak_low is not None else xs[0]
    hi = tr.nelbo_peak_high if tr.nelbo_peak_high is not None else xs[1]
    ax.axvspan(lo, hi, color="tab:purple", alpha=0.07, lw=0)
    ax.set_xlim(xs)
    ax.legend(fontsize=8, loc="best")
    return fig


def _log_y(fig: Any) -> Any:
    """A log value axis (the smallest N's near-zero training NELBO would squash the rest on a linear one)."""
    ax = fig.axes[0]
    if all(y > 0 for line in ax.get_lines() for y in line.get_ydata() if np.isfinite(y)):
        report_extras.log_axis(ax)
        fig.tight_layout()
    return fig


def plot_recovery(df: Any, model: str, oracles: list[str], tr: Transition | None) -> Any:
    """Recovery rate against ``N``, train and test panels, one line per ``t``; oracles dotted/dashed."""
    plt = _plt()
    ts = sorted(float(t) for t in df[df["metric"] == "recovery_rate"]["t"].dropna().unique())
    cmap = plt.get_cmap("viridis")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, set_name in zip(axes, ("train", "test"), strict=True):
        for i, t in enumerate(ts):
            color = cmap(i / max(len(ts) - 1, 1))
            s = _series(df, model, "recovery_rate", set_name, t)
            if len(s):
                ax.plot(s["N"], s["value"], "o-", color=color, label=f"t = {t:g}")
                ax.fill_between(s["N"], s["lo"], s["hi"], color=color, alpha=0.12, lw=0)
            for o in oracles:
                so = _series(df, o, "recovery_rate", set_name, t)
                if len(so):
                    ax.plot(so["N"], so["value"], _oracle_style(o)[0], color=color, lw=1, alpha=0.8)
        _setup_ax(ax, "recovery rate (corrupted tokens restored)", f"{set_name} set")
        ax.set_ylim(-0.02, 1.02)
        _mark_nstar(ax, tr)
    handles, labels = axes[0].get_legend_handles_labels()
    for o in oracles:
        style, name = _oracle_style(o)
        handles.append(plt.Line2D([], [], ls=style, color="k", lw=1))
        labels.append(name)
    axes[1].legend(handles, labels, fontsize=8, loc="best")
    fig.suptitle(f"Basin test: recovery against N ({model})", fontsize=11)
    fig.tight_layout()
    return fig


def plot_transition(df: Any, model: str, oracles: list[str], tr: Transition) -> Any:
    """Train and test recovery at the transition ``t`` with 95% bands, the oracles, and ``N*``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for set_name in ("train", "test"):
        s = _series(df, model, "recovery_rate", set_name, tr.t)
        c = SET_COLORS[set_name]
        ax.plot(s["N"], s["value"], "o-", color=c, label=f"{model}: {set_name}")
        ax.fill_between(s["N"], s["lo"], s["hi"], color=c, alpha=0.15, lw=0)
        for o in oracles:
            so = _series(df, o, "recovery_rate", set_name, tr.t)
            if len(so):
                style, name = _oracle_style(o)
                ax.plot(so["N"], so["value"], style, color=c, lw=1.2, label=f"{name}: {set_name}")
    _setup_ax(ax, "recovery rate", f"Train vs test recovery at t = {tr.t:g}")
    ax.set_ylim(-0.02, 1.02)
    _mark_nstar(ax, tr)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def plot_metric_sets(
    df: Any, model: str, oracles: list[str], metric: str, sets: list[str], ylabel: str, title: str,
    tr: Transition | None, extra: list[tuple[str, str, str, str, float | None]] | None = None,
) -> Any:
    """One line per set for ``metric`` against ``N`` (model solid, oracles dotted/dashed)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for set_name in sets:
        c = SET_COLORS.get(set_name, "k")
        s = _series(df, model, metric, set_name)
        if len(s):
            ax.plot(s["N"], s["value"], "o-", color=c, label=f"{set_name}")
            ax.fill_between(s["N"], s["lo"], s["hi"], color=c, alpha=0.15, lw=0)
        for o in oracles:
            so = _series(df, o, metric, set_name)
            if len(so):
                style, name = _oracle_style(o)
                ax.plot(so["N"], so["value"], style, color=c, lw=1.1, label=f"{name}: {set_name}")
    for m2, set_name, label, style, t in extra or []:
        s = _series(df, model, m2, set_name, t)
        if len(s):
            color = SET_COLORS["generated"] if "generated" in m2 else SET_COLORS.get(set_name, "k")
            ax.plot(s["N"], s["value"], style, color=color, lw=1, alpha=0.8, label=label)
    _setup_ax(ax, ylabel, title)
    _mark_nstar(ax, tr)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


# ---- membership AUC (issue 8) -------------------------------------------------------------------------------

_AUC_LABELS = {"entropy": "entropy", "basins": "recovery", "fixed_points": "fixed point", "likelihood": "NELBO"}


def plot_membership(df: Any, model: str, oracles: list[str], tr: Transition | None) -> Any:
    """Membership AUC (training set vs test set, 1 = members look memorised) of each score against ``N``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 4.2))  # room for the legend beside the axes
    sel = df[(df["metric"] == "membership_auc") & (df["model"] == model)]
    for i, ((probe, t), _) in enumerate(sel.groupby(["probe", sel["t"].fillna(-1.0)], sort=True)):
        label = _AUC_LABELS.get(probe, probe) + (f" (t = {t:g})" if probe == "basins" else "")
        s = _series(df[df["probe"] == probe], model, "membership_auc", None, None if t < 0 else t)
        c = f"C{i}"
        ax.plot(s["N"], s["value"], "o-", color=c, label=label)
        ax.fill_between(s["N"], s["lo"], s["hi"], color=c, alpha=0.12, lw=0)
        for o in oracles:
            so = _series(df[df["probe"] == probe], o, "membership_auc", None, None if t < 0 else t)
            if len(so) and probe == "entropy":
                style, name = _oracle_style(o)
                ax.plot(so["N"], so["value"], style, color=c, lw=1.1, label=f"{name}: {label}")
    ax.axhline(0.5, color="0.5", lw=1, ls="--")
    _setup_ax(ax, "ROC AUC, train vs test", "Membership: telling training sequences from unseen ones")
    ax.set_ylim(-0.02, 1.02)
    _mark_nstar(ax, tr)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)  # clear of the 0.5 line
    fig.tight_layout()
    return fig


def _membership_section(df: Any, model: str, oracles: list[str], tr: Transition | None, add: Any, sfx: str) -> list:
    if not (df[df["model"] == model]["metric"] == "membership_auc").any():
        return []
    return ["<h2>Membership</h2>", add(
        f"membership{sfx}", plot_membership(df, model, oracles, tr),
        "ROC AUC of each per-sequence score telling the model's training sequences from test ones (DeLong 95% "
        "bands): 1 = members look more memorised, 0.5 = indistinguishable.")]


def plot_novelty(df: Any, model: str, tr: Transition | None) -> Any:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    names = {
        "copy_rate": "copies of a training sequence",
        "novel_4gram_rate": "4-grams absent from D_N",
        "spurious_rate": "spurious fixed points",
        "nn_hamming_train": "Hamming to nearest train",
        "nn_hamming_test": "Hamming to nearest test",
    }
    for metric, label in names.items():
        s = _series(df, model, metric, None)
        if len(s):
            ax.plot(s["N"], s["value"], "o-", label=label)
    _setup_ax(ax, "rate / normalised distance", "Generated samples: novelty")
    ax.set_ylim(-0.02, 1.02)
    _mark_nstar(ax, tr)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


# ---- the page ---------------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd}
img{max-width:100%;border:1px solid #eee}
table{border-collapse:collapse;margin:.6em 0}td,th{padding:.25em .6em;border-bottom:1px solid #eee;text-align:left;
vertical-align:top;font-size:.92em}
.tok{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85em}.txt{white-space:pre-wrap}
.chg{background:#ffe08a}.ok{background:#b7f0b1}.bad{background:#f7b2b2}
.note{background:#f6f8fa;border-left:4px solid #888;padding:.6em 1em}
.key{font-size:1.1em;font-weight:600}
"""


def _fmt(x: float | None, nd: int = 0) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{nd}f}"


def _transition_html(tr: Transition) -> str:
    peak_range = (f"{'<grid' if tr.nelbo_peak_low is None else _fmt(tr.nelbo_peak_low)} to "
                  f"{'>grid' if tr.nelbo_peak_high is None else _fmt(tr.nelbo_peak_high)}")
    nelbo = {
        "inside": f"≈ {_fmt(tr.nelbo_peak_n)} (95% range {peak_range}: out to the nearest sizes whose test NELBO "
                  f"is significantly lower)",
        "edge": f"at the grid edge (N = {_fmt(tr.nelbo_peak_n)})",
    }.get(tr.nelbo_peak_status, "n/a")
    ent = {
        "inside": f"≈ {_fmt(tr.entropy_leaves_zero_n)}",
        "below_grid": f"already above {tr.entropy_threshold:g} nats at the smallest N",
        "above_grid": f"still below {tr.entropy_threshold:g} nats at the largest N",
    }.get(tr.entropy_status, "n/a")
    seeds = ""
    if tr.per_seed:
        seeds = ", ".join(f"seed {k}: {_fmt(v)}" for k, v in tr.per_seed.items())
        seeds = f"<tr><th>per seed</th><td>{html.escape(seeds)}</td></tr>"
    gap_rows = "".join(
        f"<tr><td>{n}</td><td>{a:.3f}</td><td>{b:.3f}</td><td>{a - b:+.3f}</td></tr>"
        for n, a, b in zip(tr.sizes, tr.train_recovery, tr.test_recovery, strict=True)
    )
    return (
        f"<p class='key'>{html.escape(tr.describe())}</p>"
        f"<table><tr><th>definition</th><td>smallest N where train recovery − test recovery at t = {tr.t:g} falls to "
        f"{tr.tol:g} or below (interpolated in log N)</td></tr>{seeds}"
        f"<tr><th>test NELBO peaks</th><td>{nelbo}</td></tr>"
        f"<tr><th>training-data entropy leaves 0</th><td>{ent} "
        f"(first rise above {tr.entropy_threshold:g} nats)</td></tr></table>"
        f"<table><tr><th>N</th><th>train recovery</th><th>test recovery</th><th>gap</th></tr>{gap_rows}</table>"
        + report_extras.interpolation_note(tr.n_star, list(tr.sizes))
    )


# ---- network against the oracles (issue 7) --------------------------------------------------------------


def _at(df: Any, model: str, metric: str, set_name: str, n: int, t: float | None) -> float | None:
    s = _series(df, model, metric, set_name, t)
    s = s[s["N"] == n]
    return float(s["value"].iloc[0]) if len(s) else None


def oracle_gaps(df: Any, model: str, t: float) -> list[tuple[str, float | None, float | None]]:
    """The network's distance to the exact oracles, as ``(what, network, oracle)``: at the smallest N its train
    recovery at ``t`` against the memoriser's; at the largest N its test recovery at ``t`` and its test entropy
    against the generaliser's (Markov data) and its test recovery against the memoriser's."""
    sizes = sorted(int(n) for n in df[df["model"] == model]["N"].unique())
    if not sizes:
        return []
    lo, hi = sizes[0], sizes[-1]
    want = [
        (f"train recovery, t = {t:g}, N = {lo}", ORACLE_EMPIRICAL, "recovery_rate", "train", lo, t),
        (f"test recovery, t = {t:g}, N = {hi}", ORACLE_MARKOV, "recovery_rate", "test", hi, t),
        (f"test entropy (nats), N = {hi}", ORACLE_MARKOV, "entropy", "test", hi, None),
        (f"test recovery, t = {t:g}, N = {hi}", ORACLE_EMPIRICAL, "recovery_rate", "test", hi, t),
    ]
    out = []
    for what, oracle, metric, set_name, n, tt in want:
        oracle = str(ModelLabel.oracle(ModelLabel.parse(oracle).name, ModelLabel.parse(model).process))
        theirs = _at(df, oracle, metric, set_name, n, tt)
        if theirs is not None:
            out.append((f"{what}: {_oracle_style(oracle)[1]}", _at(df, model, metric, set_name, n, tt), theirs))
    return out


def _oracle_gaps_html(df: Any, model: str, t: float) -> str:
    rows = oracle_gaps(df, model, t)
    if not rows:
        return ""
    body = "".join(
        f"<tr><td>{html.escape(w)}</td><td>{_fmt(a, 3)}</td><td>{_fmt(b, 3)}</td>"
        f"<td>{'n/a' if a is None else f'{a - b:+.3f}'}</td>"
        f"<td>{'n/a' if a is None or not b else f'{a / b:.0%}'}</td></tr>"
        for w, a, b in rows
    )
    return (
        "<h2>Network against the oracles</h2><p>How far the trained network is from the exact denoisers of SPEC 6 "
        "on the same sets: a network that memorises should match the memoriser at the smallest N, and one that "
        "generalises should approach the generaliser (the Bayes-optimal denoiser of the source) at the largest "
        "N. A weak network and weak generalisation look alike in the recovery plot; these numbers tell them "
        "apart.</p><table><tr><th>metric</th><th>network</th><th>oracle</th><th>gap</th><th>ratio</th></tr>"
        f"{body}</table>"
    )


def objective_html(tc: Any, process: str) -> str:
    """What training optimised, as it ran: the process's own objective (SPEC 4 for the uniform one, SPEC 2b for
    the masked one), the cheap cross-entropy, or a warm-up of it; all warm-up when ``ce_warmup_steps >= steps``."""
    proc = PROCESSES.get(process)
    ce = f"cross-entropy over the <em>{proc.corrupted_word}</em> positions only ({proc.cheap_objective_note})"
    if tc.objective == "ce_redrawn":
        return ce
    if tc.ce_warmup_steps and tc.ce_warmup_steps >= tc.steps:
        return (f"{ce}: every one of the {tc.steps:,} steps was a warm-up step (train.ce_warmup_steps = "
                f"{tc.ce_warmup_steps:,} >= train.steps), so the NELBO objective never ran")
    obj = proc.nelbo_name
    if tc.ce_warmup_steps:
        obj += f", after {tc.ce_warmup_steps:,} warm-up steps of cross-entropy over the {proc.corrupted_word} positions"
    return obj


def _setup_html(cfg: Any, df: Any, runs: list[dict[str, Any]], model: str) -> str:
    if cfg is None:
        return "<p>(sweep config not found)</p>"
    sizes = sorted(int(n) for n in df[df["model"] == model]["N"].unique()) if len(df) else []
    B, S = cfg.train.batch_size, cfg.train.steps
    ep = ""
    if sizes:
        ep = f"{S * B / sizes[0]:,.0f} epochs at N = {sizes[0]}, {S * B / sizes[-1]:,.1f} at N = {sizes[-1]}"
    obj = objective_html(cfg.train, ModelLabel.parse(model).process_name)
    weights = resolve_weights(cfg.probe.weights, cfg.probe.protocol)
    d = cfg.data
    data = (
        f"synthetic Markov source (V = {d.markov_vocab}, L = {d.seq_len}, {d.markov_successors} successors per state, "
        f"seed {d.markov_seed})"
        if d.source == "markov"
        else f"{d.source} corpus, {d.mode} mode, L = {d.seq_len}, tokenizer {d.tokenizer}"
    )
    pc = cfg.probe
    secs = [r["info"].get("total_s") for r in runs if r["info"].get("total_s")]
    took = f"; {sum(secs) / 60:.1f} min of compute summed over runs (workers run in parallel)" if secs else ""
    return (
        f"<table><tr><th>data</th><td>{html.escape(data)}</td></tr>"
        f"<tr><th>model</th><td>{html.escape(model)} DiT "
        f"({html.escape(', '.join(f'{k}={v}' for k, v in vars(cfg.model).items() if v is not None))})</td></tr>"
        f"<tr><th>training</th><td>{S:,} steps of batch {B} for every N ({ep}); lr {cfg.train.lr:g}; "
        f"objective: {obj}; probes on the final model's {'EMA' if weights == 'ema' else 'raw'} weights "
        f"(probe.weights, protocol {html.escape(cfg.probe.protocol)})</td></tr>"
        f"<tr><th>probes</th><td>M = {pc.m} sequences per set, T = {pc.steps} steps, t ∈ {list(pc.ts)}, "
        f"{'default number of' if pc.n_samples is None else pc.n_samples} generated samples; "
        f"protocol {html.escape(pc.protocol)}; seeds {list(cfg.sweep.seeds)}</td></tr>"
        f"<tr><th>runs</th><td>{len(runs)} ({sum(r['status'] == 'done' for r in runs)} done) {took}</td></tr></table>"
    )


class _Figures:
    """Saves each figure as ``plots/NAME.png`` and returns its HTML (the PNG embedded as base64)."""

    def __init__(self, plots_dir: Path) -> None:
        self.plots_dir = plots_dir

    def __call__(self, name: str, fig: Any, caption: str) -> str:
        data = _png(fig)
        atomic_write_bytes(self.plots_dir / f"{name}.png", data)
        b64 = base64.b64encode(data).decode("ascii")
        img = f"<img alt='{html.escape(name)}' src='data:image/png;base64,{b64}'/>"
        return f"<figure>{img}<figcaption>{caption}</figcaption></figure>"


_MEMORISATION_NOTE = (
    "<div class='note'><b>What drives memorisation here.</b> Every N gets the same architecture and the same "
    "fixed step budget, so a small training set is seen for many epochs and the network can afford to "
    "memorise it: its basins of attraction form around the training sequences only. As N grows the same "
    "budget covers fewer epochs of more sequences, memorisation becomes impossible, and the basins move to "
    "the data distribution: test sequences, never seen, are restored as well as training ones.</div>"
)


def _model_section(df: Any, tr: Transition, models: list[str], oracles: list[str], cfg: Any,
                   runs: list[dict[str, Any]], examples: list[dict[str, Any]], add: _Figures) -> str:
    """The report's section of one trained model: setup, N*, and one plot per test of SPEC 5."""
    m = tr.model
    oracles = [o for o in oracles if ModelLabel.parse(o).process == ModelLabel.parse(m).process]  # per process
    sfx = "" if len(models) == 1 else f"-{m.replace('@', '-')}"
    first_seed = int(sorted(df[df["model"] == m]["seed"].unique())[0])
    sec = [f"<h2>Setup</h2>{_setup_html(cfg, df, runs, m)}", _MEMORISATION_NOTE]
    if len(models) > 1:
        sec.insert(0, f"<h2>Model {html.escape(m)}</h2>")
    curves = report_extras.loss_curves(add.plots_dir.parent, m, first_seed)
    if curves:
        sec.append("<h2>Training</h2>" + add(f"training_loss{sfx}", report_extras.plot_losses(curves, _plt()),
                                             "Training loss of each N (from each run's metrics.csv): a curve still "
                                             "falling at the last step is a model that had not converged."))
    sec.append(f"<h2>Transition size N*</h2>{_transition_html(tr)}")
    sec.append(add(f"transition{sfx}", plot_transition(df, m, oracles, tr),
                   f"Recovery of corrupted tokens at t = {tr.t:g}; bands are 95% intervals; N* in red."))
    sec.append("<h2>Basins against N</h2>")
    sec.append(add(f"recovery{sfx}", plot_recovery(df, m, oracles, tr),
                   "Share of corrupted tokens restored, per corruption level t (SPEC 5 basin test)."))
    sec.append(_oracle_gaps_html(df, m, tr.t))
    sec.append("<h2>Restorations at small and large N</h2>"
               + html_examples.examples_html(examples, m, first_seed, tr.n_star))
    sec.append("<h2>Fixed points</h2>")
    sec.append(add(f"fixed_points{sfx}", plot_metric_sets(
        df, m, oracles, "fixed_point_rate", ["train", "test", "random"], "fixed-point rate",
        "Sequences that a greedy chain from t = 1 returns unchanged", tr),
        "Share of clean sequences that are fixed points of the greedy reverse chain."))
    sec.append("<h2>Conditional entropy</h2>")
    sec.append(add(f"entropy{sfx}", plot_metric_sets(
        df, m, oracles, "entropy", ["train", "test"], "entropy of x_θ (nats/token)",
        "Conditional entropy of the leave-one-out prediction", tr,
        extra=[("entropy_generated", "test", "generated samples", "s-", None),
               ("entropy_recovered", "test", f"test, tokens recovered at t = {tr.t:g}", "^:", tr.t),
               ("entropy_failed", "test", f"test, tokens failed at t = {tr.t:g}", "v:", tr.t)]),
        "Vanishing entropy on training data = memorisation; finite entropy = generalisation."))
    sec.append(entropy_note(ModelLabel.parse(m).process_name, cfg.probe.protocol if cfg is not None else "exact"))
    sec.append("<h2>Likelihood</h2>")
    sec.append(add(f"nelbo{sfx}", _mark_nelbo_peak(_log_y(plot_metric_sets(
        df, m, [o for o in oracles if ModelLabel.parse(o).base != ORACLE_EMPIRICAL], "nelbo", ["train", "test"],
        "NELBO (nats/token, log scale)", "NELBO on train and test", tr)), tr),
        "NELBO per real token of the final model; the generaliser's line is the true entropy rate; the test "
        "NELBO's peak (purple, with its 95% range) where it lies inside the grid."))
    sec += _membership_section(df, m, oracles, tr, add, sfx)
    sec += study_probes_section(df, m, tr.t, add, sfx)  # random basins, t grid, trajectory, gen_ppl
    if (df[(df["model"] == m)]["metric"] == "copy_rate").any():
        sec.append("<h2>Novelty of generated samples</h2>")
        sec.append(add(f"novelty{sfx}", plot_novelty(df, m, tr),
                       "Generated from pure noise; spurious = fixed points that copy no training sequence."))
    return "".join(sec)


def write_report(out_dir: str | Path, t: float | None = None) -> Path:
    """Write ``out_dir/report.html`` and ``out_dir/plots/*.png`` from the sweep's records; returns the page's path."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise BasinlabError(f"sweep directory '{out_dir}' does not exist")
    df = read_results(out_dir)
    if not len(df):
        raise BasinlabError(f"'{out_dir}' has no finished runs yet; run or resume `basinlab sweep` first")
    cfg = _load_cfg(out_dir)
    runs: list[dict[str, Any]] = []
    if (out_dir / "results.sqlite").exists():
        with ResultStore(out_dir) as store:
            runs = store.runs()
    t_star = float(t if t is not None else (cfg.sweep.transition_t if cfg is not None else 0.25))
    tol = float(getattr(cfg.sweep, "transition_tol", 0.05)) if cfg is not None else 0.05
    models, oracles = _models(df)
    transitions = estimate_all(df, t=t_star, tol=tol)
    examples = _load_examples(out_dir)
    figure = _Figures(out_dir / "plots")
    sections = [_model_section(df, tr, models, oracles, cfg, runs, examples, figure) for tr in transitions]

    sections.insert(0, contrast_section(df, transitions, t_star, figure))
    if not transitions:
        sections.append("<p>No trained models in the results (oracles only).</p>")
    summary = "".join(f"<li>{html.escape(m)}: {html.escape(tr.describe())}</li>" for m, tr in zip(
        models, transitions, strict=True))
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>basinlab report</title>"
        f"<style>{_CSS}{html_examples.CSS}</style></head><body>"
        f"<h1>basinlab: memorisation to generalisation over N</h1>"
        f"<p>Sweep directory <code>{html.escape(str(out_dir))}</code>. Diffusion language models trained on nested "
        f"training sets of growing size N, probed as associative memories (SPEC 5-7).</p><ul>{summary}</ul>"
        + "".join(sections)
        + "<h2>Data</h2><p>All records: <code>results.csv</code> / <code>results.parquet</code> beside this page; "
        "plots as PNG in <code>plots/</code>; transition estimates in <code>transition.json</code>.</p>"
        + report_extras.provenance_html()
        + "</body></html>"
    )
    atomic_write_text(out_dir / "transition.json", json.dumps([tr.to_dict() for tr in transitions], indent=1))
    path = out_dir / "report.html"
    atomic_write_text(path, page)
    return path
