"""``basinlab train``, ``basinlab sample`` and ``basinlab nll``: parse, then call the public Python functions.

- ``train CONFIG [key=value ...]``  -> :func:`basinlab.training.trainer.train`
- ``sample --checkpoint PATH``      -> :func:`basinlab.diffusion.generate` on :func:`basinlab.load`'s denoiser
- ``nll --checkpoint PATH``         -> :func:`basinlab.diffusion.estimate_nelbo` (SPEC 4) on the rebuilt data
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

import basinlab
from basinlab.cli.audit import device_map_arg
from basinlab.config import load_config
from basinlab.diffusion import estimate_nelbo, generate, process_of
from basinlab.errors import BasinlabError
from basinlab.io import atomic_write_text, check_writable_file
from basinlab.registry import FAMILIES, PROCESSES, SCHEDULES, listing
from basinlab.training.checkpoint import TrainedModel
from basinlab.training.trainer import train


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a diffusion LM (resumes from the checkpoint in the output directory)",
        description=(
            "Train a discrete diffusion LM (a DiT) on the data of CONFIG for train.steps steps: uniform noise "
            "(SPEC 2) by default, masked/absorbing (MDLM, SPEC 2b) with train.process=masked. "
            "Checkpoints go to --out (default: the config's out_dir); a rerun resumes from the last checkpoint "
            "with losses identical to an uninterrupted run. Under torchrun every rank runs this same command."
        ),
        epilog="example: basinlab train markov train.steps=2000 data.n_train=256 --out runs/markov-256\n\n"
               "registered names:\n" + listing(PROCESSES, FAMILIES, SCHEDULES),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="YAML config file or preset name (e.g. demo, markov)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. train.steps=500 model.preset=tiny data.n_train=64")
    p.add_argument("--out", metavar="DIR", help="run directory (overrides out_dir)")
    p.add_argument("--no-resume", action="store_true", help="ignore and delete any checkpoint in DIR; start over")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "sample",
        help="generate sequences from pure noise with a trained model",
        description=(
            "Sample from a trained model: start from the process's prior at t = 1 (uniform noise for a uniform "
            "model, all [MASK] for a masked one), run the reverse chain on a grid of --steps points and take the "
            "final denoising step greedily (SPEC 3, 2b; --remask: ReMDM's remasking sampler for a masked model). "
            "Prints one sample per line (decoded text, or token ids for Markov data)."
        ),
    )
    _checkpoint_args(p)
    p.add_argument("--n", type=int, default=8, help="number of samples (default 8)")
    p.add_argument("--steps", type=int, default=1000, help="T, reverse steps over [t_min, 1] (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--greedy", action="store_true", help="argmax at every step instead of drawing")
    p.add_argument("--remask", type=float, default=0.0, metavar="ETA",
                   help="masked models: ReMDM's remasking eta in [0, 1], as probe.remask (default 0: MDLM's sampler)")
    p.add_argument("--out", metavar="FILE", help="also write the samples to FILE, one per line")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser(
        "nll",
        help="NELBO / perplexity bound of a trained model on its train or test set",
        description=(
            "Estimate the NELBO per real token (SPEC 4: diffusion + reconstruction + prior terms, Monte Carlo "
            "over --times antithetic times per sequence) and the perplexity bound exp(NELBO), on the first --n "
            "sequences of the model's own training subset or of the held-out test set, rebuilt from the "
            "checkpoint's config."
        ),
    )
    _checkpoint_args(p)
    p.add_argument("--set", choices=("train", "test"), default="test", help="which sequences (default test)")
    p.add_argument("--n", type=int, default=1000, help="number of sequences (default 1000; fewer if the set is)")
    p.add_argument("--times", type=int, default=8, help="times t per sequence (default 8)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--texts", metavar="FILE",
                   help="score these texts (one per line) instead of --set: what a deployed model's directory needs")
    p.add_argument("--format", default="text", choices=("text", "ids"),
                   help="--texts as text (the model's tokenizer) or whitespace-separated token ids")
    p.set_defaults(func=cmd_nll)


def _checkpoint_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, metavar="PATH",
                   help="run directory, checkpoint directory, or a deployed model's own directory "
                        "(DiffusionGemma; docs/INTEROP.md)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    device_map_arg(p)
    p.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA weights")
    p.add_argument("--batch-size", type=int, default=256, help="sequences per network call (default 256)")


def _positive(name: str, value: int) -> None:
    if value < 1:
        raise BasinlabError(f"--{name} must be >= 1, got {value}")


def cmd_train(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    if args.out:
        cfg.out_dir = args.out
    res = train(cfg, out_dir=cfg.out_dir, resume=not args.no_resume, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports
        return 0
    if res.steps > res.start_step or not res.resumed:
        print(f"trained to step {res.steps} (final loss {res.final_loss:.4f}); checkpoint: {res.checkpoint_path}")
    else:
        print(f"already trained to step {res.steps}; checkpoint: {res.checkpoint_path}")
    return 0


def _load(args: argparse.Namespace) -> TrainedModel:
    return basinlab.load(args.checkpoint, device=args.device, ema=not args.raw, batch_size=args.batch_size,
                         device_map=args.device_map)


def _write_through(path: str) -> Path:
    """The file ``--out`` names; a symbolic link is written through (its target replaced, the link kept, as the
    shell's ``>`` does), a link loop refused."""
    out = Path(path)
    if out.is_symlink():
        out = Path(os.path.realpath(out))
        if out.is_symlink():
            raise BasinlabError(f"--out '{path}' is a symbolic link loop; give a file path")
    check_writable_file(out, "--out")
    return out


def cmd_sample(args: argparse.Namespace) -> int:
    for name in ("n", "steps", "batch_size"):
        _positive(name.replace("_", "-"), getattr(args, name))
    out = _write_through(args.out) if args.out else None
    if not 0.0 <= args.remask <= 1.0:
        raise BasinlabError(f"--remask must lie in [0, 1], got {args.remask}")
    tm = _load(args)
    proc = process_of(tm.denoiser)
    if args.remask and not hasattr(proc, "with_remask"):
        raise BasinlabError(f"--remask drives ReMDM's remasking sampler of the masked process (SPEC 2b); this model's "
                            f"process is {proc.name}, which has nothing to remask: drop --remask")
    device = tm.denoiser.device
    gen = torch.Generator(device=device).manual_seed(args.seed)
    seqs = generate(tm.denoiser, args.n, tm.seq_len, steps=args.steps, greedy=args.greedy, final_greedy=True,
                    batch_size=args.batch_size, generator=gen, device=device,
                    process=proc.with_remask(args.remask) if args.remask else None)
    lines = tm.decode(seqs)
    for line in lines:
        print(line)
    if out is not None:
        atomic_write_text(out, "".join(f"{line}\n" for line in lines))
        print(f"wrote {len(lines)} samples to {args.out}", file=sys.stderr)
    return 0


def cmd_nll(args: argparse.Namespace) -> int:
    for name in ("n", "times", "batch_size"):
        _positive(name.replace("_", "-"), getattr(args, name))
    tm = _load(args)
    if args.texts:  # given texts (a deployed model has no data set of its own, SPEC 2c)
        from basinlab.cli.audit import encode_lines, laid_out, read_lines
        from basinlab.probes.canvases import nelbo_canvases

        enc = encode_lines(read_lines(args.texts)[: args.n], args.format, tm, args.texts)
        args.set = args.texts
        if laid_out({args.texts: enc}):  # canvases after their prompts (SPEC 2c): texts of any length
            return _print_nll(args, tm, enc.n_texts, nelbo_canvases(
                tm.denoiser, enc, n_times=args.times, t_eps=tm.config.train.t_eps, seed=args.seed,
                batch_size=args.batch_size))
        seqs, mask = enc
    else:
        data = tm.dataset()
        seqs = data.train(tm.config.data.n_train) if args.set == "train" else data.test
        seqs = seqs[: args.n]
        mask = data.real_mask(seqs).cpu()  # estimate_nelbo wants the mask on the CPU, the sequences anywhere
    seqs = seqs.to(tm.denoiser.device)
    res = estimate_nelbo(tm.denoiser, seqs, mask, n_times=args.times,
                         t_eps=tm.config.train.t_eps, seed=args.seed, batch_size=args.batch_size)
    return _print_nll(args, tm, seqs.shape[0], res)


def _print_nll(args: argparse.Namespace, tm: TrainedModel, n: int, res: dict) -> int:
    print(f"{args.set}: {n} sequences, {res['n_tokens']} real tokens, step {tm.step}")
    print(f"NELBO {res['nelbo']:.4f} nats/token (diffusion {res['diffusion']:.4f}, recon {res['recon']:.4f}, "
          f"prior {res['prior']:.2e}); perplexity bound {res['ppl_bound']:.3f}")
    return 0
