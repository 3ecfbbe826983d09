"""Experiment trackers (``train.tracker``, docs/TRACKING.md): the training curves of ``metrics.csv`` (loss,
learning rate, gradient norm, throughput, per ``train.log_every`` steps) and, for a sweep's run, its probe results
(SPEC 5 rows) at the end, sent to TensorBoard, Weights & Biases or MLflow. Plumbing, no science: ``metrics.csv``
stays the record; a tracker is a view of it.

One small adapter per tracker, each behind :class:`Tracker`'s three calls, each package optional:

- ``tensorboard``: ``torch.utils.tensorboard.SummaryWriter`` into ``<run dir>/tb`` (``pip install
  'basinlab[tensorboard]'``); ``tensorboard --logdir SWEEP/runs`` shows one run per N, process and model; a resumed
  run purges the events after its checkpoint's step;
- ``wandb``: ``wandb.init`` in **offline** mode unless ``$WANDB_MODE`` says otherwise (``wandb sync`` uploads
  later), project ``$WANDB_PROJECT`` or ``basinlab``, files under ``<root>/wandb``, the run's id fixed by its
  directory so that training and probe results (and a resumed run) land in one run;
- ``mlflow``: ``mlflow.start_run`` against ``$MLFLOW_TRACKING_URI``, else a local file store ``<root>/mlruns``
  (the one store ``mlflow-skinny`` has; MLflow 3 keeps it in maintenance mode), experiment ``basinlab``, the run
  found again by its ``basinlab.dir`` tag.

``<root>``: the run directory for ``basinlab train``, the sweep directory for a sweep (one store, one run per
``N``/process/model, grouped by the sweep's name).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from basinlab.config import TRACKERS
from basinlab.errors import BasinlabError

log = logging.getLogger(__name__)

__all__ = ["TRACKERS", "Tracker", "check_tracker", "open_tracker"]
#: the package each tracker imports, and the extra that brings it
_PACKAGES = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb"),
             "mlflow": ("mlflow", "mlflow")}


class Tracker:
    """``none``: every call does nothing (the base of the adapters)."""

    def log(self, values: dict[str, float], step: int) -> None:
        """Scalars ``{tag: value}`` at training step ``step``."""

    def log_results(self, rows: list[dict[str, Any]], step: int) -> None:
        """The probe suite's rows (SPEC 5), each as the scalar ``probe/<probe>/<set>/<metric>[@t]``, at ``step``."""
        values = {}
        for r in rows:
            v = r.get("value")
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                t = "" if r.get("t") is None or (isinstance(r["t"], float) and math.isnan(r["t"])) else f"@{r['t']:g}"
                values[f"probe/{r['probe']}/{r['set']}/{r['metric']}{t}"] = float(v)
        if values:
            self.log(values, step)

    def close(self) -> None:
        """Flush and finish."""


class TensorBoardTracker(Tracker):
    def __init__(self, out: Path, name: str, config: dict[str, Any], start_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(out / "tb"), purge_step=start_step + 1 if start_step else None)
        if config and not start_step:
            self.writer.add_text("config", f"run {name}\n\n    " + _yaml(config).replace("\n", "\n    "), 0)

    def log(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        self.writer.close()


class WandbTracker(Tracker):
    def __init__(self, out: Path, name: str, config: dict[str, Any], root: Path, group: str | None) -> None:
        import wandb

        root.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT") or "basinlab", name=name, group=group,
                              id=_run_id(out), resume="allow", dir=str(root), config=config,
                              mode=os.environ.get("WANDB_MODE") or "offline",
                              settings=wandb.Settings(silent=True, console="off"))

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


class MlflowTracker(Tracker):
    def __init__(self, out: Path, name: str, config: dict[str, Any], root: Path, group: str | None) -> None:
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # the local store mlflow-skinny offers
            uri = (root / "mlruns").resolve().as_uri()
        self.client = MlflowClient(tracking_uri=uri)
        exp = self.client.get_experiment_by_name("basinlab")
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment("basinlab")
        key = str(out.resolve())
        found = self.client.search_runs([exp_id], filter_string=f"tags.`basinlab.dir` = '{key}'", max_results=1)
        if found:
            self.run_id = found[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            tags = {"basinlab.dir": key, "mlflow.runName": name, **({"basinlab.group": group} if group else {})}
            self.run_id = self.client.create_run(exp_id, run_name=name, tags=tags).info.run_id
            flat = _flatten(config)
            for i in range(0, len(flat), 100):  # MLflow takes at most 100 params per batch
                self.client.log_batch(self.run_id, params=[Param(k, str(v)[:500])
                                                           for k, v in list(flat.items())[i:i + 100]])
        self._metric = Metric

    def log(self, values: dict[str, float], step: int) -> None:
        stamp = int(1000 * time.time())
        metrics = [self._metric(_mlflow_key(k), v, stamp, step) for k, v in values.items()]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def check_tracker(name: str) -> str:
    """``name`` if it is a tracker whose package is installed; one clear line otherwise (before any long work)."""
    if name not in TRACKERS:
        raise BasinlabError(f"train.tracker must be one of {', '.join(TRACKERS)}, got {name!r}")
    if name in _PACKAGES and importlib.util.find_spec(_PACKAGES[name][0]) is None:
        module, extra = _PACKAGES[name]
        raise BasinlabError(f"train.tracker={name} needs the {module} package: pip install 'basinlab[{extra}]' "
                            "(or train.tracker=none)")
    return name


def open_tracker(name: str, out: str | Path, *, config: dict[str, Any] | None = None, start_step: int = 0,
                 root: str | Path | None = None, run_name: str | None = None, group: str | None = None) -> Tracker:
    """The tracker ``name`` (:data:`TRACKERS`) for the run in ``out``: ``run_name`` (default: the directory's
    name) inside ``group`` (a sweep's name), its store under ``root`` (default ``out``; the module docstring).
    ``config``: the run's config, recorded once (none: a run continued, e.g. for its probe results);
    ``start_step``: the step a resumed training continues from (TensorBoard drops its later events)."""
    if check_tracker(name) == "none":
        return Tracker()
    out = Path(out)
    run_name = run_name or out.name
    if name == "tensorboard":
        return TensorBoardTracker(out, run_name, config or {}, start_step)
    cls = WandbTracker if name == "wandb" else MlflowTracker
    return cls(out, run_name, config or {}, Path(root) if root is not None else out, group)


def _run_id(out: Path) -> str:
    """A W&B run id fixed by the run directory (so a resume and the probe results join the same run)."""
    return hashlib.sha256(str(out.resolve()).encode()).hexdigest()[:16]


def _mlflow_key(tag: str) -> str:
    """MLflow keys allow ``/``, ``.``, ``-``, ``_``, spaces and alphanumerics; ``@`` becomes ``_at_``."""
    return tag.replace("@", "_at_")


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _yaml(config: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(config, sort_keys=False)
