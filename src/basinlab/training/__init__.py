"""Training (SPEC 4) and checkpoints: ``train(cfg, data, out_dir)`` and ``load_trained(path)``."""

from basinlab.training.checkpoint import TrainedModel, load_trained
from basinlab.training.trainer import TrainResult, train

__all__ = ["TrainResult", "TrainedModel", "load_trained", "train"]
