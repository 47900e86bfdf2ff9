"""The chat page in a real browser: headless Chromium (Debian's `chromium`, which `make test`
installs when apt can), driven through the DevTools protocol over a websocket. It loads /, a
message is typed and sent with Enter, and the reply streams in token by token, equal to the
API's own greedy reply; the stop button ends a long generation and frees its row on the server.
Without Chromium the test skips with the reason, and fails under CI=true."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import openai
import pytest

from api_servers import API_KEY, build_app, health, live_server, make_models, wait_idle

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


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


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium; yields a function that opens a new tab on a URL."""
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


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return make_models(tmp_path_factory.mktemp("browser-models"))


RECORD_LENGTHS = """(() => {
  window.seenLengths = [];
  new MutationObserver(() => {
    const replies = document.querySelectorAll('.msg.assistant');
    if (replies.length) window.seenLengths.push(replies[replies.length - 1].textContent.length);
  }).observe(document.getElementById('messages'), {subtree: true, childList: true, characterData: true});
})()"""
LAST_REPLY = "(() => { const r = document.querySelectorAll('.msg.assistant'); return r.length ? r[r.length - 1] : null; })()"


def test_the_page_streams_a_reply_and_the_stop_button_cancels(browser, models):
    with live_server(build_app(models["instruct"], "instruct", api_key=API_KEY, max_batch=2)) as url:
        page = browser(url + "/")
        page.wait("document.getElementById('model').textContent.startsWith('instruct')")
        assert page.js("document.getElementById('mode').value") == "chat"
        assert page.js("document.getElementById('key-label').hidden") is False  # the server wants a key
        page.type_into("api-key", API_KEY)
        page.type_into("temperature", "0")
        page.type_into("max-tokens", "40")
        page.js(RECORD_LENGTHS)
        page.type_into("message", "What color is the sky?")
        page.press_enter()
        state = page.wait(f"{LAST_REPLY} && ['done', 'error'].includes({LAST_REPLY}.dataset.state) "
                          f"&& {LAST_REPLY}.dataset.state")
        reply = page.js(f"{LAST_REPLY}.textContent")
        assert state == "done", reply
        expected = openai.OpenAI(base_url=f"{url}/v1", api_key=API_KEY, max_retries=0).chat.completions.create(
            model="instruct", messages=[{"role": "user", "content": "What color is the sky?"}], temperature=0,
            max_tokens=40).choices[0].message.content
        assert reply == expected and reply
        lengths = page.js("window.seenLengths")
        assert len(set(lengths)) >= 3 and lengths == sorted(lengths), lengths  # it grew as tokens came
        assert "tokens/s" in page.js("document.getElementById('stats').textContent")
        assert page.js("document.querySelectorAll('.msg.user')[0].textContent") == "What color is the sky?"

    # The base model has no chat format: the page offers completion. Stop ends a long generation.
    with live_server(build_app(models["base"], "base", max_batch=1)) as url:
        page = browser(url + "/")
        page.wait("document.getElementById('model').textContent.startsWith('base')")
        assert page.js("document.getElementById('mode').value") == "completion"
        assert "never instruction-tuned" in page.js("document.getElementById('notice').textContent")
        before = health(url)["tokens"]
        page.type_into("max-tokens", "2000")
        page.type_into("message", "The river runs")
        page.press_enter()
        page.wait(f"{LAST_REPLY} && {LAST_REPLY}.textContent.length > 0")
        assert page.js("document.getElementById('stop').disabled") is False
        page.js("document.getElementById('stop').click()")
        assert page.wait(f"{LAST_REPLY}.dataset.state !== 'streaming' && {LAST_REPLY}.dataset.state") == "stopped"
        state = wait_idle(url)
        assert state["tokens"] - before < 2000  # cancelled on the server, not run to the end
        assert "stopped by you" in page.js("document.getElementById('stats').textContent")
