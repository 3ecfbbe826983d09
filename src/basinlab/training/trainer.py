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

Both objectives are the forward process's (``train.process``, :mod:`basinlab.diffusion.forward`): for the masked
process (SPEC 2b) the NELBO is MDLM's, and ``ce_redrawn`` is plain cross-entropy on the masked positions, which is
MDLM's objective without its ``-α'_t / (1 - α_t)`` weight (the same optimum at every ``t``).

Training counts every position (BOS/EOS/PAD included: the model generates whole length-``L`` sequences); the
NELBO *reported* by ``estimate_nelbo`` counts real tokens only.

The loop (:func:`_train`) reads at once; its named steps are :func:`_prepare` (the model's own
``configure_optimizers``, the EMA, the generators), :func:`_restore`, :func:`_train_step`, :func:`_log` (one
``metrics.csv`` row: mean loss and gradient norm over the steps since the previous row, a window that checkpoints
carry) and :func:`_save`. Ctrl-C lets the running step finish, then checkpoints and stops, so that the checkpoint
holds the state at a step boundary (weights, optimiser and every RNG) and a rerun equals an uninterrupted run.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.metadata
import io
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from basinlab.config import config_differences
from basinlab.diffusion import get_process, get_schedule, sample_times
from basinlab.errors import BasinlabError
from basinlab.io import atomic_write_text, directory_lock
from basinlab.memory import require_fits
from basinlab.models import autocast, autocast_dtype, build, resolve_device
from basinlab.models.family import training_family
from basinlab.registry import PROCESSES
from basinlab.training import checkpoint as ckpt_mod
from basinlab.training.lora import apply_lora, has_lora, merged_state
from basinlab.training.meta import CheckpointMeta
from basinlab.training.tracking import Tracker, check_tracker, open_tracker

logger = logging.getLogger(__name__)
METRIC_FIELDS = ("step", "epoch", "objective", "loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s")


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


def lr_at(step: int, base_lr: float, warmup_steps: int, decay: str = "none", total_steps: int = 0) -> float:
    """The learning rate of update ``step`` (0-based): linear warm-up over ``warmup_steps``, then constant
    (``decay="none"``) or decayed to zero at ``total_steps`` along a line or a half cosine."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if decay == "none" or total_steps <= warmup_steps:
        return base_lr
    frac = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))  # 0 after warm-up, 1 at the last step
    return base_lr * ((1.0 - frac) if decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * frac)))


def ema_decay(step: int, ema: float) -> float:
    """``min(ema, (1 + k)/(10 + k))`` after ``k`` updates: short runs are not evaluated on initial weights."""
    return min(ema, (1.0 + step) / (10.0 + step))


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
    """``metrics.csv`` (one row per ``log_every`` steps, ``\\n`` line endings) and the ``train.tracker``
    (:mod:`basinlab.training.tracking`); rank 0 writes, every rank keeps the clock."""

    def __init__(self, out: Path, start_step: int, enabled: bool, tokens_per_step: int,
                 tracker: Tracker | None = None) -> None:
        self.enabled, self.path, self.tracker = enabled, out / "metrics.csv", tracker or Tracker()
        self.tokens_per_step, self.last_step = tokens_per_step, start_step
        self.t_start = self.t_window = time.perf_counter()
        if not enabled:
            return
        rows: list[dict[str, str]] = []
        if start_step > 0 and self.path.exists():  # keep the rows up to the checkpoint we resume from
            with open(self.path, newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if (r.get("step") or "").isdigit()
                        and int(r["step"]) <= start_step]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=METRIC_FIELDS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(self.path, buf.getvalue())

    def log(self, step: int, epoch: float, objective: str, loss: float, lr: float, grad_norm: float) -> float:
        """Append one row; returns the tokens per second since the previous row."""
        now = time.perf_counter()
        tokens_per_s = (step - self.last_step) * self.tokens_per_step / max(now - self.t_window, 1e-9)
        self.last_step, self.t_window = step, now
        if not self.enabled:
            return tokens_per_s
        row = {"step": step, "epoch": f"{epoch:.3f}", "objective": objective, "loss": f"{loss:.6f}", "lr": f"{lr:.6g}",
               "grad_norm": f"{grad_norm:.4f}", "tokens_per_s": f"{tokens_per_s:.1f}",
               "elapsed_s": f"{now - self.t_start:.2f}"}
        with open(self.path, "a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=METRIC_FIELDS, lineterminator="\n").writerow(row)
        self.tracker.log({"train/loss": loss, "train/lr": lr, "train/grad_norm": grad_norm,
                          "train/tokens_per_s": tokens_per_s, "train/epoch": epoch}, step)
        return tokens_per_s

    def close(self) -> None:
        self.tracker.close()


# ---- the run: everything the loop touches ------------------------------------------------------------------


@dataclass
class _Window:
    """Losses and gradient norms of the steps since the last ``metrics.csv`` row. A checkpoint carries them, so the
    first row after a resume averages the same steps as an uninterrupted run's."""

    pending: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # on the device, unread
    losses: list[float] = field(default_factory=list)
    norms: list[float] = field(default_factory=list)

    def read(self) -> list[float]:
        """Move the pending values to the CPU (one device sync); return the new per-step losses."""
        if not self.pending:
            return []
        both = torch.stack([torch.stack([a.float(), b.float()]) for a, b in self.pending]).double().cpu()
        self.pending.clear()
        new = both[:, 0].tolist()
        self.losses += new
        self.norms += both[:, 1].tolist()
        return new

    def take(self) -> tuple[float, float]:
        """Mean loss and mean gradient norm of the window, which then starts over."""
        loss, norm = sum(self.losses) / len(self.losses), sum(self.norms) / len(self.norms)
        self.losses, self.norms = [], []
        return loss, norm


