"""`hataori pretrain`: a GPT on a token dataset, in this process or under torchrun."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from model.settings import TrainConfig
from pipeline.cli.errors import fail, validated_config
from pipeline.cli.options import setting


def pretrain(
    data: Path = setting(TrainConfig, "data"),
    out: Path = setting(TrainConfig, "out", help="Run directory; rerunning it resumes from the last checkpoint."),
    preset: str = setting(TrainConfig, "preset"),
    max_steps: int = setting(TrainConfig, "max_steps"),
    batch_size: int = setting(TrainConfig, "batch_size"),
    context_length: Optional[int] = setting(TrainConfig, "context_length"),
    lr: float = setting(TrainConfig, "lr"),
    device: str = setting(TrainConfig, "device"),
    restart: bool = setting(TrainConfig, "restart", "--restart"),
    sets: list[str] = typer.Option([], "--set", help="Any other setting: key=value, TOML values (e.g. tokens_per_step=524288, model.dropout=0.1)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Pretrain a GPT on a token dataset; rerunning the same command resumes from the last checkpoint.

    Example: hataori pretrain --data data/books --out runs/books --preset small --max-steps 2000

    For several GPUs or nodes: torchrun --nproc_per_node 8 -m pipeline.cli pretrain ...
    """
    from model.hf import CheckpointError
    from model.pretrain import train as run
    from model.shard_format import DatasetError

    fields = dict(data=data, out=out, preset=preset, max_steps=max_steps, batch_size=batch_size,
                  context_length=context_length, lr=lr, device=device, progress=progress, restart=restart)
    cfg = validated_config(TrainConfig, fields, sets)
    try:
        summary = run(cfg)
    except (DatasetError, CheckpointError, ValueError, RuntimeError, OSError, ArithmeticError) as e:
        fail(e)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one line, not one per rank
        typer.echo(f"trained to step {summary.get('steps')}: loss {summary.get('final_loss', float('nan')):.4f}; run in {out}")
