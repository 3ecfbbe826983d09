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
  clean tokens; its network has ``V + 1`` inputs and outputs. Models whose tokenizer holds its own mask token
  inside the vocabulary (MDLM with a BERT tokenizer) are refused: basinlab's mask is always the last id;
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

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from basinlab.errors import BasinlabError
from basinlab.interop import duo

logger = logging.getLogger(__name__)

MODEL_TYPE = "mdlm"
HF_FIELDS = ("vocab_size", "model_length", "hidden_dim", "cond_dim", "n_blocks", "n_heads")
#: hyper-parameters read from a Lightning checkpoint of MDLM's trainer (omegaconf values, any depth)
_HPARAMS = ("n_heads", "dropout", "length", "time_conditioning", "parameterization", "diffusion", "name")


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
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    cfg = check_mdlm_config(_read_json(src / duo.HF_CONFIG), src / duo.HF_CONFIG)
    f = src / duo.HF_WEIGHTS
    if not f.is_file():
        raise BasinlabError(f"{src} has no {duo.HF_WEIGHTS}; an MDLM Hugging Face directory needs one")
    try:
        state = load_file(str(f))
    except (SafetensorError, OSError, ValueError) as exc:
        raise BasinlabError(f"cannot read {f}: {duo._first_line(exc)}") from None
    return {"config": cfg, "raw": duo._strip_prefix(state, f, "MDLM"), "ema": None,
            "step": int(cfg.get("step", 0) or 0)}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BasinlabError(f"{path.parent} has no {path.name}; a Hugging Face directory needs one") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise BasinlabError(f"{path} is not valid JSON: {duo._first_line(exc)}") from None


def lightning_hparams(ck: Any) -> dict[str, Any]:
    """The hyper-parameters of :data:`_HPARAMS` found in a loaded Lightning checkpoint (placeholders searched)."""
    hp = ck.get("hyper_parameters") if isinstance(ck, Mapping) else None
    return duo._find_in_placeholder(hp, _HPARAMS, types=(int, float, bool, str))


def is_masked_ckpt(ck: Any) -> bool:
    """Whether a loaded Lightning checkpoint is a masked (MDLM) model: its config says ``parameterization: subs``,
    ``diffusion: absorbing_state`` or ``algo.name: mdlm`` (Duo's repository trains MDLM too)."""
    hp = lightning_hparams(ck)
    return (hp.get("parameterization") == "subs" or hp.get("diffusion") == "absorbing_state"
            or hp.get("name") == MODEL_TYPE)


def read_mdlm_ckpt(src: Path, ck: Any, n_heads: int | None = None,
                   time_conditioning: bool | None = None) -> dict[str, Any]:
    """``{config, raw, ema, step}`` of a loaded Lightning checkpoint of MDLM's trainer."""
    if not isinstance(ck, Mapping) or not isinstance(ck.get("state_dict"), Mapping):
        raise BasinlabError(f"{src} has no 'state_dict'; is it a Lightning checkpoint of MDLM's trainer?")
    hp = lightning_hparams(ck)
    if hp.get("parameterization") not in (None, "subs"):
        raise BasinlabError(f"{src} uses the {hp['parameterization']!r} parameterisation; basinlab reads MDLM's "
                            "SUBS models")
    raw = duo._strip_prefix(ck["state_dict"], src, "MDLM")
    arch = duo.infer_arch(raw, src, n_heads if n_heads is not None else hp.get("n_heads"))
    if arch["n_heads"] is None:
        raise BasinlabError(f"{src} does not say its number of attention heads; pass --n-heads")
    tc = hp.get("time_conditioning", time_conditioning)
    if tc is None:
        raise BasinlabError(f"{src} does not say whether it conditions on time; pass model.time_conditioning=true "
                            "or model.time_conditioning=false")
    cfg = check_mdlm_config({**arch, "model_type": MODEL_TYPE, "model_length": int(hp.get("length", 0) or 0) or None,
                             "dropout": float(hp.get("dropout", 0.1)), "time_conditioning": bool(tc)}, src)
    return {"config": cfg, "raw": raw, "ema": _shadow(ck, src, cfg["n_blocks"]),
            "step": int(ck.get("global_step", 0) or 0)}


