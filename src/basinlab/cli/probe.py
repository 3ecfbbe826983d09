"""``basinlab probe {basins,fixed-points,entropy,novelty,likelihood,all}``: the SPEC 5 tests from the command line.

The denoiser is a trained model (``--checkpoint PATH``; its data is rebuilt from the checkpoint's config), a
deployed model's own directory loaded in place (SPEC 2c: LLaDA, Dream; data from ``CONFIG``), or an exact oracle
of SPEC 6 (``--oracle empirical|markov``; data from ``CONFIG`` and ``key=value`` overrides). Sets:
``train`` = the first ``M`` sequences of the model's own training subset ``D_N``, ``test`` = ``M`` held-out ones,
``random`` = ``M`` uniform random sequences. All logic lives in :mod:`basinlab.probes`; this module only parses,
builds the pieces and writes ``results.csv``, ``summary.json``, the PNG plots and (``--show``) ``examples.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import basinlab
from basinlab.config import (
    Config,
    ProbeConfig,
    apply_docs_toy_probe,
    config_from_dict,
    docs_toy,
    load_config,
    parse_overrides,
)
from basinlab.data import build_dataset
from basinlab.data.sequences import SequenceData
from basinlab.diffusion import Denoiser
from basinlab.errors import BasinlabError
from basinlab.io import atomic_write_text, check_output_dir
from basinlab.models import resolve_device
from basinlab.oracles.build import build_oracle, oracle_label
from basinlab.probes import SETS, ProbeResult, probes_for, resolve_probe_config, restore_examples, run_suite
from basinlab.probes.plots import write_plots
from basinlab.probes.protocol import resolve_weights
from basinlab.probes.suite import all_probes, check_selection
from basinlab.registry import FAMILIES, ORACLES, PROCESSES, PROTOCOLS, WEIGHTS, listing
from basinlab.training.checkpoint import load_config_file, loads_in_place, require_checkpoint


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "probe",
        help="associative-memory tests (SPEC 5) of a trained model or an exact oracle",
        description=(
            "Run the associative-memory tests of SPEC 5 (basins = perturb and restore, fixed points, conditional "
            "entropy, novelty of generated samples, likelihood) on a trained model (--checkpoint) or an exact "
            "oracle (--oracle: the memoriser of the training subset, or the Markov generaliser). Writes "
            "results.csv, summary.json and PNG plots to --out and prints a short table."
        ),
        epilog=(
            "examples:\n"
            "  basinlab probe all --checkpoint runs/markov-256 --quick --out runs/markov-256/probes\n"
            "  basinlab probe basins markov data.n_train=256 --oracle markov --n 128 --steps 100\n"
            "  basinlab probe basins --checkpoint runs/demo --show 4 --show-t 0.25\n\n"
            "registered names:\n" + listing(PROCESSES, FAMILIES, ORACLES, PROTOCOLS, WEIGHTS)
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = (*(w.replace("_", "-") for w in all_probes()), "all")
    p.add_argument("which", choices=which, help="which test (all: every test)")
    p.add_argument("config_args", nargs="*", metavar="[CONFIG] [key=value ...]",
                   help="for --oracle, or --checkpoint of a model loaded in place (LLaDA, Dream): a YAML config or "
                        "preset name for the data, then overrides (e.g. data.n_train=256); with --checkpoint of a "
                        "run only probe.* overrides are allowed")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", metavar="PATH",
                     help="run directory, checkpoint directory, or a deployed model's own directory "
                          "(DiffusionGemma, LLaDA, Dream: then CONFIG gives the data; docs/INTEROP.md)")
    src.add_argument("--oracle", choices=ORACLES.names(), help="probe an exact oracle (SPEC 6)")
    p.add_argument("--set", dest="sets", action="append", choices=SETS,
                   help="set to probe (repeatable; default train, test and random)")
    p.add_argument("--n", type=int, help="M, sequences per set (default probe.m)")
    p.add_argument("--quick", action="store_true",
                   help="M <= 128, T <= 25, 64 samples: about a CPU minute on a micro model")
    p.add_argument("--steps", type=int, help="T, the grid over [t_min, 1] (default probe.steps)")
    p.add_argument("--ts", help="comma-separated corruption levels t for the basin test (default probe.ts)")
    p.add_argument("--samples", type=int,
                   help="generated samples for novelty and the entropy gap (default probe.n_samples)")
    p.add_argument("--trajectory", action="store_true", help="entropy along the reverse chain from t = 1 as well")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", metavar="DIR", help="write results.csv, summary.json and plots to DIR")
    p.add_argument("--show", type=int, default=0, metavar="K",
                   help="print K test sequences: original, corrupted at --show-t, restored")
    p.add_argument("--show-t", type=float, default=0.25, help="corruption level for --show (default 0.25)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    p.add_argument("--batch-size", type=int, help="sequences per batch (default probe.batch_size)")
    p.add_argument("--raw", action="store_true",
                   help="with --checkpoint: the raw weights, as probe.weights=raw (default: ema, raw under "
                        "probe.protocol=paper)")
    p.add_argument("--top-k", type=int, help="with --oracle empirical: keep the K nearest training sequences")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_probe)


# ---- building the pieces ----------------------------------------------------------------------------------------


def _split_config_args(items: list[str]) -> tuple[str | None, list[str]]:
    configs = [a for a in items if "=" not in a]
    overrides = [a for a in items if "=" in a]
    if len(configs) > 1:
        raise BasinlabError(f"give at most one CONFIG (got {', '.join(configs)}); overrides look like key=value")
    return (configs[0] if configs else None), overrides


def _parse_ts(text: str) -> list[float]:
    try:
        ts = [float(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise BasinlabError(f"--ts must be comma-separated numbers in (0, 1], got '{text}'") from None
    if not ts or any(not (0.0 < t <= 1.0) for t in ts):
        raise BasinlabError(f"--ts must be comma-separated numbers in (0, 1], got '{text}'")
    return ts


def _probe_config(cfg: Config, args: argparse.Namespace) -> ProbeConfig:
    pc = cfg.probe
    if args.quick:
        pc.quick = True
    pc = resolve_probe_config(pc)
    if args.n is not None:
        pc.m = args.n
    if args.steps is not None:
        pc.steps = args.steps
    if args.ts is not None:
        pc.ts = _parse_ts(args.ts)
    if args.samples is not None:
        pc.n_samples = args.samples
    if args.batch_size is not None:
        pc.batch_size = args.batch_size
    if docs_toy():
        apply_docs_toy_probe(pc)
    for name in ("m", "steps", "batch_size"):
        if int(getattr(pc, name)) < 1:
            raise BasinlabError(f"probe.{name} must be >= 1, got {getattr(pc, name)}")
    if pc.n_samples is not None and pc.n_samples < 0:
        raise BasinlabError(f"probe.n_samples must be >= 0 (or null for the default), got {pc.n_samples}")
    return pc


def _build(args: argparse.Namespace) -> tuple[Denoiser, SequenceData, Config, str]:
    """``(denoiser, data, cfg, label)`` for a checkpoint or an oracle."""
    config, overrides = _split_config_args(args.config_args)
    if args.checkpoint and (family := loads_in_place(args.checkpoint)) is not None:
        return _build_in_place(args, family, config, overrides)
    if args.checkpoint:
        if config is not None:
            raise BasinlabError("with --checkpoint the data and model come from the checkpoint: drop the CONFIG "
                                f"'{config}' (only probe.* overrides are allowed)")
        bad = [o for o in overrides if not o.strip().startswith("probe.")]
        if bad:
            raise BasinlabError(f"with --checkpoint only probe.* overrides are allowed, got {', '.join(bad)}")
        values = load_config_file(require_checkpoint(args.checkpoint)).to_dict()
        for k, v in parse_overrides(overrides).get("probe", {}).items():
            values["probe"][k] = v
        cfg = config_from_dict(values)
        # probe.weights (null: ema under exact, raw under paper); --raw forces the raw weights
        cfg.probe.weights = "raw" if args.raw else resolve_weights(cfg.probe.weights, cfg.probe.protocol)
        tm = basinlab.load(args.checkpoint, device=args.device, ema=WEIGHTS.get(cfg.probe.weights).ema)
        return tm.denoiser, tm.dataset(), cfg, f"checkpoint:{tm.path}"
    cfg = load_config(config, overrides)
    kind = ORACLES.get(args.oracle)
    if kind.sources is not None and cfg.data.source not in kind.sources:
        raise BasinlabError(f"--oracle {kind.name} needs {kind.needs}")
    data = build_dataset(cfg.data)
    den = build_oracle(args.oracle, data, cfg.data.n_train, cfg, device=resolve_device(args.device), top_k=args.top_k)
    return den, data, cfg, oracle_label(args.oracle, cfg.train.process)


def _build_in_place(args: argparse.Namespace, family: Any, config: str | None,
                    overrides: list[str]) -> tuple[Denoiser, SequenceData, Config, str]:
    """A deployed model's own directory (SPEC 2c: LLaDA, Dream) probed on the data of ``CONFIG``: it has none."""
    import torch

    if config is None:
        raise BasinlabError(f"{args.checkpoint} is a {family.name} model loaded in place, without data: give a CONFIG "
                            f"whose data the probes use (basinlab probe CONFIG --checkpoint {args.checkpoint}), or "
                            "audit texts with basinlab audit")
    cfg = load_config(config, overrides)
    tm = basinlab.load(args.checkpoint, device=args.device, batch_size=cfg.probe.batch_size)
    data = build_dataset(cfg.data)
    fixed = not getattr(tm.model, "variable_length", False)  # DiffusionGemma: one canvas of tm.seq_len tokens
    if data.vocab_size > tm.vocab_size or (fixed and data.seq_len != tm.seq_len):
        raise BasinlabError(f"{args.checkpoint}: the data (V={data.vocab_size}, L={data.seq_len}) must fit the model "
                            f"(V={tm.vocab_size}, L={tm.seq_len}): set data.seq_len={tm.seq_len} and fewer tokens")
    family.check_data(tm.process, int(data.vocab_size), torch.cat([data.train(cfg.data.n_train), data.test]),
                      f"{config} on {args.checkpoint}")
    return tm.denoiser, data, cfg, f"checkpoint:{tm.path}"


