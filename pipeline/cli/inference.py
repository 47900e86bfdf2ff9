"""Using a trained model: `hataori generate`, `hataori chat`, `hataori classify` and `hataori export`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from pipeline.cli.errors import fail


def load_for_inference(path: Path, device: str = "cpu"):
    """(model, tokenizer, checkpoint directory) from a run, checkpoint or transformers directory;
    LoRA adapters are merged for speed. Exits with a clear message on a bad checkpoint."""
    from model.checkpoint import load_pretrained
    from model.lora import merge_lora
    from model.hf import CheckpointError
    from tokenizer_rs import Tokenizer

    try:
        model, directory = load_pretrained(path, device)
    except (CheckpointError, ValueError) as e:
        fail(str(e))
    return merge_lora(model).eval(), Tokenizer.from_file(str(directory / "tokenizer.json")), directory


def generate(
    prompt: str = typer.Argument(..., help="Prompt text."),
    checkpoint: Path = typer.Option(..., help="Run directory, checkpoint directory or transformers GPT-2 directory."),
    max_new_tokens: int = typer.Option(100),
    temperature: float = typer.Option(0.8, help="0 = greedy."),
    top_k: Optional[int] = typer.Option(50),
    top_p: Optional[float] = typer.Option(None),
    seed: Optional[int] = typer.Option(None, help="Same seed, same text."),
    device: str = typer.Option("cpu"),
) -> None:
    """Continue PROMPT, streaming tokens to the terminal; stops at <|endoftext|>."""
    from model.generate import generate as gen

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
                     stop_id=tok.token_to_id("<|endoftext|>")):
        sys.stdout.write(decoder.decode(tok.decode_bytes([token])))
        sys.stdout.flush()
    sys.stdout.write(decoder.decode(b"", final=True) + "\n")


def export(
    checkpoint: Path = typer.Option(..., help="Run directory or checkpoint directory (a language model)."),
    out: Path = typer.Argument(..., help="Directory to write: config.json, model.safetensors, tokenizer.json."),
) -> None:
    """Export a checkpoint as a transformers GPT-2 directory (GPT2LMHeadModel, AutoTokenizer); LoRA adapters are merged."""
    from model.hf import CheckpointError, export_hf_gpt2

    model, _, directory = load_for_inference(checkpoint)
    try:
        export_hf_gpt2(model, out, directory / "tokenizer.json")
    except (CheckpointError, OSError) as e:
        fail(str(e))
    typer.echo(f"exported {directory} to {out}")


def classify_text(
    texts: list[str] = typer.Argument(..., help="Texts to classify (or '-' to read one per line from stdin)."),
    checkpoint: Path = typer.Option(..., help="Classifier run or checkpoint directory."),
    device: str = typer.Option("cpu"),
) -> None:
    """Print each text's label and its probability."""
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
    temperature: float = typer.Option(0.7, help="0 = greedy."),
    top_k: Optional[int] = typer.Option(50),
    max_new_tokens: int = typer.Option(200),
    seed: Optional[int] = typer.Option(None, help="Same seed, same replies."),
    device: str = typer.Option("cpu"),
) -> None:
    """Chat with an instruction-tuned model. Reads one message per line; from a pipe, prints one reply per line
    (line breaks inside a reply written as \\n, backslashes as \\\\)."""
    from model.chat import Chat, template_of


    model, tok, directory = load_for_inference(checkpoint, device)
    if model.config.labels is not None:
        fail(f"{checkpoint}: a classifier, not a language model (use hataori classify)")
    template, input_template = template_of(directory)
    session = Chat(model, tok, template=template, input_template=input_template, temperature=temperature,
                   top_k=top_k, max_new_tokens=max_new_tokens, seed=seed)
    interactive = sys.stdin.isatty()
    if interactive:
        typer.echo(f"hataori chat: {directory} ({model.config.context_length}-token window). {HELP}")
    while True:
        try:
            line = input("> ") if interactive else sys.stdin.readline()
        except (EOFError, KeyboardInterrupt):
            break
        if not interactive and line == "":
            break
        message = line.strip()
        if not message:
            continue
        if message.startswith("/"):
            command, _, arg = message.partition(" ")
            if command == "/quit":
                break
            if command == "/reset":
                session.reset()
                typer.echo("(conversation reset)", err=not interactive)
            elif command == "/temp":
                try:
                    session.temperature = max(float(arg), 0.0)
                    typer.echo(f"(temperature {session.temperature})", err=not interactive)
                except ValueError:
                    typer.echo(f"(/temp needs a number, e.g. /temp 0.7; got {arg!r})", err=True)
            else:
                typer.echo(f"(unknown command {command}; {HELP})", err=True)
            continue
        for piece in session.reply(message):
            # From a pipe, one reply per line: line breaks inside a reply are written as \n.
            sys.stdout.write(piece if interactive else piece.replace("\\", "\\\\").replace("\n", "\\n"))
            sys.stdout.flush()
        sys.stdout.write("\n")
        sys.stdout.flush()
        if session.dropped_turns:
            typer.echo(f"({session.dropped_turns} oldest turn(s) no longer fit the context window and were left out)", err=True)
    if interactive:
        typer.echo("bye")
