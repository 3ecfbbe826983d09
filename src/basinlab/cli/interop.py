"""``basinlab convert``, ``basinlab export`` and ``basinlab audit``: deployed models in and out, and memorisation
audits of given texts. The logic lives in :mod:`basinlab.interop` (``duo``, ``mdlm``) and
:mod:`basinlab.probes.audit`; this module parses, reads the text files, and writes the outputs."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from basinlab.errors import BasinlabError
from basinlab.registry import FORMATS


def register(sub: argparse._SubParsersAction) -> None:
    _register_convert(sub)
    _register_export(sub)
    _register_audit(sub)


def _register_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="import a Duo/UDLM or MDLM checkpoint (Hugging Face directory or Lightning .ckpt) as a basinlab run",
        description=(
            "Convert a Duo, UDLM or MDLM checkpoint into a basinlab run directory that every command reads "
            "(--checkpoint DIR). SRC is a Hugging Face directory (config.json + model.safetensors with backbone.* "
            "keys) or a Lightning .ckpt of Duo's or MDLM's trainer (state_dict + ema); config.json's model_type "
            "(mdlm: a masked model) or the .ckpt's hyper-parameters say which. Nothing in SRC is executed."
        ),
        epilog="examples:\n  basinlab convert duo-lm1b/ --out runs/duo-lm1b --tokenizer bert-base-uncased\n"
               "  basinlab convert mdlm-owt/ --out runs/mdlm-owt --tokenizer gpt2/tokenizer.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", metavar="SRC", help="Hugging Face directory or Lightning .ckpt file")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides for the run, e.g. data.source=text data.path=corpus.txt")
    p.add_argument("--out", required=True, metavar="DIR", help="the basinlab run directory to write")
    p.add_argument("--tokenizer", metavar="NAME_OR_PATH",
                   help="bert-base-uncased, or a tokenizer.json / vocab.txt (default: one in SRC; else ids only)")
    p.add_argument("--weights", choices=("ema", "raw"),
                   help="which weights the run uses (default: ema when the source has them)")
    p.add_argument("--n-heads", type=int, help="attention heads, when a .ckpt does not record them")
    p.add_argument("--model-type", choices=("duo", "mdlm"),
                   help="the source's family, when a .ckpt does not record it (default: detected)")
    p.set_defaults(func=cmd_convert)


def _register_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="write a basinlab run in the Duo/UDLM or MDLM Hugging Face layout",
        description="Write a basinlab run as config.json + model.safetensors (backbone.* keys), the layout Duo's, "
                    "UDLM's (--format duo-hf, uniform runs) and MDLM's (--format mdlm-hf, masked runs) own samplers "
                    "and evaluations load.",
        epilog="example:\n  basinlab export --checkpoint runs/m256 --out exports/m256 --format duo-hf",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, metavar="RUN", help="run directory or checkpoint directory")
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write")
    p.add_argument("--format", required=True, choices=FORMATS, metavar="FORMAT",
                   help=f"the layout to write: {FORMATS.help()} (hf: a diffusion_gemma run as the Hugging Face "
                        "directory DiffusionGemmaForBlockDiffusion.from_pretrained reads)")
    p.add_argument("--model-type", default="duo", choices=("duo", "duo_base", "udlm"),
                   help="model_type written to config.json with --format duo-hf (default duo)")
    p.add_argument("--raw", action="store_true", help="export the raw weights instead of the EMA ones")
    p.set_defaults(func=cmd_export)


def _register_audit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "audit", help="per-text memorisation scores and membership AUC of a trained model",
        description=(
            "Score each text for memorisation (leave-one-out conditional entropy at t = 1e-5, basin recovery per "
            "t, fixed point yes/no, NELBO per token, and with --reference the distance to the nearest reference "
            "sequence); with --members and --nonmembers, the ROC AUC of each score telling them apart (1.0 = "
            "members look more memorised; DeLong 95% interval; TPR at 1% and 0.1% FPR). Writes scores.csv, "
            "scores.parquet, auc.json, roc.png, tokens.parquet (per token: entropy, top-5, basin outcome) and "
            "audit.html (every text token by token, shaded by entropy) to --out."
        ),
        epilog="example:\n  basinlab audit --checkpoint runs/m16 --members train.txt --nonmembers test.txt "
               "--format ids --out runs/m16/audit",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, metavar="RUN",
                   help="run directory, checkpoint directory, or a deployed model's own directory "
                        "(DiffusionGemma; docs/INTEROP.md)")
    p.add_argument("--members", metavar="FILE", help="texts believed to be in the training set, one per line")
    p.add_argument("--nonmembers", metavar="FILE", help="texts believed not to be, one per line")
    p.add_argument("--texts", metavar="FILE", help="further texts to score, one per line")
    p.add_argument("--train-vs-test", type=int, metavar="M",
                   help="members = the first M sequences of the run's own training subset, non-members = M of its "
                        "test set (instead of --members/--nonmembers; the sweep's membership AUC for one run)")
    p.add_argument("--reference", metavar="FILE", help="reference texts for the nearest-neighbour distance")
    p.add_argument("--format", default="text", choices=("text", "ids"),
                   help="text (encoded with the run's tokenizer) or ids (whitespace-separated token ids, L per line)")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for scores.csv, auc.json, roc.png")
    p.add_argument("--ts", default="0.25", help="comma-separated t for basin recovery (default 0.25)")
    p.add_argument("--steps", type=int, default=100, help="T, the reverse-chain grid (default 100)")
    p.add_argument("--nelbo-times", type=int, default=8, help="time points of the NELBO estimate (default 8)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--batch-size", type=int, default=256, help="sequences per batch (default 256)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--protocol", choices=("exact", "paper"),
                   help="the probes' definitions, as probe.protocol of the sweep (default: the run's probe.protocol)")
    p.add_argument("--raw", action="store_true",
                   help="the raw weights (default: the run's probe.weights; ema, raw under the paper protocol)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_audit)


# ---- convert / export -----------------------------------------------------------------------------------------


def cmd_convert(args: argparse.Namespace) -> int:
    from basinlab.interop import convert

    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        raise BasinlabError(f"unexpected argument '{bad[0]}'; give one SRC, then key=value overrides")
    ckpt = convert(args.src, args.out, family=args.model_type, tokenizer=args.tokenizer, weights=args.weights,
                   overrides=args.overrides, n_heads=args.n_heads)
    print(f"converted {args.src} into {ckpt}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import inspect

    export = FORMATS.get(args.format)
    takes = inspect.signature(export).parameters  # --model-type goes to the formats that take it (duo-hf)
    options = {"model_type": args.model_type} if "model_type" in takes else {}
    dest = export(args.checkpoint, args.out, raw=args.raw, **options)
    print(f"exported {args.checkpoint} to {dest} (config.json, model.safetensors)")
    return 0


# ---- audit ------------------------------------------------------------------------------------------------------


def read_lines(path: str | Path) -> list[str]:
    """Non-empty lines of a UTF-8 text file; anything else is a one-line error (:mod:`basinlab.cli.audit_input`)."""
    from basinlab.cli.audit_input import read_lines as read

    return read(path)


def encode_lines(lines: list[str], fmt: str, tm: Any, where: str):
    """``(sequences [n, L], real-token mask)`` of the lines, as the run's sequences (SPEC 1)."""
    import torch

    from basinlab.data.sequences import encode_texts

    if hasattr(tm, "encode_lines"):  # a deployed model lays its texts out itself (SPEC 2c)
        return tm.encode_lines(lines, fmt, where)
    L, V = tm.seq_len, tm.vocab_size
    if fmt == "text":
        if tm.tokenizer is None:
            raise BasinlabError(f"{tm.path} has no tokenizer: give token ids with --format ids "
                                "(or convert with --tokenizer)")
        seqs = encode_texts(lines, tm.tokenizer, L)
    else:
        rows = []
        for i, line in enumerate(lines, 1):
            try:
                ids = [int(x) for x in line.split()]
            except ValueError:
                raise BasinlabError(f"{where} line {i}: not whitespace-separated integer token ids") from None
            if len(ids) != L:
                raise BasinlabError(f"{where} line {i}: {len(ids)} ids, the model's sequences have {L}")
            bad = [x for x in ids if not 0 <= x < V]
            if bad:
                raise BasinlabError(f"{where} line {i}: token id {bad[0]} outside the vocabulary [0, {V})")
            rows.append(ids)
        seqs = torch.tensor(rows, dtype=torch.long)
    special = [] if tm.tokenizer is None else [tm.tokenizer.pad_id, tm.tokenizer.bos_id, tm.tokenizer.eos_id]
    mask = ~torch.isin(seqs, torch.tensor(special, dtype=torch.long)) if special else torch.ones_like(seqs).bool()
    return seqs, mask


