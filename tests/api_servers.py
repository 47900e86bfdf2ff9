"""Tiny models and live `hataori api` servers (uvicorn on 127.0.0.1, in a thread) for
tests/test_api.py and tests/test_api_browser.py."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import torch

from model.checkpoint import load_pretrained, save_checkpoint
from model.config import EOT, TOKENIZER_FILE, GPTConfig
from model.gpt import GPT
from model.hf import export_hf_gpt2
from tokenizer_rs import Tokenizer

# Not Alpaca: a server that ignored the checkpoint's template would render other prompts.
TEMPLATE = "Q: {instruction}{input}\nA: "
TEXTS = ["Q: What color is the sky?\nA: The sky is blue.", "Q: Say hello.\nA: Hello there, nice to meet you.",
         "The river runs past the mountains and the weather turns cold in the evening.", "日本語の文も少し。"]
API_KEY = "test-key"


def make_models(root: Path) -> dict[str, Path]:
    """`instruct`: a checkpoint recording instruction tuning with TEMPLATE (128-token window);
    `base`: a transformers export never instruction-tuned, with a long (2048-token) window and a
    vocabulary without <|endoftext|>, so a generation surely goes on while a test looks at the
    server. Random weights: the tests compare the server with hataori's own generation, not with
    good answers."""
    tok = Tokenizer.train(iter(TEXTS * 4), 420, special_tokens=[EOT], show_progress=False)
    tok.save(str(root / TOKENIZER_FILE))
    torch.manual_seed(0)
    instruct = GPT(GPTConfig.preset("tiny", vocab_size=tok.vocab_size, context_length=128))
    save_checkpoint(root / "instruct" / "checkpoints", 1, instruct, torch.optim.AdamW(instruct.parameters()),
                    {"finetune": {"task": "instruct", "config": {"template": TEMPLATE}}}, root / TOKENIZER_FILE,
                    keep=1)
    plain = Tokenizer.train(iter(TEXTS * 4), 420, special_tokens=[], show_progress=False)
    plain.save(str(root / "plain-tokenizer.json"))
    torch.manual_seed(1)
    # Wider than tiny: 2,000 tokens take seconds, not a fraction of one, however fast the machine.
    wide = GPTConfig(vocab_size=plain.vocab_size, context_length=2048, n_layer=4, n_head=4, n_embd=128)
    export_hf_gpt2(GPT(wide), root / "base", root / "plain-tokenizer.json")
    return {"instruct": root / "instruct", "base": root / "base", "tokenizer": root / TOKENIZER_FILE}


def build_app(path: Path, name: str, **settings):
    from pipeline.api.app import create_app
    from pipeline.api.server import served_model
    from pipeline.api.settings import APISettings

    model, directory = load_pretrained(path)
    tokenizer = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
    return create_app(served_model(model, tokenizer, directory, name), APISettings(**settings))


@contextmanager
def live_server(app):
    """The app on a free port of 127.0.0.1; yields its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def health(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/health", timeout=10) as response:
        return json.loads(response.read())


def wait_idle(url: str, timeout: float = 10.0) -> dict:
    """/health once no sequence is decoding or waiting (fails after `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        state = health(url)
        if state["active"] == 0 and state["queued"] == 0:
            return state
        assert time.monotonic() < deadline, f"rows still busy: {state}"
        time.sleep(0.02)
