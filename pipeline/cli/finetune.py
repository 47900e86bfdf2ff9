"""`hataori finetune instruct|classify`, `hataori classify` and `hataori chat`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from model.settings import ClassifyConfig, InstructConfig
from pipeline.cli.errors import fail, validated_config
from pipeline.cli.options import setting

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
    except (FinetuneDataError, CheckpointError, DatasetError, ValueError, RuntimeError, OSError, ArithmeticError) as e:
        fail(e)
    return summary if os.environ.get("RANK", "0") == "0" else None


@app.command()
def instruct(
    base: Path = setting(InstructConfig, "base"),
    data: Path = setting(InstructConfig, "data", help="JSON/JSONL records: instruction, optional input, output (or JCommonsenseQA)."),
    out: Path = setting(InstructConfig, "out", help="Run directory; rerunning it resumes from the last checkpoint."),
    val_data: Optional[Path] = setting(InstructConfig, "val_data"),
    test_data: Optional[Path] = setting(InstructConfig, "test_data"),
    epochs: float = setting(InstructConfig, "epochs"),
    batch_size: int = setting(InstructConfig, "batch_size"),
    lr: float = setting(InstructConfig, "lr"),
    mask_prompt: bool = setting(InstructConfig, "mask_prompt", "--mask-prompt/--no-mask-prompt"),
    device: str = setting(InstructConfig, "device"),
    restart: bool = setting(InstructConfig, "restart", "--restart"),
    sets: list[str] = typer.Option([], "--set", help=SETS_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Instruction-tune a model; writes checkpoints, metrics and eval/test_responses.jsonl with scores.

    Example: hataori finetune instruct --base runs/books --data instruction-data.json --out runs/books-instruct --mask-prompt
    """
    from model.finetune.instruct import finetune_instruct

    cfg = validated_config(InstructConfig, dict(base=base, data=data, out=out, val_data=val_data, test_data=test_data, epochs=epochs, batch_size=batch_size,
                                                lr=lr, mask_prompt=mask_prompt, device=device, progress=progress, restart=restart), sets)
    summary = _run(finetune_instruct, cfg)
    if summary is None:
        return
    test = summary.get("test", {})
    typer.echo(f"fine-tuned to step {summary['steps']}: loss {summary['final_loss']:.4f}, "
               f"val loss {summary.get('val_loss', float('nan')):.4f}; test exact match {test.get('exact_match', 0):.1%}, "
               f"ROUGE-L {test.get('rouge_l', 0):.3f} over {test.get('n', 0)}; responses in {out / 'eval' / 'test_responses.jsonl'}")


@app.command()
def classify(
    base: Path = setting(ClassifyConfig, "base"),
    data: Path = setting(ClassifyConfig, "data", help="TSV/CSV/JSON/JSONL records with a text and a label."),
    out: Path = setting(ClassifyConfig, "out", help="Run directory; rerunning it resumes from the last checkpoint."),
    val_data: Optional[Path] = setting(ClassifyConfig, "val_data"),
    test_data: Optional[Path] = setting(ClassifyConfig, "test_data"),
    text_field: str = setting(ClassifyConfig, "text_field"),
    text_pair_field: Optional[str] = setting(ClassifyConfig, "text_pair_field"),
    label_field: str = setting(ClassifyConfig, "label_field"),
    columns: Optional[str] = typer.Option(None, help="Column names of a header-less TSV/CSV, comma-separated (e.g. label,text)."),
    balance: bool = setting(ClassifyConfig, "balance", "--balance/--no-balance"),
    trainable_blocks: str = typer.Option("1", help="Blocks that train, from the last, or 'all' (default 1: the last block, final LayerNorm and head)."),
    epochs: float = setting(ClassifyConfig, "epochs"),
    batch_size: int = setting(ClassifyConfig, "batch_size"),
    lr: float = setting(ClassifyConfig, "lr"),
    device: str = setting(ClassifyConfig, "device"),
    restart: bool = setting(ClassifyConfig, "restart", "--restart"),
    sets: list[str] = typer.Option([], "--set", help=SETS_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Fine-tune a classifier; prints accuracy, macro-F1 and the confusion matrix on validation and test.

    Example: hataori finetune classify --base runs/books --data SMSSpamCollection.tsv --columns label,text --balance --out runs/spam
    """
    from model.finetune.classify import finetune_classify
    from model.finetune.metrics import format_confusion

    fields = dict(base=base, data=data, out=out, val_data=val_data, test_data=test_data, text_field=text_field, text_pair_field=text_pair_field,
                  label_field=label_field, columns=columns.split(",") if columns else None, balance=balance,
                  trainable_blocks=trainable_blocks if trainable_blocks == "all" else _int(trainable_blocks, "--trainable-blocks"),
                  epochs=epochs, batch_size=batch_size, lr=lr, device=device, progress=progress, restart=restart)
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
