"""A DiffusionGemma directory loaded in place as a :class:`DeployedModel` (SPEC 2c): what ``--checkpoint DIR`` of
``probe``, ``audit``, ``sample`` and ``nll`` returns through :func:`basinlab.training.checkpoint.load_trained`.

The texts of a deployed model are not a basinlab data set: :meth:`DeployedModel.encode_lines` lays each one out as
the model's canvas (its ids, then PAD up to ``canvas_length``: attended, not scored), tokenised with the directory's
``tokenizer.json`` or given as ids; there is no training subset to rebuild (:meth:`DeployedModel.dataset`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from basinlab.errors import BasinlabError
from basinlab.training.checkpoint import TrainedModel

logger = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"


@dataclass(repr=False)
class DeployedModel(TrainedModel):
    """A :class:`TrainedModel` of a directory loaded in place; its sequences are canvases (SPEC 2c)."""

    def dataset(self):
        raise BasinlabError(f"{self.path} is a deployed model, not a basinlab run: it has no training subset to "
                            "rebuild; give the texts (--members/--nonmembers/--texts), or fine-tune it first "
                            "(basinlab train CONFIG model.init=DIR)")

    def special_ids(self) -> list[int]:
        """PAD, BOS and EOS ids: never scored (the model's config, or its tokenizer's)."""
        text = self.model.hf.config.text_config
        eos = text.eos_token_id if isinstance(text.eos_token_id, list) else [text.eos_token_id]
        return sorted({int(i) for i in [text.pad_token_id, text.bos_token_id, *eos] if i is not None})

    def encode_lines(self, lines: list[str], fmt: str, where: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(canvases [n, canvas_length], real-token mask)``: each text's ids, then PAD (not scored)."""
        L = self.seq_len
        rows: list[list[int]] = []
        cut = 0
        for i, line in enumerate(lines, 1):
            ids = self._ids(line, fmt, where, i)
            if len(ids) > L and fmt == "ids":
                raise BasinlabError(f"{where} line {i}: {len(ids)} ids, more than the model's canvas of {L}; "
                                    f"texts of several canvases are not supported yet: cut it into pieces of {L}")
            cut += len(ids) > L
            rows.append(ids[:L])
        if cut:
            logger.warning("warning: %d of %d texts in %s are longer than the model's canvas of %d tokens and were "
                           "cut to fit", cut, len(lines), where, L)
        pad = self.model.pad_id
        seqs = torch.full((len(rows), L), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), L), dtype=torch.bool)
        for r, ids in enumerate(rows):
            seqs[r, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[r, : len(ids)] = True
        mask &= ~torch.isin(seqs, torch.tensor(self.special_ids(), dtype=torch.long))
        return seqs, mask

    def _ids(self, line: str, fmt: str, where: str, i: int) -> list[int]:
        if fmt == "text":
            if self.tokenizer is None:
                raise BasinlabError(f"{self.path} has no {TOKENIZER_FILE}: give token ids with --format ids")
            return list(self.tokenizer.encode(line))
        try:
            ids = [int(x) for x in line.split()]
        except ValueError:
            raise BasinlabError(f"{where} line {i}: not whitespace-separated integer token ids") from None
        bad = [x for x in ids if not 0 <= x < self.vocab_size]
        if bad:
            raise BasinlabError(f"{where} line {i}: token id {bad[0]} outside the vocabulary [0, {self.vocab_size})")
        return ids


def _tokenizer(path: Path, tokenizer: Any, text_config: Any):
    from basinlab.models.diffusion_gemma import check_tokenizer
    from basinlab.training.checkpoint import load_tokenizer

    if tokenizer is None and not (path / TOKENIZER_FILE).is_file():
        return None
    source = tokenizer if tokenizer is not None else path / TOKENIZER_FILE
    tok = load_tokenizer(source) if isinstance(source, (str, Path)) else source
    check_tokenizer(tok, text_config, f"tokenizer '{source}'" if isinstance(source, (str, Path)) else "the tokenizer")
    return tok


def load_deployed(path: Path, device: str | torch.device = "auto", ema: bool = True, tokenizer: Any = None,
                  precision: str = "auto", batch_size: int | None = 512) -> DeployedModel:
    """Load directory ``path`` (fp32 on a CPU, bf16 on a GPU unless ``precision`` says otherwise; ``device_map``
    over several GPUs when one cannot hold it) with the uniform process over its whole vocabulary (SPEC 2c)."""
    from basinlab.config import Config
    from basinlab.diffusion import get_schedule
    from basinlab.diffusion.uniform import UniformProcess
    from basinlab.models import NetworkDenoiser, autocast_dtype, resolve_device
    from basinlab.models.diffusion_gemma import MODEL_TYPE, load_network

    dev = resolve_device(device)
    dtype = autocast_dtype(precision, dev) or torch.float32
    network = load_network(path, dev, dtype)
    text = network.hf.config.text_config
    tok = _tokenizer(path, tokenizer, text)
    V, L = network.vocab_size, network.canvas_length
    process = UniformProcess(V)
    schedule = get_schedule("loglinear", 1e-3)
    cfg = Config()
    cfg.data.seq_len = L
    first = next(network.parameters()).device
    denoiser = NetworkDenoiser(network, schedule, device=first, precision=precision, batch_size=batch_size,
                               process=process)
    meta = {"family": MODEL_TYPE, "vocab_size": V, "seq_len": L, "in_place": str(path)}
    return DeployedModel(model=network, denoiser=denoiser, tokenizer=tok, schedule=schedule, config=cfg,
                         vocab_size=V, seq_len=L, step=0, path=path, ema=ema, process=process, meta=meta)

