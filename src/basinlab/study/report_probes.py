"""The report's section for the study's measurements beyond SPEC 5's core (issue 16; docs/SPEC.md section 5):
basins on random sequences beside train and test, fixed points and entropy over the grid of ``t``, statistics of
``x_θ`` along the reverse chain, and the generative perplexity of samples. Each plot appears only where the sweep
recorded its rows. Called by :func:`basinlab.study.report._model_section`."""

from __future__ import annotations

from typing import Any

import numpy as np

from basinlab.diffusion import get_process
from basinlab.probes.protocol import protocol_options
from basinlab.probes.trajectory import METRICS as TRAJ_METRICS


def entropy_note(process: str, protocol: str) -> str:
    """HTML warning under the entropy plots where the protocol reads ``x_θ`` at its input (``paper``) and the
    process makes that one-hot at visible positions (masked, SPEC 2b): empty otherwise."""
    if protocol_options(protocol)["entropy"]["entropy_of"] != "output":
        return ""
    if not get_process(process, 2).output_one_hot_where_visible:
        return ""
    return ("<p class='note'>Under probe.protocol=paper the entropy rows of this masked model are the study's: the "
            "entropy of x_θ at its own input, which is 0 at every visible (unmasked) position by construction "
            "(SUBS carries a visible token over). At t = 1e-5 and on the restored sequence nearly every position is "
            "visible, so these rows are near 0 for every N and cannot separate memorisation from generalisation; "
            "probe.protocol=exact reads the leave-one-out conditional (docs/SPEC.md section 5, Protocols).</p>")


def _sel(df: Any, model: str, probe: str, metric: str, set_name: str | None = None) -> Any:
    s = df[(df["model"] == model) & (df["probe"] == probe) & (df["metric"] == metric)]
    return s if set_name is None else s[s["set"] == set_name]


def _by_t(sel: Any) -> Any:
    """Mean over seeds per ``(N, t)``: DataFrame ``N, t, value``."""
    return sel.groupby(["N", "t"]).agg(value=("value", "mean")).reset_index().sort_values(["N", "t"])


def _curves_per_n(ax: Any, frame: Any, style: str = "o-", label: str = "") -> None:
    """One line per ``N`` of ``value`` against ``t`` (a sequential colour map over ``N``)."""
    import matplotlib

    ns = sorted(frame["N"].unique())
    cmap = matplotlib.colormaps["viridis"]
    for i, n in enumerate(ns):
        f = frame[frame["N"] == n]
        ax.plot(f["t"], f["value"], style, color=cmap(i / max(1, len(ns) - 1)), ms=3, lw=1.2,
                label=f"{label}N = {int(n)}")


def plot_random_basins(df: Any, model: str, t: float) -> Any:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    colors = {"train": "tab:blue", "test": "tab:orange", "random": "tab:gray"}
    for set_name, c in colors.items():
        s = _sel(df, model, "basins", "recovery_rate", set_name)
        s = s[np.isclose(s["t"].astype(float), t, rtol=0, atol=1e-9)]
        g = s.groupby("N").agg(value=("value", "mean"), lo=("ci_low", "mean"), hi=("ci_high", "mean")).reset_index()
        if len(g):
            ax.plot(g["N"], g["value"], "o-", color=c, label=set_name)
            ax.fill_between(g["N"], g["lo"], g["hi"], color=c, alpha=0.15, lw=0)
    ax.set_xscale("log", base=2)
    ax.set(xlabel="training-set size N", ylabel="recovery rate", title=f"Basins at t = {t:g}: train, test, random")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_t_grid(df: Any, model: str) -> Any:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    _curves_per_n(axes[0], _by_t(_sel(df, model, "t_grid", "grid_fixed_point_rate", "test")))
    _curves_per_n(axes[0], _by_t(_sel(df, model, "t_grid", "grid_fixed_point_rate", "random")), "x:", "random, ")
    axes[0].set(xlabel="t where the chain starts", ylabel="fixed-point rate",
                title="Fixed points from the clean sequence at t (test solid, random dotted)")
    _curves_per_n(axes[1], _by_t(_sel(df, model, "t_grid", "grid_entropy", "test")))
    axes[1].set(xlabel="t", ylabel="entropy of x_θ (nats/token)", title="Conditional entropy at t (test)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def plot_trajectory(df: Any, model: str, set_name: str = "test") -> Any:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(14, 6.4))
    for ax, metric in zip(axes.ravel(), TRAJ_METRICS, strict=False):
        _curves_per_n(ax, _by_t(_sel(df, model, "trajectory", metric, set_name)), "-")
        ax.set_title(metric.removeprefix("traj_").replace("_", " "), fontsize=10)
        ax.set_xlabel("t (reverse chain runs right to left)")
        ax.invert_xaxis()
        ax.grid(alpha=0.3)
    axes.ravel()[0].legend(fontsize=7)
    axes.ravel()[-1].axis("off")
    fig.suptitle(f"Statistics of x_θ along the reverse chain from t = 1 ({set_name} set)", fontsize=11)
    fig.tight_layout()
    return fig


def plot_gen_ppl(df: Any, model: str) -> Any:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric, label in ((axes[0], "gen_ppl", "generative perplexity"),
                              (axes[1], "sample_entropy", "unigram entropy per sample (nats)")):
        g = _sel(df, model, "gen_ppl", metric).groupby("N").agg(
            value=("value", "mean"), lo=("ci_low", "mean"), hi=("ci_high", "mean")).reset_index()
        ax.plot(g["N"], g["value"], "o-", color="tab:green")
        if g["lo"].notna().any():
            ax.fill_between(g["N"], g["lo"], g["hi"], color="tab:green", alpha=0.15, lw=0)
        ax.set_xscale("log", base=2)
        ax.set(xlabel="training-set size N", ylabel=label, title=label.capitalize() + " of generated samples")
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig


def study_probes_section(df: Any, model: str, t: float, add: Any, sfx: str) -> list[str]:
    """HTML pieces (headings and figures, through ``add(name, fig, caption)``) for the plots whose rows exist."""
    mine = df[df["model"] == model]
    have = set(zip(mine["probe"], mine["metric"], strict=False))
    out: list[str] = []
    if ("basins", "recovery_rate") in have and (mine[mine["probe"] == "basins"]["set"] == "random").any():
        out += ["<h2>Basins of random sequences</h2>", add(
            f"basins_random{sfx}", plot_random_basins(df, model, t),
            "Recovery of corrupted tokens on train, test and uniform random sequences: a basin on train that "
            "random sequences share is the model returning anything to itself, not memory.")]
    if ("t_grid", "grid_fixed_point_rate") in have:
        out += ["<h2>Fixed points and entropy over t</h2>", add(
            f"t_grid{sfx}", plot_t_grid(df, model),
            "The fixed-point test started from the clean sequence at each t of the grid, and the conditional "
            "entropy of the prediction at that t; one line per N.")]
    if any(p == "trajectory" for p, _ in have):
        out += ["<h2>Along the reverse chain</h2>", add(
            f"trajectory{sfx}", plot_trajectory(df, model),
            "Entropy, softmax-Jacobian diagonal and interaction terms, spectral gap and confidence of x_θ at each "
            "step of the reverse chain from t = 1 (docs/SPEC.md section 5); one line per N.")]
    if ("gen_ppl", "gen_ppl") in have:
        out += ["<h2>Generative perplexity</h2>", add(
            f"gen_ppl{sfx}", plot_gen_ppl(df, model),
            "Samples decoded to text and scored by the causal LM of probe.gen_ppl_model, and the entropy of each "
            "sample's own token counts.")]
    return out
