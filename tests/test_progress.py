"""Progress outside a terminal (issue 11, item 6): log lines now and then, never carriage-return bar updates."""

from __future__ import annotations

import io
import logging

from basinlab.progress import LogProgress, progress_bar


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_file_gets_lines_not_bars(caplog):
    stream = io.StringIO()  # a worker's log file: not a terminal
    with caplog.at_level(logging.INFO, logger="basinlab.progress"):
        bar = progress_bar(1000, "basins train", stream=stream, every_s=0.0)
        assert isinstance(bar, LogProgress)
        for _ in range(3):
            bar.update(10)
        bar.set_postfix(loss="0.1234")
        bar.update(970)
        bar.close()
        bar.close()  # once
    assert stream.getvalue() == ""
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4 and lines[-1].startswith("basins train: 1000/1000") and "loss=0.1234" in lines[-1]
    assert not any("\r" in line for line in lines)


def test_lines_are_spaced_in_time(caplog):
    with caplog.at_level(logging.INFO, logger="basinlab.progress"):
        bar = progress_bar(10**6, "train", stream=io.StringIO(), every_s=3600.0)
        for _ in range(10**4):
            bar.update(1)
        bar.close()
    assert len(caplog.records) == 1  # only the closing line


def test_a_terminal_gets_a_bar_and_disabled_is_silent():
    tty = _Tty()
    bar = progress_bar(5, "x", stream=tty)
    bar.update(5)
    bar.close()
    assert "\r" in tty.getvalue() or "5/5" in tty.getvalue()
    quiet = progress_bar(5, "x", enabled=False, stream=tty)
    quiet.update(5)
    quiet.close()
