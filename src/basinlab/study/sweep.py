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
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from basinlab.config import Config, geometric_sizes, resolve_sizes, resumable_keys  # noqa: F401 (the grid)
from basinlab.errors import BasinlabError
from basinlab.io import atomic_write_text
from basinlab.study.store import ResultStore, RunKey

ORACLE_EMPIRICAL = "oracle:empirical"
ORACLE_MARKOV = "oracle:markov"
CONFIG_NAME = "sweep_config.yaml"
#: Seed of the corruption of the example sentences: the same corrupted test sentences in every run.
EXAMPLE_SEED = 20_240_917
Hook = Callable[[RunKey], None]


# ---- the grid ----------------------------------------------------------------------------------------------


def plan_runs(cfg: Config) -> list[RunKey]:
    """Every run of the sweep in its fixed order: ``N`` ascending; per ``N`` the trained models seed by seed, then
    the oracles (memoriser always, Markov generaliser on Markov data; first seed only) when ``sweep.oracles``."""
    sizes = resolve_sizes(cfg.sweep.sizes)
    seeds = list(dict.fromkeys(int(s) for s in cfg.sweep.seeds))
    if not seeds:
        raise BasinlabError("sweep.seeds is empty; give at least one seed")
    runs: list[RunKey] = []
    for n in sizes:
        runs.extend(RunKey(n, s, cfg.model.preset) for s in seeds)
        if cfg.sweep.oracles:
            runs.append(RunKey(n, seeds[0], ORACLE_EMPIRICAL))
            if cfg.data.source == "markov":
                runs.append(RunKey(n, seeds[0], ORACLE_MARKOV))
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


def expand_devices(devices: Sequence[str]) -> list[str]:
    """The worker devices of ``sweep.devices``/``--devices``: ``DEV*K`` repeats ``DEV`` K times (several workers on
    one device: small models leave a GPU mostly idle); ``auto`` is ``cuda:0`` when CUDA is available, else ``cpu``,
    and ``auto*K`` on a CPU gives at most one worker per core. Other entries pass through unchanged."""
    out: list[str] = []
    for entry in devices:
        dev, _, reps = str(entry).strip().partition("*")
        try:
            k = int(reps) if reps else 1
        except ValueError:
            k = 0
        if k < 1 or not dev:
            raise BasinlabError(f"device entry '{entry}' must be DEVICE or DEVICE*K with K >= 1, e.g. cuda:0*4")
        if dev == "auto":
            dev = "cuda:0" if torch.cuda.is_available() else "cpu"
            if dev == "cpu" and reps:
                k = min(k, os.cpu_count() or 1)
        out.extend([dev] * k)
    return out


# ---- configuration ----------------------------------------------------------------------------------------


def _comparable(cfg: Config) -> dict[str, Any]:
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
    if path.exists():
        from basinlab.config import load_config

        old = load_config(path)
        a, b = _comparable(old), _comparable(cfg)
        if a != b:
            diffs = [
                f"{s}.{k}" for s in a for k in a[s] if isinstance(a[s], dict) and a[s].get(k) != b.get(s, {}).get(k)
            ]
            raise BasinlabError(
                f"'{out_dir}' holds a sweep with another config ({', '.join(diffs) or 'sections differ'}); "
                f"use a new --out directory or the same settings"
            )
    cfg.save(path)


# ---- probing one denoiser ---------------------------------------------------------------------------------


def _probe_sets(data: Any, n: int, m: int, seed: int) -> dict[str, torch.Tensor]:
    """SPEC 5 sets: the first ``M`` of ``D_N``, the first ``M`` test sequences, ``M`` uniform random sequences."""
    gen = torch.Generator().manual_seed(1_000_003 + seed)
    return {"train": data.train(n)[:m], "test": data.test[:m], "random": data.random(m, gen)}


