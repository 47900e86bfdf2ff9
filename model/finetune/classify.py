"""Classification fine-tuning: labelled records, class balancing, which blocks train, and the
scores (accuracy, macro-F1, confusion matrix) of the classifier that `model.classifier` defines."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from model import run_dir
from model.classifier import GPTClassifier, collate, encode_texts, predict
from model.finetune.common import load_base, split_records, steps_for, warn_truncated
from model.finetune.metrics import classification_scores
from model.finetune.records import EpochSampler, FinetuneDataError, field, read_records
from model.loop import Distributed, TrainingTask, fit
from model.lora import apply_lora
from model.progress import OnStep
from model.settings import ClassifyConfig  # noqa: F401 (re-exported)
from model.shard_format import write_json_atomic

Example = tuple[str, str, str]  # text, label, where (file and record number)


def load_labeled(path: Path, cfg: ClassifyConfig) -> list[Example]:
    examples = []
    for i, record in enumerate(read_records(path, cfg.columns), 1):
        text = field(path, i, record, cfg.text_field)
        if cfg.text_pair_field:
            text = text + cfg.pair_separator + field(path, i, record, cfg.text_pair_field)
        if not text.strip():
            raise FinetuneDataError(f"{path}: record {i}: field {cfg.text_field!r} is empty")
        examples.append((text, field(path, i, record, cfg.label_field), f"{path}: record {i}"))
    return examples


def balanced(examples: list[Example], seed: int) -> list[Example]:
    by_label: dict[str, list[int]] = {}
    for i, (_, label, _) in enumerate(examples):
        by_label.setdefault(label, []).append(i)
    rarest = min(len(v) for v in by_label.values())
    rng = np.random.default_rng(seed)
    keep = sorted(i for v in by_label.values() for i in rng.choice(v, rarest, replace=False))
    return [examples[i] for i in keep]


def freeze_for_finetuning(model: GPTClassifier, trainable_blocks: int | str) -> None:
    """Everything frozen except the last `trainable_blocks` blocks, the final LayerNorm and the head."""
    if trainable_blocks == "all":
        model.requires_grad_(True)
        return
    model.requires_grad_(False)
    blocks = model.transformer.h
    for block in list(blocks)[len(blocks) - min(int(trainable_blocks), len(blocks)):]:
        block.requires_grad_(True)
    model.transformer.ln_f.requires_grad_(True)
    model.score.requires_grad_(True)


class ClassifyTask(TrainingTask):
    name = "classify"

    def __init__(self, cfg: ClassifyConfig, dist: Distributed):
        self.cfg, self.dist = cfg, dist
        torch.manual_seed(cfg.seed)
        base, self.tokenizer, self.tokenizer_json = load_base(cfg, dist.device)
        if base.config.labels is not None:
            raise ValueError(f"{cfg.base}: already a classifier ({', '.join(base.config.labels)}); start from a language model")
        load = lambda p: load_labeled(p, cfg)  # noqa: E731
        self.splits = split_records(cfg, load, (lambda records: balanced(records, cfg.seed)) if cfg.balance else None)
        seen = sorted({label for _, label, _ in self.splits["train"]})
        labels = cfg.labels or seen
        if len(labels) < 2:
            raise FinetuneDataError(f"{cfg.data}: the training split has only the label(s) {labels}; need at least two")
        self.labels = labels
        index = {name: i for i, name in enumerate(labels)}
        for name in ("train", "val", "test"):
            for _, label, where in self.splits[name]:
                if label not in index:
                    raise FinetuneDataError(f"{where}: label {label!r} was not seen in training (labels: {', '.join(labels)})")
        self.limit = min(cfg.max_length or base.config.context_length, base.config.context_length)
        self.encoded: dict[str, list[tuple[list[int], int]]] = {}
        for name in ("train", "val", "test"):
            ids, truncated = encode_texts(self.tokenizer, [t for t, _, _ in self.splits[name]], self.limit)
            warn_truncated(truncated, len(ids), self.limit, f"{name} texts")
            self.encoded[name] = [(x, index[label]) for x, (_, label, _) in zip(ids, self.splits[name])]

        self.model = GPTClassifier(base.config.model_copy(update={"labels": labels})).to(dist.device)
        missing, unexpected = self.model.load_state_dict(base.state_dict(), strict=False)
        assert set(missing) <= {"score.weight"} and not unexpected, (missing, unexpected)
        del base
        if cfg.lora is not None:
            self.model.config = self.model.config.model_copy(update={"lora": cfg.lora})
            apply_lora(self.model, cfg.lora)
            self.model.transformer.ln_f.requires_grad_(True)
            self.model.score.requires_grad_(True)
        else:
            freeze_for_finetuning(self.model, cfg.trainable_blocks)
        self.sampler = EpochSampler(len(self.encoded["train"]), cfg.batch_size, seed=cfg.seed, rank=dist.rank, world_size=dist.world)
        self.max_steps = steps_for(cfg, self.sampler.per_epoch)
        self.tokens_per_micro = cfg.batch_size * self.limit * dist.world

    def next_batch(self):
        return tuple(t.to(self.dist.device) for t in collate([self.encoded["train"][i] for i in self.sampler.next()]))

    def loss(self, model, batch):
        x, lengths, y = batch
        return F.cross_entropy(model(x, lengths).float(), y)

    def sampler_state(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_sampler_state(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)

    def evaluate(self, model, autocast: Callable) -> dict[str, float]:
        items = self.encoded["val"][self.dist.rank :: self.dist.world]
        if not items:
            return {}
        loss, correct = 0.0, 0
        for start in range(0, len(items), self.cfg.batch_size):
            x, lengths, y = (t.to(self.dist.device) for t in collate(items[start : start + self.cfg.batch_size]))
            with autocast():
                logits = model(x, lengths).float()
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(-1) == y).sum())
        return {"val_loss": loss / len(items), "val_accuracy": correct / len(items)}

    def checkpoint_state(self) -> dict[str, Any]:
        return {"finetune": {"task": "classify", "config": self.cfg.model_dump(mode="json")}}

    def flops_per_token(self) -> float:
        return self.model.flops_per_token(self.limit)


def score_splits(task: ClassifyTask, out: Path) -> dict[str, Any]:
    """Accuracy, macro-F1 and confusion matrices on val and test, plus the majority-class baseline."""
    results: dict[str, Any] = {}
    majority = Counter(label for _, label in task.encoded["train"]).most_common(1)[0][0]
    for name in ("val", "test"):
        items = task.encoded[name]
        probs = predict(task.model, [ids for ids, _ in items], task.cfg.batch_size)
        actual = [label for _, label in items]
        results[name] = classification_scores(probs.argmax(-1).tolist(), actual, task.labels)
        results[name]["majority_baseline"] = sum(a == majority for a in actual) / len(actual)
    results["majority_label"] = task.labels[majority]
    (out / "eval").mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "eval" / "scores.json", results)
    return results


def finetune_classify(cfg: ClassifyConfig, on_step: OnStep | None = None) -> dict[str, Any]:
    """Fine-tunes `cfg.base` into a classifier in `cfg.out` (resuming if a checkpoint is there), then
    scores validation and test. Safe to call under torchrun; rank 0 writes."""
    dist = Distributed(cfg.device)
    try:
        with run_dir.owned(cfg.out, dist.main):
            task = ClassifyTask(cfg, dist)
            summary = fit(cfg.model_copy(update={"max_steps": task.max_steps}), task, dist, on_step)
            summary["examples"] = {name: len(v) for name, v in task.splits.items()}
            summary["labels"] = task.labels
            if dist.main:
                summary["scores"] = score_splits(task, cfg.out)
            return summary
    finally:
        dist.close()
