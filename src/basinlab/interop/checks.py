"""What ``convert`` and ``export`` check before they write (issue 18): the output directory, and the weights.

- ``--out`` is new or empty, or holds an earlier conversion of the same source (``convert``) or an earlier export
  of the same run (``export``): anything else (a trained run, another model, a file, ``/dev/null``, a link loop)
  is refused, so no run is ever overwritten.
- The weights: every floating tensor must be finite (a NaN or inf weight is named and refused); float16 and
  bfloat16 weights are converted to float32 (exactly: each value is representable), float64 ones rounded to
  float32; integer (quantised) tensors are refused naming their dtype. Duo's rotary buffer stored in half
  precision is checked at that precision.
- The sizes: ``config.json`` must agree with the weights' shapes, and the model must fit in memory (an estimate,
  before anything is allocated).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from basinlab.errors import BasinlabError
from basinlab.io import LOCK_FILE, check_output_dir

logger = logging.getLogger(__name__)

PREFIX = "backbone."
INV_FREQ = "rotary_emb.inv_freq"
_HALF = (torch.float16, torch.bfloat16)


def _contents(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name != LOCK_FILE) if out.is_dir() else []


def _listing(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def check_convert_out(src: Path, out: Path) -> None:
    """Refuse an ``--out`` of ``convert`` that holds anything but an earlier conversion of ``src``."""
    from basinlab.training.checkpoint import find_checkpoint, load_meta

    check_output_dir(out, "--out")
    names = _contents(out)
    if not names:
        return
    try:
        ckpt = find_checkpoint(out)
        origin = load_meta(ckpt).get("converted_from", {}).get("path") if ckpt is not None else None
    except (BasinlabError, OSError, ValueError, AttributeError):
        origin = None
    if origin == str(src.resolve()):
        return  # converting the same source again replaces the converted checkpoint only
    what = f"a conversion of {origin}" if origin else f"not a conversion of '{src}'"
    raise BasinlabError(f"--out '{out}' is not empty ({_listing(names)}; {what}); convert into a new or empty "
                        "directory (basinlab never overwrites a run)")


def export_source(run: str | Path) -> str:
    """The run directory an export came from (the same for the run and any of its checkpoints)."""
    from basinlab.training.checkpoint import require_checkpoint

    return str(require_checkpoint(run).resolve().parent)


def check_export_out(run: str | Path, out: Path) -> None:
    """Refuse an ``--out`` of ``export`` that holds anything but an earlier export of the same run."""
    check_output_dir(out, "--out")
    names = _contents(out)
    if not names:
        return
    origin = None
    try:
        record = json.loads((out / "config.json").read_text(encoding="utf-8")).get("basinlab")
        origin = record.get("source") if isinstance(record, Mapping) else None
    except (OSError, ValueError, AttributeError):
        pass
    if origin is not None and origin == export_source(run):
        return  # exporting the same run again replaces its files
    what = f"an export of {origin}" if origin else "not an export of this run"
    raise BasinlabError(f"--out '{out}' is not empty ({_listing(names)}; {what}); export into a new or empty "
                        "directory (basinlab never overwrites files it did not write)")


def _standard_inv_freq(head_dim: int) -> torch.Tensor:
    return 1.0 / (10_000 ** (torch.arange(0, head_dim, 2).float() / head_dim))


def check_weights(state: dict[str, torch.Tensor], where: Any, head_dim: int) -> dict[str, torch.Tensor]:
    """``state`` (Duo keys, no prefix) as float32, after refusing integer tensors and NaN/inf values."""
    out, widened = {}, set()
    for k, t in state.items():
        if not t.is_floating_point():
            raise BasinlabError(f"{where}: '{PREFIX}{k}' has dtype {str(t.dtype).replace('torch.', '')}; basinlab "
                                "converts floating-point weights only (dequantise the checkpoint first)")
        if t.dtype != torch.float32:
            widened.add(str(t.dtype).replace("torch.", ""))
        if k == INV_FREQ and t.dtype in _HALF:
            std = _standard_inv_freq(head_dim)
            if t.shape == std.shape and torch.equal(t, std.to(t.dtype)):
                t = std  # Duo's buffer rounded to half precision: the standard one, exactly
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            raise BasinlabError(f"{where}: '{PREFIX}{k}' holds {bad} NaN/inf value{'s' * (bad > 1)} of "
                                f"{t.numel()}; the checkpoint is damaged or its training diverged: give another one")
        out[k] = t.to(torch.float32)
    if widened:
        logger.info("%s: %s weights converted to float32", where, "/".join(sorted(widened)))
    return out


def _check_heads(hf: Mapping[str, Any], duo: Mapping[str, torch.Tensor], where: Any) -> None:
    """``n_heads`` shows in no weight's shape but in the rotary buffer's: ``inv_freq`` has ``head_dim / 2`` entries,
    so ``hidden_dim / n_heads`` must be twice its length (a config edited to other heads is refused here)."""
    inv = duo.get(INV_FREQ)
    heads, d = hf.get("n_heads"), hf.get("hidden_dim")
    if not isinstance(inv, torch.Tensor) or inv.ndim != 1 or not heads or not d or inv.numel() == 0:
        return
    if d // heads != 2 * inv.numel():
        implied = d // (2 * inv.numel()) if d % (2 * inv.numel()) == 0 else "no whole number of"
        raise BasinlabError(f"{where}: the config says n_heads={heads} (head size {d // heads}) but the weights' "
                            f"'{PREFIX}{INV_FREQ}' has {inv.numel()} entries (head size {2 * inv.numel()}, i.e. "
                            f"n_heads={implied} for hidden_dim={d}); fix n_heads in the config (or --n-heads)")


def infer_arch(duo: Mapping[str, torch.Tensor], where: Any, n_heads: int | None = None) -> dict[str, Any]:
    """``vocab_size``, ``hidden_dim``, ``cond_dim``, ``n_blocks`` read off Duo weights (``n_heads`` must be given
    or stored: it does not show in any shape)."""
    for k in ("vocab_embed.embedding", "sigma_map.mlp.2.weight"):
        if k not in duo:
            raise BasinlabError(f"{where} is missing weight '{PREFIX}{k}'")
    V, d = duo["vocab_embed.embedding"].shape
    blocks = {int(k.split(".")[1]) for k in duo if k.startswith("blocks.")}
    return {"vocab_size": int(V), "hidden_dim": int(d), "cond_dim": int(duo["sigma_map.mlp.2.weight"].shape[0]),
            "n_blocks": len(blocks), "n_heads": n_heads}


def check_sizes(hf: Mapping[str, Any], duo: Mapping[str, torch.Tensor], where: Any) -> None:
    """Refuse a config whose sizes disagree with the weights, or a model that cannot fit in memory, before any
    allocation (``"vocab_size": 1000000000`` would otherwise try to allocate hundreds of GB)."""
    from basinlab.memory import require_fits

    found = infer_arch(duo, where)
    blocks = {"vocab_size": "vocab_embed.embedding", "hidden_dim": "vocab_embed.embedding",
              "cond_dim": "sigma_map.mlp.2.weight"}
    for key, tensor in blocks.items():
        if hf.get(key) != found[key]:
            raise BasinlabError(f"{where}: '{PREFIX}{tensor}' has shape {tuple(duo[tensor].shape)}, but the config "
                                f"says {key}={hf.get(key)}; fix the config")
    _check_heads(hf, duo, where)
    if hf.get("n_blocks") != found["n_blocks"]:
        raise BasinlabError(f"{where}: the weights hold {found['n_blocks']} blocks ({PREFIX}blocks.*), but the config "
                            f"says n_blocks={hf.get('n_blocks')}; fix the config")
    V, d, c, nb, L = (int(hf.get(k) or 0) for k in ("vocab_size", "hidden_dim", "cond_dim", "n_blocks", "model_length"))
    n_params = 2 * V * d + nb * (12 * d * d + 6 * c * d) + c * (c + 256) + 2 * c * d
    # the file's tensors, the model built from them, the EMA copy; and the rotary tables of L positions
    need = 4 * (3 * n_params + 2 * L * d)
    require_fits(need, f"{where} ({n_params / 1e6:,.1f}M parameters, model_length {L})",
                 fix="convert it on a machine with more memory")
