"""A trained network as a *denoiser* (the protocol of ``basinlab.diffusion.sampler``, SPEC 3-5).

``NetworkDenoiser(z_t, t)`` returns ``log x_theta`` float32 ``[B, L, V]``: the network's leave-one-out prediction
of each token (SPEC 4), conditioned on ``sigma_t = -log alpha_t`` of the schedule (SPEC 2), through its forward
process's parameterisation (``process.parameterise``: SUBS for a masked network, SPEC 2b). Probes and samplers
call it exactly as they call the exact oracles of SPEC 6.
"""

from __future__ import annotations

import contextlib

import torch

from basinlab.config import PRECISIONS
from basinlab.errors import BasinlabError


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or ``None``) -> ``cuda`` when available, else ``cpu``; anything else is checked."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise BasinlabError(f"unknown device '{device}'; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BasinlabError(f"device '{device}' asked for but CUDA is not available; use device=cpu or auto")
    return dev


def autocast_dtype(precision: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``: ``auto`` is bf16 on CUDA (if supported), fp32 else.

    ``bf16`` forces bf16 autocast (on CPU too, for benchmarks); ``fp32`` disables autocast.
    """
    dev = torch.device(device)
    if precision not in PRECISIONS:
        raise BasinlabError(f"unknown precision '{precision}'; choose one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if dev.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def autocast(device: torch.device | str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``dtype`` on ``device``'s type, or a no-op when ``dtype`` is ``None``."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


class NetworkDenoiser:
    """Wrap a :class:`~basinlab.models.dit.DiT` as ``denoiser(z_t, t) -> log x_theta`` (SPEC 4).

    ``t`` (float64 ``[B]``) goes through ``schedule.sigma`` in float64 before conditioning the network. Calls run
    under ``torch.inference_mode()``, in chunks of ``batch_size`` sequences, in eval mode (dropout off; the
    module's mode is restored afterwards), with bf16 autocast on CUDA when ``precision`` allows. The output is
    ``log_softmax(logits.float())``, float32, on the input's device.

    ``compile=True`` compiles the forward and the log-softmax together (``torch.compile``, static shapes, mode
    ``max-autotune-no-cudagraphs`` on CUDA, or the mode given as a string): the fast path of the basin test on a
    GPU (docs/PERFORMANCE.md). Feed it full batches of one size (the packed chains do) or each new size compiles
    again.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        schedule,
        device: str | torch.device | None = None,
        precision: str = "auto",
        batch_size: int | None = 512,
        compile: bool | str = False,
        process=None,
    ) -> None:
        from basinlab.diffusion.uniform import UniformProcess

        self.model = model
        self.schedule = schedule
        # the process: given, or uniform over the network's vocabulary (SPEC 2)
        self.process = process if process is not None else UniformProcess(int(model.vocab_size))
        if self.process.n_outputs != int(model.vocab_size):
            raise BasinlabError(f"a {self.process.name} process over V={self.process.vocab_size} needs a network with "
                                f"{self.process.n_outputs} outputs, this one has {model.vocab_size}")
        self.vocab_size = self.process.vocab_size
        if device is None:
            device = next(model.parameters()).device
        self.device = resolve_device(device)
        if not getattr(model, "hf_device_map", None):  # a model spread over devices (accelerate) stays where it is
            self.model.to(self.device)
        self.precision = precision
        self.amp_dtype = autocast_dtype(precision, self.device)
        self.batch_size = batch_size
        self.compiled = bool(compile)
        self._log_probs = self._log_probs_eager
        if compile:
            mode = compile if isinstance(compile, str) else (
                "max-autotune-no-cudagraphs" if self.device.type == "cuda" else None)
            self._log_probs = torch.compile(self._log_probs_eager, dynamic=False, mode=mode)

    def _log_probs_eager(self, z: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.amp_dtype):
            logits = self.model(z, sigma)
        return self.process.parameterise(logits, z, sigma)

    def __call__(self, z_t: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        out_device = z_t.device
        B = z_t.shape[0]
        t = torch.as_tensor(t, dtype=torch.float64)
        if t.dim() == 0:
            t = t.expand(B)
        # sigma on the model's device: a t already there (packed chains) costs no host synchronisation.
        sigma = self.schedule.sigma(t.to(self.device)).to(torch.float32)
        step = self.batch_size or B
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                chunks = []
                for b0 in range(0, B, step):
                    z = z_t[b0 : b0 + step].to(self.device, non_blocking=True)
                    chunks.append(self._log_probs(z, sigma[b0 : b0 + step]).to(out_device))
        finally:
            self.model.train(was_training)
        return chunks[0] if len(chunks) == 1 else torch.cat(chunks)

    def __repr__(self) -> str:
        return (f"NetworkDenoiser(V={self.vocab_size}, schedule={self.schedule!r}, process={self.process!r}, "
                f"device={self.device})")
