"""Progress that does not fill log files: a tqdm bar in a terminal; elsewhere (a worker's log file, a pipe, a
batch job) one ``logging`` line at every 10% of the total or after ``every_s`` seconds (60) without one, whichever
comes first, and one at the end; never carriage-return updates. A run of any length writes at most about
``10 + duration / every_s + 1`` lines."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

#: At most this many seconds between two progress lines outside a terminal.
LOG_EVERY_S = 60.0
#: A line each time this fraction of the total is passed.
LOG_EVERY_FRACTION = 0.1


class LogProgress:
    """The part of tqdm's interface basinlab uses (``update``, ``set_postfix``, ``close``), written as log lines."""

    def __init__(self, total: int | None, desc: str, initial: int = 0, every_s: float = LOG_EVERY_S) -> None:
        self.total, self.desc, self.n, self.every_s = total, desc, int(initial), float(every_s)
        self.postfix: dict[str, Any] = {}
        self._t0 = self._last = time.monotonic()
        self._logged_n = self.n
        self._closed = False
        self._step = max(1, round(total * LOG_EVERY_FRACTION)) if total else None
        self._next = self._milestone_after(self.n)

    def _milestone_after(self, n: int) -> float:
        return (n // self._step + 1) * self._step if self._step else float("inf")

    def update(self, n: int = 1) -> None:
        self.n += int(n)
        now = time.monotonic()
        if self.n >= self._next or now - self._last >= self.every_s:
            self._log(now)
            self._next = self._milestone_after(self.n)

    def set_postfix(self, **values: Any) -> None:
        self.postfix = dict(values)

    def close(self) -> None:
        if not self._closed and self.n != self._logged_n:
            self._log(time.monotonic())
        self._closed = True

    def _log(self, now: float) -> None:
        of = f"/{self.total}" if self.total else ""
        extra = "".join(f" {k}={v}" for k, v in self.postfix.items())
        logger.info("%s: %d%s (%.0f s)%s", self.desc, self.n, of, now - self._t0, extra)
        self._last, self._logged_n = now, self.n

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(
    total: int | None, desc: str, enabled: bool = True, initial: int = 0, stream: TextIO | None = None,
    every_s: float = LOG_EVERY_S,
) -> tqdm | LogProgress:
    """A tqdm bar when ``stream`` (default stderr) is a terminal, else a :class:`LogProgress`; disabled: silent."""
    stream = sys.stderr if stream is None else stream
    if not enabled:
        return tqdm(total=total, disable=True)
    if getattr(stream, "isatty", lambda: False)():
        return tqdm(total=total, desc=desc, initial=initial, leave=False, dynamic_ncols=True, file=stream)
    return LogProgress(total, desc, initial=initial, every_s=every_s)
