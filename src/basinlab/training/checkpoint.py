"""Checkpoints: safetensors weights, training state, verified loads, and :func:`load_trained`.

Layout of a run directory (``out_dir``)::

    RUN/
      config.yaml            the run's config (written when training starts)
      metrics.csv            step, loss, lr, tokens_per_s, ...
      latest                 one line, the name of the newest complete checkpoint (written last)
      ckpt-00002000/         one complete checkpoint
        model.safetensors    raw weights (``state_dict`` keys of the DiT)
        ema.safetensors      EMA weights, same keys (what probes use by default)
        state.pt             step, optimiser state, every RNG state (torch CPU/CUDA per rank, time/noise)
        config.yaml          the config that produced it
        meta.json            architecture, vocab_size, seq_len, step, schedule, basinlab version
        tokenizer.json       the run's tokenizer (text data; ``Tokenizer.save``)
        markov.safetensors   ``pi`` and ``P`` of the source (Markov data)
        manifest.json        sha256 and size of every file above (written last inside the directory)

Atomicity: a checkpoint is written into a hidden temporary directory, every file fsynced, then renamed to
``ckpt-<step>/`` (a checkpoint directory is complete or absent), then ``latest`` is replaced atomically, then
older checkpoints are deleted: only what basinlab wrote, by exact name (``ckpt-`` and 8 digits, with a manifest;
its own hidden temporaries), never a folder of the user's. A folder with a checkpoint's name but no manifest
stops training with one line rather than being overwritten. ``latest`` must name a checkpoint of its own run
directory (not a path, not a link leading elsewhere). Loads verify each file read against the manifest, so a
truncated or corrupt file is a :class:`~basinlab.errors.BasinlabError`, never a silently wrong model.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from basinlab.errors import BasinlabError
from basinlab.io import atomic_write_text, torch_save, write_error
from basinlab.training.meta import CheckpointMeta

CKPT_PREFIX = "ckpt-"
LATEST = "latest"
MANIFEST = "manifest.json"
FORMAT = 1

MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
STATE_FILE = "state.pt"
CONFIG_FILE = "config.yaml"
META_FILE = "meta.json"
TOKENIZER_FILE = "tokenizer.json"
MARKOV_FILE = "markov.safetensors"


# ---- writing ------------------------------------------------------------------------------------------------


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


_NAME = re.compile(rf"{CKPT_PREFIX}(\d{{8}})")
_TEMP = re.compile(rf"\.{CKPT_PREFIX}\d{{8}}\.(tmp|old)-\d+")


def _step_of(name: str) -> int | None:
    """The step of a checkpoint name basinlab writes (``ckpt-00000200``); ``None`` for any other name."""
    m = _NAME.fullmatch(name)
    return int(m.group(1)) if m else None


def _ours(d: Path) -> bool:
    """A checkpoint directory basinlab wrote: its exact name and a manifest inside (user folders are never ours)."""
    return d.is_dir() and not d.is_symlink() and _step_of(d.name) is not None and (d / MANIFEST).is_file()


def _our_temporary(d: Path) -> bool:
    return d.is_dir() and not d.is_symlink() and _TEMP.fullmatch(d.name) is not None


def checkpoint_name(step: int) -> str:
    return f"{CKPT_PREFIX}{step:08d}"


def save_checkpoint(
    out_dir: str | Path,
    *,
    step: int,
    model_state: dict[str, torch.Tensor],
    ema_state: dict[str, torch.Tensor],
    config: Any,
    meta: CheckpointMeta | dict[str, Any],
    train_state: dict[str, Any] | None = None,
    tokenizer: Any | None = None,
    source: Any | None = None,
) -> Path:
    """Write a complete checkpoint of ``step`` under ``out_dir`` atomically; return its directory.

    ``config`` is a :class:`~basinlab.config.Config`; ``meta`` a :class:`~basinlab.training.meta.CheckpointMeta`
    (or its flat dict: ``arch`` (see ``DiT.arch()``), ``vocab_size``, ``seq_len``...). ``train_state``
    (optimiser, RNG) goes to ``state.pt``.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = checkpoint_name(step)
    tmp = out / f".{name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        save_file(_tensors(model_state), str(tmp / MODEL_FILE), metadata={"step": str(step), "weights": "raw"})
        save_file(_tensors(ema_state), str(tmp / EMA_FILE), metadata={"step": str(step), "weights": "ema"})
        if train_state is not None:
            torch_save(train_state, tmp / STATE_FILE)  # a full disk raises ENOSPC
        (tmp / CONFIG_FILE).write_text(config.to_yaml())
        flat = meta.to_dict() if isinstance(meta, CheckpointMeta) else dict(meta)
        meta = {"format": FORMAT, **flat, "step": int(step)}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
        if tokenizer is not None:
            tokenizer.save(str(tmp / TOKENIZER_FILE))
        if source is not None:
            save_file(
                {"pi": source.pi.contiguous().clone(), "P": source.P.contiguous().clone()},
                str(tmp / MARKOV_FILE),
                metadata={"successors": str(getattr(source, "successors", "")), "seed": str(source.seed)},
            )
        files = {}
        for f in sorted(tmp.iterdir()):
            _fsync_path(f)
            files[f.name] = {"sha256": _sha256(f), "bytes": f.stat().st_size}
        manifest = {"format": FORMAT, "step": int(step), "files": files}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        _fsync_path(tmp / MANIFEST)
        _fsync_path(tmp)
        final = out / name
        trash = None
        if final.exists():  # a re-run (--no-resume) reaching the same step: move the old one aside first
            trash = out / f".{name}.old-{os.getpid()}"
            os.replace(final, trash)
        os.replace(tmp, final)
        _fsync_path(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(out / LATEST, name + "\n")
    _fsync_path(out)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
    for old in out.iterdir():  # only what basinlab wrote, by exact name: older checkpoints and stale temporaries
        if (_ours(old) and (_step_of(old.name) or 0) < step) or (_our_temporary(old) and old != trash):
            shutil.rmtree(old, ignore_errors=True)
    return final


def clear_checkpoints(out_dir: str | Path) -> None:
    """Remove the checkpoints basinlab wrote (exact names, with a manifest) and ``latest`` (a fresh start)."""
    out = Path(out_dir)
    if not out.is_dir():
        return
    pointer = out / LATEST
    if pointer.is_file() or pointer.is_symlink():
        pointer.unlink()
    for old in out.iterdir():
        if _ours(old) or _our_temporary(old):
            shutil.rmtree(old, ignore_errors=True)


def prepare_run_dir(out_dir: str | Path) -> Path:
    """Create the run directory and check, before any long computation, that training can write there.

    One :class:`BasinlabError` line for: a file in its place, a directory that cannot be created or written, a
    directory where basinlab keeps a file (``latest``, ``metrics.csv``, ``config.yaml``), or a folder with a
    checkpoint's name that basinlab did not complete (no manifest): basinlab never overwrites it.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise BasinlabError(f"run directory '{out}' is a file; give a directory (--out DIR / out_dir)")
    exc = write_error(out, create=True)
    if exc is not None:
        raise BasinlabError(
            f"run directory '{out}' is not writable ({exc.strerror or exc}); fix its permissions or choose another "
            "--out"
        )
    for name in (LATEST, "metrics.csv", CONFIG_FILE):
        if (out / name).is_dir():
            raise BasinlabError(f"'{out / name}' is a directory where basinlab keeps a file; move it away or choose "
                                "another --out")
    strays = sorted(d.name for d in out.iterdir() if _step_of(d.name) is not None and not _ours(d))
    if strays:
        raise BasinlabError(
            f"'{out / strays[0]}' has a checkpoint's name but no {MANIFEST} (incomplete, or not written by basinlab); "
            "basinlab will not overwrite it: move it away or choose another --out"
        )
    return out


def check_data_fingerprint(meta: dict[str, Any], current: str | None, ckpt: Path) -> None:
    """Refuse data that differ from the data a run was trained on (sha256 of its file, SPEC 1)."""
    old = meta.get("data_sha256")
    if old and current and old != current:
        what = f"data file {meta['data_file']}" if meta.get("data_file") else "the run's data"
        raise BasinlabError(
            f"{what} changed since {ckpt} was trained (sha256 {current[:12]} now, {old[:12]} then); restore it, "
            "or retrain"
        )


# ---- finding and verifying ----------------------------------------------------------------------------------


def find_checkpoint(path: str | Path) -> Path | None:
    """The checkpoint directory for ``path`` (a checkpoint directory or a run directory), or ``None``.

    In a run directory: the one named by ``latest``; without it, the newest ``ckpt-*`` holding a manifest.
    """
    p = Path(path)
    if (p / MANIFEST).exists():
        return p
    if not p.is_dir():
        return None
    pointer = p / LATEST
    if pointer.exists():
        name = _read_latest(pointer)
        if (p / name).is_dir():
            if (p / name).resolve().parent != p.resolve():
                raise BasinlabError(f"'{pointer}' leads outside its run directory ({name} is a link); delete it")
            return p / name
    found = sorted(d for d in p.iterdir() if _ours(d))
    return found[-1] if found else None


def _read_latest(pointer: Path) -> str:
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        raise BasinlabError(f"'{pointer}' is not the one-line file basinlab writes; delete it (a rerun finds the "
                            "newest checkpoint)") from None
    if _step_of(name) is None:
        raise BasinlabError(f"'{pointer}' names {name[:80]!r}, not a checkpoint of this run directory "
                            f"({CKPT_PREFIX}NNNNNNNN); delete it (a rerun finds the newest checkpoint)")
    return name


def require_checkpoint(path: str | Path) -> Path:
    """:func:`find_checkpoint`, or a one-line error saying what is missing."""
    p = Path(path)
    if not p.exists():
        raise BasinlabError(f"checkpoint path '{path}' does not exist; give a run directory or a checkpoint")
    ckpt = find_checkpoint(p)
    if ckpt is None:
        raise BasinlabError(f"no checkpoint in '{path}'; train first (basinlab train CONFIG --out {path})")
    return ckpt


def read_manifest(ckpt: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((ckpt / MANIFEST).read_text())
        manifest["files"]  # presence check: KeyError when missing
    except (OSError, ValueError, KeyError, TypeError):
        raise BasinlabError(
            f"checkpoint {ckpt} is corrupt or truncated (unreadable {MANIFEST}); delete it or retrain"
        ) from None
    return manifest


def verify_checkpoint(ckpt: str | Path, names: list[str] | None = None) -> dict[str, Any]:
    """Check size and sha256 of ``names`` (default: every file in the manifest); return the manifest.

    A missing, truncated or altered file -> :class:`BasinlabError` naming it.
    """
    ckpt = Path(ckpt)
    manifest = read_manifest(ckpt)
    files = manifest["files"]
    for name in names if names is not None else list(files):
        if name not in files:
            continue
        f = ckpt / name
        entry = files[name]
        if not f.exists():
            raise BasinlabError(f"checkpoint {ckpt} is incomplete (missing {name}); delete it or retrain")
        if f.stat().st_size != entry["bytes"] or _sha256(f) != entry["sha256"]:
            raise BasinlabError(
                f"checkpoint {ckpt} is corrupt or truncated (sha256 mismatch in {name}); delete it or retrain"
            )
    return manifest


def load_weights(ckpt: Path, ema: bool = True) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    name = EMA_FILE if ema else MODEL_FILE
    verify_checkpoint(ckpt, [name])
    return load_file(str(ckpt / name))


def load_meta(ckpt: Path) -> dict[str, Any]:
    verify_checkpoint(ckpt, [META_FILE])
    return json.loads((ckpt / META_FILE).read_text())


def load_config_file(ckpt: Path):
    """The checkpoint's ``config.yaml``, validated, and refused where it disagrees with its ``meta.json``."""
    from basinlab.config import config_from_dict, load_yaml

    verify_checkpoint(ckpt, [CONFIG_FILE])
    cfg = config_from_dict(load_yaml((ckpt / CONFIG_FILE).read_text(), f"{ckpt / CONFIG_FILE}") or {})
    check_config_matches_meta(cfg, load_meta(ckpt), ckpt)
    return cfg


def loads_in_place(path: str | Path) -> Any:
    """The model family that loads directory ``path`` in place when it is a deployed model's own directory (SPEC
    2c: no basinlab checkpoint in it, and a ``config.json`` whose ``model_type`` a registered family loads), else
    ``None``."""
    from basinlab.models.family import family_for_dir

    if not Path(path).is_dir() or find_checkpoint(path) is not None:
        return None
    return family_for_dir(path)


def in_place(path: str | Path) -> bool:
    """Whether ``path`` is a deployed model's own directory (:func:`loads_in_place`)."""
    return loads_in_place(path) is not None


def run_config(path: str | Path):
    """The config of a run or checkpoint (:func:`load_config_file`), or the defaults for a directory a model family
    loads in place (:func:`in_place`: a deployed model has no basinlab config)."""
    from basinlab.config import Config

    return Config() if in_place(path) else load_config_file(require_checkpoint(path))


def check_config_matches_meta(cfg: Any, meta: dict[str, Any], ckpt: Path) -> None:
    """``config.yaml`` and ``meta.json`` of one checkpoint are written together and agree on the network and its
    schedule; an edited ``config.yaml`` (its manifest re-hashed) that says otherwise is refused (issue 18)."""
    from basinlab.models.presets import resolve_arch

    arch, saved = resolve_arch(cfg.model), meta.get("arch") or {}
    pairs = [(f"model.{k}", arch[k], saved[k]) for k in ("n_layer", "d_model", "n_head", "d_cond", "dropout")
             if k in saved]
    pairs += [("data.seq_len", cfg.data.seq_len, meta.get("seq_len")),
              ("train.schedule", cfg.train.schedule, meta.get("schedule")),
              ("train.eps", cfg.train.eps, meta.get("eps")),
              ("train.objective", cfg.train.objective, meta.get("objective"))]
    bad = [f"{k}: {a!r} in {CONFIG_FILE}, {b!r} in {META_FILE}" for k, a, b in pairs if b is not None and a != b]
    if bad:
        raise BasinlabError(f"checkpoint {ckpt}: {CONFIG_FILE} disagrees with {META_FILE} ({'; '.join(bad)}); "
                            f"restore the {CONFIG_FILE} this checkpoint was saved with")


def load_train_state(ckpt: Path) -> dict[str, Any]:
    verify_checkpoint(ckpt, [STATE_FILE])
    if not (ckpt / STATE_FILE).exists():
        raise BasinlabError(f"checkpoint {ckpt} has no {STATE_FILE} (inference-only); cannot resume from it")
    return torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=True)