# ---- the command --------------------------------------------------------------------------------------------------


def cmd_probe(args: argparse.Namespace) -> int:
    if args.show < 0:
        raise BasinlabError(f"--show must be >= 0, got {args.show}")
    if not 0.0 < args.show_t <= 1.0:
        raise BasinlabError(f"--show-t must lie in (0, 1], got {args.show_t}")
    out = Path(args.out) if args.out else None
    if out is not None:
        check_output_dir(out, "--out")
    denoiser, data, cfg, label = _build(args)
    if args.oracle and not getattr(denoiser, "finite_likelihood", True):
        print(f"{args.oracle} oracle: memorises N = {cfg.data.n_train} training sequences (data.n_train)")
    pc = _probe_config(cfg, args)
    names = list(dict.fromkeys(args.sets or SETS))
    which = probes_for(denoiser) if args.which == "all" else (args.which.replace("-", "_"),)
    check_selection(which, names)
    try:
        result = run_suite(denoiser, data, pc, n_train=cfg.data.n_train, seed=args.seed, probes=which, sets=names,
                           progress=not args.quiet, trajectory=args.trajectory)
    except Exception as exc:
        _keep_partial(exc, out, cfg, pc, label, args, names, data)
        raise
    examples = None
    if args.show:
        examples = restore_examples(denoiser, data, k=args.show, t=args.show_t, steps=pc.steps, seed=args.seed)
    _print_table(result.rows)
    _print_process_notes(denoiser, result.rows, pc.remask)
    if examples:
        _print_examples(examples)
    if out is not None:
        _write(out, result, examples, cfg, pc, label, args, names, data)
        print(f"wrote {out}/results.csv, summary.json and plots")
    return 0