def _shadow(ck: Mapping[str, Any], src: Path, n_blocks: int) -> dict[str, torch.Tensor] | None:
    """The EMA weights by name: ``ema.shadow_params`` in the order of ``backbone.parameters()``."""
    if ck.get("ema") is None:
        return None
    shadow = ck["ema"].get("shadow_params") if isinstance(ck["ema"], Mapping) else None
    if not isinstance(shadow, (list, tuple)) or not all(isinstance(p, torch.Tensor) for p in shadow):
        raise BasinlabError(f"{src}: ema.shadow_params must be a list of tensors")
    names = [b for _, b in duo.key_map(n_blocks)]
    if len(shadow) != len(names):
        raise BasinlabError(f"{src}: ema.shadow_params has {len(shadow)} tensors but MDLM's DIT with {n_blocks} "
                            f"blocks has {len(names)} parameters (a learned noise schedule is not supported)")
    return dict(zip(names, shadow, strict=True))


def build_masked_dit(cfg: Mapping[str, Any], seq_len: int):
    """basinlab's DiT for an MDLM config: ``V = vocab_size - 1`` clean tokens of the masked process."""
    from basinlab.models import build

    arch = {"n_layer": cfg["n_blocks"], "d_model": cfg["hidden_dim"], "n_head": cfg["n_heads"],
            "d_cond": cfg["cond_dim"], "dropout": float(cfg["dropout"]),
            "time_conditioning": bool(cfg["time_conditioning"])}
    return build(arch, cfg["vocab_size"] - 1, seq_len, process="masked")


# ---- convert in ---------------------------------------------------------------------------------------------


def read_source(src: str | Path, n_heads: int | None = None, time_conditioning: bool | None = None,
                ck: Any = None) -> dict[str, Any]:
    """Either format: a Hugging Face directory, or a Lightning ``.ckpt`` (``ck``: the file already loaded)."""
    p = Path(src)
    if not p.exists():
        raise BasinlabError(f"'{src}' does not exist; give an MDLM Hugging Face directory or a Lightning .ckpt")
    if p.is_dir():
        return read_mdlm_hf(p)
    return read_mdlm_ckpt(p, duo.safe_torch_load(p) if ck is None else ck, n_heads, time_conditioning)


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
    from basinlab import __version__
    from basinlab.training.checkpoint import save_checkpoint, tokenizer_vocab_size

    src, overrides = Path(src), list(overrides)
    if weights not in (None, "ema", "raw"):
        raise BasinlabError(f"--weights must be ema or raw, got {weights!r}")
    tc = _override(overrides, "model.time_conditioning")
    tc_given = None if tc is None else tc.lower() in ("true", "1", "yes", "on")
    got = read_source(src, n_heads, tc_given, ck)
    hf = got["config"]
    V = hf["vocab_size"] - 1
    tok, tok_name = duo.resolve_tokenizer(tokenizer, src if src.is_dir() else None)
    if tok is not None and tokenizer_vocab_size(tok) != V:
        raise BasinlabError(f"tokenizer '{tok_name}' has {tokenizer_vocab_size(tok)} tokens but the model has "
                            f"{V} besides its appended [MASK] (vocab_size {hf['vocab_size']}); give the tokenizer it "
                            "was trained with (basinlab reads MDLM models whose [MASK] is the last id)")
    if not hf.get("model_length") and _override(overrides, "data.seq_len") is None:
        raise BasinlabError(f"{src} does not say its sequence length (model_length); pass data.seq_len=L")
    pinned = ["train.process=masked", f"model.time_conditioning={str(hf['time_conditioning']).lower()}"]
    cfg = duo._run_config({**hf, "vocab_size": V}, hf.get("model_length"), tok_name, [*overrides, *pinned])
    seq_len = int(hf.get("model_length") or cfg.data.seq_len)
    if seq_len != cfg.data.seq_len:
        raise BasinlabError(f"data.seq_len={cfg.data.seq_len} differs from the model's model_length={seq_len}")
    model = build_masked_dit(hf, seq_len)
    raw = duo.duo_to_basinlab(got["raw"], model, src)
    if weights == "ema" and got["ema"] is None:
        raise BasinlabError(f"{src} has no EMA weights; use --weights raw")
    use_ema = got["ema"] is not None and weights != "raw"
    chosen = duo.duo_to_basinlab(got["ema"], model, f"{src} (ema)") if use_ema else raw
    model.load_state_dict(chosen)
    meta = {
        "arch": model.arch(), "vocab_size": V, "seq_len": seq_len, "schedule": duo.SCHEDULE, "eps": duo.EPS,
        "process": "masked", "n_train": cfg.data.n_train, "objective": None, "basinlab": __version__,
        "converted_from": {"path": str(src.resolve()), "model_type": MODEL_TYPE,
                           "weights": "ema" if use_ema else "raw", "tokenizer": tok_name},
    }
    if isinstance(hf.get("basinlab"), Mapping):
        meta.update({k: v for k, v in hf["basinlab"].items() if k in ("schedule", "eps", "n_train", "objective")})
    logger.info("converting %s (mdlm, %s weights) into %s", src, meta["converted_from"]["weights"], out)
    return save_checkpoint(out, step=got["step"], model_state=raw, ema_state=chosen, config=cfg, meta=meta,
                           tokenizer=tok)


