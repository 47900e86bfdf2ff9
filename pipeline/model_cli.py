"""`hataori train` and `hataori generate`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from pipeline.cli_errors import fail, validated_config


def train(
    data: Path = typer.Option(..., help="Dataset directory (hataori data build)."),
    out: Path = typer.Option(..., help="Run directory; rerunning it resumes from the last checkpoint."),
    preset: str = typer.Option("tiny", help="Model preset: gpt2, gpt2-medium, gpt2-large, gpt2-xl, small, tiny."),
    max_steps: int = typer.Option(1000, help="Optimizer steps."),
    batch_size: int = typer.Option(8, help="Sequences per micro-batch per process."),
    context_length: Optional[int] = typer.Option(None, help="Training context (default: the model's)."),
    lr: float = typer.Option(6e-4, help="Peak learning rate."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N."),
    sets: list[str] = typer.Option([], "--set", help="Any other setting: key=value, TOML values (e.g. tokens_per_step=524288, model.dropout=0.1)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Pretrain a GPT on a token dataset. For several GPUs or nodes: torchrun ... -m pipeline.cli train ..."""
    from model.hf import CheckpointError
    from model.shard_format import DatasetError
    from model.train import TrainConfig, train as run

    fields = dict(data=data, out=out, preset=preset, max_steps=max_steps, batch_size=batch_size,
                  context_length=context_length, lr=lr, device=device, progress=progress)
    cfg = validated_config(TrainConfig, fields, sets)
    try:
        summary = run(cfg)
    except (DatasetError, CheckpointError, ValueError, RuntimeError) as e:
        fail(str(e))
    import os

    if os.environ.get("RANK", "0") == "0":  # under torchrun, one line, not one per rank
        typer.echo(f"trained to step {summary.get('steps')}: loss {summary.get('final_loss', float('nan')):.4f}; run in {out}")


def load_for_inference(path: Path, device: str = "cpu"):
    """(model, tokenizer, checkpoint directory) from a run, checkpoint or transformers directory;
    LoRA adapters are merged for speed. Exits with a clear message on a bad checkpoint."""
    from model.checkpoint import load_pretrained
    from model.finetune.lora import merge_lora
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
