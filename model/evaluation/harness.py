"""Evaluate one language model on multiple-choice tasks and texts: the figures of results.json
and one row per scored item for the JSONL beside it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from model.config import EOT
from model.evaluation.requests import RequestError, encode_requests
from model.evaluation.rolling import score_texts
from model.evaluation.scoring import Scorer
from model.evaluation.tasks import Task, TaskError


@dataclass
class Evaluation:
    results: dict[str, Any]  # the results.json document
    items: list[dict[str, Any]] = field(default_factory=list)  # per-item rows
    warnings: list[str] = field(default_factory=list)


def language_model(model) -> None:
    """Refuses what is not a GPT language model (a classifier has a head over labels instead)."""
    from model.gpt import GPT

    if not isinstance(model, GPT) or getattr(model.config, "labels", None) is not None:
        labels = getattr(getattr(model, "config", None), "labels", None)
        what = f"a classifier (labels {', '.join(labels)})" if labels else type(model).__name__
        raise TaskError(f"{what}, not a language model: only a language model's log-likelihoods can be evaluated")


def mc_metrics(loglikelihoods: list[float], choices: list[str], gold: int) -> dict[str, Any]:
    """acc and acc_norm as lm-eval defines them: argmax of the summed log-likelihoods, and of the
    same divided by each choice's length in characters (the first maximum wins ties)."""
    lls = np.array(loglikelihoods)
    lengths = np.array([float(len(c)) for c in choices])
    with np.errstate(divide="ignore", invalid="ignore"):
        pred_norm = int(np.argmax(lls / lengths))
    pred = int(np.argmax(lls))
    return {"pred": pred, "pred_norm": pred_norm, "acc": float(pred == gold), "acc_norm": float(pred_norm == gold)}


def mean_stderr(values: list[float]) -> float | None:
    """lm-eval's standard error of a mean: sample standard deviation / sqrt(n)."""
    if len(values) < 2:
        return None
    return float(np.std(values, ddof=1) / np.sqrt(len(values)))


def _progress(total: int, desc: str, enabled: bool):
    bar = tqdm(total=total, desc=desc, unit="cont", dynamic_ncols=True, mininterval=0.5, disable=not enabled)
    return bar, bar.update


def evaluate_task(scorer: Scorer, tokenizer, task: Task, *, limit: int | None, num_fewshot: int | None,
                  progress: bool, warnings: list[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    shots, note = task.effective_fewshot(num_fewshot)
    if note:
        warnings.append(note)
    items = task.items(limit, shots)
    prefix = tokenizer.token_to_id(EOT)
    try:
        requests = encode_requests(tokenizer, [(it.context, it.continuations(task.target_delimiter)) for it in items], prefix)
    except RequestError as e:
        raise TaskError(f"{task.path}: {e}") from None
    bar, scorer.progress = _progress(sum(len(it.choices) for it in items), task.name, progress)
    try:
        scored = scorer.score(requests)
    except ValueError as e:
        raise TaskError(f"{task.path}: {e}") from None
    finally:
        bar.close()
    rows = []
    for item, s in zip(items, scored):
        m = mc_metrics(s.loglikelihoods, item.choices, item.gold)
        rows.append({"task": task.name, "doc_id": item.doc_id, "gold": item.gold, **m,
                     "loglikelihoods": s.loglikelihoods, "is_greedy": s.greedy, "truncated": s.truncated})
    truncated = sum(r["truncated"] for r in rows)
    if truncated:
        warnings.append(f"{task.name}: {truncated} of {len(rows)} items were left-truncated to fit the model's "
                        f"{scorer.window}-token window")
    acc, acc_norm = [r["acc"] for r in rows], [r["acc_norm"] for r in rows]
    figures = {"acc": float(np.mean(acc)), "acc_norm": float(np.mean(acc_norm)), "n": len(rows), "num_fewshot": shots,
               "acc_stderr": mean_stderr(acc), "acc_norm_stderr": mean_stderr(acc_norm), "truncated": truncated}
    return figures, rows


def evaluate(model, tokenizer, *, tasks: list[Task] = (), texts: dict[str, list[str]] | None = None,
             limit: int | None = None, num_fewshot: int | None = None, batch_size: int = 16,
             progress: bool = True, name: str = "") -> Evaluation:
    """`texts`: name -> documents (a file is one document); each gets bits per byte and per character."""
    language_model(model)
    scorer = Scorer(model, batch_size)
    out = Evaluation({"model": name, "tasks": {}, "bpb": {}})
    for task in tasks:
        figures, rows = evaluate_task(scorer, tokenizer, task, limit=limit, num_fewshot=num_fewshot,
                                      progress=progress, warnings=out.warnings)
        out.results["tasks"][task.name] = figures
        out.items += rows
    prefix = tokenizer.token_to_id(EOT)
    for text_name, documents in (texts or {}).items():
        if prefix is None:
            raise TaskError(f"{text_name}: the tokenizer has no {EOT} token, which bits per byte uses as the first window's prefix")
        bar, scorer.progress = _progress(0, f"bpb {text_name}", progress)
        bar.unit = "window"
        try:
            total, per_doc = score_texts(scorer, tokenizer, documents, prefix, on_windows=bar.reset)
        finally:
            bar.close()
        out.results["bpb"][text_name] = total.as_dict()
        out.items += [{"bpb": text_name, "document": d, "loglikelihood": ll} for d, ll in enumerate(per_doc)]
    return out