@dataclass
class _Run:
    """A training run in memory: data, model, EMA, optimiser, generators, and where the loop stands."""

    cfg: Any
    out: Path
    dd: _Dist
    device: torch.device
    x_train: torch.Tensor  # [N, L], CPU
    vocab_size: int
    model: torch.nn.Module
    names: list[str]
    params: list[torch.nn.Parameter]
    ema: list[torch.Tensor]
    opt: torch.optim.Optimizer
    gen: torch.Generator  # times and noise of the global batch, shared by every rank
    schedule: Any
    process: Any  # the forward process (basinlab.diffusion.forward)
    sampler: EpochSampler
    meta: CheckpointMeta
    data: Any
    fwd: torch.nn.Module | None = None  # the model as called in the loop (DDP, compiled)
    step: int = 0
    window: _Window = field(default_factory=_Window)
    losses: list[float] = field(default_factory=list)  # per-step losses of the steps this call ran
    last_loss: float = float("nan")
    resumed: bool = False
    saved_step: int = -1
    ckpt_path: Path | None = None

    @property
    def global_batch(self) -> int:
        return int(self.cfg.train.batch_size)


def _training_set(cfg, data) -> torch.Tensor:
    n_train = int(cfg.data.n_train)
    pool = getattr(data, "train_pool", None)
    if pool is not None and n_train > pool.shape[0]:
        raise BasinlabError(
            f"data.n_train={n_train} is larger than the training pool ({pool.shape[0]} sequences); "
            f"lower it or enlarge the pool"
        )
    if n_train < 1:
        raise BasinlabError(f"data.n_train must be >= 1, got {n_train}")
    return data.train(n_train).long().cpu()


