"""A launched worker process ends with its launcher, even one killed by SIGKILL (issue 10, item 11).

Standard library only, so that ``python -m basinlab.cli`` can call :func:`die_with_launcher` before its heavy
imports: a worker whose launcher dies while it still imports torch ends as well.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

#: Environment variable telling a launched worker its launcher's pid.
LAUNCHER_ENV = "BASINLAB_LAUNCHER_PID"

_linked = False


def die_with_launcher() -> None:
    """When ``$BASINLAB_LAUNCHER_PID`` names this process's parent: on Linux ask the kernel for SIGTERM when the
    parent dies (``prctl(PR_SET_PDEATHSIG)``); everywhere start a watchdog thread that checks every second that
    the parent still lives. A no-op without the variable, and on a second call."""
    global _linked
    launcher = int(os.environ.get(LAUNCHER_ENV, "0") or 0)
    if _linked or not launcher:
        return
    _linked = True
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != launcher:  # the launcher died before the prctl above took effect
        os.kill(os.getpid(), signal.SIGTERM)

    def watch() -> None:
        while os.getppid() == launcher:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True, name="launcher-watchdog").start()