def load_source(ckpt: Path):
    """The Markov source saved with the checkpoint, or ``None``."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not (ckpt / MARKOV_FILE).exists():
        return None
    from basinlab.data.markov import MarkovSource

    verify_checkpoint(ckpt, [MARKOV_FILE])
    t = load_file(str(ckpt / MARKOV_FILE))
    src = MarkovSource.from_matrix(t["pi"], t["P"])
    with safe_open(str(ckpt / MARKOV_FILE), framework="pt") as fh:
        md = fh.metadata() or {}
    if md.get("seed", "") not in ("", "None"):
        src.seed = int(md["seed"])
    if md.get("successors", ""):
        src.successors = int(md["successors"])
    return src


def tokenizer_vocab_size(tokenizer: Any) -> int | None:
    """Vocabulary size of a basinlab ``Tokenizer`` (or a ``tokenizers.Tokenizer``), ``None`` if unknown."""
    for attr in ("vocab_size", "get_vocab_size", "__len__"):
        v = getattr(tokenizer, attr, None)
        if v is None:
            continue
        try:
            return int(v() if callable(v) else v)
        except TypeError:
            continue
    return None


def _tokenizer_class():
    try:
        from basinlab.data.tokenizer import Tokenizer
    except ImportError:  # pragma: no cover - layout fallback
        from basinlab.data import Tokenizer
    return Tokenizer


def load_tokenizer(path: str | Path):
    Tokenizer = _tokenizer_class()
    try:
        return Tokenizer.from_file(str(path))
    except BasinlabError:
        raise
    except Exception as exc:  # any parse failure is bad input here
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BasinlabError(f"cannot read tokenizer '{path}': {first}") from None


# ---- the trained model -------------------------------------------------------------------------------------


@dataclass
class TrainedModel:
    """A trained network ready for the probes (SPEC 5): ``denoiser(z_t, t) -> log x_theta``; ``process`` is its
    forward process (uniform or masked, SPEC 2/2b)."""

    model: torch.nn.Module
    denoiser: Any  # NetworkDenoiser
    tokenizer: Any | None
    schedule: Any
    config: Any  # Config
    vocab_size: int
    seq_len: int
    step: int
    path: Path
    source: Any | None = None  # MarkovSource for Markov data
    ema: bool = True
    process: Any = None  # the forward process (``denoiser.process``)
    meta: dict[str, Any] = field(default_factory=dict)

    def decode(self, seqs: torch.Tensor) -> list[str]:
        """Text of each sequence (the tokenizer's decoding), or space-separated ids for Markov data."""
        rows = seqs.tolist()
        if self.tokenizer is None:
            return [" ".join(str(i) for i in row) for row in rows]
        return [self.tokenizer.decode(row) for row in rows]

    def dataset(self):
        """Rebuild the run's data from its config (SPEC 1) and check it matches the checkpoint's vocabulary."""
        from basinlab.data import build_dataset

        data = build_dataset(self.config.data)
        check_data_fingerprint(self.meta, data.fingerprint, self.path)
        expected = int(self.meta.get("data_vocab_size", self.vocab_size))  # a fine-tuned deployed model's data
        if int(data.vocab_size) != expected:
            raise BasinlabError(
                f"checkpoint {self.path} was trained with vocab size {expected} but its data config now "
                f"gives {data.vocab_size}; the tokenizer or data changed: retrain or restore them"
            )
        if data.tokenizer is not None and self.tokenizer is not None:
            a = tokenizer_vocab_size(data.tokenizer)
            if a is not None and a != expected:
                raise BasinlabError(
                    f"the rebuilt tokenizer has {a} tokens but checkpoint {self.path} expects {expected}"
                )
        own = self._own_tokenizer()
        if own is not None and data.tokenizer is not None:
            if json.loads(own.to_str()) != json.loads(data.tokenizer.to_str()):
                raise BasinlabError(
                    f"the tokenizer rebuilt from {self.config.data.path or self.config.data.source} differs from the "
                    f"run's own ({self.path / TOKENIZER_FILE}): the data changed; restore it, or retrain"
                )
            data.tokenizer = own  # the run's own tokenizer encodes and decodes everything
        return data

    def _own_tokenizer(self):
        if not (self.path / TOKENIZER_FILE).exists():
            return None
        verify_checkpoint(self.path, [TOKENIZER_FILE])
        return load_tokenizer(self.path / TOKENIZER_FILE)

    def __repr__(self) -> str:
        return (
            f"TrainedModel(path={str(self.path)!r}, step={self.step}, V={self.vocab_size}, L={self.seq_len}, "
            f"ema={self.ema}, schedule={self.schedule!r}, process={getattr(self.process, 'name', 'uniform')})"
        )


def load_trained(
    path: str | Path,
    device: str | torch.device = "cpu",
    ema: bool = True,
    tokenizer: Any | None = None,
    precision: str = "auto",
    batch_size: int | None = 512,
    device_map: Any = None,
) -> TrainedModel:
    """Load a trained model from a run directory or a checkpoint directory, or a deployed model's own directory
    loaded in place by its model family (SPEC 2c: a ``config.json`` whose ``model_type`` a registered family
    loads; ``ModelFamily.load_pretrained`` returns the same :class:`TrainedModel`). ``device_map`` (``"auto"``, a
    device, or module names -> devices: accelerate's placement over several GPUs) is for a directory loaded in
    place by a family that places its weights (``ModelFamily.device_maps``: DiffusionGemma, LLaDA, Dream).

    ``ema=True`` (default) puts the EMA weights in the denoiser, ``ema=False`` the raw ones. ``tokenizer`` (a
    ``Tokenizer`` or a path to ``tokenizer.json``) replaces the saved one; its vocabulary size must match the
    checkpoint's. Missing path/checkpoint, corrupt files or a vocabulary mismatch -> :class:`BasinlabError`.
    """
    from basinlab.models import NetworkDenoiser, resolve_device
    from basinlab.models.family import family_for_dir

    if in_place(path):
        family = family_for_dir(path)
        placed = {} if device_map is None else {"device_map": device_map}
        if placed and not family.device_maps:
            raise BasinlabError(f"device_map: the {family.name} family places its weights itself (one device, or "
                                "spread over the GPUs when one cannot hold them); drop device_map")
        return family.load_pretrained(path, device=device, ema=ema, tokenizer=tokenizer, precision=precision,
                                      batch_size=batch_size, **placed)
    ckpt = require_checkpoint(path)
    if device_map is not None:
        raise BasinlabError(f"device_map: {path} is a basinlab run, which loads on one device; drop device_map (it "
                            "places a deployed model's own directory, e.g. LLaDA or Dream, over several GPUs)")
    meta = load_meta(ckpt)
    cfg = load_config_file(ckpt)
    record = CheckpointMeta.from_dict({"schedule": cfg.train.schedule, "eps": cfg.train.eps, **meta}, ckpt)
    V, L = record.vocab_size, record.seq_len
    if tokenizer is not None:
        tok = load_tokenizer(tokenizer) if isinstance(tokenizer, (str, Path)) else tokenizer
        where = f"tokenizer '{tokenizer}'" if isinstance(tokenizer, (str, Path)) else "the tokenizer given"
    elif (ckpt / TOKENIZER_FILE).exists():
        verify_checkpoint(ckpt, [TOKENIZER_FILE])
        tok = load_tokenizer(ckpt / TOKENIZER_FILE)
        where = f"{ckpt / TOKENIZER_FILE}"
    else:
        tok, where = None, ""
    if tok is not None:
        tv, data_vocab = tokenizer_vocab_size(tok), int(meta.get("data_vocab_size", V))  # fine-tuned: the data's
        if tv is not None and tv != data_vocab:
            raise BasinlabError(f"{where} has vocab size {tv} but checkpoint {ckpt} was trained with {data_vocab}")
    dev = resolve_device(device)
    process = record.forward_process()
    model = record.model_family().rebuild(record.arch, V, L, process)
    state = load_weights(ckpt, ema=ema)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise BasinlabError(f"checkpoint {ckpt} does not match its architecture: {str(exc).splitlines()[0]}") from None
    model.to(dev).eval()
    schedule = record.noise_schedule()
    denoiser = NetworkDenoiser(model, schedule, device=dev, precision=precision, batch_size=batch_size,
                               process=process)
    return TrainedModel(
        model=model,
        denoiser=denoiser,
        tokenizer=tok,
        schedule=schedule,
        config=cfg,
        vocab_size=V,
        seq_len=L,
        step=record.step,
        path=ckpt,
        source=load_source(ckpt),
        ema=ema,
        meta=meta,
        process=process,
    )
