"""`hataori pretrain`: a GPT on a token dataset, in this process or under torchrun."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from pipeline.cli.errors import fail, validated_config


def pretrain(
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
    """Pretrain a GPT on a token dataset. For several GPUs or nodes: torchrun ... -m pipeline.cli pretrain ..."""
    from model.hf import CheckpointError
    from model.shard_format import DatasetError
    from model.pretrain import TrainConfig, train as run

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
