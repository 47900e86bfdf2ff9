"""`hataori eval`: multiple-choice tasks (lm-eval task YAMLs) and bits per byte of text files."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pipeline.cli.errors import fail
from pipeline.cli.inference import CHECKPOINT_HELP, DEVICE_HELP


def evaluate(
    checkpoint: Path = typer.Option(..., help=CHECKPOINT_HELP),
    task: list[Path] = typer.Option([], "--task", help="lm-eval task YAML (multiple_choice); repeatable."),
    bpb: list[Path] = typer.Option([], "--bpb", help="UTF-8 text file: bits per byte and per character; repeatable."),
    limit: Optional[int] = typer.Option(None, min=1, help="Score only the first N documents of each task."),
    num_fewshot: Optional[int] = typer.Option(None, min=0,
                                              help="Examples before each document (default: the task file's, else 0)."),
    batch_size: int = typer.Option(16, min=1, help="Continuations per forward pass."),
    out: Optional[Path] = typer.Option(None, help="Write results.json here (and the per-item JSONL beside it)."),
    device: str = typer.Option("auto", help=DEVICE_HELP + " bf16 autocast on CUDA, fp32 on the CPU."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Score a model on multiple-choice tasks (acc, acc_norm as lm-evaluation-harness defines them) and
    texts (bits per byte over rolling windows); prints a table, writes --out.

    Example: hataori eval --checkpoint runs/ja --task evals/jcommonsenseqa/jcommonsenseqa.yaml --bpb heldout.txt --out results.json
    """
    from model.evaluation.rolling import TextError, read_text
    from model.evaluation.tasks import TaskError, load_task

    if not task and not bpb:
        fail("nothing to evaluate: give --task TASK.yaml and/or --bpb FILE")
    try:  # every input is checked before the model loads
        tasks = [load_task(t) for t in task]
        texts = {p.name: [read_text(p)] for p in bpb}
    except (TaskError, TextError) as e:
        fail(e)
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        fail(f"two task files name the same task: {', '.join(sorted({n for n in names if names.count(n) > 1}))}")
    if len(texts) != len(bpb):
        fail("two --bpb files have the same name; results are keyed by file name")
    from model.evaluation.harness import evaluate as run_evaluation
    from model.evaluation.results import table, write_results
    from pipeline.cli.inference import load_for_inference

    model, tokenizer, _ = load_for_inference(checkpoint, device)
    try:
        evaluation = run_evaluation(model, tokenizer, tasks=tasks, texts=texts, limit=limit, num_fewshot=num_fewshot,
                                    batch_size=batch_size, progress=progress, name=str(checkpoint))
    except (TaskError, TextError) as e:
        fail(e)
    for warning in evaluation.warnings:
        typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
    typer.echo(table(evaluation.results))
    if out is not None:
        try:
            items = write_results(out, evaluation.results, evaluation.items)
        except OSError as e:
            fail(e)
        typer.echo(f"\nresults: {out}\nper item: {items}")
