"""Formats of other projects, kept out of the core: nothing in basinlab's core imports this package.

:func:`convert` reads a Duo/UDLM (:mod:`basinlab.interop.duo`) or MDLM (:mod:`basinlab.interop.mdlm`) checkpoint,
telling them apart by ``config.json``'s ``model_type`` or a Lightning checkpoint's hyper-parameters.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FAMILIES = ("duo", "mdlm")


def detect_family(src: str | Path) -> tuple[str | None, Any]:
    """``(family, loaded .ckpt or None)``: ``mdlm`` for a directory whose ``config.json`` says ``model_type:
    mdlm`` or a Lightning checkpoint whose hyper-parameters describe a masked (SUBS) model; ``duo`` for any other
    directory (whose reader reports any problem with it) or a checkpoint whose hyper-parameters say anything else;
    ``None`` for a checkpoint without hyper-parameters (nothing tells a masked model from a uniform one)."""
    from basinlab.interop import hf, mdlm

    p = Path(src)
    if p.is_dir():
        try:
            mt = json.loads((p / hf.HF_CONFIG).read_text(encoding="utf-8")).get("model_type")
        except (OSError, ValueError, AttributeError):
            mt = None
        return ("mdlm" if mt == mdlm.MODEL_TYPE else "duo"), None
    if not p.is_file():
        return "duo", None
    ck = hf.safe_torch_load(p)
    if mdlm.is_masked_ckpt(ck):
        return "mdlm", ck
    if not isinstance(ck, dict) or "state_dict" not in ck:
        return "duo", ck  # not a Lightning checkpoint: the reader says so
    return ("duo" if ck.get("hyper_parameters") else None), ck


def _family_by_rows(ck: Any, tokenizer: Any) -> str | None:
    """For a checkpoint without hyper-parameters and a given tokenizer of ``V`` tokens: ``mdlm`` when the weights
    have ``V + 1`` rows (the appended ``[MASK]``), ``duo`` when they have ``V``; else ``None``."""
    from basinlab.interop import hf
    from basinlab.training.checkpoint import tokenizer_vocab_size

    state = ck.get("state_dict") if isinstance(ck, dict) else None
    emb = state.get(hf.PREFIX + "vocab_embed.embedding") if isinstance(state, dict) else None
    if tokenizer is None or not hasattr(emb, "shape"):
        return None
    tok, _ = hf.resolve_tokenizer(tokenizer)
    V = tokenizer_vocab_size(tok)
    return {V + 1: "mdlm", V: "duo"}.get(int(emb.shape[0]))


def _said(src: Path) -> str:
    return "config.json's model_type" if src.is_dir() else "its hyper-parameters (parameterization: subs)"


def resolve_family(src: str | Path, family: str | None, tokenizer: Any = None) -> tuple[str, Any]:
    """``(family, loaded .ckpt or None)`` of ``src``: the one ``family`` (``--model-type``) names or the one
    detected; a contradiction between them, and a headerless checkpoint that nothing identifies, refused."""
    from basinlab.errors import BasinlabError

    if family not in (None, *FAMILIES):
        raise BasinlabError(f"--model-type must be one of {', '.join(FAMILIES)}, got {family!r}")
    found, ck = detect_family(src)
    if found is None and ck is not None:
        found = _family_by_rows(ck, tokenizer)
        if found is None and family is None:
            raise BasinlabError(f"{src} has no hyper-parameters saying whether it is a Duo/UDLM (uniform) or an "
                                "MDLM (masked) model; pass --model-type duo or --model-type mdlm (or --tokenizer: "
                                "V + 1 rows of weights for a tokenizer of V tokens is MDLM's appended [MASK])")
    if family == "duo" and found == "mdlm":  # (the MDLM reader refuses a source that says it is not masked)
        raise BasinlabError(f"--model-type duo contradicts {src}: {_said(Path(src))} says it is an MDLM (masked) "
                            "model; drop --model-type or pass --model-type mdlm")
    return family or found, ck


def convert(src: str | Path, out: str | Path, *, family: str | None = None, **options: Any) -> Path:
    """Convert a Duo/UDLM or MDLM checkpoint into the basinlab run ``out`` (``family``: ``duo`` or ``mdlm``, else
    detected: :func:`resolve_family`); ``options`` as for :func:`basinlab.interop.duo.convert`. Returns the
    checkpoint directory. Detecting a ``.ckpt`` loads it (safely), once: both readers convert from that load."""
    from basinlab.errors import BasinlabError
    from basinlab.interop import duo, mdlm

    if not Path(src).exists():
        raise BasinlabError(f"'{src}' does not exist; give a Duo, UDLM or MDLM Hugging Face directory or a "
                            "Lightning .ckpt")
    from basinlab.training.checkpoint import loads_in_place

    in_place = loads_in_place(src)
    if in_place is not None:
        raise BasinlabError(f"'{src}' is a {in_place.name} checkpoint, which basinlab loads in place: no conversion "
                            f"needed (basinlab audit --checkpoint {src}; fine-tune with model.init={src})")
    family, ck = resolve_family(src, family, options.get("tokenizer"))
    if family == "mdlm":
        return mdlm.convert(src, out, ck=ck, **options)
    return duo.convert(src, out, ck=ck, **options)


__all__ = ["FAMILIES", "convert", "detect_family", "resolve_family"]