# ---- export out ---------------------------------------------------------------------------------------------


def export_mdlm_hf(run: str | Path, out: str | Path, *, raw: bool = False) -> Path:
    """Write the masked basinlab run ``run`` as an MDLM Hugging Face directory ``out``: ``config.json``
    (``model_type: mdlm``, ``vocab_size = V + 1``, ``time_conditioning``) and ``model.safetensors``
    (``backbone.*`` keys, float32), plus ``tokenizer.json`` when the run has one. ``config.json`` keeps the run's
    basinlab config under ``basinlab`` so that :func:`convert` gives back the same run. EMA weights unless ``raw``."""
    from safetensors.torch import save_file

    from basinlab.io import atomic_write, atomic_write_text
    from basinlab.training.checkpoint import load_trained

    tm = load_trained(run, device="cpu", ema=not raw)
    if getattr(tm.process, "name", "uniform") != "masked":
        raise BasinlabError(f"{run} is a {getattr(tm.process, 'name', 'uniform')} model; MDLM's layout holds masked "
                            "ones: export it with --format duo-hf")
    sched = tm.schedule
    if sched.name != duo.SCHEDULE or abs(float(sched.eps) - duo.EPS) > 1e-12:
        logger.warning("%s was trained with the %s schedule (eps %g); MDLM conditions on the log-linear one with "
                       "eps 1e-3", run, sched.name, sched.eps)
    m = tm.model
    hf = {
        "model_type": MODEL_TYPE, "architectures": ["MDLM"], "vocab_size": tm.vocab_size + 1,
        "model_length": tm.seq_len, "hidden_dim": m.d_model, "cond_dim": m.d_cond, "n_blocks": m.n_layer,
        "n_heads": m.n_head, "dropout": float(m.dropout_p), "time_conditioning": bool(m.time_conditioning),
        "step": tm.step,
        "basinlab": {"config": tm.config.to_dict(), "schedule": sched.name, "eps": float(sched.eps),
                     "weights": "raw" if raw else "ema"},
    }
    state = duo.basinlab_to_duo(m.state_dict(), m)
    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    atomic_write(dest / duo.HF_WEIGHTS, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    if tm.tokenizer is not None:
        tm.tokenizer.save(dest / "tokenizer.json")
    atomic_write_text(dest / duo.HF_CONFIG, json.dumps(hf, indent=2) + "\n")
    return dest


__all__ = [
    "HF_FIELDS",
    "MODEL_TYPE",
    "build_masked_dit",
    "check_mdlm_config",
    "convert",
    "export_mdlm_hf",
    "is_masked_ckpt",
    "lightning_hparams",
    "read_mdlm_ckpt",
    "read_mdlm_hf",
    "read_source",
]
