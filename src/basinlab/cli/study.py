"""``basinlab sweep``, ``basinlab report`` and ``basinlab demo``: the study of SPEC 7 from the command line.

Thin wrappers: each parses, then calls :func:`basinlab.study.sweep.run_sweep` or
:func:`basinlab.study.report.write_report`, exactly as a Python user would.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from basinlab.config import Config, load_config
from basinlab.errors import BasinlabError
from basinlab.io import check_writable_dir
from basinlab.study.merge import merge_sweeps
from basinlab.study.report import write_report
from basinlab.study.sweep import expand_devices, parse_shard, plan_lines, run_sweep


def _presets() -> str:
    """The packaged presets, read from the presets directory (a new preset is listed without editing this)."""
    from importlib import resources

    root = Path(str(resources.files("basinlab") / "study" / "presets"))
    return ", ".join(sorted(p.stem for p in root.glob("*.yaml")))


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``sweep``, ``report`` and ``demo`` subcommands."""
    p = sub.add_parser(
        "sweep",
        help="train and probe one model per training-set size N (SPEC 7); resumable, shardable",
        description=(
            "Train one model per training-set size N and seed (same architecture and step budget), run the "
            "associative-memory tests on each and on the exact oracles, and record everything in "
            "OUT/results.sqlite, exported to OUT/results.csv and OUT/results.parquet. Rerunning the same command "
            "resumes: finished runs are skipped, an interrupted training continues from its checkpoint."
        ),
    )
    p.add_argument("config", nargs="?", help=f"YAML config (or a preset name: {_presets()})")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. sweep.sizes=[16,64,256], or a "
                   "geometric range START:STOP[:FACTOR]: sweep.sizes=16:4096 is 16, 32, ..., 4096 (factor 2)")
    p.add_argument("--preset", help=f"a packaged preset ({_presets()}) instead of CONFIG")
    p.add_argument("--out", required=True, help="the sweep directory (created; reused to resume)")
    p.add_argument("--shard", help="run only shard i of n (i/n, 0-based), e.g. for a cluster job array")
    p.add_argument(
        "--devices",
        help="comma-separated devices, one worker process each (e.g. cuda:0,cuda:1 or cpu,cpu; DEV*K repeats, "
        "e.g. cuda:0*4 for four workers on one GPU; auto = cuda:0 if available else cpu); default: sweep.devices",
    )
    p.add_argument("--plan", action="store_true",
                   help="print the runs (of this shard) with their status and training commands, then exit")
    p.add_argument("--report", action="store_true", help="write OUT/report.html when the sweep finishes")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--launch", help=argparse.SUPPRESS)  # claim token of a worker launched by --devices
    p.set_defaults(func=_sweep)

    r = sub.add_parser(
        "report",
        help="write DIR/report.html (and the plots as PNG) from a sweep directory",
        description="Read DIR/results.sqlite (or results.csv) and write DIR/report.html plus one PNG per plot.",
    )
    r.add_argument("dir", help="a sweep directory")
    r.add_argument("--t", type=float, default=None, help="t at which N* is estimated (default: sweep.transition_t)")
    r.set_defaults(func=_report)

    m = sub.add_parser(
        "merge",
        help="merge sweep directories (e.g. one per --shard on NFS) into one",
        description=(
            "Record the finished runs of each DIR in OUT/results.sqlite (created or extended) and export "
            "OUT/results.csv. Each run is recorded once: a run found twice is taken once if its records are "
            "identical and refused otherwise. The inputs must hold the same sweep config."
        ),
    )
    m.add_argument("dirs", nargs="+", metavar="DIR", help="sweep directories")
    m.add_argument("--out", required=True, help="the merged sweep directory")
    m.set_defaults(func=_merge)

    d = sub.add_parser(
        "demo",
        help="run the demo study (about 10-15 min on a 2-core CPU) and write its report",
        description="Run the packaged 'demo' sweep (resumable) and its report, then print where the report is.",
    )
    d.add_argument("overrides", nargs="*", help="section.key=value overrides of the demo preset")
    d.add_argument("--out", default="runs/demo", help="the sweep directory (default runs/demo)")
    d.add_argument("--quiet", action="store_true", help="no progress output")
    d.set_defaults(func=_demo)


def _config(args: argparse.Namespace) -> Config:

    source = args.config
    overrides = list(args.overrides or [])
    if args.preset:
        if source is not None:
            if "=" in source:  # `sweep --preset demo key=value`: the first override landed in CONFIG
                overrides.insert(0, source)
            else:
                raise BasinlabError("give either CONFIG or --preset, not both")
        source = args.preset
    elif source is not None and "=" in source:
        raise BasinlabError(f"'{source}' looks like an override; give CONFIG.yaml or --preset NAME first")
    if source is None:
        raise BasinlabError(f"give a CONFIG.yaml or --preset NAME ({_presets()})")
    return load_config(source, overrides)


def _sweep(args: argparse.Namespace) -> int:

    cfg = _config(args)
    devices = [d.strip() for d in args.devices.split(",") if d.strip()] if args.devices else None
    expand_devices(devices or [], check=False)  # refuses a malformed --devices, --plan or not
    if args.plan:
        for line in plan_lines(cfg, args.out, parse_shard(args.shard)):
            print(line)
        return 0
    out = run_sweep(
        cfg,
        args.out,
        shard=parse_shard(args.shard),
        progress=not args.quiet,
        devices=devices,
        launch=args.launch,
    )
    print(f"results: {out / 'results.csv'}")
    if args.report:
        print(f"report: {write_report(out)}")
    return 0


def _merge(args: argparse.Namespace) -> int:
    check_writable_dir(args.out, "--out")
    out = merge_sweeps(args.dirs, args.out)
    print(f"results: {out / 'results.csv'}")
    return 0


def _report(args: argparse.Namespace) -> int:
    if args.t is not None and not 0.0 < args.t <= 1.0:
        raise BasinlabError(f"--t must lie in (0, 1], got {args.t}")
    path = write_report(args.dir, t=args.t)
    _print_transitions(Path(path).parent / "transition.json")
    print(f"report: {path}")
    return 0


def _print_transitions(path: Path) -> None:
    """One line per model: its N* and interval, as the report's summary says it."""
    import json

    from basinlab.study.transition import Transition

    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    for d in found:
        d["per_seed"] = {int(k): v for k, v in d.get("per_seed", {}).items()}
        print(f"{d['model']}: {Transition(**d).describe()}")


def _demo(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    cfg = load_config("demo", list(args.overrides or []))
    out = run_sweep(cfg, args.out, progress=not args.quiet)
    path = write_report(out)
    minutes = (time.perf_counter() - t0) / 60
    print(f"demo finished in {minutes:.1f} min", file=sys.stderr)
    print(f"report: {Path(path).resolve()}")
    return 0
