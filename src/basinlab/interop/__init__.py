"""Formats of other projects, kept out of the core: nothing in basinlab's core imports this package.

:func:`convert` reads a Duo/UDLM (:mod:`basinlab.interop.duo`) or MDLM (:mod:`basinlab.interop.mdlm`) checkpoint,
telling them apart by ``config.json``'s ``model_type`` or a Lightning checkpoint's hyper-parameters.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FAMILIES = ("duo", "mdlm")


def detect_family(src: str | Path) -> tuple[str, Any]:
    """``(family, loaded .ckpt or None)``: ``mdlm`` for a directory whose ``config.json`` says ``model_type:
    mdlm`` or a Lightning checkpoint whose hyper-parameters describe a masked (SUBS) model; else ``duo`` (whose
    reader reports any problem with the source)."""
    from basinlab.interop import duo, mdlm

    p = Path(src)
    if p.is_dir():
        try:
            mt = json.loads((p / duo.HF_CONFIG).read_text(encoding="utf-8")).get("model_type")
        except (OSError, ValueError, AttributeError):
            mt = None
        return ("mdlm" if mt == mdlm.MODEL_TYPE else "duo"), None
    if not p.is_file():
        return "duo", None
    ck = duo.safe_torch_load(p)
    return ("mdlm" if mdlm.is_masked_ckpt(ck) else "duo"), ck


def convert(src: str | Path, out: str | Path, *, family: str | None = None, **options: Any) -> Path:
    """Convert a Duo/UDLM or MDLM checkpoint into the basinlab run ``out`` (``family``: ``duo`` or ``mdlm``, else
    detected); ``options`` as for :func:`basinlab.interop.duo.convert`. Returns the checkpoint directory.
    Detecting a ``.ckpt`` loads it (safely); an MDLM one is converted from that load, a Duo one is read again by
    :func:`basinlab.interop.duo.convert` (pass ``family="duo"`` to skip the first read)."""
    from basinlab.errors import BasinlabError
    from basinlab.interop import duo, mdlm

    if family not in (None, *FAMILIES):
        raise BasinlabError(f"--model-type must be one of {', '.join(FAMILIES)}, got {family!r}")
    if not Path(src).exists():
        raise BasinlabError(f"'{src}' does not exist; give a Duo, UDLM or MDLM Hugging Face directory or a "
                            "Lightning .ckpt")
    from basinlab.models.family import loads_in_place

    in_place = loads_in_place(src)
    if in_place is not None:
        raise BasinlabError(f"'{src}' is a {in_place.name} checkpoint, which basinlab loads in place: no conversion "
                            f"needed (basinlab audit --checkpoint {src}; fine-tune with model.init={src})")
    ck = None
    if family is None:
        family, ck = detect_family(src)
    if family == "mdlm":
        return mdlm.convert(src, out, ck=ck, **options)
    return duo.convert(src, out, **options)


__all__ = ["FAMILIES", "convert", "detect_family"]
