"""`hataori train` and `hataori generate`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from pipeline.cli_errors import fail


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
    from pydantic import ValidationError

    from model.hf import CheckpointError
    from model.shard_format import DatasetError
    from model.train import TrainConfig, train as run

    from pipeline.config import ConfigError, apply_overrides

    fields = dict(data=data, out=out, preset=preset, max_steps=max_steps, batch_size=batch_size,
                  context_length=context_length, lr=lr, device=device, progress=progress)
    try:
        cfg = TrainConfig(**apply_overrides(fields, sets))
    except ConfigError as e:
        fail(str(e))
    except ValidationError as e:
        fail("; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()))
    try:
        summary = run(cfg)
    except (DatasetError, CheckpointError, ValueError, RuntimeError) as e:
        fail(str(e))
    typer.echo(f"trained to step {summary.get('steps')}: loss {summary.get('final_loss', float('nan')):.4f}; run in {out}")


def resolve_checkpoint(path: Path) -> Path:
    """A run directory (its newest valid checkpoint), a checkpoint directory, or a transformers export."""
    from model.checkpoint import latest_valid

    if (path / "checkpoints").is_dir():
        found = latest_valid(path / "checkpoints")
        if found is None:
            fail(f"{path}: no valid checkpoint under checkpoints/")
        return found
    if (path / "config.json").is_file():
        return path
    fail(f"{path}: not a run directory, checkpoint or transformers GPT-2 directory")
    raise AssertionError


def load_for_inference(path: Path, device: str = "cpu"):
    """(model, tokenizer) from anything `resolve_checkpoint` accepts."""
    import json

    from model.checkpoint import load_model
    from model.hf import load_hf_gpt2
    from tokenizer_rs import Tokenizer

    directory = resolve_checkpoint(path)
    config = json.loads((directory / "config.json").read_text())
    model = load_hf_gpt2(directory).to(device) if "model_type" in config else load_model(directory, device)
    if not (directory / "tokenizer.json").is_file():
        fail(f"{directory}: no tokenizer.json beside the weights")
    return model.eval(), Tokenizer.from_file(str(directory / "tokenizer.json"))


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
    from model.hf import CheckpointError
    from model.generate import generate as gen

    try:
        model, tok = load_for_inference(checkpoint, device)
    except (CheckpointError, ValueError) as e:
        fail(str(e))
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
