"""Merge sweep directories into one study (SPEC 7), e.g. the per-shard directories of a cluster whose shared
file system has no reliable locks (NFS): ``basinlab merge DIR... --out DIR``.

Exactly once, as in one store: each finished run ``(N, seed, model)`` is recorded once in the output. A run
found in several inputs (or already in the output) is taken once when its records are identical and refused,
with one line naming the run and the directories, when they differ. All inputs must hold the same sweep
config (up to the keys that may differ between shards: devices, batch sizes, the grid). Nothing is written
unless every check passes; each run is then recorded in one transaction, its ``examples.json`` copied beside it.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from basinlab.config import load_config
from basinlab.errors import BasinlabError
from basinlab.study.store import CONFIG_NAME, DB_NAME, ResultStore, RunKey
from basinlab.study.sweep import comparable_config

logger = logging.getLogger(__name__)

_RECORD_KEYS = ("probe", "set", "t", "metric", "value", "std", "ci_low", "ci_high", "n")


def _runs_of(path: Path) -> dict[RunKey, tuple[list[dict[str, Any]], dict[str, Any]]]:
    """The finished runs of one store: key -> (records, info)."""
    with ResultStore(path) as store:
        rows = store.rows()
        infos = {RunKey(r["N"], r["seed"], r["model"]): r["info"] for r in store.runs() if r["status"] == "done"}
    out: dict[RunKey, tuple[list[dict[str, Any]], dict[str, Any]]] = {k: ([], v) for k, v in infos.items()}
    for r in rows:
        key = RunKey(r["N"], r["seed"], r["model"])
        if key in out:
            out[key][0].append({k: r[k] for k in _RECORD_KEYS})
    return out


def _same(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    def canon(rows: list[dict[str, Any]]) -> list[tuple]:
        return sorted(tuple(repr(r[k]) for k in _RECORD_KEYS) for r in rows)

    return canon(a) == canon(b)


def _check_configs(sources: Sequence[Path], out: Path) -> Path | None:
    """The config file to save in ``out`` (None when no input has one); refuses inputs with different configs."""
    found = [d / CONFIG_NAME for d in [*sources, out] if (d / CONFIG_NAME).exists()]
    if not found:
        return None
    ref = comparable_config(load_config(found[0]))
    for path in found[1:]:
        if comparable_config(load_config(path)) != ref:
            raise BasinlabError(f"'{path.parent}' holds a sweep with another config than '{found[0].parent}'; "
                                "only shards of one sweep can be merged")
    return found[0]


def merge_sweeps(sources: Sequence[str | Path], out_dir: str | Path) -> Path:
    """Merge the finished runs of the sweep directories ``sources`` into ``out_dir`` (created); returns it."""
    out = Path(out_dir)
    srcs = [Path(s) for s in sources]
    if not srcs:
        raise BasinlabError("give at least one sweep directory to merge")
    for d in srcs:
        if d.resolve() == out.resolve():
            raise BasinlabError(f"'{d}' is both an input and --out; give another --out directory")
        if not (d / DB_NAME).is_file():
            raise BasinlabError(f"'{d}' is not a sweep directory (no {DB_NAME}); give directories `basinlab sweep` "
                                "wrote")
    config = _check_configs(srcs, out)
    taken: dict[RunKey, tuple[list[dict[str, Any]], dict[str, Any], Path]] = {}
    if (out / DB_NAME).exists():
        taken = {k: (*v, out) for k, v in _runs_of(out).items()}
    todo: list[RunKey] = []
    for d in srcs:
        for key, (rows, info) in sorted(_runs_of(d).items()):
            if key in taken:
                if not _same(taken[key][0], rows):
                    raise BasinlabError(f"run {key.name} is recorded in '{taken[key][2]}' and in '{d}' with different "
                                        "results; merge only one of them")
                continue
            taken[key] = (rows, info, d)
            todo.append(key)
    out.mkdir(parents=True, exist_ok=True)
    if config is not None and not (out / CONFIG_NAME).exists():
        shutil.copyfile(config, out / CONFIG_NAME)
    with ResultStore(out) as store:
        for key in todo:
            rows, info, src = taken[key]
            _copy_examples(src, out, key)
            store.record_run(key, rows, {**info, "merged_from": str(src)})
        store.export()
    logger.info("merged %d runs from %d directories into %s", len(todo), len(srcs), out)
    return out


def _copy_examples(src: Path, out: Path, key: RunKey) -> None:
    path = src / "runs" / key.name / "examples.json"
    if path.is_file():
        (out / "runs" / key.name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out / "runs" / key.name / "examples.json")
