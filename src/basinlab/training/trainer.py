"""The training loop (SPEC 4, SPEC 7): AdamW, warm-up, EMA, clipping, autocast, accumulation, DDP, exact resume.

One entry point, :func:`train`, for a single process and for ``torchrun`` (``WORLD_SIZE``/``RANK``/``LOCAL_RANK``
in the environment: NCCL on CUDA, gloo on CPU). Everything random is drawn from the GLOBAL batch on every rank
and then sliced, so a 2-process run equals a 1-process run on the same global batch (dropout 0; up to the
float order of the gradient all-reduce), and a resumed run equals an uninterrupted one exactly:

- data order: shuffled epochs over the ``N`` training sequences, epoch ``e`` permuted by a generator seeded with
  ``(seed, e)``; the global batch of step ``k`` is sequences ``k B .. (k+1) B - 1`` of the concatenated epochs, a
  pure function of ``k`` (small ``N`` sees many epochs, SPEC 7);
- times and noise: one CPU generator draws ``t`` (antithetic over the global batch, SPEC 4) and the forward
  corruption ``z_t ~ q_t(. | x)`` of the global batch; its state is checkpointed;
- dropout: the torch RNG of each rank (CPU and CUDA), checkpointed per rank.

Objectives (never cross-entropy on all positions, SPEC 4):

- ``nelbo``: the mean over the global batch's positions of the continuous-time NELBO integrand ``f``;
- ``ce_redrawn``: ``-log x_theta,l(x_l)`` on the positions the forward process *redrew* (the resample mask from
  ``corrupt(..., return_mask=True)``), summed and divided by the TOTAL number of positions ``B L`` (not by the
  redrawn count): a fixed normaliser keeps the gradient an unbiased estimate of ``E_t E_z sum_l CE / L`` and
  splits exactly over ranks and micro-batches. With ``t ~ U[t_eps, 1]`` about half the positions are redrawn, so
  this loss is about half the mean redrawn cross-entropy. Same optimum as the NELBO (the leave-one-out posterior),
  far lower variance: on a short CPU budget it is what gets a model below the unigram entropy;
- ``ce_warmup_steps`` steps of ``ce_redrawn`` then ``objective``.

Training counts every position (BOS/EOS/PAD included: the model generates whole length-``L`` sequences); the
NELBO *reported* by ``estimate_nelbo`` counts real tokens only.
"""

from __future__ import annotations

import csv
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from basinlab.diffusion import corrupt, get_schedule, nelbo_integrand, redrawn_cross_entropy, sample_times
from basinlab.errors import BasinlabError
from basinlab.models import autocast, autocast_dtype, build_model, resolve_arch, resolve_device
from basinlab.training import checkpoint as ckpt_mod

OBJECTIVES = ("nelbo", "ce_redrawn")
METRIC_FIELDS = ("step", "epoch", "objective", "loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s")
#: train.* keys that may change between a checkpoint and its resumption (they don't change the math)
RESUMABLE_KEYS = {"steps", "log_every", "ckpt_every", "progress", "device", "precision", "compile", "grad_accum"}
#: data.* keys that only say where files live
DATA_LOCATION_KEYS = {"cache_dir"}


@dataclass
class TrainResult:
    """What :func:`train` returns. ``final_loss`` is the mean loss over the last logging window."""

    out_dir: Path
    final_loss: float
    steps: int
    checkpoint_path: Path | None
    start_step: int = 0
    losses: list[float] = field(default_factory=list)  # per-step losses of the steps this call ran
    tokens_per_s: float = float("nan")
    elapsed_s: float = 0.0
    resumed: bool = False


# ---- distributed plumbing -----------------------------------------------------------------------------------


