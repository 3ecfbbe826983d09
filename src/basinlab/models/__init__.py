"""The denoising network (a DiT with adaLN-zero and rotary attention), its presets, and its denoiser wrapper."""

from basinlab.models.denoiser import NetworkDenoiser, autocast, autocast_dtype, resolve_device
from basinlab.models.dit import DiT, count_flops_per_token
from basinlab.models.presets import PRESETS, build, build_model, resolve_arch

__all__ = [
    "PRESETS",
    "DiT",
    "NetworkDenoiser",
    "autocast",
    "autocast_dtype",
    "build",
    "build_model",
    "count_flops_per_token",
    "resolve_arch",
    "resolve_device",
]
