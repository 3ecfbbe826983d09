"""Duo and UDLM checkpoints in and out: the Hugging Face layout and Lightning ``.ckpt`` files (SPEC 2, 4).

Duo (``s-sahoo/duo``, ``models/dit.py``) and UDLM (``kuleshov-group/discrete-diffusion-guidance``) share one
network, ``DIT``, whose state-dict keys sit under ``backbone.`` in both published formats:

- a **Hugging Face directory**: ``config.json`` (``vocab_size``, ``model_length``, ``hidden_dim``, ``cond_dim``,
  ``n_blocks``, ``n_heads``, ``dropout``, ``model_type``) and ``model.safetensors`` with ``backbone.*`` keys;
- a **Lightning checkpoint** of Duo's trainer: ``state_dict`` with the same ``backbone.*`` keys and ``ema`` =
  ``{decay, num_updates, shadow_params}``, ``shadow_params`` a list in the order of ``backbone.parameters()``.

basinlab's :class:`~basinlab.models.dit.DiT` is Duo's ``DIT`` with other parameter names (same LayerNorm with a
gain and eps 1e-5, SiLU applied once to the conditioning, rotary "rotate half" on q and k, adaLN chunk order
shift/scale/gate for attention then MLP, final adaLN shift/scale and linear head), so weights map one to one
with no arithmetic: :data:`KEY_MAP`. The only extra tensor, Duo's persistent rotary buffer
``rotary_emb.inv_freq``, is checked against basinlab's and written back on export.

The network is conditioned on ``sigma_t = -log alpha_t`` of the log-linear schedule with ``eps = 1e-3`` (what Duo
and UDLM train with) and ``x_theta = softmax(logits)``. A converted directory is an ordinary basinlab run,
written by :func:`basinlab.training.checkpoint.save_checkpoint`.

Loading never runs pickled code: ``torch.load(..., weights_only=True)``. Globals of a Lightning checkpoint's
metadata (``hyper_parameters``: omegaconf configs, tokenizer objects...) from the modules in
:data:`METADATA_MODULES` are replaced by an inert placeholder that only records its arguments; any other global
is refused with one line naming it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from basinlab.diffusion.masked import MaskedProcess
from basinlab.diffusion.uniform import UniformProcess
from basinlab.errors import BasinlabError
from basinlab.interop.checks import check_convert_out, check_export_out, infer_arch
from basinlab.interop.hf import (  # the shared reader and writer, importable from here as before
    EPS,
    HF_CONFIG,
    METADATA_MODULES,
    OpaqueMetadata,
    basinlab_to_duo,
    build_dit,
    checked_source,
    duo_to_basinlab,
    ema_by_name,
    find_in_placeholder,
    hf_fields,
    key_map,
    load_hf_weights,
    own_mask_index,
    read_json,
    resolve_tokenizer,
    safe_torch_load,
    save_conversion,
    sigma_of_t,
    strip_prefix,
    write_hf_dir,
)

logger = logging.getLogger(__name__)

MODEL_TYPES = ("duo", "duo_base", "udlm")
HF_FIELDS = ("vocab_size", "model_length", "hidden_dim", "cond_dim", "n_blocks", "n_heads", "dropout")






# ---- safe loading -------------------------------------------------------------------------------------------












# ---- reading the two source formats -------------------------------------------------------------------------




def read_hf_config(src: Path) -> dict[str, Any]:
    """``config.json`` of a Duo/UDLM Hugging Face directory, checked (model type, fields, conditioning)."""
    return check_hf_config(read_json(src), src / HF_CONFIG)


def check_hf_config(cfg: Any, where: Any) -> dict[str, Any]:
    if not isinstance(cfg, dict):
        raise BasinlabError(f"{where} must hold a JSON object")
    mt = cfg.get("model_type")
    if mt not in MODEL_TYPES:
        raise BasinlabError(f"unknown model_type {mt!r} in {where}; basinlab converts {', '.join(MODEL_TYPES)} "
                            "(uniform) and mdlm (masked)")
    missing = [k for k in HF_FIELDS if k not in cfg]
    if missing:
        raise BasinlabError(f"{where} lacks {', '.join(missing)} (a Duo/UDLM config has {', '.join(HF_FIELDS)})")
    tc = cfg.setdefault("time_conditioning", True)  # false: sigma = 0 whatever t (model.time_conditioning)
    if not isinstance(tc, bool):
        raise BasinlabError(f"{where}: time_conditioning must be true or false, got {tc!r}")
    if cfg.get("cfg", False):
        raise BasinlabError(f"{where} is a class-conditional (cfg) model; basinlab converts unconditional ones")
    for k in ("vocab_size", "model_length", "hidden_dim", "cond_dim", "n_blocks", "n_heads"):
        v = cfg[k]
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise BasinlabError(f"{where}: {k} must be a positive integer, got {v!r}")
    if cfg["hidden_dim"] % cfg["n_heads"] or (cfg["hidden_dim"] // cfg["n_heads"]) % 2:
        raise BasinlabError(f"{where}: hidden_dim={cfg['hidden_dim']} must be n_heads={cfg['n_heads']} times an "
                            "even head size")
    return cfg






def read_hf_dir(src: Path) -> dict[str, Any]:
    """``{config, raw, ema}`` of a Hugging Face directory (one set of weights: ``ema`` is ``None``)."""
    cfg = read_hf_config(src)
    return {"config": cfg, "raw": load_hf_weights(src), "ema": None, "step": int(cfg.get("step", 0) or 0)}




def read_lightning_ckpt(src: Path, n_heads: int | None = None, ck: Any = None) -> dict[str, Any]:
    """``{config, raw, ema}`` of a Lightning ``.ckpt`` of Duo's trainer (``ema``: Duo keys, or ``None``; ``ck``:
    the file already loaded)."""
    ck = safe_torch_load(src) if ck is None else ck
    if not isinstance(ck, dict) or not isinstance(ck.get("state_dict"), Mapping):
        raise BasinlabError(f"{src} has no 'state_dict'; is it a Lightning checkpoint of Duo's trainer?")
    raw = strip_prefix(ck["state_dict"], src)
    cfg = _config_from_hparams(ck.get("hyper_parameters"), raw, src, n_heads)
    return {"config": cfg, "raw": raw, "ema": ema_by_name(ck, src, cfg["n_blocks"]),
            "step": int(ck.get("global_step", 0) or 0)}




def _config_from_hparams(hp: Any, raw: Mapping[str, torch.Tensor], src: Path, n_heads: int | None) -> dict:
    """The HF-style config of a Lightning checkpoint: shapes from the weights, ``n_heads`` and ``dropout`` from
    ``--n-heads`` or the (placeholder) hyper-parameters."""
    arch = infer_arch(raw, src, n_heads)
    found = find_in_placeholder(hp, ("n_heads", "dropout", "length"))
    if arch["n_heads"] is None:
        arch["n_heads"] = found.get("n_heads")
    if arch["n_heads"] is None:
        raise BasinlabError(f"{src} does not say its number of attention heads; pass --n-heads")
    arch.update(model_type="duo", dropout=float(found.get("dropout", 0.0)),
                model_length=int(found.get("length", 0) or 0) or None)
    return arch






def read_source(src: str | Path, n_heads: int | None = None, ck: Any = None) -> dict[str, Any]:
    """Either format: a directory (Hugging Face layout) or a file (Lightning ``.ckpt``; ``ck``: already loaded)."""
    p = Path(src)
    if not p.exists():
        raise BasinlabError(f"'{src}' does not exist; give a Duo/UDLM Hugging Face directory or a Lightning .ckpt")
    return read_hf_dir(p) if p.is_dir() else read_lightning_ckpt(p, n_heads, ck)


# ---- mapping weights ----------------------------------------------------------------------------------------












# ---- convert in ---------------------------------------------------------------------------------------------








def convert(
    src: str | Path,
    out: str | Path,
    *,
    tokenizer: str | Path | None = None,
    weights: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    n_heads: int | None = None,
    ck: Any = None,
) -> Path:
    """Convert a Duo/UDLM checkpoint (Hugging Face directory or Lightning ``.ckpt``) into the basinlab run ``out``.

    ``weights``: ``ema`` (the default when the source has EMA weights) or ``raw``; the chosen weights go where a
    basinlab run keeps its EMA weights (what ``basinlab.load`` uses), the raw ones to ``model.safetensors``.
    ``overrides`` (``data.*`` ...) adjust the run's config; ``ck``: a ``.ckpt`` already loaded. Returns the
    checkpoint directory written.
    """
    src = Path(src)
    if weights not in (None, "ema", "raw"):
        raise BasinlabError(f"--weights must be ema or raw, got {weights!r}")
    check_convert_out(src, Path(out))  # never over another run (issue 18)
    got = checked_source(src, read_source(src, n_heads, ck))
    return save_conversion(src, out, got, tokenizer=tokenizer, weights=weights, overrides=overrides)










# ---- export out ---------------------------------------------------------------------------------------------


def export_duo_hf(run: str | Path, out: str | Path, *, raw: bool = False, model_type: str = "duo") -> Path:
    """Write the basinlab run ``run`` as a Duo/UDLM Hugging Face directory ``out``: ``config.json`` and
    ``model.safetensors`` (``backbone.*`` keys, float32), plus ``tokenizer.json`` when the run has one.

    ``config.json`` also keeps the run's basinlab config under ``basinlab`` (Duo and UDLM ignore unknown fields),
    so that :func:`convert` gives back the same run. The EMA weights unless ``raw``.
    """
    from basinlab.training.checkpoint import load_trained

    if model_type not in MODEL_TYPES:
        raise BasinlabError(f"unknown model_type {model_type!r}; choose one of {', '.join(MODEL_TYPES)}")
    check_export_out(run, Path(out))  # never over files it did not write (issue 18)
    tm = load_trained(run, device="cpu", ema=not raw)
    if not isinstance(tm.process, UniformProcess):
        raise BasinlabError(f"{run} is a {tm.process.name} model; Duo's and UDLM's layout holds uniform ones (SPEC 2)"
                            + (": export it with --format mdlm-hf" if isinstance(tm.process, MaskedProcess) else ""))
    hf = {"model_type": model_type, "vocab_size": tm.vocab_size, **hf_fields(tm, run, raw, "Duo and UDLM")}
    return write_hf_dir(tm, out, hf)






__all__ = [
    "EPS",
    "HF_FIELDS",
    "METADATA_MODULES",
    "MODEL_TYPES",
    "OpaqueMetadata",
    "basinlab_to_duo",
    "build_dit",
    "convert",
    "duo_to_basinlab",
    "ema_by_name",
    "find_in_placeholder",
    "export_duo_hf",
    "hf_fields",
    "infer_arch",
    "key_map",
    "own_mask_index",
    "load_hf_weights",
    "read_json",
    "read_hf_config",
    "read_hf_dir",
    "read_lightning_ckpt",
    "read_source",
    "resolve_tokenizer",
    "safe_torch_load",
    "save_conversion",
    "sigma_of_t",
    "strip_prefix",
    "write_hf_dir",
]