def probe_denoiser(
    denoiser: Any,
    data: Any,
    n: int,
    cfg: Config,
    seed: int,
    *,
    network: bool,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """All tests of SPEC 5 on one denoiser, as tidy rows (without ``N, model, seed``).

    Basins on ``train`` and ``test``; fixed points on ``train``, ``test`` and ``random``; entropy on ``train``
    and ``test`` at ``probe.entropy_t`` split by the basin outcome, and on generated samples (the gap);
    novelty of ``probe.n_samples`` generated samples; likelihood on ``train`` and ``test`` for networks and
    for the Markov oracle (not for the memoriser, whose NELBO on unseen data is infinite).
    """
    from basinlab import probes
    from basinlab.probes._common import denoiser_device

    pc = cfg.probe
    opts = probes.protocol_options(pc.protocol)  # exact (SPEC 5) or the study's definitions (SPEC 5 "Protocols")
    n_samples = probes.resolve_n_samples(pc.n_samples, pc.protocol, denoiser_device(denoiser))
    sets = _probe_sets(data, n, pc.m, seed)
    common = {"seed": seed, "batch_size": pc.batch_size, "progress": progress}
    rows: list[dict[str, Any]] = []
    basins: dict[str, Any] = {}
    found: dict[str, dict[str, Any]] = {"train": {}, "test": {}}  # per-sequence results for membership_auc
    for name in ("train", "test"):
        seqs = sets[name]
        res = probes.basin_test(
            denoiser, seqs, set_name=name, real_mask=data.real_mask(seqs), ts=list(pc.ts), steps=pc.steps, **common,
            **opts["basins"],
        )
        basins[name] = found[name]["basins"] = res
        rows += res.rows
    for name in ("train", "test", "random"):
        seqs = sets[name]
        res = probes.fixed_point_test(
            denoiser, seqs, set_name=name, real_mask=data.real_mask(seqs), t_start=pc.t_start, steps=pc.steps,
            **common,
        )
        found.get(name, {})["fixed_points"] = res
        rows += res.rows
    samples = None
    if n_samples > 0:
        samples = probes.generate_samples(
            denoiser, n_samples, data.seq_len, steps=pc.steps, seed=seed, batch_size=pc.batch_size,
            progress=progress, **opts["generate"],
        )
        train_all = data.train(n)
        res = probes.novelty(
            denoiser, samples, train=train_all, test=data.test, set_name="generated",
            real_mask=data.real_mask(samples), train_mask=data.real_mask(train_all),
            test_mask=data.real_mask(data.test), t_start=pc.t_start, steps=pc.steps, **common,
        )
        rows += res.rows
    for name in ("train", "test"):
        seqs = sets[name]
        gen = samples if name == "test" else None  # the gap is generated minus real held-out data
        res = probes.conditional_entropy(
            denoiser, seqs, set_name=name, real_mask=data.real_mask(seqs), ts=[pc.entropy_t], steps=pc.steps,
            basin=basins[name], generated=gen, generated_mask=None if gen is None else data.real_mask(gen),
            **common, **opts["entropy"],
        )
        found[name]["entropy"] = res
        rows += res.rows
    if network or getattr(denoiser, "source", None) is not None:
        for name in ("train", "test"):
            seqs = sets[name]
            res = probes.likelihood(denoiser, seqs, set_name=name, real_mask=data.real_mask(seqs), **common,
                                    **opts["likelihood"])
            found[name]["likelihood"] = res
            rows += res.rows
    # membership AUC of the training set against the test set, one row per score (issue 8)
    from basinlab.probes.audit import membership_rows_from_results

    rows += membership_rows_from_results(found["train"], found["test"], t_start=pc.t_start)
    return [dict(r) for r in rows]


def restore_examples(
    denoiser: Any, data: Any, cfg: Config, k: int = 4, t: float | None = None, train: torch.Tensor | None = None
) -> dict[str, Any]:
    """``k`` test sequences, corrupted at ``t`` (default ``sweep.transition_t``) with a fixed seed, so that every
    run of a sweep sees the same corrupted sentences, restored by the stochastic reverse chain (SPEC 3/5).

    With ``train`` (the run's ``D_N``), each restoration also records its Hamming distance to the nearest training
    sequence: 0 means the corrupted test sentence fell into the basin of a memorised training sentence."""
    from basinlab.diffusion import corrupt, reverse_chain

    t = float(cfg.sweep.transition_t if t is None else t)
    x = data.test[:k]
    gen = torch.Generator().manual_seed(EXAMPLE_SEED)
    alpha = denoiser.schedule.alpha(torch.tensor(t, dtype=torch.float64))
    z = corrupt(x, alpha, data.vocab_size, generator=gen)
    with torch.inference_mode():
        restored = reverse_chain(denoiser, z, t, steps=cfg.probe.steps, greedy=False, generator=gen).cpu()
    real = data.real_mask(x)
    nn = None
    if train is not None and len(train):
        nn = torch.stack([((train != r) & (data.real_mask(train) | data.real_mask(r[None]))).sum(1).min()
                          for r in restored]).tolist()  # positions real in either: short rows are not near
    items = []
    for i in range(x.shape[0]):
        changed = (z[i] != x[i]) & real[i]
        n_changed = int(changed.sum())
        fixed = int(((restored[i] == x[i]) & changed).sum())
        items.append({
            "original": x[i].tolist(),
            "corrupted": z[i].tolist(),
            "restored": restored[i].tolist(),
            "real": real[i].tolist(),
            "text": {
                "original": data.decode(x[i : i + 1])[0],
                "corrupted": data.decode(z[i : i + 1])[0],
                "restored": data.decode(restored[i : i + 1])[0],
            },
            "tokens": {
                "original": _tokens(data, x[i]),
                "corrupted": _tokens(data, z[i]),
                "restored": _tokens(data, restored[i]),
            },
            "surface": None if getattr(data, "tokenizer", None) is None else {
                "original": surface_pieces(data.tokenizer, x[i].tolist()),
                "corrupted": surface_pieces(data.tokenizer, z[i].tolist()),
                "restored": surface_pieces(data.tokenizer, restored[i].tolist()),
            },
            "changed": n_changed,
            "recovered": fixed,
            "exact": bool((restored[i][real[i]] == x[i][real[i]]).all()),
            "nn_train_hamming": None if nn is None else int(nn[i]),
        })
    return {"t": t, "steps": cfg.probe.steps, "seed": EXAMPLE_SEED, "examples": items}


def surface_pieces(tokenizer: Any, ids: list[int]) -> list[str]:
    """The decoded text of each position: concatenated, the pieces spell ``tokenizer.decode(ids)`` (a piece
    carries its own leading space; PAD/BOS/EOS decode to ""). Piece ``i`` is what decoding ``ids[: i + 1]`` adds to
    decoding ``ids[: i]``, so it is right for any tokeniser (WordPiece ``##``, byte-level BPE); where a decoder's
    clean-up makes a prefix's text no prefix of the longer text, the token decoded alone stands in, after a space.
    """
    pieces, prev = [], ""
    for i in range(len(ids)):
        text = tokenizer.decode(ids[: i + 1])
        if text.startswith(prev):
            pieces.append(text[len(prev):])
        else:
            alone = tokenizer.decode(ids[i : i + 1])
            pieces.append(" " + alone if alone else "")
        prev = text
    return pieces


def _tokens(data: Any, seq: torch.Tensor) -> list[str]:
    """One display string per position (token pieces for text, state ids for Markov data)."""
    tok = getattr(data, "tokenizer", None)
    ids = seq.tolist()
    if tok is None:
        return [str(i) for i in ids]
    fn = getattr(getattr(tok, "tk", tok), "id_to_token", None)  # HF tokenizers: WordPiece pieces, e.g. ##ing
    if callable(fn):
        pieces = [fn(i) for i in ids]
        if all(isinstance(p, str) for p in pieces):
            return pieces
    return [tok.decode([i]) for i in ids]


# ---- one run ----------------------------------------------------------------------------------------------


def _run_config(cfg: Config, key: RunKey, run_dir: Path) -> Config:
    return cfg.with_values(data__n_train=key.N, train__seed=key.seed, out_dir=str(run_dir))


def _oracle(key: RunKey, data: Any, cfg: Config, device: torch.device) -> Any:
    from basinlab.diffusion import get_schedule
    from basinlab.oracles import EmpiricalDenoiser, MarkovDenoiser

    schedule = get_schedule(cfg.train.schedule, cfg.train.eps)
    if key.model == ORACLE_EMPIRICAL:
        return EmpiricalDenoiser(data.train(key.N), data.vocab_size, schedule, device=device)
    if key.model == ORACLE_MARKOV:
        if data.source is None:
            raise BasinlabError("oracle:markov needs Markov data (data.source=markov)")
        return MarkovDenoiser(data.source, schedule, device=device)
    raise BasinlabError(f"unknown oracle '{key.model}'")


def _execute(key: RunKey, cfg: Config, data: Any, out_dir: Path, store: ResultStore, progress: bool) -> None:
    """Train (if a network) and probe one run, then record it in one transaction."""
    import basinlab
    from basinlab.models import resolve_device
    from basinlab.training.trainer import train

    run_dir = out_dir / "runs" / key.name
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    info: dict[str, Any] = {"dir": str(run_dir.relative_to(out_dir)), "objective": cfg.train.objective}
    device = resolve_device(cfg.train.device)
    if key.model.startswith("oracle:"):
        denoiser = _oracle(key, data, cfg, device)
        network = False
    else:
        rcfg = _run_config(cfg, key, run_dir)
        res = train(rcfg, data=data, out_dir=run_dir, resume=True, progress=progress)
        info.update(
            final_loss=res.final_loss, steps=res.steps, resumed=res.resumed, train_s=res.elapsed_s,
            epochs=res.steps * cfg.train.batch_size / key.N, ce_warmup_steps=cfg.train.ce_warmup_steps,
        )
        denoiser = basinlab.load(run_dir, device=device, batch_size=cfg.probe.batch_size).denoiser
        network = True
    t1 = time.perf_counter()
    rows = probe_denoiser(denoiser, data, key.N, cfg, key.seed, network=network, progress=progress)
    examples = restore_examples(denoiser, data, cfg, train=data.train(key.N))
    examples.update(N=key.N, seed=key.seed, model=key.model)
    atomic_write_text(run_dir / "examples.json", json.dumps(examples, indent=1))
    info.update(probe_s=time.perf_counter() - t1, total_s=time.perf_counter() - t0)
    store.record_run(key, rows, info)


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
            line += (f" basinlab train {out_dir / CONFIG_NAME} data.n_train={key.N} train.seed={key.seed} "
                     f"--out {out_dir / 'runs' / key.name}")
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
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = plan_runs(cfg)
    devices = expand_devices(devices if devices is not None else (cfg.sweep.devices or []))
    if launch is None:
        _check_or_save_config(cfg, out_dir)
        if len(devices) > 1:
            return _launch_workers(out_dir, shard, devices, progress)
    if len(devices) == 1:
        cfg = cfg.with_values(train__device=devices[0])
    mine = shard_runs(runs, shard)
    from basinlab.data import build_dataset

    n_max = max(k.N for k in runs)
    data = build_dataset(dataclasses.replace(cfg.data, n_train=n_max))
    if n_max > data.pool_size:
        raise BasinlabError(
            f"sweep.sizes go up to N={n_max} but the training pool has {data.pool_size} sequences; "
            f"lower the sizes or enlarge the pool (data.markov_pool for Markov data)"
        )
    token = launch or uuid.uuid4().hex
    with ResultStore(out_dir) as store:
        done = store.done_keys()
        todo = [k for k in mine if k not in done]
        if progress:
            print(f"sweep {out_dir}: {len(mine)} runs here, {len(mine) - len(todo)} done, {len(todo)} to go",
                  file=sys.stderr)
        for i, key in enumerate(todo):
            if not store.claim(key, token, {"dir": f"runs/{key.name}", "pid": os.getpid()}):
                continue  # finished meanwhile, or another worker of this launch has it
            if progress:
                print(f"[{i + 1}/{len(todo)}] N={key.N} seed={key.seed} model={key.model}", file=sys.stderr)
            _execute(key, cfg, data, out_dir, store, progress)
            store.export()
            if on_run_done is not None:
                on_run_done(key)
        store.export()
    return out_dir


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
        env = dict(os.environ)
        if not str(dev).startswith("cuda"):
            env["OMP_NUM_THREADS"] = str(threads)
        elif devices.count(dev) > 1:  # several workers share this GPU: share the host's cores too
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // len(devices))))
        log_path = out_dir / f"worker-{k}.log"
        log = open(log_path, "a")  # noqa: SIM115 - closed below
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log))
        if progress:
            print(f"worker {k} on {dev}: log in {log_path}", file=sys.stderr)
    failed = []
    try:
        seen = -1
        while any(p.poll() is None for p, _ in procs):
            time.sleep(2.0)
            if progress:
                with ResultStore(out_dir) as store:
                    n_done = len(store.done_keys())
                if n_done != seen:
                    print(f"{time.strftime('%H:%M:%S')} {n_done} runs done in {out_dir}", file=sys.stderr)
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
        raise BasinlabError(
            f"sweep worker(s) {failed} failed; see {out_dir}/worker-K.log, then rerun the same command to resume"
        )
    return out_dir
