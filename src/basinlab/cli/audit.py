"""``basinlab audit``: per-text memorisation scores and membership AUC of a trained model, a converted one or a
deployed model's own directory. The logic lives in :mod:`basinlab.probes.audit`; this module parses, reads the
text files (checked by :mod:`basinlab.cli.audit_input`), and writes the outputs."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from basinlab.errors import BasinlabError
from basinlab.registry import PROTOCOLS, WEIGHTS


def register(sub: argparse._SubParsersAction) -> None:
    _register_audit(sub)


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
    p.add_argument("--checkpoint", required=True, metavar="RUN", help="run directory or checkpoint directory")
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
    device_map_arg(p)
    p.add_argument("--protocol", choices=PROTOCOLS.names(),
                   help="the probes' definitions, as probe.protocol of the sweep (default: the run's probe.protocol)")
    p.add_argument("--raw", action="store_true",
                   help="the raw weights (default: the run's probe.weights; ema, raw under the paper protocol)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_audit)


def device_map_arg(p: argparse.ArgumentParser) -> None:
    """``--device-map``: accelerate's placement of a deployed model's own directory over several GPUs (SPEC 2c)."""
    from basinlab.models.placement import STRATEGIES

    p.add_argument("--device-map", choices=STRATEGIES, metavar="STRATEGY",
                   help="spread a deployed model's own directory (DiffusionGemma, LLaDA, Dream) over the GPUs: "
                        f"{', '.join(STRATEGIES)} (default: one device, or auto when one cannot hold it)")


# ---- audit ------------------------------------------------------------------------------------------------------


def read_lines(path: str | Path) -> list[str]:
    """Non-empty lines of a UTF-8 text file; anything else is a one-line error (:mod:`basinlab.cli.audit_input`)."""
    from basinlab.cli.audit_input import read_lines as read

    return read(path)


def encode_lines(lines: list[str], fmt: str, tm: Any, where: str):
    """``(sequences [n, L], real-token mask)`` of the lines, as the run's sequences (SPEC 1). A model that scores
    a text at its own length (``variable_length``: LLaDA, Dream) takes ``--format ids`` lines of any length up to
    its context; the positions after a line are padding, outside the real-token mask. A deployed model that lays
    texts out itself returns its own layout (SPEC 2c: DiffusionGemma's :class:`~basinlab.models.canvases.Canvases`,
    texts of any length)."""
    import torch

    from basinlab.data.sequences import encode_texts

    if hasattr(tm, "encode_lines"):  # a deployed model lays its texts out itself (SPEC 2c: DiffusionGemma's canvas)
        return tm.encode_lines(lines, fmt, where)
    L, V = tm.seq_len, tm.vocab_size
    lengths: list[int] = []
    own_length = bool(getattr(tm.model, "variable_length", False))
    if fmt == "text":
        if tm.tokenizer is None:
            raise BasinlabError(f"{tm.path} has no tokenizer: give token ids with --format ids "
                                "(or convert with --tokenizer)")
        if own_length:  # as wide as the longest [BOS] text [EOS], not the whole context
            L = min(L, 2 + max(len(ids) for ids in tm.tokenizer.encode_batch(list(lines), max_tokens=L)))
        seqs = encode_texts(lines, tm.tokenizer, L)
    else:
        rows = []
        pad = 0 if tm.tokenizer is None else tm.tokenizer.pad_id
        for i, line in enumerate(lines, 1):
            try:
                ids = [int(x) for x in line.split()]
            except ValueError:
                raise BasinlabError(f"{where} line {i}: not whitespace-separated integer token ids") from None
            if len(ids) != L and not (own_length and 0 < len(ids) <= L):
                need = f"at most {L} (its context)" if own_length else str(L)
                raise BasinlabError(f"{where} line {i}: {len(ids)} ids, the model's sequences have {need}")
            bad = [x for x in ids if not 0 <= x < V]
            if bad:
                raise BasinlabError(f"{where} line {i}: token id {bad[0]} outside the vocabulary [0, {V})")
            rows.append(ids)
            lengths.append(len(ids))
        L = max(lengths) if own_length else L  # padding the model never sees (scored at its own length)
        seqs = torch.tensor([ids + [pad] * (L - len(ids)) for ids in rows], dtype=torch.long)
    special = [] if tm.tokenizer is None else [tm.tokenizer.pad_id, tm.tokenizer.bos_id, tm.tokenizer.eos_id]
    mask = ~torch.isin(seqs, torch.tensor(special, dtype=torch.long)) if special else torch.ones_like(seqs).bool()
    if not lengths:
        return seqs, mask
    n = torch.tensor(lengths)
    return seqs, mask & (torch.arange(L)[None, :] < n[:, None])


def cmd_audit(args: argparse.Namespace) -> int:
    import torch

    import basinlab
    from basinlab.cli import audit_input as ai
    from basinlab.cli.probe import _parse_ts
    from basinlab.probes.audit import audit
    from basinlab.probes.protocol import resolve_weights

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
    run_probe = _run_probe_config(args.checkpoint)  # protocol and weights, as the sweep
    protocol = args.protocol or run_probe.protocol
    weights = "raw" if args.raw else resolve_weights(run_probe.weights, protocol)
    tm = basinlab.load(args.checkpoint, device=args.device, ema=WEIGHTS.get(weights).ema, batch_size=args.batch_size,
                       device_map=args.device_map)
    enc = {g: encode_lines(lines[g], args.format, tm, f) for g, f in files}
    if own is None and laid_out(enc):  # a block-diffusion model's canvases (SPEC 2c): texts of any length
        return _audit_canvases(args, tm, files, lines, enc, ts, protocol)
    if args.format == "text":
        for g, f in files:
            ai.warn_cut(lines[g], tm.tokenizer, tm.seq_len, f)
    if own is not None:
        if "n_train" not in tm.meta:
            raise BasinlabError(f"--train-vs-test needs a basinlab run; {args.checkpoint} is a model loaded in place "
                                "(no training set): give --members and --nonmembers, or fine-tune it first "
                                "(basinlab train CONFIG model.init=DIR)")
        _warn_stand_in(args.checkpoint)
        data = tm.dataset()
        ai.check_train_vs_test(own, int(tm.config.data.n_train), int(data.test.shape[0]))
        for g, seqs_g in (("member", data.train(tm.config.data.n_train)[:own]), ("nonmember", data.test[:own])):
            enc[g], lines[g] = (seqs_g, data.real_mask(seqs_g)), data.decode(seqs_g)
        files = [("member", "train"), ("nonmember", "test"), *files]
    ai.warn_groups(lines)
    width = max(enc[g][0].shape[1] for g, _ in files)  # texts scored at their own length: files differ
    seqs = torch.cat([_widen(enc[g][0], width, 0 if tm.tokenizer is None else tm.tokenizer.pad_id) for g, _ in files])
    mask = torch.cat([_widen(enc[g][1], width, False) for g, _ in files])
    lengths = _own_lengths(tm, seqs, mask)
    if lengths is not None:
        seqs, mask = seqs[:, : int(lengths.max())], mask[:, : int(lengths.max())]
    groups = [g for g, _ in files for _ in lines[g]]
    ref = ref_mask = None
    if args.reference:
        ref, ref_mask = encode_lines(read_lines(args.reference), args.format, tm, args.reference)
    if ref is not None and lengths is not None:
        W, pad = seqs.shape[1], 0 if tm.tokenizer is None else tm.tokenizer.pad_id
        ref, ref_mask = _widen(ref, W, pad)[:, :W], _widen(ref_mask, W, False)[:, :W]
    pad = getattr(tm.tokenizer, "pad_id", None)  # the paper NELBO's attention mask: all but PAD
    result = audit(tm.denoiser, seqs, groups=groups, real_mask=mask, lengths=lengths, reference=ref,
                   reference_mask=ref_mask,
                   ts=ts, steps=args.steps, nelbo_times=args.nelbo_times, seed=args.seed,
                   batch_size=args.batch_size, progress=not args.quiet, protocol=protocol,
                   attention_mask=None if pad is None else seqs != pad)
    texts = [t for g, _ in files for t in lines[g]]
    _write_audit(Path(args.out), result, groups, texts, args)
    _write_token_views(Path(args.out), result, groups, tm, str(args.checkpoint))
    return 0


def laid_out(enc: dict[str, Any]) -> bool:
    """Whether the model laid the texts out in canvases itself (SPEC 2c: DiffusionGemma)."""
    from basinlab.models.canvases import Canvases

    return bool(enc) and all(isinstance(e, Canvases) for e in enc.values())


def _audit_canvases(args: argparse.Namespace, tm: Any, files: list, lines: dict, enc: dict, ts: list,
                    protocol: str) -> int:
    """The audit of texts laid out in canvases (:func:`basinlab.probes.canvases.audit_canvases`): one row per
    text, whatever its length; every token of each text in ``tokens.parquet``."""
    from basinlab.cli import audit_input as ai
    from basinlab.models.canvases import Canvases
    from basinlab.probes.canvases import audit_canvases

    ai.warn_groups(lines)
    layout = Canvases.concat([enc[g] for g, _ in files])
    groups = [g for g, _ in files for _ in lines[g]]
    ref = encode_lines(read_lines(args.reference), args.format, tm, args.reference) if args.reference else None
    result = audit_canvases(tm.denoiser, layout, groups=groups, reference=ref, ts=ts, steps=args.steps,
                            nelbo_times=args.nelbo_times, seed=args.seed, batch_size=args.batch_size,
                            progress=not args.quiet, protocol=protocol)
    texts = [t for g, _ in files for t in lines[g]]
    _write_audit(Path(args.out), result, groups, texts, args)
    _write_token_views(Path(args.out), result, groups, tm, str(args.checkpoint))
    return 0


def _warn_stand_in(checkpoint: str) -> None:
    """``--train-vs-test`` on a model converted without its training data measures the stand-in data of its
    config (docs/INTEROP.md, "Data of the run"): said in one warning line."""
    import logging

    from basinlab.training.checkpoint import load_meta, require_checkpoint

    origin = load_meta(require_checkpoint(checkpoint)).get("converted_from") or {}
    if isinstance(origin, dict) and origin.get("stand_in_data"):
        logging.getLogger("basinlab.cli").warning(
            "warning: %s was converted from %s without its training data: --train-vs-test compares the stand-in "
            "data of its config (not the model's training set), so its AUC says nothing about membership; give "
            "the real data with convert's data.* overrides, or --members/--nonmembers", checkpoint,
            origin.get("path"))


def _run_probe_config(path: str) -> Any:
    """The run's ``probe`` settings; the defaults for a model directory loaded in place (SPEC 2c: no run)."""
    from basinlab.config import Config
    from basinlab.training.checkpoint import load_config_file, loads_in_place, require_checkpoint

    if loads_in_place(path) is not None:
        return Config().probe
    return load_config_file(require_checkpoint(path)).probe


