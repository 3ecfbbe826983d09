"""Where a deployed model's weights go (SPEC 2c): one device, spread over every GPU, or refused in one line.

:func:`placement` weighs a model's weights (plus a tenth for activations) against the *free* memory of the device
before anything is read: ``None`` when that device holds it, ``"auto"`` when only every visible GPU together does
(accelerate's ``device_map``), else one :class:`BasinlabError` line saying what would hold it. DiffusionGemma hands
the answer, or the user's map checked by :func:`resolve_device_map`, to ``from_pretrained``; the masked families
(LLaDA, Dream) build their network on the ``meta`` device and place it themselves: :func:`resolve_device_map` turns
``"auto"`` (or a user's map) into a map of module names to devices (accelerate's ``infer_auto_device_map``, the
model's own no-split block class), :func:`device_of` says where each weight is read to, and :func:`dispatch` lets
accelerate's hooks carry the activations between the devices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from basinlab.errors import BasinlabError

#: ``device_map`` strings that accelerate turns into a map (``auto`` balances the layers over the GPUs)
STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
#: the head-room asked for above the weights (activations, allocator slack)
HEADROOM = 1.1


def free_memory(device: torch.device) -> list[int] | None:
    """Free bytes of ``device`` first, then (CUDA) of every other visible GPU; ``MemAvailable`` for the CPU
    (the physical memory where ``/proc/meminfo`` is not there); ``None`` when nothing says."""
    if device.type == "cuda":
        own = torch.cuda.current_device() if device.index is None else device.index
        others = [i for i in range(torch.cuda.device_count()) if i != own]
        return [int(torch.cuda.mem_get_info(i)[0]) for i in [own, *others]]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return [int(line.split()[1]) * 1024]
    except OSError:
        pass
    from basinlab.memory import physical_memory_bytes

    total = physical_memory_bytes()
    return None if total is None else [total]


def placement(n_params: int, dtype_bytes: int, device: torch.device, where: str,
              free: Sequence[int] | None = None) -> str | None:
    """``None`` (``device`` holds the weights), ``"auto"`` (spread over every GPU through accelerate's
    ``device_map``), or one :class:`BasinlabError` line when the weights (plus a tenth for activations) cannot fit
    (SPEC 2c). ``free``: the free bytes of ``device`` then of the other GPUs (default: :func:`free_memory`)."""
    from basinlab.memory import human_bytes

    need = n_params * dtype_bytes * HEADROOM
    free = free_memory(device) if free is None else list(free)
    if not free or need <= free[0]:
        return None
    if device.type == "cuda" and len(free) > 1 and need <= sum(free):
        return "auto"
    bf16 = n_params * 2 * HEADROOM
    gpus = math.ceil(bf16 / (80 * 1e9 * 0.95))
    fits = f"one GPU with {human_bytes(bf16)} free in bf16 (--device cuda)" if gpus == 1 else \
        f"{gpus} 80 GB GPUs in bf16 (--device cuda: device_map spreads it)"
    held = f"the {human_bytes(free[0])} free on {device.type}" + (
        f" ({human_bytes(sum(free))} on all {len(free)} GPUs)" if len(free) > 1 else "")
    raise BasinlabError(
        f"{where}: {n_params / 1e9:,.2f}B parameters need about {human_bytes(need)} in "
        f"{'bf16' if dtype_bytes == 2 else 'fp32'}, more than {held}; it would fit {fits}, or use a smaller model")


def resolve_device_map(model: torch.nn.Module, device_map: Any, dtype: torch.dtype, where: str,
                       no_split: Sequence[str] = ()) -> dict[str, Any]:
    """A map of module names to devices for ``model`` (built on ``meta``): a strategy of :data:`STRATEGIES` is
    accelerate's ``infer_auto_device_map`` (blocks of the classes ``no_split`` kept whole, the layers balanced over
    the GPUs' free memory), a device (``"cpu"``, ``"cuda:1"``, ``0``) is ``{"": device}``, a dict is checked: every
    weight placed, every device real. A map that needs the disk is refused in one line."""
    _require_accelerate()
    if isinstance(device_map, str) and device_map in STRATEGIES:
        from accelerate import infer_auto_device_map
        from accelerate.utils import get_balanced_memory

        memory = None if device_map == "sequential" else get_balanced_memory(
            model, dtype=dtype, no_split_module_classes=list(no_split), low_zero=device_map == "balanced_low_0")
        device_map = infer_auto_device_map(model, max_memory=memory, no_split_module_classes=list(no_split),
                                           dtype=dtype)
    elif not isinstance(device_map, dict):
        device_map = {"": device_map}
    device_map = {name: _device(value, where) for name, value in device_map.items()}
    unplaced = [n for n, _ in [*model.named_parameters(), *model.named_buffers()] if _lookup(n, device_map) is None]
    if unplaced:
        raise BasinlabError(f"{where}: device_map places no device for {unplaced[0]} ({len(unplaced)} weights); "
                            "give every module a device (\"\": DEVICE covers them all) or device_map=\"auto\"")
    return device_map


def _require_accelerate() -> None:
    try:
        import accelerate  # noqa: F401
    except ImportError:
        raise BasinlabError("placing a model over several devices (device_map) needs accelerate: "
                            "pip install 'basinlab[dlm]'") from None


def _device(value: Any, where: str) -> Any:
    """A map's device, checked: the CPU, or a visible GPU (an ``int`` or ``cuda:N``)."""
    name = f"cuda:{value}" if isinstance(value, int) else str(value)
    if name == "disk":
        raise BasinlabError(f"{where}: the weights do not fit the GPUs and the CPU's free memory together (accelerate "
                            "would put some on the disk); use devices with more memory")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise BasinlabError(f"{where}: device_map names {value!r}, not a device; use \"cpu\", \"cuda:N\" or "
                            "a GPU number") from None
    if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
        raise BasinlabError(f"{where}: device_map names {value!r} but {torch.cuda.device_count()} GPUs are "
                            "visible; use one of them (CUDA_VISIBLE_DEVICES)")
    if dev.type not in ("cpu", "cuda"):
        raise BasinlabError(f"{where}: device_map names {value!r}; basinlab places weights on the CPU or GPUs")
    return value if isinstance(value, int) else name


