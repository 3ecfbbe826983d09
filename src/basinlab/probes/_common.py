"""Plumbing shared by the probes: device, masks, generators, batching. No science here."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from basinlab.errors import BasinlabError
from basinlab.progress import progress_bar as _progress_bar


def denoiser_device(denoiser, device: torch.device | str | None = None) -> torch.device:
    """Where the probe's tensors live: ``device`` if given, else the denoiser's ``device`` attribute, else CPU."""
    if device is not None:
        return torch.device(device)
    dev = getattr(denoiser, "device", None)
    return torch.device(dev) if dev is not None else torch.device("cpu")


def check_seqs(
    seqs: torch.Tensor, vocab_size: int, real_mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``seqs`` as long ``[M, L]`` on CPU and the real-token mask (all True by default), validated."""
    seqs = torch.as_tensor(seqs)
    if seqs.dim() != 2:
        raise BasinlabError(f"probe sequences must be [M, L], got shape {tuple(seqs.shape)}")
    seqs = seqs.long().cpu()
    if seqs.numel() and (int(seqs.min()) < 0 or int(seqs.max()) >= vocab_size):
        raise BasinlabError(f"probe tokens must lie in [0, {vocab_size}); got [{int(seqs.min())}, {int(seqs.max())}]")
    if real_mask is None:
        mask = torch.ones_like(seqs, dtype=torch.bool)
    else:
        mask = torch.as_tensor(real_mask).bool().cpu()
        if mask.shape != seqs.shape:
            raise BasinlabError(f"real_mask shape {tuple(mask.shape)} differs from the sequences' {tuple(seqs.shape)}")
    return seqs, mask


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


def batches(M: int, batch_size: int) -> Iterator[slice]:
    if batch_size < 1:
        raise BasinlabError(f"batch_size must be >= 1, got {batch_size}")
    for b0 in range(0, M, batch_size):
        yield slice(b0, min(M, b0 + batch_size))


def tvec(t: float, n: int, device: torch.device) -> torch.Tensor:
    return torch.full((n,), float(t), dtype=torch.float64, device=device)


def progress_bar(total: int, desc: str, enabled: bool) -> Any:
    """A bar in a terminal, a log line now and then elsewhere (:mod:`basinlab.progress`)."""
    return _progress_bar(total, desc, enabled)
