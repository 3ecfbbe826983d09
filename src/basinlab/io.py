"""Atomic file writes: a file is either the old one or the complete new one, never half-written."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from basinlab.errors import BasinlabError


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def _existing_ancestor(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def write_error(directory: str | Path, create: bool = False) -> OSError | None:
    """The error of a real write in ``directory`` (created first with ``create``), or None when it is writable.
    A real write, because ``os.access`` says yes to root on a read-only file system."""
    try:
        if create:
            Path(directory).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        return exc
    return None


def check_writable_dir(path: str | Path, what: str) -> None:
    """Refuse, before any long computation, a directory ``path`` that basinlab could not create or write in: a file
    where the directory (or one of its parents) belongs, or a read-only place. ``what`` names the setting."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise BasinlabError(f"{what} '{path}' is a file, not a directory; give a directory path")
    base = _existing_ancestor(path)
    if not base.is_dir():
        raise BasinlabError(f"{what} '{path}': '{base}' is a file, not a directory; give another path")
    exc = write_error(base)
    if exc is not None:
        msg = f"{what} '{path}': cannot write in '{base}' ({exc.strerror}); give a writable directory"
        raise BasinlabError(msg)


def check_writable_file(path: str | Path, what: str) -> None:
    """Refuse a file ``path`` that could not be written: a directory there, or an unwritable parent."""
    path = Path(path)
    if path.is_dir():
        raise BasinlabError(f"{what} '{path}' is a directory; give a file path")
    check_writable_dir(path.parent if str(path.parent) else Path("."), what)
    if path.exists() and not os.access(path, os.W_OK):
        raise BasinlabError(f"{what} '{path}' is not writable")
