"""Parts of the sweep report (SPEC 7) that tell a reader whether to trust it: the training-loss curve of every
run (did each model converge?), where ``N*`` sits on the grid (an interpolation between two trained sizes?), and
the page's provenance (basinlab version, git commit where known, date, host, command line)."""

from __future__ import annotations

import datetime
import html
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any


def loss_curves(out_dir: Path, model: str, seed: int | None) -> list[tuple[int, Any]]:
    """``[(N, metrics DataFrame)]`` of the trained runs of ``model`` (``runs/*/metrics.csv``), sorted by N: only
    the directories of that model (:attr:`RunKey.name`: a sweep of several processes keeps each apart)."""
    import pandas as pd

    from basinlab.study.store import RunKey

    found = []
    for d in sorted((out_dir / "runs").glob("N*-s*")):
        name = d.name
        if "-oracle-" in name or not (d / "metrics.csv").is_file():
            continue
        try:
            n, s = name[1:].split("-s", 1)
            n_i, s_i = int(n), int(s.split("-", 1)[0])
        except ValueError:
            continue
        if (seed is not None and s_i != seed) or RunKey(n_i, s_i, model).name != name:
            continue
        try:
            df = pd.read_csv(d / "metrics.csv")
        except (OSError, ValueError):
            continue
        if len(df) and {"step", "loss"} <= set(df.columns):
            found.append((n_i, df))
    return sorted(found, key=lambda x: x[0])


def plot_losses(curves: list[tuple[int, Any]], plt: Any) -> Any:
    """Training loss against step, one line per N (viridis, small N dark), log loss axis."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    cmap = plt.get_cmap("viridis")
    for i, (n, df) in enumerate(curves):
        ax.plot(df["step"], df["loss"], "-", lw=1.3, color=cmap(i / max(1, len(curves) - 1) * 0.9), label=f"N = {n}",
                marker="o" if len(df) < 2 else None, markersize=5)  # one logged point: a dot, not nothing
    log_axis(ax)
    ax.set_xlabel("training step")
    ax.set_ylabel("training loss (per logged window)")
    objectives = sorted({str(o) for _, df in curves for o in df.get("objective", [])})
    ax.set_title("Training loss per N" + (f" ({', '.join(objectives)})" if objectives else ""), fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    return fig


def log_axis(ax: Any) -> None:
    """A log value axis whose tick labels read as plain numbers (0.5, 2, 3), not powers of ten; the minor ticks
    are labelled only when the axis spans less than a decade (else they would crowd)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_yscale("log")
    fmt = FuncFormatter(lambda v, _: f"{v:.3g}")
    ax.yaxis.set_major_formatter(fmt)
    lo, hi = ax.get_ylim()
    ax.yaxis.set_minor_formatter(fmt if lo > 0 and hi / lo < 10 else NullFormatter())


def interpolation_note(n_star: float | None, sizes: list[int]) -> str:
    """When ``N*`` falls strictly between two adjacent grid sizes, a sentence saying it is an interpolation."""
    if n_star is None or not sizes or any(abs(n - n_star) <= 1e-9 * n for n in sizes):
        return ""
    below = [n for n in sizes if n < n_star]
    above = [n for n in sizes if n > n_star]
    if not below or not above:
        return ""
    lo, hi = max(below), min(above)
    return (f"<p class='note'>N* is an interpolation: no model was trained between N = {lo} and N = {hi}, the two "
            f"grid sizes that bracket it, so the grid places N* only within that factor of {hi / lo:g}; add sizes "
            f"in between (sweep.sizes) to locate it.</p>")


def _git_commit() -> str | None:
    import basinlab

    root = Path(basinlab.__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        r = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                           text=True, timeout=10, check=False)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if r.returncode != 0:
        return None
    return r.stdout.strip() + (" (with local changes)" if dirty.stdout.strip() else "")


def provenance() -> dict[str, str]:
    """What made this page: ``basinlab``, ``commit`` (or "unknown"), ``date`` (UTC), ``host``, ``command``."""
    import basinlab

    return {"basinlab": basinlab.__version__, "commit": _git_commit() or "unknown (not a git checkout)",
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "host": platform.node() or "unknown", "python": platform.python_version(),
            "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else "?"}


def provenance_html() -> str:
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td><code>{html.escape(v)}</code></td></tr>"
                   for k, v in provenance().items())
    return f"<h2>Provenance</h2><table>{rows}</table>"
