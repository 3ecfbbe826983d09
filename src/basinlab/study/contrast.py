"""The contrast of forward processes (issue 15; SPEC 2b, 7): the trained families of a sweep over
``sweep.processes`` side by side in the report.

For each process (the ``@PROCESS`` suffix of a ``model`` label, :func:`~basinlab.study.store.label_process`), its
trained model: ``N*`` with its interval, train and test recovery at the transition ``t`` against ``N``, the
conditional entropy of the leave-one-out prediction against ``N`` (SPEC 2b: for a masked model, the prediction of
token ``l`` with only ``l`` masked), and the membership AUC of the entropy score. A table gives the same at the
smallest and the largest ``N``. Shown only when the results hold more than one process.
"""

from __future__ import annotations

import html
from typing import Any

from basinlab.labels import ModelLabel
from basinlab.registry import PROCESSES
from basinlab.study.figures import pyplot, series, setup_ax
from basinlab.study.store import label_process
from basinlab.study.transition import Transition

#: the contrast plots' colours, one per registered process in registration order (uniform blue, masked red, ...)
PALETTE = ("tab:blue", "tab:red", "tab:green", "tab:purple", "tab:brown", "tab:olive")


def process_color(process: str) -> str:
    """The colour of a registered process's lines (grey for one not registered)."""
    names = PROCESSES.names()
    return PALETTE[names.index(process) % len(PALETTE)] if process in names else "tab:gray"


def families(transitions: list[Transition]) -> dict[str, Transition]:
    """The first trained model of each process, by process (uniform first)."""
    out: dict[str, Transition] = {}
    for tr in sorted(transitions, key=lambda tr: (ModelLabel.parse(tr.model).process is not None, tr.model)):
        out.setdefault(label_process(tr.model), tr)
    return out


def _value(df: Any, model: str, metric: str, set_name: str | None, n: int, t: float | None) -> float | None:
    s = series(df, model, metric, set_name, t)
    s = s[s["N"] == n]
    return None if not len(s) else float(s["value"].iloc[0])


def contrast_rows(df: Any, transitions: list[Transition], t: float) -> list[dict[str, Any]]:
    """One dict per process: ``process``, ``model``, ``n_star`` (the :class:`Transition`'s description), and the
    train/test recovery at ``t``, train/test entropy and the entropy-score membership AUC at the smallest and the
    largest ``N`` (keys ``{what}@{N}``)."""
    rows = []
    for proc, tr in families(transitions).items():
        m = tr.model
        sizes = sorted(int(n) for n in df[df["model"] == m]["N"].unique())
        row: dict[str, Any] = {"process": proc, "model": m, "n_star": tr.describe(), "sizes": sizes}
        for n in sorted({sizes[0], sizes[-1]}) if sizes else []:
            row[f"train recovery@{n}"] = _value(df, m, "recovery_rate", "train", n, t)
            row[f"test recovery@{n}"] = _value(df, m, "recovery_rate", "test", n, t)
            row[f"train entropy@{n}"] = _value(df, m, "entropy", "train", n, None)
            row[f"test entropy@{n}"] = _value(df, m, "entropy", "test", n, None)
            auc = df[(df["model"] == m) & (df["metric"] == "membership_auc") & (df["probe"] == "entropy")]
            row[f"membership AUC (entropy)@{n}"] = _value(auc, m, "membership_auc", None, n, None)
        rows.append(row)
    return rows


def plot_contrast(df: Any, transitions: list[Transition], t: float) -> Any:
    """Three panels against ``N``, one colour per process: recovery at ``t`` (train solid, test dashed) with
    ``N*``, conditional entropy (train solid, test dashed), membership AUC of the entropy score."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    auc_df = df[df["probe"] == "entropy"]
    for proc, tr in families(transitions).items():
        c = process_color(proc)
        for set_name, style in (("train", "o-"), ("test", "s--")):
            s = series(df, tr.model, "recovery_rate", set_name, t)
            axes[0].plot(s["N"], s["value"], style, color=c, label=f"{proc}: {set_name}")
            axes[0].fill_between(s["N"], s["lo"], s["hi"], color=c, alpha=0.1, lw=0)
            s = series(df, tr.model, "entropy", set_name)
            axes[1].plot(s["N"], s["value"], style, color=c, label=f"{proc}: {set_name}")
            axes[1].fill_between(s["N"], s["lo"], s["hi"], color=c, alpha=0.1, lw=0)
        if tr.n_star is not None:
            axes[0].axvline(tr.n_star, color=c, lw=1, alpha=0.7, ls=":", label=f"{proc}: N* ≈ {tr.n_star:.0f}")
        s = series(auc_df, tr.model, "membership_auc", None)
        if len(s):
            axes[2].plot(s["N"], s["value"], "o-", color=c, label=proc)
            axes[2].fill_between(s["N"], s["lo"], s["hi"], color=c, alpha=0.12, lw=0)
    setup_ax(axes[0], "recovery rate", f"Basin test at t = {t:g}")
    axes[0].set_ylim(-0.02, 1.02)
    setup_ax(axes[1], "entropy of x_θ (nats/token)", "Conditional entropy (leave-one-out)")
    setup_ax(axes[2], "ROC AUC, train vs test", "Membership (entropy score)")
    axes[2].axhline(0.5, color="0.5", lw=1, ls="--")
    axes[2].set_ylim(-0.02, 1.02)
    for ax in axes:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


_NOTE = (
    "<div class='note'><b>Reading the masked family.</b> A masked (absorbing-state) model restores by infilling: "
    "the corruption replaces tokens by [MASK], and its sampler never changes a visible token (SUBS carry-over), "
    "so an 'unstable' outcome is impossible by construction and is not reported, and every clean sequence is a "
    "fixed point unless the sampler remasks (<code>probe.remask</code>). Its conditional entropy is that of the "
    "prediction of each token with only that token masked (SPEC 2b), the t → 0 limit of the uniform one.</div>"
)


def _fmt(v: Any) -> str:
    return "–" if v is None else (f"{v:.3f}" if isinstance(v, float) else html.escape(str(v)))


def contrast_section(df: Any, transitions: list[Transition], t: float, add: Any) -> str:
    """The report's contrast section (HTML), or ``""`` when the results hold a single process."""
    fam = families(transitions)
    if len(fam) < 2:
        return ""
    rows = contrast_rows(df, transitions, t)
    keys = [k for k in rows[0] if "@" in k]
    for r in rows[1:]:
        keys += [k for k in r if "@" in k and k not in keys]
    head = "".join(f"<th>{html.escape(r['process'])} ({html.escape(r['model'])})</th>" for r in rows)
    nstar = "".join(f"<td>{html.escape(r['n_star'])}</td>" for r in rows)
    body = f"<tr><th>N*</th>{nstar}</tr>"
    for k in keys:
        what, _, n = k.rpartition("@")
        cells = "".join(f"<td>{_fmt(r.get(k))}</td>" for r in rows)
        body += f"<tr><th>{html.escape(what)}, N = {n}</th>{cells}</tr>"
    fig = add("contrast", plot_contrast(df, transitions, t),
              f"Uniform and masked families side by side: recovery at t = {t:g} (N* dotted), conditional entropy, "
              "membership AUC; 95% bands.")
    return (f"<h2>Forward processes side by side</h2><p>The same source, sizes, model and step budget for each "
            f"forward process (SPEC 2, 2b).</p><table><tr><th></th>{head}</tr>{body}</table>{fig}{_NOTE}")