def check_memory(cfg, vocab_size: int, seq_len: int, world: int, device: torch.device) -> None:
    """Refuse a model, vocabulary or batch whose weights, optimiser state and logits cannot fit (a lower bound).
    With ``train.lora_rank`` only the adapters carry gradients, EMA and AdamW's moments; the frozen weights count
    once (float32)."""
    family = training_family(cfg.model)
    shape = family.size_estimate(cfg.model, vocab_size)
    if shape is None:  # a family that checks its own size before loading (model.init)
        return
    n_params, n_layer, d = shape
    rank = cfg.train.lora_rank
    n_trained = (family.lora_parameters(cfg.model, rank) if rank > 0 else None) or n_params
    b_micro = cfg.train.batch_size // world // cfg.train.grad_accum
    state = 4 * n_params + 4 * 4 * n_trained  # float32 weights; gradients, EMA and AdamW's two moments of the trained
    activations = 4 * b_micro * seq_len * (3 * vocab_size + 16 * n_layer * d)  # logits, log-softmax, its gradient
    what = f"model.init={cfg.model.init}" if cfg.model.init else f"model.preset={cfg.model.preset}"
    lora = f", LoRA rank {rank}: {n_trained / 1e6:,.1f}M trained" if rank > 0 and n_trained != n_params else ""
    require_fits(
        state + activations,
        f"training {what} ({n_params / 1e6:,.0f}M parameters{lora}, vocabulary {vocab_size}) "
        f"at train.batch_size={cfg.train.batch_size}",
        device,
        fix="use a smaller model, vocabulary (data.vocab_size) or train.batch_size (or train.grad_accum)" + (
            "; or train LoRA adapters only (train.lora_rank=16)"
            if cfg.model.init and rank == 0 and getattr(family, "lora_targets", None) else ""),
    )


