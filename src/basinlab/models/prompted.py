"""A denoiser bound to one prompt (SPEC 2c, block layout): canvas ``k`` of a text is denoised after ``[BOS]`` +
every earlier token of the text, a prompt that is never corrupted.

The probes never see a prompt: :func:`with_prompt` returns a denoiser of the usual protocol (``denoiser(z_t, t) ->
log x_theta``, ``.process``, ``.vocab_size``, ``.schedule``, ...) whose every call, and every chain of the model's
own sampler (``own_chain``), runs its network under that one prompt; the network expands it to any batch of
canvases. It asks the network whether it takes a prompt (``network.prompted(ids)``, a context: DiffusionGemma's
has one); a denoiser whose network has none is refused in one line.
"""

from __future__ import annotations

from typing import Any

import torch

from basinlab.errors import BasinlabError


class PromptedDenoiser:
    """``denoiser`` whose network denoises every canvas after ``prompt`` (1-D ids); everything else is the
    wrapped denoiser's."""

    def __init__(self, denoiser: Any, network: Any, prompt: torch.Tensor) -> None:
        self._inner, self._network, self.prompt = denoiser, network, prompt

    def __call__(self, z_t: torch.Tensor, t: Any) -> torch.Tensor:
        with self._network.prompted(self.prompt):
            return self._inner(z_t, t)

    @property
    def own_chain(self) -> Any:
        """The wrapped denoiser's own reverse chain (``probe.sampler``, self-conditioning), run under the prompt;
        ``None`` when it has none (then the probes' chains call this denoiser, step by step)."""
        own = getattr(self._inner, "own_chain", None)
        if own is None:
            return None

        def chain(*args: Any, **options: Any) -> torch.Tensor:
            with self._network.prompted(self.prompt):
                return own(*args, **options)

        return chain

    def __getattr__(self, name: str) -> Any:  # vocab_size, process, schedule, device, model, ...: the wrapped one's
        return getattr(self._inner, name)

    def __repr__(self) -> str:
        return f"{self._inner!r} after a prompt of {self.prompt.numel()} tokens"


def with_prompt(denoiser: Any, prompt: Any) -> PromptedDenoiser:
    """``denoiser`` bound to ``prompt`` (1-D token ids, ``[BOS]`` first; SPEC 2c), or one line when its network
    takes no prompt."""
    network = getattr(denoiser, "model", None)
    if not hasattr(network, "prompted"):
        raise BasinlabError(f"{type(denoiser).__name__} cannot denoise after a prompt: texts laid out in canvases "
                            "(SPEC 2c) need a block-diffusion network that takes one (DiffusionGemma's); give each "
                            "text as one sequence of the model's length instead")
    return PromptedDenoiser(denoiser, network, torch.as_tensor(prompt, dtype=torch.long).flatten())
