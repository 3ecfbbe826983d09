"""Headless Chromium through the DevTools protocol over a pipe (``--remote-debugging-pipe``): open a page, run
script in it, collect console errors, take a screenshot. No Python dependency: the protocol's messages are JSON
separated by NUL bytes on file descriptors 3 (to the browser) and 4 (from it). Used by the browser tests and by
``bench/audit_page.py``; needs a ``chromium`` (Debian package) or Chrome binary on the PATH."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from basinlab.errors import BasinlabError

BINARIES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """The first Chromium/Chrome binary on the PATH, or None."""
    return next((p for p in map(shutil.which, BINARIES) if p), None)


class Browser:
    """One headless browser with one page; ``with Browser() as b: b.open(path); b.eval("1 + 1")``.

    ``errors`` collects console errors, uncaught exceptions and failed loads (``Log``/``Runtime`` events)."""

    def __init__(self, width: int = 1400, height: int = 1000, timeout_s: float = 60.0) -> None:
        binary = find_chromium()
        if binary is None:
            raise BasinlabError("no chromium on the PATH: install it (Debian: apt-get install chromium)")
        self.timeout_s = timeout_s
        self._profile = tempfile.TemporaryDirectory(prefix="basinlab-chromium-")
        to_r, self._to_w = os.pipe()
        self._from_r, from_w = os.pipe()
        def child_fds() -> None:  # the child's fds 3 and 4 must be exactly these pipe ends (inheritable)
            a, b = fcntl.fcntl(to_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [binary, "--headless=new", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
             "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check", "--hide-scrollbars",
             f"--user-data-dir={self._profile.name}", f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=child_fds, close_fds=False,
        )
        os.close(to_r)
        os.close(from_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []
        self.errors: list[str] = []
        target = self._page_target()
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    def _page_target(self) -> str:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            pages = [t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page"]
            if pages:
                return pages[0]["targetId"]
            time.sleep(0.05)
        return self.call("Target.createTarget", {"url": "about:blank"})["targetId"]

    # ---- the protocol ----------------------------------------------------------------------------------------

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict[str, Any]:
        """Send one command and wait for its answer (events that arrive meanwhile are kept)."""
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_w, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._event(reply)

    def send(self, method: str, params: dict | None = None) -> dict[str, Any]:
        """:meth:`call` on the page's session."""
        return self.call(method, params, self.session)

    def _read(self) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout_s
        while b"\0" not in self._buf:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("chromium stopped answering")
            chunk = os.read(self._from_r, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def _event(self, ev: dict[str, Any]) -> None:
        self.events.append(ev)
        m, p = ev.get("method"), ev.get("params", {})
        if m == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            self.errors.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")
        elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            self.errors.append("console.error: " + " ".join(str(a.get("value", a.get("description")))
                                                            for a in p.get("args", [])))
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            self.errors.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}".strip())

    def _wait_event(self, method: str) -> dict[str, Any]:
        start = len(self.events)
        for ev in self.events[start:]:
            if ev.get("method") == method:
                return ev
        while True:
            ev = self._read()
            self._event(ev)
            if ev.get("method") == method:
                return ev

    # ---- what tests use --------------------------------------------------------------------------------------

    def open(self, path: str | Path) -> float:
        """Load a file and wait for its load event; returns the seconds it took."""
        url = Path(path).resolve().as_uri()
        t0 = time.perf_counter()
        self.events.clear()
        self.send("Page.navigate", {"url": url})
        self._wait_event("Page.loadEventFired")
        return time.perf_counter() - t0

    def eval(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        r = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression!r}: {r['exceptionDetails'].get('exception', {}).get('description')}")
        return r.get("result", {}).get("value")

    def screenshot(self, path: str | Path, full_page: bool = False) -> Path:
        """A PNG of the viewport (or, with ``full_page``, of the whole page up to 8000 px high)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            h = min(8000, int(self.eval("document.documentElement.scrollHeight")))
            w = int(self.eval("document.documentElement.scrollWidth"))
            params.update(captureBeyondViewport=True, clip={"x": 0, "y": 0, "width": w, "height": h, "scale": 1})
        data = self.send("Page.captureScreenshot", params)["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_w, self._from_r):
            try:
                os.close(fd)
            except OSError:
                pass
        self._profile.cleanup()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