def _prepare(cfg, data, out: Path, dd: _Dist, device: torch.device) -> _Run:
    """Build the optimiser: model, EMA and AdamW, identically initialised on every rank; seed the generators."""
    tc = cfg.train
    x_train = _training_set(cfg, data)
    vocab_size, seq_len = int(data.vocab_size), int(x_train.shape[1])
    family = training_family(cfg.model)
    process = family.init_process(cfg.model, vocab_size, x_train) if cfg.model.init else None
    extra: dict[str, Any] = {}
    if process is not None:  # a deployed model's own process and vocabulary (SPEC 2c); the data's ids inside it
        tc.process, extra["data_vocab_size"], vocab_size = process.name, vocab_size, process.vocab_size
    check_memory(cfg, vocab_size, seq_len, dd.world, device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(tc.seed)
    if process is None:
        process = get_process(tc.process, vocab_size, **_process_options(tc.process, data))
    model = build(cfg.model, vocab_size, seq_len, process=process, family=family).to(device)
    if tc.lora_rank > 0:
        apply_lora(model, tc.lora_rank, getattr(family, "lora_targets", ()))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    # the fused AdamW kernel: one pass over all parameters (on a CPU 0.7 ms against 3.7 ms per step for the demo model)
    opt = family.configure_optimizers(model, tc.lr, (tc.beta1, tc.beta2), tc.weight_decay,
                                      fused=device.type in ("cuda", "cpu"))
    gen = torch.Generator().manual_seed(tc.seed * 7_368_787 + 2_027)
    torch.manual_seed(tc.seed + 104_729 * (dd.rank + 1))  # dropout, per rank
    schedule = get_schedule(tc.schedule, tc.eps)
    meta = CheckpointMeta(
        arch=model.arch(), vocab_size=vocab_size, seq_len=seq_len, schedule=schedule.name, eps=schedule.eps,
        process=process.name, process_options=process.options(), family=family.name,
        tokenizer=cfg.data.tokenizer if getattr(data, "tokenizer", None) is not None else None,
        extra={**extra, "n_train": int(x_train.shape[0]), "objective": tc.objective,
               "ce_warmup_steps": tc.ce_warmup_steps, "basinlab": _version(),
               "data_sha256": getattr(data, "fingerprint", None), "data_file": cfg.data.path,
               "init": cfg.model.init, "lora_rank": tc.lora_rank},
    )
    return _Run(
        cfg=cfg, out=out, dd=dd, device=device, x_train=x_train, vocab_size=vocab_size, model=model,
        names=[n for n, _ in named], params=[p for _, p in named], ema=[p.detach().clone().float() for _, p in named],
        opt=opt, gen=gen, schedule=schedule, process=process,
        sampler=EpochSampler(int(x_train.shape[0]), tc.batch_size, tc.seed), meta=meta, data=data,
    )


def _process_options(name: str, data) -> dict[str, Any]:
    """What the process takes from the data's tokenizer (its ``tokenizer_options``): e.g. the masked process uses
    the tokenizer's own ``[MASK]`` when it has one (MDLM's rule, SPEC 2b), else appends one."""
    tk = getattr(getattr(data, "tokenizer", None), "tk", None)
    return PROCESSES.get(name).tokenizer_options(None if tk is None else tk.token_to_id)


def _restore(run: _Run, ckpt: Path) -> None:
    """Continue from ``ckpt`` exactly: weights, EMA, optimiser, every RNG state, the step and the metrics window."""
    meta = ckpt_mod.load_meta(ckpt)
    _check_compatible(ckpt_mod.load_config_file(ckpt), run, ckpt, meta)
    state = ckpt_mod.load_train_state(ckpt)
    try:
        if "adapters" in state:  # LoRA: the base weights are model.init's, the adapters in state.pt
            run.model.load_state_dict(state["adapters"], strict=False)
            ema_state = state["adapters_ema"]
        else:
            run.model.load_state_dict(ckpt_mod.load_weights(ckpt, ema=False))
            ema_state = ckpt_mod.load_weights(ckpt, ema=True)
        for name, e in zip(run.names, run.ema, strict=True):
            e.copy_(ema_state[name].to(device=run.device, dtype=e.dtype))
        run.opt.load_state_dict(state["optimizer"])
    except (RuntimeError, KeyError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BasinlabError(
            f"cannot resume from {ckpt}: its weights do not fit this model ({first[:160]}); use --no-resume "
            f"(resume=False) to start over or another out_dir"
        ) from None
    rngs = state["rng"]
    if int(state.get("world", 1)) == run.dd.world:
        _set_rng_state(rngs[run.dd.rank], run.gen, run.device)
    else:  # another world size: the shared noise stream continues, dropout streams restart per rank
        run.gen.set_state(rngs[0]["noise"])
    window = state.get("window") or {}
    run.window = _Window(losses=list(window.get("losses", [])), norms=list(window.get("norms", [])))
    run.step = run.saved_step = int(state["step"])
    run.last_loss, run.resumed, run.ckpt_path = float(state.get("last_loss", "nan")), True, ckpt


def _check_compatible(saved, run: _Run, ckpt: Path, meta: dict[str, Any]) -> None:
    """Refuse to resume a checkpoint of a different run (data, model or optimisation changed)."""
    diffs = config_differences(saved, run.cfg, ("data", "model", "train"))
    if int(meta["vocab_size"]) != run.vocab_size or int(meta["seq_len"]) != run.x_train.shape[1]:
        diffs.append(f"data shape: V={meta['vocab_size']}, L={meta['seq_len']} in the checkpoint, "
                     f"V={run.vocab_size}, L={run.x_train.shape[1]} now")
    if diffs:
        raise BasinlabError(
            f"cannot resume from {ckpt}: it belongs to a different run ({diffs[0]}"
            f"{f'; and {len(diffs) - 1} more' if len(diffs) > 1 else ''}); use --no-resume (resume=False) "
            f"to start over or another out_dir"
        )
    ckpt_mod.check_data_fingerprint(meta, run.meta.extra.get("data_sha256"), ckpt)


def _wrap(run: _Run) -> None:
    """The module the loop calls: DDP across ranks, ``torch.compile`` when asked."""
    fwd = run.model
    if run.dd.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        fwd = DDP(run.model, device_ids=[run.device.index] if run.device.type == "cuda" else None)
    run.fwd = torch.compile(fwd) if run.cfg.train.compile else fwd


# ---- one step, one metrics row, one checkpoint ----------------------------------------------------------------


def _train_step(run: _Run) -> tuple[str, float]:
    """One optimiser step on global batch ``run.step`` (SPEC 4); returns the objective and the learning rate."""
    tc, dd, device, step = run.cfg.train, run.dd, run.device, run.step
    B, L = run.global_batch, run.x_train.shape[1]
    B_rank = B // dd.world
    B_micro = B_rank // tc.grad_accum
    objective = "ce_redrawn" if (step < tc.ce_warmup_steps or tc.objective == "ce_redrawn") else "nelbo"
    lr = lr_at(step, tc.lr, tc.warmup_steps, tc.lr_decay, tc.steps)
    for group in run.opt.param_groups:
        group["lr"] = lr
    # the global batch: data, times and noise drawn identically on every rank, then sliced
    x = run.x_train[run.sampler.indices(step)]
    t = sample_times(B, tc.t_eps, tc.antithetic, run.gen)
    alpha_t = run.schedule.alpha(t)
    z_t, redrawn = run.process.corrupt(x, alpha_t, generator=run.gen, return_mask=True)
    dalpha_t, sigma_t = run.schedule.dalpha(t), run.schedule.sigma(t).float()
    amp = autocast_dtype(tc.precision, device)
    loss_acc = torch.zeros((), device=device)
    for m in range(tc.grad_accum):
        sl = slice(dd.rank * B_rank + m * B_micro, dd.rank * B_rank + (m + 1) * B_micro)
        xb, zb = x[sl].to(device, non_blocking=True), z_t[sl].to(device, non_blocking=True)
        sync = m == tc.grad_accum - 1 or dd.world == 1
        with run.fwd.no_sync() if (not sync and hasattr(run.fwd, "no_sync")) else nullcontext():
            with autocast(device, amp):
                logits = run.fwd(zb, sigma_t[sl].to(device))
            log_x_theta = run.process.parameterise(logits, zb, sigma_t[sl].to(device))
            if objective == "nelbo":
                per_pos = run.process.nelbo_integrand(xb, zb, log_x_theta, alpha_t[sl].to(device),
                                                      dalpha_t[sl].to(device))
            else:
                per_pos = run.process.cheap_loss(xb, log_x_theta, redrawn[sl].to(device))
            # sum over this micro-batch / positions of the GLOBAL batch; DDP averages over ranks
            loss = per_pos.sum() * (dd.world / (B * L))
            loss.backward()
        loss_acc += loss.detach() / dd.world
    if dd.world > 1:
        dist.all_reduce(loss_acc)
    if tc.grad_clip > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_(run.params, tc.grad_clip)
    else:
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in run.params if p.grad is not None])
    run.opt.step()
    run.opt.zero_grad(set_to_none=True)
    with torch.no_grad():
        torch._foreach_lerp_(run.ema, [p.detach().float() for p in run.params], 1.0 - ema_decay(step, tc.ema))
    run.step += 1
    run.window.pending.append((loss_acc.detach(), grad_norm.detach()))
    return objective, lr


