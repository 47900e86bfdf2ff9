"""Pretraining: one plain function, `train(TrainConfig)`, single process or DDP under torchrun.

Readable in one sitting, nanoGPT-style: the task below says what a batch is (random windows of the
token stream) and how it is scored (next-token cross-entropy); `model.loop.fit` does the
optimization, evaluation, metrics, checkpoints and exact resume, shared with fine-tuning.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any, Callable

import torch

from model.config import GPTConfig
from model.dataset import RandomWindowLoader, TokenDataset
from model.generate import generate
from model.gpt import GPT
from model.loop import Distributed, LoopConfig, TrainingTask, fit, make_optimizer, peak_flops  # noqa: F401 (re-exported)
from model.settings import TrainConfig  # noqa: F401 (re-exported)
from tokenizer_rs import Tokenizer


@torch.no_grad()
def evaluate(model, loader: RandomWindowLoader, batches: int, autocast) -> float:
    model.eval()
    losses = []
    device = next(model.parameters()).device
    for i in range(batches):
        x, y = loader.batch_numpy(i)
        x, y = torch.from_numpy(x.astype("int64")), torch.from_numpy(y.astype("int64"))
        with autocast():
            _, loss = model(x.to(device), y.to(device))
        losses.append(float(loss))
    return sum(losses) / len(losses)


class PretrainTask(TrainingTask):
    """Random windows of the train split, next-token loss; validation loss and a sampled continuation."""

    def __init__(self, cfg: TrainConfig, dist: Distributed):
        self.cfg = cfg
        dataset = TokenDataset(cfg.data, "train")
        model_cfg = GPTConfig.preset(cfg.preset, **{"vocab_size": dataset.vocab_size, **cfg.model})
        context = cfg.context_length or model_cfg.context_length
        if context > model_cfg.context_length:
            raise ValueError(f"context_length {context} is longer than the model's position table ({model_cfg.context_length})")
        dataset.check_model(model_cfg.vocab_size, max_length=context)
        self.tokens_per_micro = cfg.batch_size * context * dist.world
        self.accum = max(1, round((cfg.tokens_per_step or self.tokens_per_micro) / self.tokens_per_micro))
        torch.manual_seed(cfg.seed)  # same initial weights on every rank
        self.model = GPT(model_cfg).to(dist.device)
        self.context = context
        self.loader = RandomWindowLoader(dataset, cfg.batch_size, context, seed=cfg.seed, rank=dist.rank,
                                         world_size=dist.world, device=dist.device, prefetch=cfg.prefetch)
        self.batches = iter(self.loader)
        self.val_loader = None
        with contextlib.suppress(Exception):
            val = TokenDataset(cfg.data, "val")
            if len(val) > context:
                self.val_loader = RandomWindowLoader(val, cfg.batch_size, context, seed=cfg.seed + 1,
                                                     rank=dist.rank, world_size=dist.world)
        self.tokenizer_json = cfg.data / "tokenizer.json"

    def next_batch(self):
        return next(self.batches)

    def loss(self, model, batch):
        return model(*batch)[1]

    def sampler_state(self) -> dict[str, Any]:
        return self.loader.state_dict()

    def load_sampler_state(self, state: dict[str, Any]) -> None:
        self.loader.load_state_dict(state)
        self.batches = iter(self.loader)

    def evaluate(self, model, autocast: Callable) -> dict[str, float]:
        if self.val_loader is None:
            return {}
        val_loss = evaluate(model, self.val_loader, self.cfg.eval_batches, autocast)
        return {"val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 50))}

    def samples(self, model) -> dict[str, Any]:
        if not (self.cfg.sample_tokens and self.val_loader is not None and self.tokenizer_json.is_file()):
            return {}
        return {"sample": sample_text(model, self.tokenizer_json, self.cfg.sample_tokens, self.cfg.seed)}

    def checkpoint_state(self) -> dict[str, Any]:
        return {"train_config": self.cfg.model_dump(mode="json")}

    def flops_per_token(self) -> float:
        return self.model.flops_per_token(self.context)


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Trains (or resumes) the run in `cfg.out`; returns a summary. Safe to call under torchrun."""
    dist = Distributed(cfg.device)
    try:
        return fit(cfg, PretrainTask(cfg, dist), dist)
    finally:
        dist.close()


def sample_text(model, tokenizer_json: Path, tokens: int, seed: int) -> str:
    tok = Tokenizer.from_file(str(tokenizer_json))
    eot = tok.token_to_id("<|endoftext|>")
    ids = list(generate(model, [eot if eot is not None else 0], tokens, temperature=0.8, top_k=50, seed=seed, stop_id=eot))
    model.train()
    return tok.decode(ids)
