"""MDLM checkpoints in and out: the Hugging Face layout and Lightning ``.ckpt`` files (SPEC 2b).

MDLM (``kuleshov-group/mdlm``) trains a masked (absorbing-state) diffusion model with the same network as Duo:
its ``models/dit.py`` ``DIT`` is the one Duo derived its own from, with the same parameter names under
``backbone.`` (``vocab_embed.embedding``, ``sigma_map.mlp.*``, ``blocks.i.{norm1, attn_qkv, attn_out, norm2, mlp,
adaLN_modulation}``, ``output_layer.*``, the persistent buffer ``rotary_emb.inv_freq``) and the same arithmetic
(LayerNorm with a gain and eps 1e-5, rotary "rotate half" on q and k through flash-attn's ``apply_rotary_emb_qkv_``,
adaLN chunks shift/scale/gate for attention then MLP, ``c = SiLU(sigma_map(sigma))``, final adaLN and linear
head). What differs from Duo, and how basinlab represents it:

- **vocabulary**: ``[MASK]`` is appended (``mask_index = V``; ``vocab_size`` in ``config.json`` is ``V + 1``, 50258
  for ``mdlm-owt`` over GPT-2's 50257 tokens). A converted run has ``train.process = masked`` over the ``V``
  clean tokens; its network has ``V + 1`` inputs and outputs. A tokenizer that holds its own ``[MASK]`` (MDLM with
  a BERT tokenizer) is not extended: ``vocab_size`` is the tokenizer's size ``V`` and the mask is its id, as
  basinlab's masked process takes it (``process_options.mask_index``; :func:`~basinlab.interop.hf.own_mask_index`);
  without a tokenizer nothing tells the two apart, so convert such a model with its tokenizer. An export writes
  the network's rows (``V + 1``, or ``V`` with the tokenizer's own mask), what MDLM reads;
- **time conditioning**: ``time_conditioning: false`` (``mdlm-owt``) makes MDLM's ``_process_sigma`` feed
  ``sigma = 0`` whatever ``t``; the weights of ``sigma_map`` still shape the constant ``c``. basinlab's DiT has the
  same switch (``model.time_conditioning``);
- **output**: MDLM's ``_subs_parameterization`` (mask logit ``-1e6``, log-softmax, unmasked rows ``-1e6`` except
  ``0`` at the token) is basinlab's masked process's SUBS with exact ``-inf``; the mask column is dropped from
  ``log x_θ`` (``[B, L, V]``);
- **formats**: ``config.json`` has ``model_type: "mdlm"`` and MDLM's fields (:data:`HF_FIELDS`, ``dropout``,
  ``time_conditioning``); a Lightning ``.ckpt`` of MDLM's trainer has ``state_dict`` (``backbone.*``), ``ema`` =
  ``{decay, num_updates, shadow_params}`` over ``backbone.parameters()`` (the log-linear noise has none), and
  ``hyper_parameters`` = ``{config, tokenizer}`` whose config says ``parameterization: subs``,
  ``time_conditioning`` and ``model.{n_heads, length, dropout}``.

The machinery is Duo's (:mod:`basinlab.interop.duo`): safe loading (no pickled code runs), the key map in
parameter order (the order of ``shadow_params``), weight renaming with shape checks, tokenizer resolution and the
converted run's config. Sigma is the log-linear one with ``eps = 1e-3`` (MDLM's ``noise: loglinear``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from basinlab.diffusion.masked import MaskedProcess
from basinlab.errors import BasinlabError
from basinlab.interop import hf
from basinlab.interop.checks import check_convert_out, check_export_out, infer_arch

MODEL_TYPE = "mdlm"
HF_FIELDS = ("vocab_size", "model_length", "hidden_dim", "cond_dim", "n_blocks", "n_heads")
#: hyper-parameters read from a Lightning checkpoint of MDLM's trainer (omegaconf values, any depth)
_HPARAMS = ("n_heads", "dropout", "length", "time_conditioning", "parameterization", "diffusion")


def check_mdlm_config(cfg: Any, where: Any) -> dict[str, Any]:
    """An MDLM ``config.json`` (or the equivalent read off a ``.ckpt``), checked; ``time_conditioning`` and
    ``dropout`` get MDLM's defaults (false, 0.1) when absent."""
    if not isinstance(cfg, dict):
        raise BasinlabError(f"{where} must hold a JSON object")
    if cfg.get("model_type") != MODEL_TYPE:
        raise BasinlabError(f"{where} has model_type {cfg.get('model_type')!r}, not {MODEL_TYPE!r}")
    missing = [k for k in HF_FIELDS if k not in cfg]
    if missing:
        raise BasinlabError(f"{where} lacks {', '.join(missing)} (an MDLM config has {', '.join(HF_FIELDS)})")
    for k in HF_FIELDS:
        v = cfg[k]
        if k == "model_length" and v is None:  # unknown (a .ckpt without it): data.seq_len must say it
            continue
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise BasinlabError(f"{where}: {k} must be a positive integer, got {v!r}")
    if cfg["vocab_size"] < 2:
        raise BasinlabError(f"{where}: vocab_size {cfg['vocab_size']} leaves no clean token beside [MASK]")
    if cfg["hidden_dim"] % cfg["n_heads"] or (cfg["hidden_dim"] // cfg["n_heads"]) % 2:
        raise BasinlabError(f"{where}: hidden_dim={cfg['hidden_dim']} must be n_heads={cfg['n_heads']} times an "
                            "even head size")
    tc = cfg.setdefault("time_conditioning", False)
    if not isinstance(tc, bool):
        raise BasinlabError(f"{where}: time_conditioning must be true or false, got {tc!r}")
    cfg["dropout"] = float(cfg.get("dropout", 0.1))
    return cfg


def read_mdlm_hf(src: Path) -> dict[str, Any]:
    """``{config, raw, ema, step}`` of an MDLM Hugging Face directory (``ema`` is ``None``: one set of weights)."""
    cfg = check_mdlm_config(hf.read_json(src, "MDLM"), src / hf.HF_CONFIG)
    return {"config": cfg, "raw": hf.load_hf_weights(src, "MDLM"), "ema": None,
            "step": int(cfg.get("step", 0) or 0)}


def lightning_hparams(ck: Any) -> dict[str, Any]:
    """The hyper-parameters of :data:`_HPARAMS` found in a loaded Lightning checkpoint (placeholders searched)."""
    hp = ck.get("hyper_parameters") if isinstance(ck, Mapping) else None
    return hf.find_in_placeholder(hp, _HPARAMS, types=(int, float, bool, str))


def is_masked_ckpt(ck: Any) -> bool:
    """Whether a loaded Lightning checkpoint is a masked (MDLM) model: its config says ``parameterization: subs``
    (MDLM's, and Duo's repository's ``algo: mdlm``; Duo's own says ``mean``) or ``diffusion: absorbing_state``."""
    hp = lightning_hparams(ck)
    return hp.get("parameterization") == "subs" or hp.get("diffusion") == "absorbing_state"


def read_mdlm_ckpt(src: Path, ck: Any, n_heads: int | None = None,
                   time_conditioning: bool | None = None) -> dict[str, Any]:
    """``{config, raw, ema, step}`` of a loaded Lightning checkpoint of MDLM's trainer."""
    if not isinstance(ck, Mapping) or not isinstance(ck.get("state_dict"), Mapping):
        raise BasinlabError(f"{src} has no 'state_dict'; is it a Lightning checkpoint of MDLM's trainer?")
    hp = lightning_hparams(ck)
    if hp.get("parameterization") not in (None, "subs"):
        raise BasinlabError(f"{src} uses the {hp['parameterization']!r} parameterisation; basinlab reads MDLM's "
                            "SUBS models")
    raw = hf.strip_prefix(ck["state_dict"], src, "MDLM")
    arch = infer_arch(raw, src, n_heads if n_heads is not None else hp.get("n_heads"))
    if arch["n_heads"] is None:
        raise BasinlabError(f"{src} does not say its number of attention heads; pass --n-heads")
    tc = hp.get("time_conditioning", time_conditioning)
    if tc is None:
        raise BasinlabError(f"{src} does not say whether it conditions on time; pass model.time_conditioning=true "
                            "or model.time_conditioning=false")
    cfg = check_mdlm_config({**arch, "model_type": MODEL_TYPE, "model_length": int(hp.get("length", 0) or 0) or None,
                             "dropout": float(hp.get("dropout", 0.1)), "time_conditioning": bool(tc)}, src)
    return {"config": cfg, "raw": raw, "ema": hf.ema_by_name(ck, src, cfg["n_blocks"], "MDLM"),
            "step": int(ck.get("global_step", 0) or 0)}


# ---- convert in ---------------------------------------------------------------------------------------------


def read_source(src: str | Path, n_heads: int | None = None, time_conditioning: bool | None = None,
                ck: Any = None) -> dict[str, Any]:
    """Either format: a Hugging Face directory, or a Lightning ``.ckpt`` (``ck``: the file already loaded)."""
    p = Path(src)
    if not p.exists():
        raise BasinlabError(f"'{src}' does not exist; give an MDLM Hugging Face directory or a Lightning .ckpt")
    if p.is_dir():
        return read_mdlm_hf(p)
    return read_mdlm_ckpt(p, hf.safe_torch_load(p) if ck is None else ck, n_heads, time_conditioning)


def _override(overrides: list[str], key: str) -> str | None:
    vals = [o.split("=", 1)[1].strip() for o in overrides if o.split("=", 1)[0].strip() == key]
    return vals[-1] if vals else None


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
    """Convert an MDLM checkpoint (Hugging Face directory or Lightning ``.ckpt``) into the basinlab run ``out``: a
    masked-process run over ``V = vocab_size - 1`` clean tokens. ``weights``, ``overrides``, ``n_heads`` as for
    :func:`basinlab.interop.duo.convert`; ``model.time_conditioning=...`` in ``overrides`` says what a ``.ckpt``
    without hyper-parameters cannot. Returns the checkpoint directory written."""
    src, overrides = Path(src), list(overrides)
    if weights not in (None, "ema", "raw"):
        raise BasinlabError(f"--weights must be ema or raw, got {weights!r}")
    check_convert_out(src, Path(out))  # never over another run (issue 18)
    tc = _override(overrides, "model.time_conditioning")
    got = hf.checked_source(src, read_source(src, n_heads, None if tc is None else tc.lower() in ("true", "1", "yes",
                                                                                                  "on"), ck))
    return hf.save_conversion(src, out, got, tokenizer=tokenizer, weights=weights, overrides=overrides,
                               process=MaskedProcess.name)


# ---- export out ---------------------------------------------------------------------------------------------


def export_mdlm_hf(run: str | Path, out: str | Path, *, raw: bool = False) -> Path:
    """Write the masked basinlab run ``run`` as an MDLM Hugging Face directory ``out``: ``config.json``
    (``model_type: mdlm``, ``vocab_size`` the network's rows, ``time_conditioning``) and ``model.safetensors``
    (``backbone.*`` keys, float32), plus ``tokenizer.json`` when the run has one. ``config.json`` keeps the run's
    basinlab config under ``basinlab`` so that :func:`convert` gives back the same run. EMA weights unless ``raw``."""
    from basinlab.training.checkpoint import load_trained

    check_export_out(run, Path(out))  # never over files it did not write (issue 18)
    tm = load_trained(run, device="cpu", ema=not raw)
    if not isinstance(tm.process, MaskedProcess):
        raise BasinlabError(f"{run} is a {tm.process.name} model; MDLM's layout holds masked ones (SPEC 2b)"
                            + ("" if tm.process.mask_index is not None else ": export it with --format duo-hf"))
    # the network's rows: V + 1 with an appended [MASK], V when the tokenizer holds its own (MDLM's rule)
    fields = {"model_type": MODEL_TYPE, "architectures": ["MDLM"], "vocab_size": tm.process.n_outputs,
              **hf.hf_fields(tm, run, raw, "MDLM models")}
    return hf.write_hf_dir(tm, out, fields)


__all__ = [
    "HF_FIELDS",
    "MODEL_TYPE",
    "check_mdlm_config",
    "convert",
    "export_mdlm_hf",
    "is_masked_ckpt",
    "lightning_hparams",
    "read_mdlm_ckpt",
    "read_mdlm_hf",
    "read_source",
]