@dataclass
class _Dist:
    world: int = 1
    rank: int = 0
    local_rank: int = 0
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup_distributed(device_name: str) -> tuple[_Dist, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist(), resolve_device(device_name)
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    dev = resolve_device(device_name)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        owns = True
    return _Dist(world=dist.get_world_size(), rank=dist.get_rank(), local_rank=local_rank, owns_group=owns), dev


# ---- helpers ------------------------------------------------------------------------------------------------


class EpochSampler:
    """Global batch ``k`` = positions ``k B .. (k+1) B - 1`` of the concatenated seeded epoch permutations."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            if len(self._perms) > 8:
                self._perms.pop(min(self._perms))
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + 7919 * epoch + 17)
            self._perms[epoch] = torch.randperm(self.n, generator=g)
        return self._perms[epoch]

    def indices(self, step: int) -> torch.Tensor:
        pos = step * self.batch_size + torch.arange(self.batch_size)
        epochs, offsets = pos // self.n, pos % self.n
        out = torch.empty(self.batch_size, dtype=torch.long)
        for e in epochs.unique().tolist():
            sel = epochs == e
            out[sel] = self._perm(e)[offsets[sel]]
        return out

    def epoch(self, step: int) -> float:
        return step * self.batch_size / self.n


def lr_at(step: int, base_lr: float, warmup_steps: int) -> float:
    """Linear warm-up over ``warmup_steps`` then constant (the learning rate of update ``step``, 0-based)."""
    if warmup_steps <= 0:
        return base_lr
    return base_lr * min(1.0, (step + 1) / warmup_steps)


def ema_decay(step: int, ema: float) -> float:
    """``min(ema, (1 + k)/(10 + k))`` after ``k`` updates: short runs are not evaluated on initial weights."""
    return min(ema, (1.0 + step) / (10.0 + step))


_FLOAT_KEYS = ("lr", "weight_decay", "beta1", "beta2", "ema", "grad_clip", "eps", "t_eps")


def _validate(cfg, world: int) -> None:
    """Check ``cfg.train`` (and the model preset); float fields given as strings (YAML reads ``1e-3`` as a
    string) are converted in place."""
    tc = cfg.train
    for key in _FLOAT_KEYS:
        v = getattr(tc, key)
        try:
            setattr(tc, key, float(v))
        except (TypeError, ValueError):
            raise BasinlabError(f"train.{key} must be a number, got {v!r}") from None
    if tc.objective not in OBJECTIVES:
        raise BasinlabError(f"unknown train.objective '{tc.objective}'; choose one of {', '.join(OBJECTIVES)}")
    for key in ("steps", "batch_size", "grad_accum", "log_every", "ckpt_every"):
        v = getattr(tc, key)
        if not isinstance(v, int) or isinstance(v, bool) or v < (0 if key == "steps" else 1):
            raise BasinlabError(f"train.{key} must be a {'non-negative' if key == 'steps' else 'positive'} "
                                f"integer, got {v!r}")
    if tc.batch_size % (world * tc.grad_accum):
        raise BasinlabError(
            f"train.batch_size={tc.batch_size} (global) must be divisible by world size {world} x "
            f"grad_accum {tc.grad_accum}"
        )
    if not (isinstance(tc.ce_warmup_steps, int) and tc.ce_warmup_steps >= 0):
        raise BasinlabError(f"train.ce_warmup_steps must be a non-negative integer, got {tc.ce_warmup_steps!r}")
    if not 0.0 <= float(tc.t_eps) < 1.0:
        raise BasinlabError(f"train.t_eps must lie in [0, 1), got {tc.t_eps}")
    if not 0.0 <= float(tc.ema) < 1.0:
        raise BasinlabError(f"train.ema must lie in [0, 1), got {tc.ema}")
    if float(tc.lr) <= 0:
        raise BasinlabError(f"train.lr must be positive, got {tc.lr}")
    try:
        get_schedule(tc.schedule, tc.eps)
    except ValueError as exc:
        raise BasinlabError(f"train.schedule: {exc}") from None
    resolve_arch(cfg.model)


def _check_compatible(saved, cfg, ckpt: Path, vocab_size: int, seq_len: int, meta: dict[str, Any]) -> None:
    """Refuse to resume a checkpoint of a different run (data, model or optimisation changed)."""
    a, b = saved.to_dict(), cfg.to_dict()
    diffs = []
    for section in ("data", "model", "train"):
        for key, value in b[section].items():
            if (section == "train" and key in RESUMABLE_KEYS) or (section == "data" and key in DATA_LOCATION_KEYS):
                continue
            if a[section].get(key) != value:
                diffs.append(f"{section}.{key}: {a[section].get(key)!r} in the checkpoint, {value!r} now")
    if int(meta["vocab_size"]) != vocab_size or int(meta["seq_len"]) != seq_len:
        diffs.append(f"data shape: V={meta['vocab_size']}, L={meta['seq_len']} in the checkpoint, "
                     f"V={vocab_size}, L={seq_len} now")
    if diffs:
        raise BasinlabError(
            f"cannot resume from {ckpt}: it belongs to a different run ({diffs[0]}"
            f"{f'; and {len(diffs) - 1} more' if len(diffs) > 1 else ''}); use --no-resume (resume=False) "
            f"to start over or another out_dir"
        )


def _rng_state(gen: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state(), "noise": gen.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, torch.Tensor], gen: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    gen.set_state(state["noise"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


class _Metrics:
    """``metrics.csv`` (appended) and TensorBoard when available; rank 0 only."""

    def __init__(self, out: Path, start_step: int, enabled: bool) -> None:
        self.enabled = enabled
        self.path = out / "metrics.csv"
        self.tb = None
        if not enabled:
            return
        if start_step == 0 or not self.path.exists():
            self.path.write_text(",".join(METRIC_FIELDS) + "\n")
        else:  # drop rows logged after the checkpoint we resume from
            with open(self.path, newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if r.get("step") and int(r["step"]) <= start_step]
            with open(self.path, "w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=METRIC_FIELDS, extrasaction="ignore")
                w.writeheader()
                w.writerows(rows)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=str(out / "tb"), purge_step=start_step + 1)
        except Exception:  # tensorboard is optional: any failure to start it only disables it
            self.tb = None

    def log(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=METRIC_FIELDS, extrasaction="ignore").writerow(row)
        if self.tb is not None:
            for key in ("loss", "lr", "grad_norm", "tokens_per_s"):
                self.tb.add_scalar(f"train/{key}", float(row[key]), int(row["step"]))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


# ---- the loop -----------------------------------------------------------------------------------------------


def train(
    cfg,
    data=None,
    out_dir: str | Path | None = None,
    resume: bool = True,
    progress: bool | None = None,
) -> TrainResult:
    """Train a DiT on ``data.train(cfg.data.n_train)`` for ``cfg.train.steps`` steps; checkpoint into ``out_dir``.

    ``data`` defaults to ``build_dataset(cfg.data)``; ``out_dir`` to ``cfg.out_dir``. With ``resume=True`` a
    checkpoint in ``out_dir`` is continued (it must come from the same run config, except ``train.steps`` and
    logging/device keys) so that the per-step losses equal an uninterrupted run; ``resume=False`` deletes it and
    starts over. Under ``torchrun`` every rank calls this; rank 0 alone writes files.
    """
    from tqdm.auto import tqdm

    tc = cfg.train
    dd, device = _setup_distributed(tc.device)
    try:
        _validate(cfg, dd.world)
        if data is None:
            from basinlab.data import build_dataset

            data = build_dataset(cfg.data)
        return _train(cfg, data, Path(out_dir or cfg.out_dir), resume, progress, dd, device, tqdm)
    finally:
        if dd.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg, data, out: Path, resume: bool, progress, dd: _Dist, device: torch.device, tqdm) -> TrainResult:
    tc = cfg.train
    n_train = int(cfg.data.n_train)
    pool = getattr(data, "train_pool", None)
    if pool is not None and n_train > pool.shape[0]:
        raise BasinlabError(
            f"data.n_train={n_train} is larger than the training pool ({pool.shape[0]} sequences); "
            f"lower it or enlarge the pool"
        )
    if n_train < 1:
        raise BasinlabError(f"data.n_train must be >= 1, got {n_train}")
    x_train = data.train(n_train).long().cpu()
    N, L = x_train.shape
    V = int(data.vocab_size)
    B = int(tc.batch_size)
    B_rank = B // dd.world
    B_micro = B_rank // tc.grad_accum
    schedule = get_schedule(tc.schedule, tc.eps)
    amp = autocast_dtype(tc.precision, device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # model, EMA, optimiser (identical init on every rank)
    torch.manual_seed(tc.seed)
    model = build_model(cfg.model, V, L).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    ema = [p.detach().clone().float() for p in params]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt_kwargs: dict[str, Any] = {"lr": tc.lr, "betas": (tc.beta1, tc.beta2)}
    if device.type == "cuda":
        opt_kwargs["fused"] = True
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": tc.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        **opt_kwargs,
    )
    gen = torch.Generator().manual_seed(tc.seed * 7_368_787 + 2_027)  # times and noise, shared by all ranks
    torch.manual_seed(tc.seed + 104_729 * (dd.rank + 1))  # dropout, per rank

    start_step, last_loss, resumed = 0, float("nan"), False
    found = ckpt_mod.find_checkpoint(out) if resume else None
    if found is not None:
        meta = ckpt_mod.load_meta(found)
        saved_cfg = ckpt_mod.load_config_file(found)
        _check_compatible(saved_cfg, cfg, found, V, L, meta)
        state = ckpt_mod.load_train_state(found)
        model.load_state_dict(ckpt_mod.load_weights(found, ema=False))
        ema_state = ckpt_mod.load_weights(found, ema=True)
        for name, e in zip(names, ema, strict=True):
            e.copy_(ema_state[name].to(device=device, dtype=e.dtype))
        opt.load_state_dict(state["optimizer"])
        rngs = state["rng"]
        if int(state.get("world", 1)) == dd.world:
            _set_rng_state(rngs[dd.rank], gen, device)
        else:  # another world size: the shared noise stream continues, dropout streams restart per rank
            gen.set_state(rngs[0]["noise"])
        start_step, last_loss, resumed = int(state["step"]), float(state.get("last_loss", "nan")), True
    elif not resume and dd.main:
        ckpt_mod.clear_checkpoints(out)
    if dd.world > 1:
        dist.barrier()

    if dd.main:
        out.mkdir(parents=True, exist_ok=True)
        run_cfg = _with_out_dir(cfg, out)
        run_cfg.save(out / "config.yaml")
    meta_out = {
        "arch": model.arch(),
        "vocab_size": V,
        "seq_len": L,
        "schedule": schedule.name,
        "eps": schedule.eps,
        "n_train": N,
        "objective": tc.objective,
        "ce_warmup_steps": tc.ce_warmup_steps,
        "basinlab": _version(),
    }
    tokenizer = getattr(data, "tokenizer", None)
    source = getattr(data, "source", None)

    fwd = model
    if dd.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        fwd = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    if tc.compile:
        fwd = torch.compile(fwd)
    sampler = EpochSampler(N, B, tc.seed)
    show = (tc.progress if progress is None else progress) and dd.main
    metrics = _Metrics(out, start_step, enabled=dd.main)

    def save(step: int, loss: float) -> Path | None:
        rngs = [_rng_state(gen, device)]
        if dd.world > 1:
            gathered: list[Any] = [None] * dd.world
            dist.all_gather_object(gathered, {k: v.cpu() for k, v in rngs[0].items()})
            rngs = gathered
        path = None
        if dd.main:
            train_state = {
                "step": step,
                "optimizer": opt.state_dict(),
                "rng": rngs,
                "world": dd.world,
                "last_loss": loss,
            }
            path = ckpt_mod.save_checkpoint(
                out,
                step=step,
                model_state=model.state_dict(),
                ema_state={n: e for n, e in zip(names, ema, strict=True)},
                config=_with_out_dir(cfg, out),
                meta=meta_out,
                train_state=train_state,
                tokenizer=tokenizer,
                source=source,
            )
        if dd.world > 1:
            dist.barrier()
        return path

    losses: list[float] = []
    pending: list[torch.Tensor] = []
    window_norms: list[torch.Tensor] = []
    ckpt_path = ckpt_mod.find_checkpoint(out) if resumed else None
    saved_step = start_step if resumed else -1
    bar = tqdm(total=tc.steps, initial=start_step, disable=not show, desc="train", dynamic_ncols=True)
    t_start = time.perf_counter()
    t_window, steps_window = t_start, 0
    tokens_per_s = float("nan")
    step = start_step
    model.train()
    try:
        while step < tc.steps:
            objective = "ce_redrawn" if (step < tc.ce_warmup_steps or tc.objective == "ce_redrawn") else "nelbo"
            lr = lr_at(step, tc.lr, tc.warmup_steps)
            for group in opt.param_groups:
                group["lr"] = lr
            # the global batch: data, times and noise drawn identically on every rank, then sliced
            x = x_train[sampler.indices(step)]
            t = sample_times(B, tc.t_eps, tc.antithetic, gen)
            alpha_t = schedule.alpha(t)
            z_t, redrawn = corrupt(x, alpha_t, V, generator=gen, return_mask=True)
            dalpha_t = schedule.dalpha(t)
            sigma_t = schedule.sigma(t).float()
            r0 = dd.rank * B_rank
            loss_acc = torch.zeros((), device=device)
            for m in range(tc.grad_accum):
                sl = slice(r0 + m * B_micro, r0 + (m + 1) * B_micro)
                xb = x[sl].to(device, non_blocking=True)
                zb = z_t[sl].to(device, non_blocking=True)
                sync = m == tc.grad_accum - 1 or dd.world == 1
                ctx = fwd.no_sync() if (not sync and hasattr(fwd, "no_sync")) else nullcontext()
                with ctx:
                    with autocast(device, amp):
                        logits = fwd(zb, sigma_t[sl].to(device))
                    log_x_theta = torch.log_softmax(logits.float(), dim=-1)
                    if objective == "nelbo":
                        per_pos = nelbo_integrand(
                            xb, zb, log_x_theta, alpha_t[sl].to(device), dalpha_t[sl].to(device)
                        )
                    else:
                        per_pos = redrawn_cross_entropy(xb, log_x_theta, redrawn[sl].to(device))
                    # sum over this micro-batch / positions of the GLOBAL batch; DDP averages over ranks
                    loss = per_pos.sum() * (dd.world / (B * L))
                    loss.backward()
                loss_acc += loss.detach() / dd.world
            if dd.world > 1:
                dist.all_reduce(loss_acc)
            if tc.grad_clip and tc.grad_clip > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
            else:
                grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
            opt.step()
            opt.zero_grad(set_to_none=True)
            with torch.no_grad():
                d = ema_decay(step, tc.ema)
                torch._foreach_lerp_(ema, [p.detach().float() for p in params], 1.0 - d)
            step += 1
            steps_window += 1
            pending.append(loss_acc)
            window_norms.append(grad_norm.detach())
            bar.update(1)
            if step % tc.log_every == 0 or step == tc.steps:
                vals = torch.stack(pending).double().cpu().tolist()
                pending.clear()
                losses.extend(vals)
                last_loss = sum(vals) / len(vals)
                if not math.isfinite(last_loss):
                    raise BasinlabError(
                        f"training diverged at step {step} (loss {last_loss}); lower train.lr or raise warmup_steps"
                    )
                now = time.perf_counter()
                tokens_per_s = steps_window * B * L / max(now - t_window, 1e-9)
                t_window, steps_window = now, 0
                gnorm = float(torch.stack(window_norms).float().mean())
                window_norms.clear()
                metrics.log({
                    "step": step, "epoch": f"{sampler.epoch(step):.3f}", "objective": objective,
                    "loss": f"{last_loss:.6f}", "lr": f"{lr:.6g}", "grad_norm": f"{gnorm:.4f}",
                    "tokens_per_s": f"{tokens_per_s:.1f}", "elapsed_s": f"{now - t_start:.2f}",
                })
                bar.set_postfix(loss=f"{last_loss:.4f}", tok_s=f"{tokens_per_s:,.0f}", obj=objective[:4])
            if step % tc.ckpt_every == 0 or step == tc.steps:
                if pending:
                    vals = torch.stack(pending).double().cpu().tolist()
                    pending.clear()
                    losses.extend(vals)
                    last_loss = sum(vals) / len(vals)
                ckpt_path = save(step, last_loss)
                saved_step = step
    except KeyboardInterrupt:
        if dd.world == 1 and step > max(saved_step, 0):
            if pending:
                losses.extend(torch.stack(pending).double().cpu().tolist())
            save(step, losses[-1] if losses else last_loss)
        raise
    finally:
        bar.close()
        metrics.close()
    if saved_step != step:  # steps == start_step from a fresh start (steps = 0), or nothing run
        ckpt_path = save(step, last_loss)
    elapsed = time.perf_counter() - t_start
    ran = step - start_step
    return TrainResult(
        out_dir=out,
        final_loss=last_loss,
        steps=step,
        checkpoint_path=ckpt_path,
        start_step=start_step,
        losses=losses,
        tokens_per_s=ran * B * L / elapsed if ran and elapsed > 0 else float("nan"),
        elapsed_s=elapsed,
        resumed=resumed,
    )


def _with_out_dir(cfg, out: Path):
    from basinlab.config import config_from_dict

    c = config_from_dict(cfg.to_dict())
    c.out_dir = str(out)
    return c


def _version() -> str:
    from basinlab import __version__

    return __version__
