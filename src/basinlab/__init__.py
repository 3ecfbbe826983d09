"""basinlab: train uniform-noise discrete diffusion LMs and probe them as associative memories.

Nothing heavy is imported here; ``basinlab.load(path)`` loads a trained model lazily.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:  # the one source of the version is pyproject.toml, read from the installed package's metadata
    __version__ = version("basinlab")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

if TYPE_CHECKING:
    from basinlab.training.checkpoint import TrainedModel


def load(path: str, device: str = "cpu", **kwargs: Any) -> TrainedModel:
    """Load a trained model from a run directory or checkpoint, or a deployed model's own directory: ``.denoiser``,
    ``.tokenizer``, ``.schedule``, ``.config``. ``kwargs``: those of
    :func:`~basinlab.training.checkpoint.load_trained` (``ema``, ``tokenizer``, ``precision``, ``batch_size``,
    ``device_map="auto"`` to spread a LLaDA or Dream over the GPUs)."""
    from basinlab.training.checkpoint import load_trained

    return load_trained(path, device=device, **kwargs)


__all__ = ["__version__", "load"]
