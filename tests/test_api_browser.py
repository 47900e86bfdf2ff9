"""The chat page in a real browser: headless Chromium (Debian's `chromium`, which `make test`
installs when apt can), driven through the DevTools protocol over a websocket. It loads /, a
message is typed and sent with Enter, and the reply streams in token by token, equal to the
API's own greedy reply; the stop button ends a long generation and frees its row on the server.
Without Chromium the test skips with the reason, and fails under CI=true."""

from __future__ import annotations


import openai
import pytest

from api_servers import API_KEY, build_app, health, live_server, make_models, wait_idle
from browser import Page, chromium_path, start_browser  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    yield from start_browser(tmp_path_factory)


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
