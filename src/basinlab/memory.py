"""Memory estimates: refuse a setting whose big allocations cannot fit, before allocating anything.

A request for terabytes (``data.markov_vocab=1000000``, a huge model or vocabulary) would otherwise end in a raw
``MemoryError``/``RuntimeError`` traceback, or worse, an out-of-memory kill after minutes of work. The limit is the
machine's physical memory (or the GPU's, for a CUDA device); estimates are lower bounds of the real peak.
"""

from __future__ import annotations

import os

from basinlab.errors import BasinlabError


def physical_memory_bytes() -> int | None:
    """Total physical memory of this machine, ``None`` where the OS does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def device_memory_bytes(device: object = "cpu") -> int | None:
    """Memory of ``device``: the GPU's total for CUDA, else the machine's physical memory."""
    if str(device).startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            return int(torch.cuda.get_device_properties(torch.device(str(device))).total_memory)
    return physical_memory_bytes()


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1024 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PB"


def require_fits(nbytes: float, setting: str, device: object = "cpu", fix: str = "lower it") -> None:
    """Raise one :class:`BasinlabError` line naming ``setting`` when ``nbytes`` exceed ``device``'s memory."""
    limit = device_memory_bytes(device)
    if limit is not None and nbytes > limit:
        where = "the GPU" if str(device).startswith("cuda") else "this machine"
        raise BasinlabError(
            f"{setting} needs about {human_bytes(nbytes)} of memory, more than {where} has "
            f"({human_bytes(limit)}); {fix}"
        )
