"""Progress that does not fill log files: a tqdm bar in a terminal; elsewhere (a worker's log file, a pipe, a
batch job) one ``logging`` line every ``every_s`` seconds and one at the end, never carriage-return updates."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

#: Seconds between two progress lines outside a terminal.
LOG_EVERY_S = 30.0


class LogProgress:
    """The part of tqdm's interface basinlab uses (``update``, ``set_postfix``, ``close``), written as log lines."""

    def __init__(self, total: int | None, desc: str, initial: int = 0, every_s: float = LOG_EVERY_S) -> None:
        self.total, self.desc, self.n, self.every_s = total, desc, int(initial), float(every_s)
        self.postfix: dict[str, Any] = {}
        self._t0 = self._last = time.monotonic()
        self._logged_n = self.n
        self._closed = False

    def update(self, n: int = 1) -> None:
        self.n += int(n)
        now = time.monotonic()
        if now - self._last >= self.every_s:
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
    every_s: float = LOG_EVERY_S,
) -> tqdm | LogProgress:
    """A tqdm bar when ``stream`` (default stderr) is a terminal, else a :class:`LogProgress`; disabled: silent."""
    stream = sys.stderr if stream is None else stream
    if not enabled:
        return tqdm(total=total, disable=True)
    if getattr(stream, "isatty", lambda: False)():
        return tqdm(total=total, desc=desc, initial=initial, leave=False, dynamic_ncols=True, file=stream)
    return LogProgress(total, desc, initial=initial, every_s=every_s)
