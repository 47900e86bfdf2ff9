"""`hataori finetune instruct|classify`, `hataori classify` and `hataori chat`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from pipeline.cli.errors import fail, validated_config

app = typer.Typer(help="Fine-tune a pretrained model: instruction following or classification.", no_args_is_help=True)

SETS_HELP = "Any other setting: key=value, TOML values (e.g. epochs=3, mask_prompt=true, lora={rank=8})."


def _run(function, cfg) -> dict | None:
    """The run's summary on the process that reports: rank 0 under torchrun (which alone scores the
    model and writes), None on the other ranks, which have nothing more to say."""
    import os

    from model.finetune.records import FinetuneDataError
    from model.hf import CheckpointError
    from model.shard_format import DatasetError

    try:
        summary = function(cfg)
    except (FinetuneDataError, CheckpointError, DatasetError, ValueError, RuntimeError) as e:
        fail(str(e))
    return summary if os.environ.get("RANK", "0") == "0" else None


@app.command()
def instruct(
    base: Path = typer.Option(..., help="Pretrained model: run, checkpoint or transformers GPT-2 directory."),
    data: Path = typer.Option(..., help="JSON/JSONL records: instruction, optional input, output (or JCommonsenseQA)."),
    out: Path = typer.Option(..., help="Run directory; rerunning it resumes from the last checkpoint."),
    val_data: Optional[Path] = typer.Option(None, help="Validation records (default: val_fraction of --data)."),
    test_data: Optional[Path] = typer.Option(None, help="Test records (default: test_fraction of --data)."),
    epochs: float = typer.Option(2.0, help="Passes over the training split."),
    batch_size: int = typer.Option(8),
    lr: float = typer.Option(1e-4),
    mask_prompt: bool = typer.Option(False, "--mask-prompt/--no-mask-prompt", help="Score only response tokens."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N."),
    sets: list[str] = typer.Option([], "--set", help=SETS_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Instruction-tune a model; writes checkpoints, metrics and eval/test_responses.jsonl with scores."""
    from model.finetune.instruct import InstructConfig, finetune_instruct

    cfg = validated_config(InstructConfig, dict(base=base, data=data, out=out, val_data=val_data, test_data=test_data, epochs=epochs, batch_size=batch_size,
                                                lr=lr, mask_prompt=mask_prompt, device=device, progress=progress), sets)
    summary = _run(finetune_instruct, cfg)
    if summary is None:
        return
    test = summary.get("test", {})
    typer.echo(f"fine-tuned to step {summary['steps']}: loss {summary['final_loss']:.4f}, "
               f"val loss {summary.get('val_loss', float('nan')):.4f}; test exact match {test.get('exact_match', 0):.1%}, "
               f"ROUGE-L {test.get('rouge_l', 0):.3f} over {test.get('n', 0)}; responses in {out / 'eval' / 'test_responses.jsonl'}")


@app.command()
def classify(
    base: Path = typer.Option(..., help="Pretrained model: run, checkpoint or transformers GPT-2 directory."),
    data: Path = typer.Option(..., help="TSV/CSV/JSONL records with a text and a label."),
    out: Path = typer.Option(..., help="Run directory; rerunning it resumes from the last checkpoint."),
    val_data: Optional[Path] = typer.Option(None, help="Validation records (default: val_fraction of --data)."),
    test_data: Optional[Path] = typer.Option(None, help="Test records (default: test_fraction of --data)."),
    text_field: str = typer.Option("text"),
    text_pair_field: Optional[str] = typer.Option(None, help="Second text of a pair (e.g. sentence2)."),
    label_field: str = typer.Option("label"),
    columns: Optional[str] = typer.Option(None, help="Column names of a header-less TSV/CSV, comma-separated (e.g. label,text)."),
    balance: bool = typer.Option(False, "--balance/--no-balance", help="Undersample classes to the rarest."),
    trainable_blocks: str = typer.Option("1", help="Blocks that train, from the last, or 'all'."),
    epochs: float = typer.Option(5.0),
    batch_size: int = typer.Option(8),
    lr: float = typer.Option(1e-4),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N."),
    sets: list[str] = typer.Option([], "--set", help=SETS_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Fine-tune a classifier; prints accuracy, macro-F1 and the confusion matrix on validation and test."""
    from model.finetune.classify import ClassifyConfig, finetune_classify
    from model.finetune.metrics import format_confusion

    fields = dict(base=base, data=data, out=out, val_data=val_data, test_data=test_data, text_field=text_field, text_pair_field=text_pair_field,
                  label_field=label_field, columns=columns.split(",") if columns else None, balance=balance,
                  trainable_blocks=trainable_blocks if trainable_blocks == "all" else _int(trainable_blocks, "--trainable-blocks"),
                  epochs=epochs, batch_size=batch_size, lr=lr, device=device, progress=progress)
    cfg = validated_config(ClassifyConfig, fields, sets)
    summary = _run(finetune_classify, cfg)
    if summary is None:
        return
    for split in ("val", "test"):
        s = summary["scores"][split]
        typer.echo(f"{split}: accuracy {s['accuracy']:.2%} (majority baseline {s['majority_baseline']:.2%}), "
                   f"macro-F1 {s['macro_f1']:.3f}, n={s['n']}")
        typer.echo(format_confusion(s))
    typer.echo(f"classifier in {out}")


def _int(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        fail(f"{name}: expected a whole number or 'all', not {value!r}")