def _log(run: _Run, metrics: _Metrics, bar, objective: str, lr: float) -> None:
    """One ``metrics.csv`` row: the window's mean loss and gradient norm; a diverged loss stops training."""
    run.losses += run.window.read()
    loss, gnorm = run.window.take()
    run.last_loss = loss
    if not math.isfinite(loss):
        raise BasinlabError(f"training diverged at step {run.step} (loss {loss}); lower train.lr or raise warmup_steps")
    epoch = run.step * run.global_batch / run.x_train.shape[0]
    tokens_per_s = metrics.log(run.step, epoch, objective, loss, lr, gnorm)
    bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens_per_s:,.0f}", obj=objective[:4])


def _save(run: _Run) -> None:
    """Checkpoint ``run.step`` (rank 0 writes; every rank's RNG state is gathered first)."""
    run.losses += run.window.read()
    rngs = [_rng_state(run.gen, run.device)]
    if run.dd.world > 1:
        gathered: list[Any] = [None] * run.dd.world
        dist.all_gather_object(gathered, {k: v.cpu() for k, v in rngs[0].items()})
        rngs = gathered
    if run.dd.main:
        train_state = {
            "step": run.step, "optimizer": run.opt.state_dict(), "rng": rngs, "world": run.dd.world,
            "last_loss": run.last_loss, "window": {"losses": run.window.losses, "norms": run.window.norms},
        }
        model_state, ema_state = run.model.state_dict(), dict(zip(run.names, run.ema, strict=True))
        if has_lora(run.model):  # merged weights load as a run trained in full; the adapters go to state.pt
            train_state["adapters"] = {n: p.detach().cpu().clone() for n, p in zip(run.names, run.params, strict=True)}
            train_state["adapters_ema"] = {n: e.cpu().clone() for n, e in ema_state.items()}
            model_state, ema_state = merged_state(run.model), merged_state(run.model, ema_state)
        params = {n for n, _ in run.model.named_parameters(remove_duplicate=False)}
        ema_state.update({k: v for k, v in model_state.items() if k not in params and k not in ema_state})  # buffers
        run.ckpt_path = ckpt_mod.save_checkpoint(
            run.out, step=run.step, model_state=model_state,
            ema_state=ema_state, config=_with_out_dir(run.cfg, run.out),
            meta=run.meta, train_state=train_state, tokenizer=getattr(run.data, "tokenizer", None),
            source=getattr(run.data, "source", None),
        )
    if run.dd.world > 1:
        dist.barrier()
    run.saved_step = run.step


