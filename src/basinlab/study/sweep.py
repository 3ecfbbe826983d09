"""The dataset-size sweep of SPEC 7: one model per ``(N, seed)``, probed, with the exact oracles alongside.

For every training-set size ``N`` of the grid and every seed, :func:`run_sweep`

1. trains one network (same architecture, same step budget for every ``N``, so a small ``N`` sees many epochs)
   into ``out_dir/runs/N{N}-s{seed}/``, resuming from the checkpoint there if a previous sweep was interrupted;
2. runs the tests of SPEC 5 on it (basins, fixed points, conditional entropy with its recovered/failed split and
   the generated-minus-real gap, novelty of generated samples, likelihood) on the ``train`` (the first ``M`` of
   its own ``D_N``), ``test`` and ``random`` sets;
3. records all tidy rows with ``N, model, seed`` in the results store (one transaction per finished run) and
   exports ``results.csv``/``results.parquet``; saves a few (original, corrupted, restored) test sentences in
   ``examples.json`` beside the run;

and does the same (without training) for the exact oracles of SPEC 6 on the same sets: the memoriser of ``D_N``
(``model = 'oracle:empirical'``) always, the Markov generaliser (``'oracle:markov'``) on Markov data, for the
first seed of the grid.

Resumption: a run whose status in the store is ``done`` is skipped; a run interrupted while training resumes
from its last checkpoint (the trainer's exact resume); a run interrupted while probing is probed again from
scratch and its records replace nothing (they were never committed). Sharding: the run list is a fixed order
(``N`` ascending, then seed, then model), and shard ``i/n`` takes runs ``i, i+n, i+2n, ...``: the shards cover
the grid exactly once and any number of them may write to the same store at once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from basinlab.config import (  # noqa: F401 (geometric_sizes, resolve_sizes: the grid, importable from here)
    Config,
    geometric_sizes,
    load_config,
    resolve_sizes,
    resumable_keys,
)
from basinlab.data import build_dataset
from basinlab.data.sequences import SequenceData
from basinlab.errors import BasinlabError
from basinlab.io import atomic_write_text, check_writable_dir
from basinlab.lifeline import LAUNCHER_ENV, die_with_launcher
from basinlab.models import resolve_device
from basinlab.oracles.build import build_oracle, oracle_kinds, oracle_label
from basinlab.probes import probes_for, restore_examples, run_suite
from basinlab.probes.protocol import resolve_weights
from basinlab.study.store import CONFIG_NAME, ResultStore, RunKey, label_process, model_label, warn_if_network_fs
from basinlab.training.checkpoint import load_trained
from basinlab.training.trainer import train

Hook = Callable[[RunKey], None]
logger = logging.getLogger(__name__)


# ---- the grid ----------------------------------------------------------------------------------------------


def sweep_processes(cfg: Config) -> list[str]:
    """The forward processes a sweep trains: ``sweep.processes``, or ``[train.process]`` when it is empty."""
    return list(cfg.sweep.processes) or [cfg.train.process]


def plan_runs(cfg: Config) -> list[RunKey]:
    """Every run of the sweep in its fixed order: ``N`` ascending; per ``N`` the trained models process by process
    (:func:`sweep_processes`), seed by seed, then the oracles of each process (memoriser always, Markov generaliser
    on Markov data; first seed only) when ``sweep.oracles``. A process other than uniform is in the ``model``
    label (``micro@masked``: :func:`~basinlab.study.store.model_label`)."""
    sizes = resolve_sizes(cfg.sweep.sizes)
    seeds = list(dict.fromkeys(int(s) for s in cfg.sweep.seeds))
    if not seeds:
        raise BasinlabError("sweep.seeds is empty; give at least one seed")
    runs: list[RunKey] = []
    processes = sweep_processes(cfg)
    for n in sizes:
        for proc in processes:
            runs.extend(RunKey(n, s, model_label(cfg.model.preset, proc)) for s in seeds)
        if cfg.sweep.oracles:
            for proc in processes:
                runs.extend(RunKey(n, seeds[0], oracle_label(kind, proc))
                            for kind in oracle_kinds(cfg.data.source, proc))
    return runs


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``; ``None`` stays ``None``."""
    if text is None:
        return None
    try:
        a, b = text.split("/")
        i, n = int(a), int(b)
    except ValueError:
        raise BasinlabError(f"--shard '{text}' must look like i/n, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise BasinlabError(f"--shard {text}: need 0 <= i < n")
    return i, n


def shard_runs(runs: Sequence[RunKey], shard: tuple[int, int] | None) -> list[RunKey]:
    """Runs ``i, i + n, i + 2n, ...`` of ``runs`` for shard ``(i, n)``; all of them for ``None``."""
    if shard is None:
        return list(runs)
    i, n = shard
    if n < 1 or not 0 <= i < n:
        raise BasinlabError(f"shard {i}/{n}: need 0 <= i < n")
    return list(runs[i::n])


def expand_devices(devices: Sequence[str], check: bool = True) -> list[str]:
    """The worker devices of ``sweep.devices``/``--devices``: ``DEV*K`` repeats ``DEV`` K times (several workers on
    one device: small models leave a GPU mostly idle); ``auto`` is ``cuda:0`` when CUDA is available, else ``cpu``,
    and ``auto*K`` on a CPU gives at most one worker per core. ``check`` (not for ``--plan``) refuses a device this
    machine lacks (``cuda:1`` with one GPU or none) and caps CPU workers at one per core, with a warning."""
    out: list[str] = []
    for entry in devices:
        dev, _, reps = str(entry).strip().partition("*")
        k = int(reps) if re.fullmatch(r"[0-9]+", reps) else 0 if reps else 1
        if k < 1 or not re.fullmatch(r"auto|cpu|mps|cuda(:[0-9]+)?", dev):
            raise BasinlabError(f"device entry '{entry}' must be DEVICE or DEVICE*K with K >= 1 and DEVICE one of "
                                "auto, cpu, mps, cuda, cuda:N; e.g. cuda:0*4")
        if dev == "auto":
            dev = "cuda:0" if torch.cuda.is_available() else "cpu"
            if dev == "cpu" and reps:
                k = min(k, os.cpu_count() or 1)
        if check:
            _require_device(dev)
        out.extend([dev] * k)
    cores = os.cpu_count() or 1
    if check and out.count("cpu") > cores:
        logger.warning("%d CPU workers asked for on %d cores: running %d (one per core)", out.count("cpu"), cores,
                       cores)
        extra = out.count("cpu") - cores
        out = [d for i, d in enumerate(out) if d != "cpu" or out[: i + 1].count("cpu") > extra]
    return out


def _require_device(dev: str) -> None:
    """Refuse, before any worker starts, a device this machine does not have."""
    if dev.startswith("cuda"):
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(dev.partition(":")[2] or 0)
        if index >= n:
            raise BasinlabError(f"device {dev} is not available: this machine has {n} CUDA device(s); "
                                "use cpu, auto, or cuda:0 .. cuda:N-1")
    elif dev == "mps" and not torch.backends.mps.is_available():
        raise BasinlabError("device mps is not available on this machine; use cpu or auto")


# ---- configuration ----------------------------------------------------------------------------------------


def comparable_config(cfg: Config) -> dict[str, Any]:
    """The parts of a sweep config that must agree between the runs of one study (not the grid, devices, batch
    sizes, logging)."""
    d = cfg.to_dict()
    d.pop("sweep", None)
    d.pop("out_dir", None)
    for section, keys in resumable_keys(sweep=True).items():
        for k in keys:
            d.get(section, {}).pop(k, None)
    return d


def _check_or_save_config(cfg: Config, out_dir: Path) -> None:
    """Save the sweep's config; on resume, refuse a config whose data/model/train/probe differ (SPEC 7 wants the
    same architecture and step budget for every ``N``). The grid (``sweep.sizes``/``seeds``) may grow."""
    path = out_dir / CONFIG_NAME
    if path.is_file():
        old = load_config(path)
        a, b = comparable_config(old), comparable_config(cfg)
        if a != b:
            diffs = [
                f"{s}.{k}" for s in a for k in a[s] if isinstance(a[s], dict) and a[s].get(k) != b.get(s, {}).get(k)
            ]
            raise BasinlabError(
                f"'{out_dir}' holds a sweep with another config ({', '.join(diffs) or 'sections differ'}); "
                f"use a new --out directory or the same settings"
            )
    cfg.save(path)


# ---- one run ----------------------------------------------------------------------------------------------


def _run_config(cfg: Config, key: RunKey, run_dir: Path) -> Config:
    """The run's config: the sweep's, validated once, with the run's key (values of its validated grid)."""
    return cfg.with_values(data__n_train=key.N, train__seed=key.seed, train__process=label_process(key.model),
                           out_dir=str(run_dir), validate=False)


def _execute(key: RunKey, cfg: Config, data: SequenceData, out_dir: Path, store: ResultStore, progress: bool) -> None:
    """Train (if a network) and probe one run with the probe suite, then record it in one transaction."""
    run_dir = out_dir / "runs" / key.name
    if run_dir.exists() and not run_dir.is_dir():
        raise BasinlabError(f"'{run_dir}' is a file where the sweep keeps run {key.name}; move it away and rerun")
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    info: dict[str, Any] = {"dir": str(run_dir.relative_to(out_dir)), "objective": cfg.train.objective}
    device = resolve_device(cfg.train.device)
    if key.model.startswith("oracle:"):
        denoiser = build_oracle(key.model, data, key.N, cfg, device=device)
    else:
        res = train(_run_config(cfg, key, run_dir), data=data, out_dir=run_dir, resume=True, progress=progress)
        info.update(
            final_loss=res.final_loss, steps=res.steps, resumed=res.resumed, train_s=res.elapsed_s,
            epochs=res.steps * cfg.train.batch_size / key.N, ce_warmup_steps=cfg.train.ce_warmup_steps,
        )
        weights = resolve_weights(cfg.probe.weights, cfg.probe.protocol)  # ema under exact, raw under paper
        info["weights"] = weights
        denoiser = load_trained(run_dir, device=device, ema=weights == "ema", batch_size=cfg.probe.batch_size).denoiser
    t1 = time.perf_counter()
    result = run_suite(denoiser, data, cfg.probe, n_train=key.N, seed=key.seed, probes=probes_for(key.model),
                       progress=progress)
    examples = restore_examples(denoiser, data, k=4, t=cfg.sweep.transition_t, steps=cfg.probe.steps,
                                train=data.train(key.N))
    examples.update(N=key.N, seed=key.seed, model=key.model)
    atomic_write_text(run_dir / "examples.json", json.dumps(examples, indent=1))
    info.update(probe_s=time.perf_counter() - t1, total_s=time.perf_counter() - t0)
    store.record_run(key, [dict(r) for r in result.rows], info)


def plan_lines(cfg: Config, out_dir: str | Path, shard: tuple[int, int] | None = None) -> list[str]:
    """One line per run of this shard: its key, its status in ``out_dir``'s store, and for trained models the
    ``basinlab train`` command that trains it exactly as the sweep would (prefix it with
    ``torchrun --nproc_per_node=K -m`` instead of ``basinlab`` to train one large run on K GPUs; the sweep then
    finds the finished checkpoint and only probes it)."""
    out_dir = Path(out_dir)
    runs = shard_runs(plan_runs(cfg), shard)
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_or_save_config(cfg, out_dir)  # the commands below read it
    done: set[RunKey] = set()
    if (out_dir / "results.sqlite").exists():
        with ResultStore(out_dir) as store:
            done = store.done_keys()
    lines = []
    for key in runs:
        status = "done" if key in done else "todo"
        line = f"{key.name:<28} {status:<5}"
        if not key.model.startswith("oracle:"):
            proc = label_process(key.model)
            line += (f" basinlab train {out_dir / CONFIG_NAME} data.n_train={key.N} train.seed={key.seed} "
                     + (f"train.process={proc} " if proc != cfg.train.process else "")
                     + f"--out {out_dir / 'runs' / key.name}")
        lines.append(line)
    return lines


# ---- the sweep --------------------------------------------------------------------------------------------


def run_sweep(
    cfg: Config,
    out_dir: str | Path,
    shard: tuple[int, int] | None = None,
    progress: bool = True,
    devices: Sequence[str] | None = None,
    on_run_done: Hook | None = None,
    launch: str | None = None,
) -> Path:
    """Run (or resume) the sweep of ``cfg`` into ``out_dir``; returns ``out_dir``. See the module docstring.

    ``shard=(i, n)`` runs only shard ``i`` of ``n`` (a job array). ``devices`` (default ``sweep.devices``), when it
    names two or more devices (``["cuda:0", "cuda:1"]``, or ``["cpu", "cpu"]`` on a CPU, one thread each), launches
    one worker process per device on this shard's runs and waits for them (``cuda:0*4``: four workers on one GPU;
    ``auto*4``: see :func:`expand_devices`); the workers take runs from the shared
    store one at a time (a run is *claimed* in one transaction), so they balance themselves. ``on_run_done(key)``
    is called after each run is recorded (tests use it to interrupt a sweep). ``launch`` is the claim token of a
    launched worker (internal).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise BasinlabError(
            "don't run the sweep under torchrun: train a large run with `torchrun ... -m basinlab.cli train` "
            "(see `basinlab sweep --plan`), then run the sweep in one process; it probes the finished checkpoint"
        )
    cfg.validate()
    out_dir = Path(out_dir)
    runs = plan_runs(cfg)  # refuses a bad grid before anything is written
    mine = shard_runs(runs, shard)
    devices = expand_devices(devices if devices is not None else (cfg.sweep.devices or []))
    if launch is None:
        check_writable_dir(out_dir, "--out")
        if len(devices) > 1:
            _check_runnable(cfg, _sweep_data(cfg, runs), runs, devices)  # here, not in each worker's log
            _prepare(cfg, out_dir)
            return _launch_workers(out_dir, shard, devices, progress)
    else:
        die_with_launcher()
    if len(devices) == 1:
        cfg = cfg.with_values(train__device=devices[0], validate=False)  # checked by expand_devices
    data = _sweep_data(cfg, runs)
    if launch is None:
        _check_runnable(cfg, data, runs, devices or [cfg.train.device])
        _prepare(cfg, out_dir)
    token = launch or uuid.uuid4().hex
    with ResultStore(out_dir) as store:
        done = store.done_keys()
        todo = [k for k in mine if k not in done]
        logger.info("sweep %s: %d runs here, %d done, %d to go", out_dir, len(mine), len(mine) - len(todo), len(todo))
        for i, key in enumerate(todo):
            if not store.claim(key, token, {"dir": f"runs/{key.name}"}):
                continue  # finished meanwhile, or a live process (this launch's or another sweep's) has it
            logger.info("[%d/%d] N=%d seed=%d model=%s", i + 1, len(todo), key.N, key.seed, key.model)
            with _Heartbeat(out_dir, key, token):
                _execute(key, cfg, data, out_dir, store, progress)
            store.export()
            if on_run_done is not None:
                on_run_done(key)
        store.export()
        for h in store.holders() if launch is None else []:
            logger.warning("run %s is still being run by process %s on %s; rerun later to export it",
                           RunKey(h["N"], h["seed"], h["model"]).name, h["pid"], h["host"])
    return out_dir


def _prepare(cfg: Config, out_dir: Path) -> None:
    """Create the sweep directory and save (or check) its config; warn on a network file system."""
    _check_or_save_config(cfg, out_dir)  # refuses another sweep's directory before writing anything
    warn_if_network_fs(out_dir)


def _sweep_data(cfg: Config, runs: Sequence[RunKey]) -> SequenceData:
    """The data of every run (nested subsets of one pool), refused when the pool is smaller than the largest N."""
    n_max = max(k.N for k in runs)
    data = build_dataset(dataclasses.replace(cfg.data, n_train=n_max))
    if n_max > data.pool_size:
        raise BasinlabError(
            f"sweep.sizes go up to N={n_max} but the training pool has {data.pool_size} sequences; "
            f"lower the sizes or enlarge the pool (data.markov_pool for Markov data)"
        )
    return data


def _check_runnable(cfg: Config, data: SequenceData, runs: Sequence[RunKey], devices: Sequence[str]) -> None:
    """Refuse, before the directory is bound to this config, a model that cannot fit on its devices (its memory
    estimate, as the trainer's), so that a multi-worker sweep fails here in one line, not in every worker's log."""
    from basinlab.models.family import get_family
    from basinlab.training.trainer import _check_memory

    if all(k.model.startswith("oracle:") for k in runs):
        return
    seq_len = int(data.test.shape[1]) if data.test.ndim == 2 and data.test.shape[0] else int(cfg.data.seq_len)
    for dev in dict.fromkeys(devices):
        _check_memory(cfg, get_family(cfg.model.family), int(data.vocab_size), seq_len, 1, resolve_device(dev))


def _worker_error(log_path: Path) -> str:
    """The last error line of a worker's log (``basinlab: error: ...``, else its last line), shortened."""
    try:
        with open(log_path, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 8192))
            tail = fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return "(no log)"
    tail = [line.strip() for line in tail if line.strip()]
    errors = [line for line in tail if line.startswith("basinlab: error:")]
    line = (errors or tail or ["(empty log)"])[-1].removeprefix("basinlab: error: ")
    return line if len(line) <= 300 else line[:297] + "..."


class _Heartbeat:
    """While a run executes, refresh its claim every ``every_s`` seconds from a thread with its own connection,
    so that workers on other hosts see the claim alive (:data:`basinlab.study.store.STALE_S`)."""

    def __init__(self, out_dir: Path, key: RunKey, token: str, every_s: float = 60.0) -> None:
        self.args, self.every_s = (out_dir, key, token), every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name=f"heartbeat-{key.name}")

    def _beat(self) -> None:
        out_dir, key, token = self.args
        while not self._stop.wait(self.every_s):
            try:
                with ResultStore(out_dir) as store:
                    store.heartbeat(key, token)
            except (BasinlabError, sqlite3.Error) as exc:  # a missed beat is harmless; the next one may pass
                logger.debug("heartbeat of %s failed: %s", key.name, exc)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _launch_workers(out_dir: Path, shard: tuple[int, int] | None, devices: list[str], progress: bool) -> Path:
    """One ``basinlab sweep`` process per device, sharing this shard's runs through the store's claims.

    CPU workers get ``OMP_NUM_THREADS = cores / CPU workers`` (small models run faster as several single-thread
    processes than as one multi-thread one); a ``cuda:K`` worker sees all GPUs and trains on ``cuda:K`` (workers
    sharing one GPU get ``cores / workers`` threads unless OMP_NUM_THREADS is set).
    """
    launch = uuid.uuid4().hex
    n_cpu = sum(1 for d in devices if not str(d).startswith("cuda"))
    threads = max(1, (os.cpu_count() or 1) // max(n_cpu, 1))
    procs = []
    for k, dev in enumerate(devices):
        cmd = [sys.executable, "-m", "basinlab.cli", "sweep", str(out_dir / CONFIG_NAME), "--out", str(out_dir),
               f"--launch={launch}", f"--devices={dev}"]
        if shard is not None:
            cmd.append(f"--shard={shard[0]}/{shard[1]}")
        if not progress:
            cmd.append("--quiet")
        env = dict(os.environ, **{LAUNCHER_ENV: str(os.getpid())})
        if not str(dev).startswith("cuda"):
            env["OMP_NUM_THREADS"] = str(threads)
        elif devices.count(dev) > 1:  # several workers share this GPU: share the host's cores too
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // len(devices))))
        log_path = out_dir / f"worker-{k}.log"
        log = open(log_path, "a")  # closed in the finally below
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log))
        logger.info("worker %d on %s: log in %s", k, dev, log_path)
    failed = []
    try:
        seen = -1
        while any(p.poll() is None for p, _ in procs):
            time.sleep(2.0)
            with ResultStore(out_dir) as store:
                n_done = len(store.done_keys())
            if n_done != seen:
                logger.info("%s %d runs done in %s", time.strftime("%H:%M:%S"), n_done, out_dir)
                seen = n_done
        failed = [k for k, (p, _) in enumerate(procs) if p.wait() != 0]
    except KeyboardInterrupt:
        for p, _ in procs:
            p.terminate()
        for p, _ in procs:
            p.wait()
        raise
    finally:
        for _, log in procs:
            log.close()
    with ResultStore(out_dir) as store:
        store.export()
    if failed:
        k = failed[0]
        more = f" (and worker(s) {failed[1:]})" if len(failed) > 1 else ""
        raise BasinlabError(
            f"sweep worker {k} on {devices[k]} failed{more}: {_worker_error(out_dir / f'worker-{k}.log')} "
            f"(log: {out_dir}/worker-{k}.log); fix that, then rerun the same command to resume"
        )
    return out_dir
