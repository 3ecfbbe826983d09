"""``basinlab export --format hf``: a run of a deployed model family (SPEC 2c: LLaDA, Dream...) written back in its
own layout, by the family itself (``family.export(run, out, raw=...)``: the original key names and ``config.json``),
so the original code and ``basinlab audit --checkpoint OUT`` load it."""

from __future__ import annotations

from pathlib import Path

from basinlab.errors import BasinlabError


def export_hf(run: str | Path, out: str | Path, *, raw: bool = False, **_: object) -> Path:
    """Ask the run's family to write ``run`` into ``out`` in its own layout; one line for a family without one."""
    from basinlab.models.family import get_family
    from basinlab.training.checkpoint import load_meta, require_checkpoint

    ckpt = require_checkpoint(run)
    family = get_family(load_meta(ckpt).get("family"))
    export = getattr(family, "export", None)
    if not callable(export):
        raise BasinlabError(f"{ckpt} is a {family.name} run, which has no layout of its own: export it with "
                            "--format duo-hf (uniform) or mdlm-hf (masked)")
    return export(ckpt, out, raw=raw)
