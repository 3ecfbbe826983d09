"""Progress that does not fill log files: a tqdm bar in a terminal; elsewhere (a worker's log file, a pipe, a
batch job) one ``logging`` line at every 10% of the total (at least ``min_gap_s``, 1 s, after the previous line)
or after ``every_s`` seconds (60) without one, whichever comes first, and one at the end; never carriage-return
updates. A run of any length writes at most about ``10 + duration / every_s + 1`` lines; one that ends within a
second, one line."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

#: At most this many seconds between two progress lines outside a terminal.
LOG_EVERY_S = 60.0
#: A line each time this fraction of the total is passed...
LOG_EVERY_FRACTION = 0.1
#: ...unless the last line is younger than this (a bar that ends in a second writes its closing line only).
LOG_MIN_GAP_S = 1.0


class LogProgress:
    """The part of tqdm's interface basinlab uses (``update``, ``set_postfix``, ``close``), written as log lines."""

    def __init__(self, total: int | None, desc: str, initial: int = 0, every_s: float = LOG_EVERY_S,
                 min_gap_s: float = LOG_MIN_GAP_S) -> None:
        self.total, self.desc, self.n, self.every_s = total, desc, int(initial), float(every_s)
        self.min_gap_s = float(min_gap_s)
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
        hit = self.n >= self._next
        if hit:
            self._next = self._milestone_after(self.n)
        # a milestone right after another line (half a step on, or within min_gap_s) adds nothing: skip it
        fresh = self.n - self._logged_n >= self._step / 2 and now - self._last >= self.min_gap_s if hit else False
        if fresh or now - self._last >= self.every_s:
            self._log(now)

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
    every_s: float = LOG_EVERY_S, min_gap_s: float = LOG_MIN_GAP_S,
) -> tqdm | LogProgress:
    """A tqdm bar when ``stream`` (default stderr) is a terminal, else a :class:`LogProgress`; disabled: silent."""
    stream = sys.stderr if stream is None else stream
    if not enabled:
        return tqdm(total=total, disable=True)
    if getattr(stream, "isatty", lambda: False)():
        return tqdm(total=total, desc=desc, initial=initial, leave=False, dynamic_ncols=True, file=stream)
    return LogProgress(total, desc, initial=initial, every_s=every_s, min_gap_s=min_gap_s)
