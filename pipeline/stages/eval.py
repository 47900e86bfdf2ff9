"""Eval: every language model the run made (the pretrained one, and the instruction-tuned one when
there is one) scored on the [eval] task files and on the bits per byte of the dataset's validation
documents; the figures compared with the previous run of the same config name (the history in the
artifact store), so that a scheduled run says whether it improved or regressed.

Keyed by the upstream models and the content of every task file and its data: editing a task
rebuilds this stage (and the report), nothing upstream. Artifact: `<model>/results.json` and
`<model>/results.items.jsonl` per model, `comparison.json`.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from pathlib import Path
from typing import Any

from pipeline.stages.base import BuildContext, Stage

COMPARISON = "comparison.json"


def task_digests(tasks: list[str]) -> list[dict[str, Any]]:
    """sha256 over each task file and the data files it names; None when it cannot be read (the
    build then reports why)."""
    from model.evaluation.tasks import TaskError, task_files

    out = []
    for task in tasks:
        try:
            h = hashlib.sha256()
            for f in task_files(task):
                h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
            out.append({"task": task, "content_sha256": h.hexdigest()})
        except (TaskError, OSError):
            out.append({"task": task, "content_sha256": None})
    return out


def key_config(cfg) -> dict[str, Any]:
    data = cfg.eval.model_dump(mode="json", exclude={"batch_size", "device", "history"})
    data["tasks"] = task_digests(cfg.eval.tasks)
    return data


def check_tasks(config: Any) -> None:
    """Every task file parses and every scored record renders, before any stage runs (a broken
    task should not wait for hours of pretraining to be found). Raises TaskError naming the key."""
    from model.evaluation.tasks import load_task

    for path in config.tasks:
        task = load_task(path)
        shots, _ = task.effective_fewshot(config.num_fewshot)
        task.items(config.limit, shots)


def validation_documents(cfg, corpus_dir: Path, max_bytes: int) -> list[str]:
    """The documents the dataset stage put in its validation split (by the same rule), whole,
    until `max_bytes` of UTF-8 is reached."""
    from pipeline.dataset_writer import is_validation
    from pipeline.stages.corpus import documents

    out, size = [], 0
    for index, doc in enumerate(documents(corpus_dir)):
        if size >= max_bytes:
            break
        if is_validation(index, cfg.dataset.split_seed, cfg.dataset.val_fraction):
            out.append(doc)
            size += len(doc.encode("utf-8"))
    return out


def models_to_evaluate(ctx: BuildContext) -> dict[str, Path]:
    from pipeline.stages.finetune import RUN as FINETUNE_RUN
    from pipeline.stages.pretrain import RUN as PRETRAIN_RUN

    models = {"pretrain": ctx.paths["pretrain"] / PRETRAIN_RUN}
    finetune = ctx.config.finetune
    if finetune is not None and finetune.task == "instruct" and "finetune" in ctx.paths:  # a classifier has no LM head
        models["finetune"] = ctx.paths["finetune"] / FINETUNE_RUN
    return models


def build(ctx: BuildContext, out: Path) -> dict[str, Any]:
    import torch

    from model.checkpoint import load_pretrained
    from model.config import TOKENIZER_FILE
    from model.evaluation.harness import evaluate
    from model.evaluation.results import compare, describe_change, flatten, verdict, write_results
    from model.evaluation.tasks import load_task
    from model.files import write_json_atomic
    from model.lora import merge_lora
    from pipeline.eval_history import append_history, read_history
    from tokenizer_rs import Tokenizer

    config = ctx.config.eval
    tasks = [load_task(t) for t in config.tasks]
    texts = {}
    if config.bpb:
        docs = validation_documents(ctx.config, ctx.paths["corpus"], config.bpb_max_bytes)
        if docs:
            texts["validation"] = docs
        else:
            ctx.log("eval: the dataset has no validation documents (val_fraction 0): no bits per byte")
    device = config.device if config.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    figures, warnings = {}, []
    for label, run_dir in models_to_evaluate(ctx).items():
        model, directory = load_pretrained(run_dir, device)
        tokenizer = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
        evaluation = evaluate(merge_lora(model).eval(), tokenizer, tasks=tasks, texts=texts, limit=config.limit,
                              num_fewshot=config.num_fewshot, batch_size=config.batch_size, progress=ctx.progress,
                              name=f"{label}: {directory}")
        write_results(out / label / "results.json", evaluation.results, evaluation.items)
        figures[label] = flatten(evaluation.results)
        warnings += [f"{label}: {w}" for w in evaluation.warnings]
        for w in evaluation.warnings:
            ctx.log(f"eval {label}: warning: {w}")

    name = ctx.config.name
    history = read_history(ctx.config.artifacts, name)
    previous = history[-1] if history else None
    rows = [dict(r, figure=f"{label}: {r['figure']}") for label, now in figures.items()
            for r in compare(previous["models"].get(label, {}), now)] if previous else []
    entry = {"id": uuid.uuid4().hex, "at": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "models": figures}
    comparison = {"previous_at": previous["at"] if previous else None, "rows": rows,
                  "verdict": verdict(rows) if previous else "first run"}
    write_json_atomic(out / COMPARISON, comparison)
    append_history(ctx.config.artifacts, name, entry, config.history)
    change = (f"{describe_change(rows)} (vs the run of {previous['at']})" if previous
              else "first evaluated run of this config")
    return {"models": ", ".join(figures), "verdict": comparison["verdict"], "change": change, "warnings": warnings,
            "history_id": entry["id"]}


def report_section(manifest: dict[str, Any], path: Path, store_root: Path, name: str, runs: int = 4) -> list[str]:
    """Markdown: each model's figures in this run beside the previous runs of the config, and the verdict."""
    from model.evaluation.results import flatten
    from model.files import read_json
    from pipeline.eval_history import read_history

    stats = manifest.get("stats", {})
    history = read_history(store_root, name)
    this = next((i for i, e in enumerate(history) if e.get("id") == stats.get("history_id")), None)
    earlier = history[:this][-runs:][::-1] if this is not None else []
    verdict = f"Compared with the previous run: **{stats.get('verdict', '?')}** ({stats.get('change', '')})."
    lines = ["## Evaluation", "", verdict, ""]
    for label in [m.strip() for m in stats.get("models", "").split(",") if m.strip()]:
        figures = flatten(read_json(path / label / "results.json", "evaluation results"))
        columns = ["this run"] + [f"{e['at']}" for e in earlier]
        lines += [f"| {label} | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
        for figure, (value, basis) in figures.items():
            cells = [f"**{value:.4f}**"]
            for e in earlier:
                past = e["models"].get(label, {}).get(figure)
                cells.append(f"{past[0]:.4f}" if past and past[1] == basis else "-")
            lines.append(f"| {figure} ({basis}) | " + " | ".join(cells) + " |")
        lines += ["", f"Per item: `{path / label / 'results.items.jsonl'}`", ""]
    lines += [f"- warning: {w}" for w in stats.get("warnings", [])]
    return lines


STAGE = Stage("eval", ("corpus", "dataset", "pretrain", "finetune"), key_config, build,
              enabled=lambda cfg: cfg.eval is not None)
