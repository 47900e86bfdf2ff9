"""Headless Chromium for tests, driven through the DevTools protocol over a websocket (Debian's
`chromium`, which `make test` installs when apt can). Without Chromium a test skips with the
reason, and fails under CI=true."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest


def chromium_path() -> str:
    found = os.environ.get("HATAORI_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    reason = "no chromium on the PATH (Debian: apt-get install chromium; `make test` does it when it can)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


class Page:
    """One browser tab over the DevTools protocol (commands and their replies; events are skipped)."""

    def __init__(self, ws_url: str):
        from websockets.sync.client import connect

        self.ws = connect(ws_url, max_size=None, open_timeout=30)
        self.ids = itertools.count(1)

    def call(self, method: str, **params):
        call_id = next(self.ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait(self, expression: str, timeout: float = 30.0, every: float = 0.01):
        deadline = time.monotonic() + timeout
        while True:
            value = self.js(expression)
            if value:
                return value
            assert time.monotonic() < deadline, f"timed out waiting for {expression}"
            time.sleep(every)

    def type_into(self, element_id: str, text: str) -> None:
        """Focus and real key input (as if typed), replacing what the field held."""
        self.js(f"(() => {{ const e = document.getElementById({element_id!r}); e.focus(); e.select(); }})()")
        self.call("Input.insertText", text=text)

    def press_enter(self) -> None:
        for kind in ("keyDown", "keyUp"):
            self.call("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter", windowsVirtualKeyCode=13,
                      **({"text": "\r"} if kind == "keyDown" else {}))

    def open(self, url: str) -> None:
        self.call("Page.enable")
        self.call("Page.navigate", url=url)
        self.wait("document.readyState === 'complete'")

    def close(self) -> None:
        self.ws.close()


def start_browser(tmp_path_factory):
    """Headless Chromium; yields a function that opens a new tab on a URL (a generator for a fixture)."""
    exe = chromium_path()
    profile = tmp_path_factory.mktemp("chromium-profile")
    process = subprocess.Popen([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                "--no-first-run", "--no-default-browser-check", "--remote-debugging-port=0",
                                f"--user-data-dir={profile}", "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    port_file = Path(profile) / "DevToolsActivePort"
    deadline = time.monotonic() + 60
    while not port_file.is_file() or not port_file.read_text().strip():
        assert process.poll() is None, f"chromium exited: {process.stderr.read().decode()[-2000:]}"
        assert time.monotonic() < deadline, "chromium did not open its DevTools port"
        time.sleep(0.1)
    port = int(port_file.read_text().split()[0])
    pages = []

    def new_tab(url: str) -> Page:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/json/new?about:blank", method="PUT")
        with urllib.request.urlopen(request, timeout=30) as response:
            page = Page(json.loads(response.read())["webSocketDebuggerUrl"])
        pages.append(page)
        page.open(url)
        return page

    try:
        yield new_tab
    finally:
        for page in pages:
            page.close()
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