def cmd_audit(args: argparse.Namespace) -> int:
    import torch

    import basinlab
    from basinlab.cli import audit_input as ai
    from basinlab.cli.probe import _parse_ts
    from basinlab.probes.audit import audit
    from basinlab.probes.protocol import resolve_weights
    from basinlab.training.checkpoint import run_config

    files = [("member", args.members), ("nonmember", args.nonmembers), ("text", args.texts)]
    files = [(g, f) for g, f in files if f]
    own = args.train_vs_test
    if own is not None and (args.members or args.nonmembers):
        raise BasinlabError("--train-vs-test replaces --members/--nonmembers: give one or the other")
    if not files and own is None:
        raise BasinlabError("give texts to audit: --members and --nonmembers (for the AUC), --train-vs-test M, "
                            "and/or --texts")
    for name in ("steps", "nelbo_times", "batch_size", "train_vs_test"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise BasinlabError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    ts = _parse_ts(args.ts)
    ai.check_out(args.out)  # before the scoring, so that no work is lost (issue 18)
    lines = {g: read_lines(f) for g, f in files}
    ai.check_count(lines, files)
    run_probe = run_config(args.checkpoint).probe  # protocol and weights, as the sweep
    protocol = args.protocol or run_probe.protocol
    weights = "raw" if args.raw else resolve_weights(run_probe.weights, protocol)
    tm = basinlab.load(args.checkpoint, device=args.device, ema=weights == "ema", batch_size=args.batch_size)
    enc = {g: encode_lines(lines[g], args.format, tm, f) for g, f in files}
    if args.format == "text":
        for g, f in files:
            ai.warn_cut(lines[g], tm.tokenizer, tm.seq_len, f)
    if own is not None:
        data = tm.dataset()
        ai.check_train_vs_test(own, int(tm.config.data.n_train), int(data.test.shape[0]))
        for g, seqs_g in (("member", data.train(tm.config.data.n_train)[:own]), ("nonmember", data.test[:own])):
            enc[g], lines[g] = (seqs_g, data.real_mask(seqs_g)), data.decode(seqs_g)
        files = [("member", "train"), ("nonmember", "test"), *files]
    ai.warn_groups(lines)
    seqs = torch.cat([enc[g][0] for g, _ in files])
    mask = torch.cat([enc[g][1] for g, _ in files])
    groups = [g for g, _ in files for _ in lines[g]]
    ref = ref_mask = None
    if args.reference:
        ref, ref_mask = encode_lines(read_lines(args.reference), args.format, tm, args.reference)
    result = audit(tm.denoiser, seqs, groups=groups, real_mask=mask, reference=ref, reference_mask=ref_mask,
                   ts=ts, steps=args.steps, nelbo_times=args.nelbo_times, seed=args.seed,
                   batch_size=args.batch_size, progress=not args.quiet, protocol=protocol)
    texts = [t for g, _ in files for t in lines[g]]
    _write_audit(Path(args.out), result, groups, texts, args)
    _write_token_views(Path(args.out), result, groups, tm, str(args.checkpoint))
    return 0


def _write_token_views(out: Path, result: Any, groups: list[str], tm: Any, checkpoint: str) -> None:
    """``tokens.parquet`` (one row per token) and ``audit.html`` (the page over it)."""
    from basinlab.io import atomic_write
    from basinlab.probes.tokens import token_texts, tokens_frame
    from basinlab.study.html.audit_page import write_audit_page

    proc = getattr(tm, "process", None)
    texts, special = token_texts(tm.tokenizer, tm.vocab_size,
                                 getattr(proc, "mask_index", None))
    frame = tokens_frame(result.arrays, groups, texts, special)
    atomic_write(out / "tokens.parquet", lambda tmp: frame.to_parquet(tmp, index=False))
    write_audit_page(out / "audit.html", result, groups, texts, special, tm.vocab_size, checkpoint,
                     markov=tm.tokenizer is None)
    print(f"wrote tokens.parquet ({len(frame)} tokens) and audit.html to {out}")


def _write_audit(out: Path, result: Any, groups: list[str], texts: list[str], args: argparse.Namespace) -> None:
    from basinlab.cli.audit_input import remove_stale
    from basinlab.io import atomic_write, atomic_write_text
    from basinlab.probes.audit import auc_table, scores_frame
    from basinlab.probes.plots import plot_roc

    out.mkdir(parents=True, exist_ok=True)
    frame = scores_frame(result, groups, texts)
    atomic_write_text(out / "scores.csv", frame.to_csv(index=False))
    atomic_write(out / "scores.parquet", lambda tmp: frame.to_parquet(tmp, index=False))
    aucs = auc_table(result)
    written = ["scores.csv", "scores.parquet"]
    if aucs:
        doc = {"checkpoint": str(args.checkpoint), "members": groups.count("member"),
               "nonmembers": groups.count("nonmember"), "interval": "DeLong 95% (normal approximation)",
               "orientation": "1.0 = members look more memorised", "scores": _finite(aucs)}
        atomic_write_text(out / "auc.json", json.dumps(doc, indent=1) + "\n")
        plot_roc(result, groups, out / "roc.png")
        written += ["auc.json", "roc.png"]
        for name, a in aucs.items():
            lo, hi = a["ci_low"], a["ci_high"]
            ci = f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else ""
            print(f"{name:>22s}  AUC {a['auc']:.3f}{ci}" if a["auc"] is not None else f"{name:>22s}  AUC -")
    remove_stale(out, written)
    print(f"scored {len(groups)} texts; wrote {', '.join(written)} to {out}")


def _finite(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    return v