def _keep_partial(exc: Exception, out: Path | None, cfg: Config, pc: ProbeConfig, label: str,
                  args: argparse.Namespace, names: list[str], data: SequenceData) -> None:
    """A probe failed after others finished (issue 25): write their rows to ``--out`` and, for bad input, say so
    in the one error line."""
    partial = getattr(exc, "partial", None)
    if out is None or not isinstance(partial, ProbeResult) or not partial.rows:
        return
    _write(out, partial, None, cfg, pc, label, args, names, data)
    done = sorted({r["probe"] for r in partial.rows})
    if isinstance(exc, BasinlabError):
        raise BasinlabError(f"{exc} (the rows of the probes that finished, {', '.join(done)}, are in "
                            f"{out}/results.csv)") from None


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _print_table(rows: list[dict[str, Any]]) -> None:
    """One line per (probe, metric, t), one column per set: value [ci_low, ci_high]."""
    keep = {
        "recovery_rate", "exact_match", "unstable_rate", "basin_radius", "basin_area", "fixed_point_rate",
        "entropy", "entropy_gap", "entropy_recovered", "entropy_failed", "entropy_stable", "entropy_unstable",
        "nelbo", "ppl_bound", "copy_rate",
        "nn_hamming_train", "nn_hamming_test", "novel_4gram_rate", "sample_fixed_point_rate", "spurious_rate",
        "entropy_gap_train", "grid_fixed_point_rate", "grid_entropy", "gen_ppl", "sample_entropy",
    }
    sets: list[str] = []
    table: dict[tuple, dict[str, str]] = {}
    for r in rows:
        if r["metric"] not in keep:
            continue
        if r["set"] not in sets:
            sets.append(r["set"])
        key = (r["probe"], r["metric"], r["t"])
        cell = _fmt(r["value"])
        if r["ci_low"] is not None and r["ci_high"] is not None:
            cell += f" [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]"
        table.setdefault(key, {})[r["set"]] = cell
    if not table:
        return
    head = ["probe", "metric", "t"] + sets
    lines = [[k[0], k[1], _fmt(k[2])] + [v.get(s, "") for s in sets] for k, v in table.items()]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=False)]
    for line in [head] + lines:
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=False)).rstrip())


