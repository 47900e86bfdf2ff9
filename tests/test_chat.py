"""`hataori chat` and model.chat.Chat: context trimming (oldest turns dropped, the prompt always
inside the window), the line protocol through a real pipe (/temp, /reset, /quit, unknown commands),
the checkpoint's own prompt template, and the interactive prompt on a real pseudo-terminal."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from model.chat import TURN_SEPARATOR, Chat, template_of
from model.checkpoint import load_pretrained
from model.config import GPTConfig
from model.finetune.instruct import InstructConfig, finetune_instruct
from model.templates import ALPACA_TEMPLATE, format_prompt
from model.gpt import GPT
from model.hf import export_hf_gpt2
from tokenizer_rs import Tokenizer

# Not Alpaca: a chat that ignored the checkpoint's template would not get the trained answers.
TEMPLATE = "Q: {instruction}{input}\nA: "
RECORDS = [
    {"instruction": "Name the color of the sky.", "input": "", "output": "The sky is blue."},
    {"instruction": "Give the opposite word of hot.", "input": "", "output": "cold"},
    {"instruction": "Write two lines.", "input": "", "output": "Roses are red.\nViolets are blue."},
    # The second turn of a conversation, as Chat lays it out: the model learns to answer with history.
    {"instruction": "Give the opposite word of hot.\nA: cold\n\nQ: Name the color of the sky.", "input": "",
     "output": "The sky is blue."},
]
LONG_TEXT = "The long turn keeps talking about rivers, mountains and the weather for a while. " * 3


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("chat-tok")
    texts = [format_prompt(r, TEMPLATE) + r["output"] for r in RECORDS] * 3 + [LONG_TEXT]
    Tokenizer.train(iter(texts), 400, show_progress=False).save(str(root / "tokenizer.json"))
    return root / "tokenizer.json"


@pytest.fixture(scope="module")
def tok(tok_path) -> Tokenizer:
    return Tokenizer.from_file(str(tok_path))


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory, tok_path, tok) -> Path:
    """A tiny model instruction-tuned (with TEMPLATE) until it answers RECORDS exactly."""
    root = tmp_path_factory.mktemp("chat-run")
    torch.manual_seed(0)
    export_hf_gpt2(GPT(GPTConfig.preset("tiny", vocab_size=tok.vocab_size, context_length=128)), root / "base", tok_path)
    (root / "data.json").write_text(json.dumps(RECORDS))
    data = root / "data.json"
    cfg = InstructConfig(base=root / "base", data=data, val_data=data, test_data=data, out=root / "run",
                         template=TEMPLATE, max_steps=120, batch_size=4, lr=3e-3, min_lr=3e-4, warmup_steps=5,
                         weight_decay=0.0, eval_interval=120, checkpoint_interval=120, max_new_tokens=30,
                         device="cpu", progress=False)
    summary = finetune_instruct(cfg)
    assert summary["test"]["exact_match"] == 1.0, summary
    return root / "run"


def hataori_chat(run: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", "chat", "--checkpoint", str(run), "--max-new-tokens", "30", *args]


def child_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def expected_replies(run: Path, tok, script: list[str]) -> list[str]:
    """What the library's Chat answers to `script` (messages and /reset), greedily."""
    model, directory = load_pretrained(run)
    template, input_template = template_of(directory)
    session = Chat(model.eval(), tok, template=template, input_template=input_template, temperature=0.0,
                   max_new_tokens=30)
    replies = []
    for line in script:
        if line == "/reset":
            session.reset()
        elif not line.startswith("/"):
            replies.append("".join(session.reply(line)))
    return replies


# ------------------------------------------------------------------------------------------ Chat


def random_chat(tok, context: int = 64, max_new_tokens: int = 16) -> Chat:
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("tiny", vocab_size=tok.vocab_size, context_length=context)).eval()
    return Chat(model, tok, template=TEMPLATE, temperature=0.0, max_new_tokens=max_new_tokens)


def ask(message: str) -> str:
    return format_prompt({"instruction": message, "input": ""}, TEMPLATE)


def turn_ids(chat: Chat, user: str, reply: str) -> list[int]:
    return chat._encode(ask(user) + reply + TURN_SEPARATOR)


