"""`hataori api` through the official openai client against live servers on 127.0.0.1: chat and
completions, streamed and not, n, seeds, stop strings, every error status, a client that leaves
mid-stream, and replies equal to hataori's own generation (`hataori chat`'s Chat, `hataori
generate --temperature 0`), alone and while other requests share the batch."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from api_servers import API_KEY, TEMPLATE, build_app, health, live_server, make_models, wait_idle
from model.chat import Chat
from model.checkpoint import load_pretrained
from model.config import EOT
from model.generate import generate
from pipeline.api.text import TextStream
from tokenizer_rs import Tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    return make_models(tmp_path_factory.mktemp("api-models"))


@pytest.fixture(scope="module")
def tok(models) -> Tokenizer:
    return Tokenizer.from_file(str(models["tokenizer"]))


@pytest.fixture(scope="module")
def chat_url(models):
    """The instruction-tuned model behind an API key."""
    with live_server(build_app(models["instruct"], "instruct", api_key=API_KEY, max_batch=4)) as url:
        yield url


@pytest.fixture(scope="module")
def base_url(models):
    """The base model (2048-token window): one row, no queue, small bodies."""
    with live_server(build_app(models["base"], "base", max_batch=1, max_queue=0, max_body_bytes=4096)) as url:
        yield url


def client(url: str, key: str = API_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)


def local_generate(path: Path, tok: Tokenizer, prompt: str, max_tokens: int, **kw) -> str:
    model, _ = load_pretrained(path)
    ids = list(generate(model.eval(), tok.encode(prompt), max_tokens, stop_id=tok.token_to_id(EOT), **kw))
    stream = TextStream(tok, [])
    return "".join(stream.feed(t) for t in ids) + stream.finish()


# ---------------------------------------------------------------------------------- text


def test_stop_strings_are_cut_even_across_tokens(tok):
    text = "The sky is blue. Hello there"
    ids = tok.encode(text)
    for stop, expected in [("blue", "The sky is "), ("is b", "The sky "), ("s", "The "), ("nowhere", text),
                           ("e", "Th")]:
        stream = TextStream(tok, [stop, "zzz"])
        shown = [stream.feed(t) for t in ids] + [stream.finish()]
        assert "".join(shown) == expected == stream.text, stop
        assert stream.stopped == (stop in text)
    # Characters split across byte-level tokens come out whole: some tokens show nothing by themselves.
    ja = "日本語の文も少し。"
    stream = TextStream(tok, ["少"])
    shown = [stream.feed(t) for t in tok.encode(ja)]
    assert "".join(shown) == "日本語の文も" and "" in shown and "\ufffd" not in stream.text


# ---------------------------------------------------------------------------------- chat


def test_models_and_health(chat_url, base_url):
    assert [m.id for m in client(chat_url).models.list().data] == ["instruct"]
    assert client(chat_url).models.retrieve("instruct").id == "instruct"
    state = health(chat_url)
    assert state["chat"] is True and state["auth"] is True and state["context_length"] == 128
    assert health(base_url)["chat"] is False


def test_chat_replies_as_hataori_chat_does(chat_url, models, tok):
    """Greedy replies equal model.chat.Chat's with the same history, in the checkpoint's template,
    oldest turns dropped alike when the window overflows."""
    model, directory = load_pretrained(models["instruct"])
    history = [("What color is the sky?", "The sky is blue."), ("Say hello.", "Hello there, nice to meet you."),
               ("The river runs past the mountains and the weather turns cold.", "Yes, it does.")]
    for turns in (history[:1], history * 3):
        session = Chat(model.eval(), tok, template=TEMPLATE, temperature=0.0, max_new_tokens=20)
        session.history = list(turns)
        prompt = session.prompt_ids("What color is the sky?")
        expected = "".join(session.reply("What color is the sky?"))
        messages = [m for user, reply in turns for m in ({"role": "user", "content": user},
                                                        {"role": "assistant", "content": reply})]
        raw = client(chat_url).chat.completions.with_raw_response.create(
            model="instruct", messages=messages + [{"role": "user", "content": "What color is the sky?"}],
            temperature=0, max_tokens=20)
        reply = raw.parse()
        assert reply.choices[0].message.content == expected and reply.choices[0].message.role == "assistant"
        assert int(raw.headers["x-dropped-turns"]) == session.dropped_turns
        assert reply.usage.prompt_tokens == len(prompt)
        assert reply.usage.completion_tokens <= 20 and reply.choices[0].finish_reason in ("stop", "length")
    assert session.dropped_turns > 0  # the long history did overflow


def test_streaming_equals_non_streaming(chat_url):
    c = client(chat_url)
    ask = dict(model="instruct", messages=[{"role": "system", "content": "Be brief."},
                                           {"role": "user", "content": "Say hello."}], max_tokens=25, seed=7,
               temperature=1.0)
    whole = c.chat.completions.create(**ask)
    chunks = list(c.chat.completions.create(**ask, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == whole.choices[0].message.content
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert len([ch for ch in chunks if ch.choices and ch.choices[0].delta.content]) > 3  # token by token

    completion = dict(model="instruct", prompt="The river", max_tokens=25, seed=3)
    whole = c.completions.create(**completion)
    streamed = list(c.completions.create(**completion, stream=True))
    assert "".join(ch.choices[0].text for ch in streamed) == whole.choices[0].text
    assert streamed[-1].choices[0].finish_reason == whole.choices[0].finish_reason


def test_n_seeds_and_stop(chat_url):
    c = client(chat_url)
    ask = dict(model="instruct", prompt="Q: Say hello.\nA:", max_tokens=30, temperature=1.2)
    three = c.completions.create(**ask, n=3, seed=11)
    assert [ch.index for ch in three.choices] == [0, 1, 2]
    lone = [c.completions.create(**ask, seed=11 + i) for i in range(3)]
    assert [ch.text for ch in three.choices] == [r.choices[0].text for r in lone]  # choice i: seed + i
    assert len({ch.text for ch in three.choices}) > 1
    assert three.usage.completion_tokens == sum(r.usage.completion_tokens for r in lone)
    assert three.usage.prompt_tokens == lone[0].usage.prompt_tokens  # the prompt counts once
    two_prompts = c.completions.create(model="instruct", prompt=["The sky", "Hello"], max_tokens=5, n=2, temperature=0)
    assert len(two_prompts.choices) == 4 and two_prompts.choices[0].text == two_prompts.choices[1].text

    greedy = c.completions.create(model="instruct", prompt="The sky", max_tokens=30, temperature=0).choices[0].text
    stop = greedy[len(greedy) // 2: len(greedy) // 2 + 2]
    cut = greedy.index(stop)
    stopped = c.completions.create(model="instruct", prompt="The sky", max_tokens=30, temperature=0, stop=[stop, "@@"])
    assert stopped.choices[0].text == greedy[:cut] and stopped.choices[0].finish_reason == "stop"
    streamed = list(c.completions.create(model="instruct", prompt="The sky", max_tokens=30, temperature=0, stop=stop,
                                         stream=True))
    assert "".join(ch.choices[0].text for ch in streamed) == greedy[:cut]
    assert streamed[-1].choices[0].finish_reason == "stop"
    wait_idle(chat_url)  # the stopped rows were freed


# ---------------------------------------------------------------------------------- errors


def test_each_error_status(chat_url, base_url):
    c = client(chat_url)
    with pytest.raises(openai.AuthenticationError) as e:
        client(chat_url, key="wrong").models.list()
    assert e.value.status_code == 401 and "API key" in e.value.message
    with pytest.raises(openai.NotFoundError) as e:
        c.completions.create(model="gpt-4", prompt="hi")
    assert e.value.code == "model_not_found"
    bad = [dict(temperature=5), dict(max_tokens=129), dict(prompt="word " * 200), dict(prompt=[1, 10**6]),
           dict(presence_penalty=1.0), dict(stop=["a", "b", "c", "d", "e"]), dict(n=17)]
    for fields in bad:
        with pytest.raises(openai.BadRequestError) as e:
            c.completions.create(**{"model": "instruct", "prompt": "hi", **fields})
        assert e.value.status_code == 400 and e.value.body["message"], fields
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="instruct", messages=[{"role": "user", "content": "hi " * 300}])
    assert e.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as e:
        client(base_url).chat.completions.create(model="base", messages=[{"role": "user", "content": "hi"}])
    assert e.value.code == "model_not_chat" and "never instruction-tuned" in e.value.message
    with pytest.raises(openai.UnprocessableEntityError) as e:
        c.post("/completions", content=b'{"model": "instruct", "prompt": ', cast_to=object,
               options={"headers": {"Content-Type": "application/json"}})
    assert e.value.code == "json_invalid"
    with pytest.raises(openai.APIStatusError) as e:
        client(base_url).completions.create(model="base", prompt="x" * 5000)
    assert e.value.status_code == 413
    chunked = httpx.post(f"{base_url}/v1/completions", content=iter([b'{"prompt": "', b"x" * 3000, b"x" * 3000]),
                         headers={"Content-Type": "application/json"})  # no Content-Length: counted as it comes
    assert chunked.status_code == 413 and chunked.json()["error"]["code"] == "body_too_large"
    # Errors are OpenAI's JSON, never a traceback.
    response = httpx.get(f"{chat_url}/v1/nowhere")
    assert response.status_code == 404 and set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in response.text


def test_busy_server_answers_503_and_a_client_that_leaves_frees_its_row(base_url):
    """The base server has one row and no queue. A stream that is dropped mid-way stops at once:
    its row is free again long before its 2000 tokens could have been generated."""
    c = client(base_url)
    before = health(base_url)["tokens"]
    stream = c.completions.create(model="base", prompt="The river", max_tokens=2000, temperature=1.0, stream=True)
    next(iter(stream))
    assert health(base_url)["active"] == 1
    with pytest.raises(openai.APIStatusError) as e:
        c.completions.create(model="base", prompt="hello", max_tokens=5)
    assert e.value.status_code == 503 and e.value.code == "queue_full"
    stream.close()
    wait_idle(base_url)
    assert 0 < health(base_url)["tokens"] - before < 2000

    # A non-streaming request whose client gives up (once it is decoding) is cancelled too.
    async def give_up() -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
            request = asyncio.ensure_future(http.post("/v1/completions", json={"model": "base", "prompt": "The river",
                                                                               "max_tokens": 2000}))
            while (await http.get("/health")).json()["active"] == 0:
                await asyncio.sleep(0.01)
            request.cancel()  # closes the connection
            with contextlib.suppress(asyncio.CancelledError):
                await request

    before = health(base_url)["tokens"]
    asyncio.run(give_up())
    assert 0 < wait_idle(base_url)["tokens"] - before < 2000


# ---------------------------------------------------------------------------------- equality


def test_greedy_equals_generate_alone_and_beside_other_requests(chat_url, models, tok):
    prompts = ["The sky", "Q: Say hello.\nA:", "The river runs", "日本語", "Hello there, nice"]
    expected = [local_generate(models["instruct"], tok, p, 40, temperature=0.0) for p in prompts]
    c = client(chat_url)
    with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
        got = list(pool.map(lambda p: c.completions.create(model="instruct", prompt=p, max_tokens=40,
                                                           temperature=0).choices[0].text, prompts))
    assert got == expected
    seeded = local_generate(models["instruct"], tok, "The sky", 40, temperature=0.9, top_k=20, seed=5)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda _: c.completions.create(model="instruct", prompt="The sky", max_tokens=40,
                                                            temperature=0.9, seed=5, extra_body={"top_k": 20})
                             .choices[0].text, range(4)))
    assert runs == [seeded] * 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hataori(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, **kw)


@pytest.mark.slow
def test_hataori_api_command_serves_what_hataori_generate_prints(models):
    refused = hataori("api", "--checkpoint", str(models["base"]), "--host", "0.0.0.0")
    assert refused.returncode == 2 and b"error: binding 0.0.0.0" in refused.stderr and b"--api-key" in refused.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = hataori("api", "--checkpoint", str(models["base"]), "--port", str(taken.getsockname()[1]))
    assert busy.returncode == 2 and b"error: cannot listen on 127.0.0.1 port" in busy.stderr, busy.stderr
    prompt = "The river runs past"
    printed = hataori("generate", prompt, "--checkpoint", str(models["base"]), "--temperature", "0",
                      "--max-new-tokens", "60")
    assert printed.returncode == 0, printed.stderr
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "api", "--checkpoint", str(models["base"]),
                               "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                health(url)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, server.stdout.read().decode()[-2000:]
                time.sleep(0.2)
        reply = client(url).completions.create(model="base", prompt=prompt, max_tokens=60, temperature=0)
        assert reply.choices[0].text == printed.stdout.decode()[:-1]  # generate ends with a newline
    finally:
        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=60)
    assert server.returncode == 0, out.decode()[-2000:]
    assert b"serving base on http://127.0.0.1:" in out
