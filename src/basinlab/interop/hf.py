"""The Hugging Face and Lightning machinery Duo's and MDLM's formats share (:mod:`.duo`, :mod:`.mdlm` are its
siblings): reading ``config.json`` / ``model.safetensors`` / a Lightning ``.ckpt`` without running pickled code,
the one-to-one key map between Duo's ``DIT`` (``backbone.*``) and basinlab's DiT, the network a converted config
describes, and writing a converted run or an exported directory (SPEC 2, 2b, 4).

Loading never runs pickled code: ``torch.load(..., weights_only=True)``. Globals of a Lightning checkpoint's
metadata (``hyper_parameters``: omegaconf configs, tokenizer objects...) from the modules in
:data:`METADATA_MODULES` are replaced by an inert placeholder that only records its arguments; any other global
is refused with one line naming it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from basinlab.diffusion.forward import get_process
from basinlab.errors import BasinlabError
from basinlab.interop.checks import check_sizes, check_weights, export_source
from basinlab.registry import DEFAULT_PROCESS, PROCESSES

logger = logging.getLogger(__name__)


HF_CONFIG = "config.json"


HF_WEIGHTS = "model.safetensors"


PREFIX = "backbone."


INV_FREQ = "rotary_emb.inv_freq"


SCHEDULE, EPS = "loglinear", 1e-3


#: top-level modules whose globals in a Lightning checkpoint's metadata become inert placeholders
METADATA_MODULES = (
    "omegaconf", "transformers", "tokenizers", "lightning", "lightning_fabric", "pytorch_lightning", "typing",
    "hydra", "collections", "numpy", "pathlib", "copyreg", "_codecs", "functools",
)


_TOP = [
    ("embed.weight", "vocab_embed.embedding"),
    ("sigma_map.mlp.0.weight", "sigma_map.mlp.0.weight"),
    ("sigma_map.mlp.0.bias", "sigma_map.mlp.0.bias"),
    ("sigma_map.mlp.2.weight", "sigma_map.mlp.2.weight"),
    ("sigma_map.mlp.2.bias", "sigma_map.mlp.2.bias"),
]


_BLOCK = [
    ("norm1.weight", "norm1.weight"),
    ("attn.qkv.weight", "attn_qkv.weight"),
    ("attn.proj.weight", "attn_out.weight"),
    ("norm2.weight", "norm2.weight"),
    ("mlp.fc.weight", "mlp.0.weight"),
    ("mlp.fc.bias", "mlp.0.bias"),
    ("mlp.proj.weight", "mlp.2.weight"),
    ("mlp.proj.bias", "mlp.2.bias"),
    ("adaLN.weight", "adaLN_modulation.weight"),
    ("adaLN.bias", "adaLN_modulation.bias"),
]


_FINAL = [
    ("final.norm.weight", "output_layer.norm_final.weight"),
    ("final.head.weight", "output_layer.linear.weight"),
    ("final.head.bias", "output_layer.linear.bias"),
    ("final.adaLN.weight", "output_layer.adaLN_modulation.weight"),
    ("final.adaLN.bias", "output_layer.adaLN_modulation.bias"),
]


def key_map(n_blocks: int) -> list[tuple[str, str]]:
    """``(basinlab name, Duo name)`` for every parameter, in the order of Duo's ``DIT.parameters()``.

    That order is the order of ``ema.shadow_params`` in a Lightning checkpoint: vocab_embed, sigma_map, then per
    block norm1, attn_qkv, attn_out, norm2, mlp, adaLN_modulation, then output_layer (norm_final, linear,
    adaLN_modulation), i.e. the order in which Duo's modules register their parameters.
    """
    out = list(_TOP)
    for i in range(n_blocks):
        out += [(f"blocks.{i}.{a}", f"blocks.{i}.{b}") for a, b in _BLOCK]
    return out + list(_FINAL)


class OpaqueMetadata:
    """Inert stand-in for a metadata object of a Lightning checkpoint: it records its arguments, runs nothing."""

    def __new__(cls, *args: Any, **kwargs: Any) -> OpaqueMetadata:
        obj = super().__new__(cls)
        obj.args = args
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<opaque {type(self).__name__}>"


def _placeholder(name: str) -> type:
    return type(name.rsplit(".", 1)[-1], (OpaqueMetadata,), {"__module__": "basinlab.interop.duo.opaque"})


def _refuse_code(path: Path, names: list[str]) -> BasinlabError:
    shown = ", ".join(names[:4]) + (" ..." if len(names) > 4 else "")
    return BasinlabError(
        f"{path} needs code to unpickle ({shown}); basinlab never runs pickled code: re-save it as "
        "{'state_dict': ..., 'ema': ...} of tensors, or use the Hugging Face layout (config.json + model.safetensors)"
    )


def safe_torch_load(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)``, with metadata globals (:data:`METADATA_MODULES`) as placeholders.

    Anything else a pickle asks for -> :class:`BasinlabError` naming it; nothing from the file is executed.
    """
    path = Path(path)
    ser = torch.serialization
    names: list[str] = []
    if hasattr(ser, "get_unsafe_globals_in_checkpoint"):
        try:
            names = list(ser.get_unsafe_globals_in_checkpoint(str(path)))
        except Exception as exc:
            raise BasinlabError(f"cannot read {path} as a torch checkpoint: {_first_line(exc)}") from None
    bad = sorted(n for n in names if n.split(".", 1)[0] not in METADATA_MODULES)
    if bad:
        raise _refuse_code(path, bad)
    stubs = [(_placeholder(n), n) for n in names]
    try:
        if stubs:
            with ser.safe_globals(stubs):
                return torch.load(path, map_location="cpu", weights_only=True)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        text = _first_line(exc)
        if "global" in text.lower() or "unpickl" in type(exc).__name__.lower():
            raise _refuse_code(path, [text[:160]]) from None
        raise BasinlabError(f"cannot read {path} as a torch checkpoint: {text}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_json(src: Path, family: str = "Duo/UDLM") -> Any:
    """``src/config.json`` parsed (a missing file or bad JSON: one line naming the ``family`` expected)."""
    try:
        return json.loads((src / HF_CONFIG).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BasinlabError(f"{src} has no {HF_CONFIG}; a {family} Hugging Face directory needs one") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise BasinlabError(f"{src / HF_CONFIG} is not valid JSON: {_first_line(exc)}") from None


def strip_prefix(state: Mapping[str, Any], where: Any, family: str = "Duo/UDLM") -> dict[str, torch.Tensor]:
    """The ``backbone.*`` tensors of a state dict, prefix removed (``family`` names the expected source)."""
    out = {k[len(PREFIX):]: v for k, v in state.items() if isinstance(k, str) and k.startswith(PREFIX)}
    if not out:
        raise BasinlabError(f"{where} holds no '{PREFIX}*' weights; is it a {family} checkpoint?")
    bad = [k for k, v in out.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise BasinlabError(f"{where}: '{PREFIX}{bad[0]}' is not a tensor")
    return out


def load_hf_weights(src: Path, family: str = "Duo/UDLM") -> dict[str, torch.Tensor]:
    """The ``backbone.*`` tensors of ``src/model.safetensors``, prefix removed."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    f = src / HF_WEIGHTS
    if not f.is_file():
        raise BasinlabError(f"{src} has no {HF_WEIGHTS}; a {family} Hugging Face directory needs one")
    try:
        state = load_file(str(f))
    except (SafetensorError, OSError, ValueError) as exc:
        raise BasinlabError(f"cannot read {f}: {_first_line(exc)}") from None
    return strip_prefix(state, f, family)


def ema_by_name(ck: Mapping[str, Any], src: Path, n_blocks: int, family: str = "Duo") -> dict | None:
    """A Lightning checkpoint's EMA weights by name (``None`` without ``ema``): ``ema.shadow_params`` is a list in
    the order of ``backbone.parameters()``, the order of :func:`key_map` (Duo's and MDLM's ``DIT`` alike)."""
    if ck.get("ema") is None:
        return None
    shadow = ck["ema"].get("shadow_params") if isinstance(ck["ema"], Mapping) else None
    if not isinstance(shadow, (list, tuple)) or not all(isinstance(p, torch.Tensor) for p in shadow):
        raise BasinlabError(f"{src}: ema.shadow_params must be a list of tensors")
    names = [b for _, b in key_map(n_blocks)]
    if len(shadow) != len(names):
        raise BasinlabError(f"{src}: ema.shadow_params has {len(shadow)} tensors but {family}'s DIT with "
                            f"{n_blocks} blocks has {len(names)} parameters")
    return dict(zip(names, shadow, strict=True))


def _is_scalar(val: Any, types: tuple[type, ...]) -> bool:
    return isinstance(val, types) and (bool in types or not isinstance(val, bool))


def find_in_placeholder(obj: Any, keys: tuple[str, ...], depth: int = 0,
                         types: tuple[type, ...] = (int, float)) -> dict[str, Any]:
    """Scalar values (of ``types``; a bool only if ``bool`` is named) named ``keys`` anywhere in nested dicts /
    placeholder states (omegaconf's ``_content``), the first found for each key."""
    out: dict[str, Any] = {}
    if depth > 12:
        return out
    if isinstance(obj, OpaqueMetadata):  # what the pickle handed it: constructor args and/or state
        obj = [getattr(obj, "state", None), *getattr(obj, "args", ())]
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            val = getattr(v, "state", None) if isinstance(v, OpaqueMetadata) else v
            if isinstance(val, Mapping) and "_val" in val:
                val = val["_val"]
            if k in keys and _is_scalar(val, types):
                out.setdefault(k, val)
            else:
                for kk, vv in find_in_placeholder(v, keys, depth + 1, types).items():
                    out.setdefault(kk, vv)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            for kk, vv in find_in_placeholder(v, keys, depth + 1, types).items():
                out.setdefault(kk, vv)
    return out


def duo_to_basinlab(duo: Mapping[str, torch.Tensor], model: torch.nn.Module, where: Any) -> dict[str, torch.Tensor]:
    """Rename Duo weights to ``model``'s keys, checking names and shapes (one line naming what is wrong)."""
    n_blocks = len(model.blocks)
    pairs = key_map(n_blocks)
    target = model.state_dict()
    missing = [f"{PREFIX}{b}" for _, b in pairs if b not in duo]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise BasinlabError(f"{where} is missing weights {', '.join(missing[:3])}{more}")
    known = {b for _, b in pairs} | {INV_FREQ}
    extra = sorted(k for k in duo if k not in known)
    if extra:
        names = ", ".join(PREFIX + k for k in extra[:3])
        raise BasinlabError(f"{where} has weights basinlab's DiT does not know: {names}")
    out = {}
    for a, b in pairs:
        t = duo[b]
        if tuple(t.shape) != tuple(target[a].shape):
            raise BasinlabError(f"{where}: '{PREFIX}{b}' has shape {tuple(t.shape)}, the config implies "
                                f"{tuple(target[a].shape)}")
        out[a] = t.detach().to(torch.float32).contiguous()
    if INV_FREQ in duo:
        ours = model.blocks[0].attn.rotary.inv_freq if n_blocks else None
        if ours is not None and not torch.allclose(duo[INV_FREQ].float(), ours, rtol=1e-6, atol=0.0):
            raise BasinlabError(f"{where}: '{PREFIX}{INV_FREQ}' is not the standard rotary base 10000")
    return out


def basinlab_to_duo(state: Mapping[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The inverse of :func:`duo_to_basinlab`, with ``backbone.`` keys and Duo's rotary buffer."""
    out = {f"{PREFIX}{b}": state[a].detach().cpu().contiguous() for a, b in key_map(len(model.blocks))}
    if len(model.blocks):
        out[f"{PREFIX}{INV_FREQ}"] = model.blocks[0].attn.rotary.inv_freq.detach().cpu().clone()
    return out


def clean_vocab(process: str, n_outputs: int, mask_index: int | None = None) -> int:
    """``V``, the clean tokens of a network with ``n_outputs`` rows under the registered ``process``: all of them
    when ``mask_index`` (a tokenizer's own ``[MASK]``) is inside, else ``n_outputs`` less the rows the process
    appends (one ``[MASK]`` for the masked process, SPEC 2b; none for the uniform one)."""
    if mask_index is not None:
        return int(n_outputs)
    return int(n_outputs) - (PROCESSES.get(process)(1).n_outputs - 1)


def build_dit(cfg: Mapping[str, Any], seq_len: int, process: str = DEFAULT_PROCESS, mask_index: int | None = None):
    """basinlab's DiT with the shape of a Duo/UDLM (or MDLM) config (``hidden_dim`` -> ``d_model`` ...).
    ``vocab_size`` is the network's: ``V`` clean tokens plus what ``process`` appends (:func:`clean_vocab`)."""
    from basinlab.models import build

    arch = {"n_layer": cfg["n_blocks"], "d_model": cfg["hidden_dim"], "n_head": cfg["n_heads"],
            "d_cond": cfg["cond_dim"], "dropout": float(cfg.get("dropout", 0.0)),
            "time_conditioning": bool(cfg.get("time_conditioning", True))}
    V = clean_vocab(process, cfg["vocab_size"], mask_index)
    options = {} if mask_index is None else {"mask_index": mask_index}
    return build(arch, V, seq_len, process=get_process(process, V, **options))


def own_mask_index(tok: Any, hf: Mapping[str, Any], masked: bool) -> int | None:
    """The id of the tokenizer's own ``[MASK]`` when a masked model keeps it inside its vocabulary (MDLM's rule:
    a tokenizer with a mask token is not extended, so ``vocab_size`` equals the tokenizer's size); else ``None``
    (``[MASK]`` appended, ``vocab_size = V + 1``)."""
    from basinlab.training.checkpoint import tokenizer_vocab_size

    tk = getattr(tok, "tk", None)
    mask_id = tk.token_to_id("[MASK]") if masked and tk is not None else None
    if mask_id is None or tokenizer_vocab_size(tok) != hf["vocab_size"]:
        return None
    return int(mask_id)


def sigma_of_t(t: torch.Tensor) -> torch.Tensor:
    """``sigma_t = -log alpha_t`` of the log-linear schedule, ``eps = 1e-3`` (what Duo feeds ``DIT``)."""
    return -torch.log1p(-(1.0 - EPS) * t.to(torch.float64))


def resolve_tokenizer(name: str | Path | None, src: Path | None = None) -> tuple[Any, str | None]:
    """``(Tokenizer, name for the run's config)``: ``bert-base-uncased`` (the vocabulary basinlab ships with), a
    ``tokenizer.json`` / ``vocab.txt`` path, or, when ``name`` is ``None``, one found in a source directory."""
    from basinlab.data.tokenizer import BERT_NAME, Tokenizer, bert_vocab_path

    if name is None:
        if src is None or not src.is_dir():
            return None, None
        found = next((src / n for n in ("tokenizer.json", "vocab.txt") if (src / n).is_file()), None)
        if found is None:
            return None, None
        name = found
    if str(name) == BERT_NAME:
        return Tokenizer.from_file(bert_vocab_path()), BERT_NAME
    path = Path(name).expanduser()
    if not path.exists():
        raise BasinlabError(f"tokenizer '{name}' is neither {BERT_NAME} nor an existing tokenizer.json / vocab.txt")
    return Tokenizer.from_file(path), str(path.resolve())


def _run_config(hf: Mapping[str, Any], seq_len: int | None, tok_name: str | None, overrides: list[str]):
    """The converted run's basinlab config: the one an export stored (``config.json``'s ``basinlab`` entry), else
    data that rebuilds without the model's unknown training set (the embedded Brown corpus cut with the given
    tokenizer, or the Markov source over ``V`` states for small id-only models), then ``overrides``."""
    from basinlab.config import Config, config_from_dict, parse_overrides

    stored = hf.get("basinlab", {}).get("config") if isinstance(hf.get("basinlab"), Mapping) else None
    cfg = config_from_dict(dict(stored)) if isinstance(stored, Mapping) else Config()
    if stored is None:
        d = cfg.data
        if tok_name is not None:
            d.source, d.mode, d.tokenizer = "brown", "wrap", tok_name
        elif hf["vocab_size"] <= 1024:
            d.source, d.markov_vocab = "markov", hf["vocab_size"]
        else:
            d.source = "text"  # no data a probe could rebuild: `probe` asks for data.path (see docs)
        if seq_len is not None:
            d.seq_len = seq_len
        cfg.train.schedule, cfg.train.eps = SCHEDULE, EPS
    cfg.model.preset = "micro"
    cfg.model.n_layer, cfg.model.d_model, cfg.model.n_head = hf["n_blocks"], hf["hidden_dim"], hf["n_heads"]
    cfg.model.d_cond, cfg.model.dropout = hf["cond_dim"], float(hf.get("dropout", 0.0))
    return config_from_dict(_merge(cfg.to_dict(), parse_overrides(overrides)))


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def checked_source(src: Path, got: dict[str, Any]) -> dict[str, Any]:
    """A source as read (``{config, raw, ema, step}``), its sizes checked against its weights before anything is
    allocated and its weights checked (finite, floating; half precision widened to float32): Duo's and MDLM's."""
    hf = got["config"]
    check_sizes(hf, got["raw"], src)  # before build_dit allocates
    head_dim = hf["hidden_dim"] // hf["n_heads"]
    got.update({k: check_weights(got[k], src if k == "raw" else f"{src} (ema)", head_dim)
                for k in ("raw", "ema") if got[k] is not None})
    return got


def save_conversion(
    src: Path,
    out: str | Path,
    got: Mapping[str, Any],
    *,
    tokenizer: str | Path | None = None,
    weights: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    process: str = DEFAULT_PROCESS,
) -> Path:
    """What Duo's and MDLM's ``convert`` share once the source is read: tokenizer, the run's config, the network,
    the weights (raw, and EMA when chosen) and the checkpoint. ``got`` = ``{config, raw, ema, step}``: an HF-style
    config (``vocab_size`` the network's) and weights by Duo's names. ``process``: ``masked`` for MDLM (the network's
    last id is ``[MASK]``: the run has ``V = vocab_size - 1`` clean tokens, ``train.process = masked`` and the
    source's ``time_conditioning``)."""
    from basinlab import __version__
    from basinlab.training.checkpoint import save_checkpoint, tokenizer_vocab_size
    from basinlab.training.meta import CheckpointMeta

    hf, masked = got["config"], PROCESSES.get(process).tokenizer_token is not None  # a process with a [MASK]
    tok, tok_name = resolve_tokenizer(tokenizer, src if src.is_dir() else None)
    mask_index = own_mask_index(tok, hf, masked)  # MDLM with a tokenizer holding [MASK] (e.g. BERT's)
    V = clean_vocab(process, hf["vocab_size"], mask_index)
    if tok is not None and tokenizer_vocab_size(tok) != V:
        has = f"{V} tokens besides its appended [MASK] (vocab_size {V + 1})" if masked else f"vocab_size {V}"
        raise BasinlabError(f"tokenizer '{tok_name}' has {tokenizer_vocab_size(tok)} tokens but the model has "
                            f"{has}; give the tokenizer it was trained with")
    if not hf.get("model_length") and not any(o.strip().startswith("data.seq_len=") for o in overrides):
        raise BasinlabError(f"{src} does not say its sequence length (model_length); pass data.seq_len=L")
    pinned = [f"train.process={process}"]
    pinned.append(f"model.time_conditioning={str(bool(hf.get('time_conditioning', True))).lower()}")
    cfg = _run_config({**hf, "vocab_size": V}, hf.get("model_length"), tok_name, [*overrides, *pinned])
    seq_len = int(hf.get("model_length") or cfg.data.seq_len)
    if seq_len != cfg.data.seq_len:
        raise BasinlabError(f"data.seq_len={cfg.data.seq_len} differs from the model's model_length={seq_len}")
    model = build_dit(hf, seq_len, process, mask_index)
    raw = duo_to_basinlab(got["raw"], model, src)
    if weights == "ema" and got["ema"] is None:
        raise BasinlabError(f"{src} has no EMA weights; use --weights raw")
    use_ema = got["ema"] is not None and weights != "raw"
    chosen = duo_to_basinlab(got["ema"], model, f"{src} (ema)") if use_ema else raw
    model.load_state_dict(chosen)
    meta = CheckpointMeta(
        arch=model.arch(), vocab_size=V, seq_len=seq_len, schedule=SCHEDULE, eps=EPS, process=process,
        process_options={} if mask_index is None else {"mask_index": mask_index}, tokenizer=tok_name,
        extra={"n_train": cfg.data.n_train, "objective": None, "basinlab": __version__,
               "converted_from": {"path": str(src.resolve()), "model_type": hf["model_type"],
                                  "weights": _weights_label(hf, use_ema), "tokenizer": tok_name,
                                  "stand_in_data": _stand_in_data(hf, overrides)}},
    )
    if isinstance(hf.get("basinlab"), Mapping):
        saved = hf["basinlab"]
        meta.schedule, meta.eps = saved.get("schedule", meta.schedule), saved.get("eps", meta.eps)
        meta.extra.update({k: v for k, v in saved.items() if k in ("n_train", "objective")})
    logger.info("converting %s (%s, %s weights) into %s", src, hf["model_type"], _weights_label(hf, use_ema), out)
    return save_checkpoint(out, step=got["step"], model_state=raw, ema_state=chosen, config=cfg, meta=meta,
                           tokenizer=tok)


def _stand_in_data(hf: Mapping[str, Any], overrides: list[str] | tuple[str, ...]) -> bool:
    """Whether the converted run's data is a stand-in (:func:`_run_config`): no basinlab record of the real data
    and no ``data.source``/``data.path`` override giving it."""
    given = any(o.split("=", 1)[0].strip() in ("data.source", "data.path") for o in overrides)
    return not isinstance(hf.get("basinlab"), Mapping) and not given


def _weights_label(hf: Mapping[str, Any], use_ema: bool) -> str:
    """``ema`` or ``raw``: a Hugging Face directory holds one set, which a basinlab export names in its record."""
    record = hf.get("basinlab")
    if not use_ema and isinstance(record, Mapping) and record.get("weights") in ("ema", "raw"):
        return str(record["weights"])
    return "ema" if use_ema else "raw"


def hf_fields(tm: Any, run: str | Path, raw: bool, family: str) -> dict[str, Any]:
    """The ``config.json`` fields Duo's and MDLM's layouts share, for the loaded run ``tm`` (a warning when its
    schedule is not the log-linear one with ``eps = 1e-3`` that ``family`` conditions on)."""
    sched, m = tm.schedule, tm.model
    if tm.meta.get("family", "dit") != "dit":
        raise BasinlabError(f"{run} is a {tm.meta['family']} run; the {family} layout holds basinlab's DiT: export it "
                            "with --format hf (its own layout)")
    if sched.name != SCHEDULE or abs(float(sched.eps) - EPS) > 1e-12:
        logger.warning("%s was trained with the %s schedule (eps %g); %s condition on the log-linear one with "
                       "eps 1e-3", run, sched.name, sched.eps, family)
    return {
        "model_length": tm.seq_len, "hidden_dim": m.d_model, "cond_dim": m.d_cond, "n_blocks": m.n_layer,
        "n_heads": m.n_head, "dropout": float(m.dropout_p),
        "time_conditioning": bool(getattr(m, "time_conditioning", True)), "step": tm.step,
        "basinlab": {"config": tm.config.to_dict(), "schedule": sched.name, "eps": float(sched.eps),
                     "weights": "raw" if raw else "ema", "source": export_source(run)},
    }


def write_hf_dir(tm: Any, out: str | Path, hf: Mapping[str, Any]) -> Path:
    """Write ``config.json`` (``hf``), ``model.safetensors`` (``backbone.*`` keys, float32, the rotary buffer
    included) and, when the run has one, ``tokenizer.json`` into ``out``, each atomically."""
    from safetensors.torch import save_file

    from basinlab.io import atomic_write, atomic_write_text

    state = basinlab_to_duo(tm.model.state_dict(), tm.model)
    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    atomic_write(dest / HF_WEIGHTS, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    if tm.tokenizer is not None:
        tm.tokenizer.save(dest / "tokenizer.json")
    atomic_write_text(dest / HF_CONFIG, json.dumps(hf, indent=2) + "\n")
    return dest