def test_prompt_keeps_the_newest_turns_that_fit_the_window(tok):
    chat = random_chat(tok, context=64, max_new_tokens=16)
    budget = 64 - 16
    chat.history = [(f"question {i}", f"answer {i}") for i in range(6)]
    current = chat._encode(ask("next?"))
    turns = [turn_ids(chat, u, r) for u, r in chat.history]
    assert len(current) + len(turns[-1]) <= budget < len(current) + sum(map(len, turns))  # some, not all, fit
    kept = 0
    while kept < len(turns) and len(current) + sum(map(len, turns[len(turns) - kept - 1:])) <= budget:
        kept += 1
    ids = chat.prompt_ids("next?")
    assert ids == [t for turn in turns[len(turns) - kept:] for t in turn] + current  # newest turns, in order
    assert len(ids) <= budget <= chat.context
    assert chat.dropped_turns == len(turns) - kept > 0
    assert tok.decode(ids).startswith(ask(f"question {6 - kept}"))


def test_a_message_longer_than_the_window_keeps_its_end(tok):
    chat = random_chat(tok, context=64, max_new_tokens=200)  # the reply gets half the window
    chat.history = [("hi", "hello")]
    ids = chat.prompt_ids(LONG_TEXT)
    full = chat._encode(ask(LONG_TEXT))
    assert len(full) > 32 and ids == full[-32:]
    assert chat.dropped_turns == 1


def test_long_conversation_never_exceeds_the_window(tok):
    chat = random_chat(tok, context=64, max_new_tokens=12)
    lengths = []
    for i in range(6):
        message = f"{LONG_TEXT[: 40 + 10 * i]} {i}"
        lengths.append(len(chat.prompt_ids(message)))
        reply = "".join(chat.reply(message))  # generation itself must fit too (it would raise otherwise)
        assert chat.history[-1] == (message, reply.strip())
    assert len(chat.history) == 6 and max(lengths) <= 64 - 12
    assert chat.dropped_turns >= 4  # the oldest turns were left out
    chat.reset()
    assert chat.history == [] and chat.prompt_ids("hi") == chat._encode(ask("hi"))


def test_chat_uses_the_checkpoint_template_and_replies(chat_run, tok):
    model, directory = load_pretrained(chat_run)
    assert template_of(directory) == (TEMPLATE, "\n\n### Input:\n{input}")
    assert template_of(chat_run / "nowhere")[0] == ALPACA_TEMPLATE
    replies = expected_replies(chat_run, tok, ["Name the color of the sky.", "/reset", "Write two lines."])
    assert replies == ["The sky is blue.", "Roses are red.\nViolets are blue."]


# ------------------------------------------------------------------------------------------ CLI


def test_chat_through_a_pipe(chat_run, tok):
    script = ["/temp 0", "Name the color of the sky.", "/reset", "Name the color of the sky.", "/reset",
              "Give the opposite word of hot.", "Name the color of the sky.", "/frobnicate", "/quit",
              "Give the opposite word of hot."]
    proc = subprocess.run(hataori_chat(chat_run), input="".join(line + "\n" for line in script), capture_output=True,
                          text=True, timeout=180, env=child_env())
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    expected = expected_replies(chat_run, tok, script[: script.index("/quit")])
    assert len(expected) == 4 and not any("\n" in e for e in expected)
    assert lines == expected  # one line per message; nothing after /quit
    assert lines[0] == lines[1] == "The sky is blue."  # greedy after /temp 0: same input, same reply
    assert lines[2] == "cold" and lines[3] == "The sky is blue."  # the second turn, with the first as history
    assert "(temperature 0.0)" in proc.stderr and proc.stderr.count("(conversation reset)") == 2
    assert "(unknown command /frobnicate" in proc.stderr
    assert "Traceback" not in proc.stderr and "hataori chat:" not in proc.stdout  # no banner in a pipe


def test_multiline_reply_is_still_one_line_in_a_pipe(chat_run):
    script = ["/temp 0", "Write two lines.", "/reset", "Name the color of the sky."]  # ends at EOF, no /quit
    proc = subprocess.run(hataori_chat(chat_run), input="".join(line + "\n" for line in script), capture_output=True,
                          text=True, timeout=180, env=child_env())
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2, lines  # one reply per message, however the reply is rendered on its line
    assert "Roses are red." in lines[0] and "Violets are blue." in lines[0]
    assert lines[1] == "The sky is blue."


