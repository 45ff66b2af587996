"""A headless Chromium tab driven over the DevTools protocol: evaluate JavaScript, wait for a
condition, take screenshots (offline-safe flags from tests/browser.py)."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from browser import FLAGS, _port, chromium


class Tab:
    """`with Tab(url, width, height) as tab: tab.wait("js condition"); tab.eval("js"); tab.screenshot(path)`."""

    def __init__(self, url: str, width: int = 1280, height: int = 1000, timeout: float = 120.0):
        self.url, self.size, self.timeout = url, (width, height), timeout

    def __enter__(self) -> Tab:
        from websockets.sync.client import connect

        port = _port()
        self._profile = tempfile.TemporaryDirectory(ignore_cleanup_errors=True)
        self._proc = subprocess.Popen(
            [chromium(), *FLAGS, f"--user-data-dir={self._profile.name}", f"--remote-debugging-port={port}",
             f"--window-size={self.size[0]},{self.size[1]}", self.url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline, ws_url = time.time() + 60, None
        while ws_url is None and time.time() < deadline:
            try:
                targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2).read())
                ws_url = next((t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page"), None)
            except OSError:
                time.sleep(0.2)
        if ws_url is None:
            self.__exit__()
            raise RuntimeError("chromium did not open a DevTools endpoint")
        self._ws = connect(ws_url, max_size=None)
        self._n = 0
        return self

    def __exit__(self, *exc) -> None:
        if getattr(self, "_ws", None) is not None:
            self._ws.close()
        os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait()
        self._profile.cleanup()

    def call(self, method: str, **params) -> dict:
        self._n += 1
        self._ws.send(json.dumps({"id": self._n, "method": method, "params": params}))
        while True:
            msg = json.loads(self._ws.recv())
            if msg.get("id") == self._n:
                return msg.get("result", {})

    def eval(self, expr: str):
        res = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        return res.get("result", {}).get("value")

    def wait(self, expr: str, timeout: float | None = None):
        """Poll a JavaScript expression until it is truthy; returns its value (None on timeout)."""
        deadline = time.time() + (timeout or self.timeout)
        while time.time() < deadline:
            value = self.eval(expr)
            if value:
                return value
            time.sleep(0.25)
        return None

    def mouse(self, kind: str, x: float, y: float) -> None:
        """A real mouse event at page coordinates: mouseMoved, mousePressed, mouseReleased."""
        extra = {"button": "left", "clickCount": 1} if kind != "mouseMoved" else {}
        self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, **extra)

    def click(self, x: float, y: float) -> None:
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.mouse(kind, x, y)

    def screenshot(self, path: str | Path, full: bool = True) -> Path:
        params = {"format": "png", "captureBeyondViewport": full}
        if full:
            w, h = self.eval("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            params["clip"] = {"x": 0, "y": 0, "width": w, "height": h, "scale": 1}
        data = self.call("Page.captureScreenshot", **params)["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)
