"""The ``basinlab`` command. Thin: each subcommand parses, then calls the public function a user would import.

Subcommands live one module per topic (``cli/train.py``, ``cli/probe.py``, ``cli/study.py``), each with a
``register(subparsers)`` that adds its parsers and sets ``func`` on them. Bad input (``BasinlabError``) prints
one line and exits with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from basinlab import __version__
from basinlab.errors import BasinlabError

_MODULES = ("basinlab.cli.train", "basinlab.cli.probe", "basinlab.cli.study", "basinlab.cli.interop")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="basinlab",
        description="Train uniform-noise discrete diffusion LMs and probe them as associative memories.",
    )
    parser.add_argument("--version", action="version", version=f"basinlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except BasinlabError as exc:
        print(f"basinlab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("basinlab: interrupted; finished work is saved and a rerun resumes", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