def test_bad_checkpoint_is_a_clean_error(tmp_path, chat_run):
    from typer.testing import CliRunner

    from pipeline.cli import app

    for checkpoint, needle in ((tmp_path / "missing", "missing"), (tmp_path, "not a run directory")):
        r = CliRunner().invoke(app, ["chat", "--checkpoint", str(checkpoint)], input="hello\n")
        assert r.exit_code == 2 and r.stderr.startswith("error: ") and needle in r.stderr, (r.stderr, r.exception)
        assert r.stdout == "" and "Traceback" not in r.stderr
    # Empty input (EOF at once) is a clean exit.
    r = CliRunner().invoke(app, ["chat", "--checkpoint", str(chat_run)], input="")
    assert r.exit_code == 0 and r.stdout == "", (r.stdout, r.stderr, r.exception)


def read_until(fd: int, needle: bytes, buffer: bytearray, timeout: float = 120) -> bytes:
    """Reads the pty master into `buffer` until `needle` appears after what was there; returns the new text."""
    start = len(buffer)
    deadline = time.monotonic() + timeout
    while needle not in buffer[start:]:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"timed out waiting for {needle!r}; got {bytes(buffer[start:])!r}"
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            chunk = b""
        if not chunk:
            raise AssertionError(f"terminal closed before {needle!r}; got {bytes(buffer[start:])!r}")
        buffer.extend(chunk)
    return bytes(buffer[start:])


def test_chat_on_a_terminal(chat_run):
    master, slave = os.openpty()
    proc = subprocess.Popen(hataori_chat(chat_run, "--temperature", "0"), stdin=slave, stdout=slave, stderr=slave,
                            env=child_env(), close_fds=True, start_new_session=True)
    os.close(slave)
    buffer = bytearray()
    try:
        banner = read_until(master, b"> ", buffer)
        assert b"hataori chat: " in banner and b"128-token window" in banner and b"/quit" in banner
        os.write(master, b"Name the color of the sky.\n")
        answer = read_until(master, b"> ", buffer)
        assert b"The sky is blue." in answer
        os.write(master, b"/quit\n")
        assert proc.wait(timeout=60) == 0
        try:
            while chunk := os.read(master, 4096):
                buffer.extend(chunk)
        except OSError:
            pass
        assert b"bye" in buffer and b"Traceback" not in buffer
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def test_ctrl_c_stops_a_reply_and_keeps_the_session(tmp_path, tok_path):
    """On a terminal, Ctrl-C (SIGINT) during a reply stops it and returns to the prompt; the
    session goes on. A random `small` model rarely says <|endoftext|>, so its reply runs long."""
    torch.manual_seed(0)
    export_hf_gpt2(GPT(GPTConfig.preset("small", vocab_size=400)), tmp_path / "random", tok_path)
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "chat", "--checkpoint", str(tmp_path / "random"),
                             "--max-new-tokens", "250", "--seed", "1"], stdin=slave, stdout=slave, stderr=slave,
                            env=child_env(), close_fds=True, start_new_session=True)
    os.close(slave)
    buffer = bytearray()
    try:
        read_until(master, b"> ", buffer)
        os.write(master, b"Tell me a long story.\n")
        read_until(master, b"Tell me a long story.\r\n", buffer)
        ready, _, _ = select.select([master], [], [], 120)  # the reply has begun
        assert ready
        proc.send_signal(2)  # SIGINT, as Ctrl-C on the terminal
        after = read_until(master, b"> ", buffer)
        assert b"(stopped)" in after and proc.poll() is None
        os.write(master, b"/quit\n")
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


@pytest.mark.parametrize("option, value, message", [
    ("--top-p", "1.5", "top_p: Input should be less than or equal to 1"),
    ("--temperature", "-1", "temperature: Input should be greater than or equal to 0"),
    ("--top-k", "0", "top_k: Input should be greater than 0"),
    ("--max-new-tokens", "500", "--max-new-tokens 500: above the model's 128-token window"),
])
def test_out_of_range_sampling_is_refused(chat_run, option, value, message):
    r = subprocess.run(hataori_chat(chat_run)[:-2] + [option, value], input="hello\n", capture_output=True, text=True,
                       env=child_env())
    assert r.returncode == 2 and r.stderr.startswith("error: ") and message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