def _widen(x: Any, width: int, value: Any) -> Any:
    """``x [n, w]`` filled up with ``value`` to ``[n, width]``."""
    import torch

    return torch.nn.functional.pad(x, (0, width - x.shape[1]), value=value) if x.shape[1] < width else x


def _own_lengths(tm: Any, seqs: Any, mask: Any) -> Any:
    """Each text's length when the model scores texts at their own length (LLaDA, Dream), else ``None``: up to
    its last token that is not padding (its ``[EOS]`` included with a tokenizer; the last real id without)."""
    if not getattr(tm.model, "variable_length", False):
        return None
    kept = mask if tm.tokenizer is None else seqs != tm.tokenizer.pad_id
    return kept.long().cumsum(1).argmax(1) + 1


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
               "orientation": "1.0 = members look more memorised", "tpr_conventions": TPR_CONVENTIONS,
               "scores": _finite(aucs)}
        atomic_write_text(out / "auc.json", json.dumps(doc, indent=1) + "\n")
        plot_roc(result, groups, out / "roc.png")
        written += ["auc.json", "roc.png"]
        _print_aucs(aucs)
    remove_stale(out, written)
    print(f"scored {len(groups)} texts; wrote {', '.join(written)} to {out}")


#: what auc.json's two low-FPR conventions mean (issue 24)
TPR_CONVENTIONS = {
    "tpr_at_fpr_<a>": "basinlab: the largest TPR among the empirical ROC points with FPR <= a",
    "tpr_at_nearest_fpr_<a>": "SAMA's code: the TPR of the empirical ROC point whose FPR is nearest a "
                              "(fpr_nearest_<a>: that point's FPR, possibly above a)",
}


def _print_aucs(aucs: dict[str, Any]) -> None:
    """One line per score: AUC with its interval, and TPR at 10% / 1% / 0.1% FPR in both conventions."""
    from basinlab.probes.audit import AUC_JSON_LEVELS, nearest_metric, tpr_metric

    def pct(v: Any) -> str:
        return "-" if v is None else f"{100 * v:.0f}%"

    print(f"{'':>22s}  {'AUC':>5s}  {'interval':>14s}  TPR at FPR " + " / ".join(f"{a:g}" for a in AUC_JSON_LEVELS)
          + " (<= a; nearest a)")
    for name, a in aucs.items():
        lo, hi = a["ci_low"], a["ci_high"]
        ci = f"[{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else "-"
        auc = f"{a['auc']:.3f}" if a["auc"] is not None else "-"
        tprs = " / ".join(f"{pct(a.get(tpr_metric(v)))}; {pct(a.get(nearest_metric(v)))}" for v in AUC_JSON_LEVELS)
        print(f"{name:>22s}  {auc:>5s}  {ci:>14s}  {tprs}")
        if a.get("note"):
            print(f"{'':>22s}  ({a['note']})")


def _finite(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    return v
