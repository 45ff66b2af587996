"""Headless Chromium driven over the DevTools protocol, offline-safe flags (no downloads)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def page_text(url: str, selector: str, until: str, timeout: float = 120.0, reload_after: float = 30.0) -> str:
    """Open url, poll `document.querySelector(selector).innerText` until it contains `until`;
    reload the page once if it has not rendered after `reload_after` seconds (a slow first
    connection on a loaded machine)."""
    import websockets

    port = _port()
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        # its own process group: chromium's helper processes are stopped with it
        proc = subprocess.Popen([chromium(), *FLAGS, f"--user-data-dir={profile}", f"--remote-debugging-port={port}",
                                 url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.time() + timeout
            ws_url = None
            while ws_url is None and time.time() < deadline:
                try:
                    targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2).read())
                    ws_url = next((t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page"), None)
                except OSError:
                    time.sleep(0.2)

            async def poll() -> str:
                async with websockets.connect(ws_url, max_size=None) as ws:
                    text, n = "", 0
                    reload_at = time.time() + reload_after
                    while time.time() < deadline:
                        n += 1
                        if reload_at and time.time() > reload_at:
                            reload_at = 0
                            await ws.send(json.dumps({"id": n, "method": "Page.reload", "params": {}}))
                            n += 1
                        expr = f"(document.querySelector({json.dumps(selector)}) || {{}}).innerText || ''"
                        await ws.send(json.dumps({"id": n, "method": "Runtime.evaluate", "params": {"expression": expr}}))
                        while True:
                            msg = json.loads(await ws.recv())
                            if msg.get("id") == n:
                                break
                        text = msg.get("result", {}).get("result", {}).get("value", "") or ""
                        if until in text:
                            return text
                        await asyncio.sleep(0.25)
                    return text

            if ws_url is None:
                raise RuntimeError("chromium did not open a DevTools endpoint")
            return asyncio.run(poll())
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
