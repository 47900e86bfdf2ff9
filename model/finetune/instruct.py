"""Instruction fine-tuning: records of (instruction, optional input, output) in a prompt template,
next-token loss on the response, and a scored test set of generated responses.

GPT-2 has no pad token. Batches are padded with <|endoftext|>, and the *first* end-of-text after a
response stays a target, so the model learns to stop; the remaining padding is masked with -100.
(Masking every end-of-text, the classic bug, gives a model that never stops.)
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from model import run_dir
from model.finetune.common import (
    end_of_text,
    load_base,
    split_records,
    steps_for,
    warn_truncated,
)
from model.finetune.metrics import exact_match, rouge_l
from model.finetune.records import EpochSampler, FinetuneDataError, field, read_records
from model.generate import generate
from model.loop import Distributed, TrainingTask, fit
from model.lora import apply_lora
from model.progress import OnStep
from model.settings import InstructConfig  # noqa: F401 (re-exported)
from model.shard_format import write_bytes_atomic, write_json_atomic
from model.templates import format_prompt

JCQA_INSTRUCTION = "次の質問に、選択肢の中から最も適切な答えを一つ選んで答えてください。"


def to_instruction(record: dict[str, Any], path: Path, index: int, fmt: str) -> dict[str, str]:
    if fmt == "auto":
        fmt = "jcommonsenseqa" if "question" in record and "choice0" in record else "alpaca"
    if fmt == "alpaca":
        return {"instruction": field(path, index, record, "instruction"),
                "input": field(path, index, record, "input", optional=True),
                "output": field(path, index, record, "output")}
    choices = [field(path, index, record, f"choice{i}") for i in range(5)]
    label = field(path, index, record, "label")
    if label not in {str(i) for i in range(5)}:
        raise FinetuneDataError(f"{path}: record {index}: field 'label' is {label!r}, not 0-4")
    question = field(path, index, record, "question")
    return {"instruction": JCQA_INSTRUCTION, "input": f"質問：{question}\n選択肢：{'、'.join(choices)}",
            "output": choices[int(label)]}


def load_instructions(path: Path, fmt: str = "auto") -> list[dict[str, str]]:
    return [to_instruction(r, Path(path), i, fmt) for i, r in enumerate(read_records(path), 1)]


def encode_examples(examples: list[dict[str, str]], tokenizer, eot: int, cfg: InstructConfig,
                    limit: int) -> tuple[list[tuple[list[int], int]], int]:
    """(token ids ending in <|endoftext|>, prompt length) per example, cut to `limit` + 1 tokens
    (inputs and targets are that sequence shifted by one); also how many were cut."""
    prompts = tokenizer.encode_batch([format_prompt(e, cfg.template, cfg.input_template) for e in examples], allowed_special=set())
    responses = tokenizer.encode_batch([e["output"] for e in examples], allowed_special=set())
    encoded, truncated = [], 0
    for prompt, response in zip(prompts, responses):
        ids = prompt + response + [eot]
        if len(ids) > limit + 1:
            ids, truncated = ids[: limit + 1], truncated + 1
        encoded.append((ids, len(prompt)))
    return encoded, truncated


def collate(items: list[tuple[list[int], int]], eot: int, mask_prompt: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets padded with <|endoftext|>; targets past each sequence's own end-of-text
    (and, with mask_prompt, those predicting prompt tokens) are -100."""
    width = max(len(ids) for ids, _ in items)
    x = torch.full((len(items), width - 1), eot, dtype=torch.long)
    y = torch.full((len(items), width - 1), -100, dtype=torch.long)
    for row, (ids, prompt_len) in enumerate(items):
        seq = torch.tensor(ids, dtype=torch.long)
        x[row, : len(ids) - 1] = seq[:-1]
        y[row, : len(ids) - 1] = seq[1:]
        if mask_prompt:
            y[row, : max(prompt_len - 1, 0)] = -100
    return x, y