def _lookup(name: str, device_map: dict[str, Any]) -> Any:
    best = None
    for prefix, dev in device_map.items():
        if prefix == "" or name == prefix or name.startswith(prefix + "."):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, dev)
    return None if best is None else best[1]


def device_of(name: str, device_map: dict[str, Any]) -> torch.device:
    """The device of the weight or module ``name`` under ``device_map`` (its longest prefix in the map)."""
    dev = _lookup(name, device_map)
    return torch.device(f"cuda:{dev}" if isinstance(dev, int) else dev)


def main_device(device_map: dict[str, Any]) -> torch.device:
    """Where a placed model's inputs go: the first GPU of the map, else the CPU."""
    for dev in device_map.values():
        if dev != "cpu":
            return torch.device(f"cuda:{dev}" if isinstance(dev, int) else dev)
    return torch.device("cpu")


def dispatch(model: torch.nn.Module, device_map: dict[str, Any]) -> torch.nn.Module:
    """accelerate's ``dispatch_model``: hooks on the map's blocks move each block's inputs to its device and the
    output back to the input's; a map of several entries gets them even on one device (the same code path as
    several GPUs). Sets ``model.hf_device_map``, which :class:`~basinlab.models.denoiser.NetworkDenoiser` leaves
    where it is."""
    from accelerate import dispatch_model

    main = str(main_device(device_map))  # a string: accelerate compares it with "cpu"
    return dispatch_model(model, device_map, main_device=main, force_hooks=len(device_map) > 1)
