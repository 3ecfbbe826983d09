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
        bar = progress_bar(1000, "basins train", stream=stream, every_s=0.0, min_gap_s=0.0)
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


def test_a_line_per_tenth_of_the_total(caplog):
    with caplog.at_level(logging.INFO, logger="basinlab.progress"):
        bar = progress_bar(3600, "train", stream=io.StringIO(), every_s=3600.0, initial=100, min_gap_s=0.0)
        for _ in range(3500):
            bar.update(1)
        bar.close()
    counts = [int(r.getMessage().split(": ")[1].split("/")[0]) for r in caplog.records]
    assert counts == [360 * k for k in range(1, 11)]  # 10%, 20%, ..., 100%; the close adds none


def test_a_short_training_logs_few_lines(tmp_path):
    """Issue 17.6: a training with stdout and stderr redirected to a file writes a line per 10%, not a bar update
    per step (a demo worker log held ~3,400 progress updates per training)."""
    import subprocess
    import sys

    log = tmp_path / "train.log"
    with open(log, "w") as f:
        subprocess.run([sys.executable, "-m", "basinlab.cli", "train", "demo", "data.n_train=8", "data.markov_pool=300",
                        "data.n_test=20", "model.n_layer=1", "model.d_model=32", "model.n_head=2", "model.d_cond=16",
                        "train.steps=200", "train.batch_size=4", "train.log_every=10", "train.ckpt_every=100",
                        "train.warmup_steps=2", "train.device=cpu", f"data.cache_dir={tmp_path / 'cache'}",
                        "--out", str(tmp_path / "run")], stdout=f, stderr=subprocess.STDOUT, check=True, timeout=600)
    text = log.read_text()
    progress = [line for line in text.splitlines() if line.startswith("train: ")]
    assert "\r" not in text
    # at most 20/200, 40/200, ..., 200/200 (10% steps at least 1 s apart; a 60 s line on a slow machine)
    assert 1 <= len(progress) <= 12, progress
    assert progress[-1].startswith("train: 200/200")


def test_a_quick_bar_writes_its_closing_line_only(caplog):
    with caplog.at_level(logging.INFO, logger="basinlab.progress"):
        bar = progress_bar(11, "novelty", stream=io.StringIO())
        for _ in range(11):
            bar.update(1)
        bar.close()
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == ["novelty: 11/11"]
