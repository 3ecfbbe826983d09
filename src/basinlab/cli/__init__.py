"""The ``basinlab`` command. Thin: each subcommand parses, then calls the public function a user would import.

Subcommands live one module per topic (``cli/train.py``, ``cli/probe.py``, ``cli/study.py``), each with a
``register(subparsers)`` that adds its parsers and sets ``func`` on them. Bad input (``BasinlabError``) prints
one line and exits with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from basinlab import __version__
from basinlab.errors import BasinlabError

_MODULES = ("basinlab.cli.train", "basinlab.cli.probe", "basinlab.cli.study", "basinlab.cli.interop",
            "basinlab.cli.audit")


class _Parser(argparse.ArgumentParser):
    """Options and positional ``key=value`` overrides in any order (``train demo --out D train.steps=5``), and a
    usage error in one line (exit code 2)."""

    _intermixing = False

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        if self._intermixing or not any(a.nargs in ("*", "+", "?") for a in self._get_positional_actions()):
            return super().parse_known_args(args, namespace)
        self._intermixing = True  # parse_known_intermixed_args calls parse_known_args itself
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        """As argparse's, but options left over after a subcommand are that subcommand's error: its help is the
        one to read (``basinlab probe basins --bogus`` points at ``basinlab probe --help``)."""
        args, extras = self.parse_known_args(args, namespace)
        if extras:
            sub = self._subcommands.get(getattr(args, "command", None) or "", self)
            sub.error(f"unrecognized arguments: {' '.join(extras)}")
        return args

    @property
    def _subcommands(self) -> dict[str, argparse.ArgumentParser]:
        for action in self._subparsers._group_actions if self._subparsers is not None else []:
            if isinstance(action, argparse._SubParsersAction):
                return dict(action.choices)
        return {}

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"basinlab: error: {message} (see `{self.prog} --help`)\n")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at each record (tests and callers may swap it)."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


_HF_SILENCED = False


def _hf_progress_bars(on: bool) -> None:
    """``--quiet`` silences transformers' and huggingface_hub's own bars (transformers' "Loading weights") too,
    whether or not they are imported yet; a later command without it gets them back."""
    global _HF_SILENCED
    if on == (not _HF_SILENCED):
        return
    try:
        from huggingface_hub import utils as hub
    except ImportError:  # no gen-PPL extra: nothing of theirs will draw a bar
        return
    (hub.enable_progress_bars if on else hub.disable_progress_bars)()
    if "transformers" in sys.modules:
        tl = sys.modules["transformers"].utils.logging
        (tl.enable_progress_bar if on else tl.disable_progress_bar)()
    _HF_SILENCED = not on


def configure_logging(quiet: bool = False) -> None:
    """Library modules log through ``logging``; the command shows their INFO lines on stderr (WARNING with
    ``--quiet``), as plain messages."""
    root = logging.getLogger("basinlab")
    root.setLevel(logging.WARNING if quiet else logging.INFO)
    _hf_progress_bars(not quiet)
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="basinlab",
        description="Train discrete diffusion LMs (uniform-noise, and masked/MDLM for contrast) and probe them as "
                    "associative memories.",
    )
    parser.add_argument("--version", action="version", version=f"basinlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in _MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(sub)
    return parser


def _fault(exc: Exception, args: argparse.Namespace | None) -> str | None:
    """The one line of a write the disk refused (full, read-only, failing), else None (a bug: the traceback)."""
    from basinlab.io import disk_fault_line

    paths = [getattr(args, k) for k in ("out", "dir", "checkpoint") if isinstance(getattr(args, k, None), str)]
    return disk_fault_line(exc, paths)


#: the commands a rerun resumes (checkpoints, the sweep's store); Ctrl-C in any other starts over when rerun
RESUMABLE_COMMANDS = ("train", "sweep", "demo")


def _interrupted(command: str | None) -> str:
    if command in RESUMABLE_COMMANDS:
        return "basinlab: interrupted; finished work is saved and a rerun resumes"
    if command is None:
        return "basinlab: interrupted"
    return f"basinlab: interrupted; `basinlab {command}` does not resume: rerun it to start over"


def main(argv: list[str] | None = None) -> int:
    args = None
    try:
        parser = build_parser()  # imports the subcommands' modules: Ctrl-C may land here too
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        configure_logging(quiet=bool(getattr(args, "quiet", False)))
        rc = args.func(args)
    except BasinlabError as exc:
        print(f"basinlab: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a full disk: one line, exit code 1 (a fault, not bad input)
        line = _fault(exc, args)
        if line is None:
            raise
        print(f"basinlab: error: {line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(_interrupted(getattr(args, "command", None)), file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
