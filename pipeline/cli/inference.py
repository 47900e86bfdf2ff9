"""Using a trained model: `hataori generate`, `hataori chat`, `hataori classify` and `hataori export`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from model.config import EOT, TOKENIZER_FILE
from model.settings import ChatSamplingConfig, SamplingConfig
from pipeline.cli.errors import fail, validated_config
from pipeline.cli.options import setting


DEVICE_HELP = "auto (a GPU when there is one), cpu, cuda, cuda:N."
CHECKPOINT_HELP = "Run directory, checkpoint directory or transformers GPT-2 directory."


def inference_device(name: str) -> str:
    """`auto` is the GPU when there is one (as for training), else the CPU."""
    import torch

    from model.capacity import check_device

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return str(check_device(name))
    except ValueError as e:
        fail(e)


def load_for_inference(path: Path, device: str = "auto"):
    """(model, tokenizer, checkpoint directory) from a run, checkpoint or transformers directory;
    LoRA adapters are merged for speed. Exits with a clear message on a bad checkpoint."""
    from model.checkpoint import load_pretrained
    from model.hf import CheckpointError
    from model.lora import merge_lora
    from tokenizer_rs import Tokenizer

    try:
        model, directory = load_pretrained(path, inference_device(device))
    except (CheckpointError, ValueError) as e:
        fail(e)
    return merge_lora(model).eval(), Tokenizer.from_file(str(directory / TOKENIZER_FILE)), directory


def generate(
    prompt: str = typer.Argument(..., help="Prompt text."),
    checkpoint: Path = typer.Option(..., help=CHECKPOINT_HELP),
    max_new_tokens: int = setting(SamplingConfig, "max_new_tokens"),
    temperature: float = setting(SamplingConfig, "temperature"),
    top_k: Optional[int] = setting(SamplingConfig, "top_k"),
    top_p: Optional[float] = setting(SamplingConfig, "top_p"),
    seed: Optional[int] = setting(SamplingConfig, "seed"),
    device: str = typer.Option("auto", help=DEVICE_HELP),
) -> None:
    """Continue PROMPT, streaming tokens to the terminal; stops at <|endoftext|>. Past the model's
    window, the window slides.

    Example: hataori generate --checkpoint runs/books "It was a dark and stormy night" --temperature 0.8 --seed 1
    """
    from model.generate import generate as gen

    validated_config(SamplingConfig, dict(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                                          top_p=top_p, seed=seed), [])
    model, tok, _ = load_for_inference(checkpoint, device)
    if model.config.labels is not None:
        fail(f"{checkpoint}: a classifier (labels {', '.join(model.config.labels)}); use hataori classify")
    ids = tok.encode(prompt)
    if not ids:
        fail("the prompt encodes to no tokens")
    import codecs

    # Tokens can end inside a multi-byte character: print whole characters as they complete.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for token in gen(model, ids, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                     stop_id=tok.token_to_id(EOT)):
        sys.stdout.write(decoder.decode(tok.decode_bytes([token])))
        sys.stdout.flush()
    sys.stdout.write(decoder.decode(b"", final=True) + "\n")


def export(
    checkpoint: Path = typer.Option(..., help="Run directory or checkpoint directory (a language model)."),
    out: Path = typer.Argument(..., help="Directory to write: config.json, model.safetensors, tokenizer.json."),
) -> None:
    """Export a checkpoint as a transformers GPT-2 directory (GPT2LMHeadModel, AutoTokenizer); LoRA adapters are merged.

    Example: hataori export --checkpoint runs/books-instruct hf/books-instruct
    """
    from model.hf import CheckpointError, export_hf_gpt2

    model, _, directory = load_for_inference(checkpoint, "cpu")
    try:
        export_hf_gpt2(model, out, directory / TOKENIZER_FILE)
    except (CheckpointError, OSError) as e:
        fail(e)
    typer.echo(f"exported {directory} to {out}")


def classify_text(
    texts: list[str] = typer.Argument(..., help="Texts to classify (or '-' to read one per line from stdin)."),
    checkpoint: Path = typer.Option(..., help="Classifier run or checkpoint directory."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
) -> None:
    """Print each text's label and its probability.

    Example: hataori classify --checkpoint runs/spam "WINNER!! Claim your prize" "See you at 6?"
    """
    from model.finetune.classify import encode_texts, predict


    model, tok, _ = load_for_inference(checkpoint, device)
    if model.config.labels is None:
        fail(f"{checkpoint}: a language model, not a classifier (fine-tune one with hataori finetune classify)")
    if texts == ["-"]:
        texts = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    ids, _ = encode_texts(tok, texts, model.config.context_length)
    probs = predict(model, ids)
    for text, row in zip(texts, probs):
        best = int(row.argmax())
        label = model.config.labels[best]
        typer.echo(f"{label}\t{float(row[best]):.4f}" + (f"\t{text}" if len(texts) > 1 else ""))


HELP = "commands: /reset (forget the conversation), /temp 0.7 (sampling temperature), /quit"


def chat(
    checkpoint: Path = typer.Option(..., help="Instruction-tuned run, checkpoint or transformers directory."),
    temperature: float = setting(ChatSamplingConfig, "temperature"),
    top_k: Optional[int] = setting(ChatSamplingConfig, "top_k"),
    top_p: Optional[float] = setting(ChatSamplingConfig, "top_p"),
    max_new_tokens: Optional[int] = setting(ChatSamplingConfig, "max_new_tokens"),
    seed: Optional[int] = setting(ChatSamplingConfig, "seed"),
    device: str = typer.Option("auto", help=DEVICE_HELP),
) -> None:
    """Chat with an instruction-tuned model. On a terminal: line editing and history (arrow keys),
    Ctrl-C stops a reply and keeps the conversation, Ctrl-D or /quit leaves. From a pipe: one message
    per line in, one reply per line out (line breaks inside a reply written as \\n, backslashes as \\\\).

    Example: hataori chat --checkpoint runs/books-instruct --temperature 0.7
    """
    from model.chat import Chat, template_of

    validated_config(ChatSamplingConfig, dict(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                                              top_p=top_p, seed=seed), [])
    model, tok, directory = load_for_inference(checkpoint, device)
    if model.config.labels is not None:
        fail(f"{checkpoint}: a classifier, not a language model (use hataori classify)")
    window = model.config.context_length
    if max_new_tokens is None:
        max_new_tokens = 200
    elif max_new_tokens > window:
        fail(f"--max-new-tokens {max_new_tokens}: above the model's {window}-token window (replies and the "
             f"conversation share it; at most {window // 2} are used for a reply)")
    template, input_template = template_of(directory)
    session = Chat(model, tok, template=template, input_template=input_template, temperature=temperature,
                   top_k=top_k, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed)
    interactive = sys.stdin.isatty()
    if interactive:
        _line_editing()
        typer.echo(f"hataori chat: {directory} ({window}-token window). {HELP}")
    while True:
        try:
            line = input("> ") if interactive else sys.stdin.readline()
        except EOFError:
            break
        except KeyboardInterrupt:  # at the prompt: a fresh line, as shells do; Ctrl-D or /quit leaves
            typer.echo("\n(Ctrl-D or /quit to leave)")
            continue
        if not interactive and line == "":
            break
        message = line.strip()
        if not message:
            continue
        if message.startswith("/"):
            if _chat_command(session, message, interactive):
                break
            continue
        _reply(session, message, interactive)
    if interactive:
        typer.echo("bye")


def _line_editing() -> None:
    """Arrow keys, editing and a history kept across sessions (readline; best effort)."""
    try:
        import atexit
        import readline
    except ImportError:
        return
    history = Path.home() / ".cache" / "hataori" / "chat_history"
    try:
        history.parent.mkdir(parents=True, exist_ok=True)
        if history.is_file():
            readline.read_history_file(history)
        readline.set_history_length(1000)
        atexit.register(lambda: _save_history(readline, history))
    except OSError:
        pass


def _save_history(readline, history: Path) -> None:
    try:
        readline.write_history_file(history)
    except OSError:
        pass


def _chat_command(session, message: str, interactive: bool) -> bool:
    """Handles /reset, /temp X, /quit; True when the session ends."""
    command, _, arg = message.partition(" ")
    if command == "/quit":
        return True
    if command == "/reset":
        session.reset()
        typer.echo("(conversation reset)", err=not interactive)
    elif command == "/temp":
        try:
            value = float(arg)
            if not 0 <= value <= 100:
                raise ValueError
            session.temperature = value
            typer.echo(f"(temperature {session.temperature})", err=not interactive)
        except ValueError:
            typer.echo(f"(/temp needs a number from 0 to 100, e.g. /temp 0.7; got {arg!r})", err=True)
    else:
        typer.echo(f"(unknown command {command}; {HELP})", err=True)
    return False


def _reply(session, message: str, interactive: bool) -> None:
    """Streams one reply; Ctrl-C stops it, keeping what was said so far in the conversation."""
    pieces: list[str] = []
    stream = session.reply(message)
    try:
        for piece in stream:
            pieces.append(piece)
            # From a pipe, one reply per line: line breaks inside a reply are written as \n.
            sys.stdout.write(piece if interactive else piece.replace("\\", "\\\\").replace("\n", "\\n"))
            sys.stdout.flush()
    except KeyboardInterrupt:
        stream.close()
        session.history.append((message, "".join(pieces).strip()))
        sys.stdout.write(" (stopped)")
    sys.stdout.write("\n")
    sys.stdout.flush()
    if session.dropped_turns:
        typer.echo(f"({session.dropped_turns} oldest turn(s) no longer fit the context window and were left out)", err=True)