def _print_process_notes(denoiser: Any, rows: list[dict[str, Any]], remask: float) -> None:
    """What the table cannot say for a masked denoiser (SPEC 2b): which outcomes are impossible by construction."""
    from basinlab.diffusion import process_of

    proc = process_of(denoiser)
    if proc.can_change_clean or remask > 0:
        return
    probes = {r["probe"] for r in rows}
    print(f"\n{proc.name} process without remasking: a clean token never changes (SPEC 2b), so")
    if "basins" in probes:
        print("- unstable_rate is not reported: an 'unstable' outcome is impossible by construction;")
    if "fixed_points" in probes or "novelty" in probes:
        print("- every clean sequence is a fixed point by construction (fixed_point_rate 1);")
    print("- set probe.remask=ETA (ReMDM, 0 < ETA <= 1) for a sampler under which clean tokens can change.")


def _print_examples(ex: dict[str, Any]) -> None:
    print(f"\nrestoring test sequences corrupted at t = {ex['t']:g} ({ex['steps']} steps):")
    for i, it in enumerate(ex["examples"]):
        print(f"[{i}] changed {it['changed']}, recovered {it['recovered']}{', exact' if it['exact'] else ''}")
        for name in ("original", "corrupted", "restored"):
            print(f"  {name:<9}: {it['text'][name]}")


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def _write(out: Path, result: ProbeResult, examples: dict[str, Any] | None, cfg: Config, pc: ProbeConfig,
           label: str, args: argparse.Namespace, names: list[str], data: SequenceData) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.csv", result.to_frame().to_csv(index=False))
    summary = {
        "probe": args.which,
        "options": {k: v for k, v in vars(args).items() if k != "func"},
        "denoiser": label,
        "seed": args.seed,
        "sets": {k: int(min(pc.m, _set_size(data, k, cfg.data.n_train))) for k in names},
        "probe_config": dataclasses.asdict(pc),
        "config": cfg.to_dict(),
        "rows": result.rows,
    }
    atomic_write_text(out / "summary.json", json.dumps(_jsonable(summary), indent=1, allow_nan=False) + "\n")
    if examples:
        atomic_write_text(out / "examples.json", json.dumps(_jsonable(examples), indent=1) + "\n")
    write_plots(result, out)


def _set_size(data: SequenceData, name: str, n_train: int) -> int:
    if name == "train":
        return min(n_train, data.pool_size)
    if name == "test":
        return int(data.test.shape[0])
    return 1 << 62
