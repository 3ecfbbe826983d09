"""Atomic file writes: a file is either the old one or the complete new one, never half-written. Also the checks
of output paths made before long work, the lock of a directory one process writes, and the one-line account of a
write that the disk refused."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
    check_not_dangling(path, what)
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
    check_not_dangling(path, what)
    if path.is_dir():
        raise BasinlabError(f"{what} '{path}' is a directory; give a file path")
    check_writable_dir(path.parent if str(path.parent) else Path("."), what)
    if path.exists() and not os.access(path, os.W_OK):
        raise BasinlabError(f"{what} '{path}' is not writable")


def check_not_dangling(path: str | Path, what: str) -> None:
    """Refuse a symbolic link that leads nowhere (a loop, or a missing target): writing through it fails later."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        try:
            path.resolve(strict=True)
            why = "its target does not exist"
        except RuntimeError:  # Python 3.11 reports a loop so
            why = "a loop of links"
        except OSError as exc:
            why = "a loop of links" if exc.errno == errno.ELOOP else "its target does not exist"
        raise BasinlabError(f"{what} '{path}' is a symbolic link that leads nowhere ({why}); give another path")


def check_output_dir(path: str | Path, what: str = "--out") -> None:
    """Refuse an output directory that is a device or other special file (``/dev/null``), besides what
    :func:`check_writable_dir` refuses."""
    path = Path(path)
    check_not_dangling(path, what)
    if path.exists() and not path.is_dir():
        kind = "a file" if path.is_file() else "a device or special file"
        raise BasinlabError(f"{what} '{path}' is {kind}, not a directory; give a directory path")
    check_writable_dir(path, what)


def input_file_error(path: str | Path) -> str | None:
    """Why ``path`` cannot be read as a text file (missing, a directory, a fifo, a device...), or None."""
    import stat

    p = Path(path)
    if p.is_symlink() and not p.exists():
        return f"'{path}' is a symbolic link that leads nowhere"
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        return f"'{path}' does not exist"
    except OSError as exc:
        return f"cannot read '{path}' ({exc.strerror})"
    if stat.S_ISDIR(mode):
        return f"'{path}' is a directory, not a text file"
    if not stat.S_ISREG(mode):
        device = stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        kind = "a fifo" if stat.S_ISFIFO(mode) else "a device" if device else "a socket"
        return f"'{path}' is {kind}, not a regular text file; copy the texts to a file first"
    if not os.access(p, os.R_OK):
        return f"'{path}' is not readable (permissions)"
    return None


# ---- a lock on a directory one process writes ---------------------------------------------------------------

LOCK_FILE = ".basinlab.lock"


@contextmanager
def directory_lock(directory: str | Path, what: str = "run directory") -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` for the body: a second process that asks for it gets one
    :class:`BasinlabError` line naming the holder's pid. The lock is ``fcntl.flock`` on ``directory/.basinlab.lock``:
    the kernel drops it when its holder exits, however (SIGKILL included), so a crash never leaves it stuck. The
    file is removed on release (the inode is checked after locking, so a racing remover cannot split the lock).
    Where ``flock`` does not exist (Windows), nothing is locked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    path = Path(directory) / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise BasinlabError(
                f"{what} '{directory}' is in use by another basinlab process (pid {holder}); wait for it to finish, "
                "or choose another --out"
            ) from None
        except OSError:  # a file system without flock (some network mounts): go on unlocked, as before
            os.close(fd)
            yield
            return
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the file we locked was removed by its previous holder: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
        os.close(fd)


# ---- a write the disk refused ---------------------------------------------------------------------------------

_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def disk_fault_line(exc: BaseException, paths: list[str | Path]) -> str | None:
    """One line for a write that failed because the disk is full (or read-only, or failing), naming the path;
    None when ``exc`` is something else. torch and safetensors wrap the OS error in their own exceptions, so a
    full disk is also recognised by its message, or by no free space left where ``paths`` lie."""
    import shutil

    code = getattr(exc, "errno", None)
    name = getattr(exc, "filename", None)
    text = str(exc)
    full = code in _FULL or "No space left on device" in text or "os error 28" in text
    # torch.save reports a failed write without its errno ("unexpected pos", "file write failed")
    torch_write = not full and ("inline_container" in text or "PytorchStreamWriter" in text)
    io_like = isinstance(exc, (OSError, RuntimeError)) or "Safetensor" in type(exc).__name__
    if io_like and not full and not torch_write and code not in (errno.EROFS, errno.EIO):
        for p in paths:
            try:
                if shutil.disk_usage(_existing_ancestor(Path(p))).free < 64 * 1024:
                    full, name = True, name or p
                    break
            except OSError:
                continue
    where = name or (paths[0] if paths else None)
    at = f" writing '{where}'" if where else ""
    if full:
        return (f"no space left on the device{at}; free some space and rerun the same command (checkpoints and "
                "finished results already written are intact)")
    if torch_write:
        return (f"a write failed{at} (a full or failing disk); free some space and rerun the same command "
                "(checkpoints and finished results already written are intact)")
    if code == errno.EROFS:
        return f"the file system is read-only{at}; choose a writable --out"
    if code == errno.EIO:
        return f"input/output error{at} (a failing disk or network mount); check the device and rerun"
    return None


class _Recorder:
    """A file object that keeps the ``OSError`` of a failed write (torch.save reports it only as "unexpected pos")."""

    def __init__(self, fh) -> None:
        self.fh, self.error = fh, None

    def write(self, data) -> int:
        try:
            return self.fh.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.fh.flush()


def torch_save(obj, path: str | Path) -> None:
    """``torch.save(obj, path)``, raising the ``OSError`` (ENOSPC...) of a failed write rather than torch's
    ``RuntimeError`` without an errno, so that a full disk is reported as such."""
    import torch

    with open(path, "wb") as fh:
        rec = _Recorder(fh)
        try:
            torch.save(obj, rec)
        except RuntimeError:
            if rec.error is not None:
                raise rec.error from None
            raise