# ---- the loop -----------------------------------------------------------------------------------------------


def train(
    cfg,
    data=None,
    out_dir: str | Path | None = None,
    resume: bool = True,
    progress: bool | None = None,
    track: dict[str, Any] | None = None,
) -> TrainResult:
    """Train a DiT on ``data.train(cfg.data.n_train)`` for ``cfg.train.steps`` steps; checkpoint into ``out_dir``.

    ``data`` defaults to ``build_dataset(cfg.data)``; ``out_dir`` to ``cfg.out_dir``. With ``resume=True`` a
    checkpoint in ``out_dir`` is continued (it must come from the same run config, except the keys of
    :data:`basinlab.config.RESUMABLE_KEYS`) so that the per-step losses equal an uninterrupted run; ``resume=False``
    deletes it and starts over. Ctrl-C finishes the running step, checkpoints it and raises ``KeyboardInterrupt``
    (a rerun continues exactly). Under ``torchrun`` every rank calls this; rank 0 alone writes files.
    ``train.tracker`` gets the curves of ``metrics.csv``; ``track``: ``root``, ``run_name``, ``group`` of
    :func:`~basinlab.training.tracking.open_tracker` (a sweep's run: its store and names).
    """
    cfg.validate()
    out = Path(out_dir or cfg.out_dir)
    created = not out.exists()
    dd, device = _setup_distributed(cfg.train.device)
    try:
        if cfg.train.batch_size % (dd.world * cfg.train.grad_accum):
            raise BasinlabError(
                f"train.batch_size={cfg.train.batch_size} (global) must be divisible by world size {dd.world} x "
                f"grad_accum {cfg.train.grad_accum}"
            )
        check_tracker(cfg.train.tracker)  # its package, before any long computation
        if dd.main:
            ckpt_mod.prepare_run_dir(out)  # before any long computation: a file, a read-only directory...
        with directory_lock(out) if dd.main else nullcontext():  # one writer per run directory
            if data is None:
                from basinlab.data import build_dataset

                data = build_dataset(cfg.data)
            return _train(cfg, data, out, resume, progress, dd, device, track)
    except BasinlabError:
        if created and dd.main and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # refused before anything was written: leave no empty run directory behind
        raise
    finally:
        if dd.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg, data, out: Path, resume: bool, progress, dd: _Dist, device: torch.device,
           track: dict[str, Any] | None = None) -> TrainResult:
    from basinlab.progress import progress_bar

    tc = cfg.train
    run = _prepare(cfg, data, out, dd, device)
    found = ckpt_mod.find_checkpoint(out) if resume else None
    if found is not None:
        _restore(run, found)
    elif dd.main:
        ckpt_mod.clear_checkpoints(out)
    if dd.world > 1:
        dist.barrier()
    _wrap(run)
    if dd.main:
        _with_out_dir(cfg, out).save(out / "config.yaml")
    start_step, t_start = run.step, time.perf_counter()
    tracker = open_tracker(tc.tracker, out, config=cfg.to_dict(), start_step=start_step, **(track or {})) \
        if dd.main else None
    metrics = _Metrics(out, start_step, dd.main, run.global_batch * run.x_train.shape[1], tracker)
    show = (tc.progress if progress is None else progress) and dd.main
    bar = progress_bar(tc.steps, "train", enabled=show, initial=start_step)  # a log line per 10% outside a TTY
    run.model.train()
    with _sigint_finishes_the_step(dd.world == 1) as interrupted:
        try:
            while run.step < tc.steps and not interrupted():
                objective, lr = _train_step(run)
                bar.update(1)
                if run.step % tc.log_every == 0 or run.step == tc.steps:
                    _log(run, metrics, bar, objective, lr)
                if run.step % tc.ckpt_every == 0 or run.step == tc.steps:
                    _save(run)
        finally:
            bar.close()
            metrics.close()
        if run.saved_step != run.step:  # interrupted between checkpoints, or steps == 0 from a fresh start
            _save(run)
        if interrupted():
            raise KeyboardInterrupt
    elapsed, ran = time.perf_counter() - t_start, run.step - start_step
    return TrainResult(
        out_dir=out, final_loss=run.last_loss, steps=run.step, checkpoint_path=run.ckpt_path, start_step=start_step,
        losses=run.losses, tokens_per_s=ran * run.global_batch * run.x_train.shape[1] / elapsed if ran else math.nan,
        elapsed_s=elapsed, resumed=run.resumed,
    )