class InstructTask(TrainingTask):
    name = "instruct"

    def __init__(self, cfg: InstructConfig, dist: Distributed):
        self.cfg, self.dist = cfg, dist
        torch.manual_seed(cfg.seed)
        self.model, self.tokenizer, self.tokenizer_json = load_base(cfg, dist.device)
        if self.model.config.labels is not None:
            raise ValueError(f"{cfg.base}: a classifier checkpoint cannot be instruction-tuned; start from a language model")
        self.eot = end_of_text(self.tokenizer, self.tokenizer_json)
        self.limit = min(cfg.max_length or self.model.config.context_length, self.model.config.context_length)
        self.splits = split_records(cfg, lambda p: load_instructions(p, cfg.format))
        self.encoded = {}
        for name in ("train", "val"):
            encoded, truncated = encode_examples(self.splits[name], self.tokenizer, self.eot, cfg, self.limit)
            warn_truncated(truncated, len(encoded), self.limit, f"{name} examples")
            if cfg.mask_prompt:  # a prompt that fills the whole window leaves nothing to learn
                kept = [(ids, p) for ids, p in encoded if p < len(ids)]
                if len(kept) < len(encoded):
                    warnings.warn(f"{len(encoded) - len(kept)} of {len(encoded)} {name} examples were left out: "
                                  f"with mask_prompt their prompt fills the {self.limit}-token window", stacklevel=2)
                encoded = kept
            self.encoded[name] = encoded
        if cfg.lora is not None:
            self.model.config = self.model.config.model_copy(update={"lora": cfg.lora})
            apply_lora(self.model, cfg.lora)
        self.sampler = EpochSampler(len(self.encoded["train"]), cfg.batch_size, seed=cfg.seed, rank=dist.rank, world_size=dist.world)
        self.max_steps = steps_for(cfg, self.sampler.per_epoch)
        self.tokens_per_micro = cfg.batch_size * self.limit * dist.world  # an upper bound: batches are padded to their longest

    def next_batch(self):
        x, y = collate([self.encoded["train"][i] for i in self.sampler.next()], self.eot, self.cfg.mask_prompt)
        return x.to(self.dist.device), y.to(self.dist.device)

    def loss(self, model, batch):
        return model(*batch)[1]

    def sampler_state(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_sampler_state(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)

    def evaluate(self, model, autocast: Callable) -> dict[str, float]:
        val = self.encoded["val"]
        starts = list(range(0, len(val), self.cfg.batch_size))[self.dist.rank :: self.dist.world]
        total, count = 0.0, 0
        for start in starts:
            x, y = collate(val[start : start + self.cfg.batch_size], self.eot, self.cfg.mask_prompt)
            with autocast():
                _, loss = model(x.to(self.dist.device), y.to(self.dist.device))
            n = int((y != -100).sum())
            total, count = total + float(loss) * n, count + n
        return {"val_loss": total / count} if count else {}

    def checkpoint_state(self) -> dict[str, Any]:
        return {"finetune": {"task": "instruct", "config": self.cfg.model_dump(mode="json")}}

    def flops_per_token(self) -> float:
        return self.model.flops_per_token(self.limit)


@torch.no_grad()
def generate_responses(model, tokenizer, examples: list[dict[str, str]], cfg: InstructConfig, eot: int) -> list[str]:
    responses = []
    ctx = model.config.context_length
    for example in examples:
        prompt = tokenizer.encode(format_prompt(example, cfg.template, cfg.input_template), allowed_special=set())
        prompt = prompt[-(ctx - 1):]
        ids = list(generate(model, prompt, cfg.max_new_tokens, temperature=0.0, stop_id=eot))
        responses.append(tokenizer.decode(ids).strip())
    return responses


def score_test_set(task: InstructTask, out: Path) -> dict[str, Any]:
    """Greedy responses to the test prompts, written beside the references with their scores."""
    examples = task.splits["test"][: task.cfg.eval_limit]
    model = task.model.eval()
    responses = generate_responses(model, task.tokenizer, examples, task.cfg, task.eot)
    rows = []
    for example, response in zip(examples, responses):
        rows.append({**example, "response": response, "exact_match": exact_match(response, example["output"]),
                     "rouge_l": round(rouge_l(response, example["output"]), 4)})
    scores = {"n": len(rows), "exact_match": sum(r["exact_match"] for r in rows) / len(rows),
              "rouge_l": sum(r["rouge_l"] for r in rows) / len(rows)}
    (out / "eval").mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out / "eval" / "test_responses.jsonl",
                       ["".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()])
    write_json_atomic(out / "eval" / "scores.json", scores)
    return scores


def finetune_instruct(cfg: InstructConfig, on_step: OnStep | None = None) -> dict[str, Any]:
    """Instruction-tunes `cfg.base` into `cfg.out` (resuming if a checkpoint is there), then scores
    the test split. Safe to call under torchrun; rank 0 writes."""
    dist = Distributed(cfg.device)
    try:
        with run_dir.owned(cfg.out, dist.main):
            task = InstructTask(cfg, dist)
            summary = fit(cfg.model_copy(update={"max_steps": task.max_steps}), task, dist, on_step)
            summary["examples"] = {name: len(v) for name, v in task.splits.items()}
            if dist.main:
                summary["test"] = score_test_set(task, cfg.out)
            return summary
    finally:
        dist.close()