@contextmanager
def _sigint_finishes_the_step(enabled: bool) -> Iterator[Callable[[], bool]]:
    """Ctrl-C (SIGINT) sets a flag that the loop reads between steps, so the checkpoint written then holds the state
    (weights, optimiser, RNG) at a step boundary and a rerun equals an uninterrupted run; a second Ctrl-C raises
    ``KeyboardInterrupt`` at once (the last checkpoint stands). Only in the main thread of a single process, and
    only where SIGINT is not ignored (a background job)."""
    hit: list[bool] = []
    previous = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
    if not enabled or previous is None or previous == signal.SIG_IGN:
        yield lambda: False
        return

    def handler(signum: int, frame: Any) -> None:
        if hit:
            raise KeyboardInterrupt
        hit.append(True)
        logger.warning("interrupted: finishing this step and saving a checkpoint (Ctrl-C again to stop at once)")

    signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(hit)
    finally:
        signal.signal(signal.SIGINT, previous)


def _with_out_dir(cfg, out: Path):
    """The config as saved beside the run: ``out_dir`` set to where it is."""
    return dataclasses.replace(cfg, out_dir=str(out))


def _version() -> str:
    """basinlab's version, from the installed package's metadata (pyproject.toml is the one source)."""
    try:
        return importlib.metadata.version("basinlab")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"
