"""Pretraining: one plain function, `train(TrainConfig)`, single process or DDP under torchrun.

Readable in one sitting, nanoGPT-style: the task below says what a batch is (random windows of the
token stream) and how it is scored (next-token cross-entropy); `model.loop.fit` does the
optimization, evaluation, metrics, checkpoints and exact resume, shared with fine-tuning.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from model import run_dir
from model.capacity import check_capacity
from model.config import EOT, GPTConfig
from model.dataset import RandomWindowLoader, TokenDataset, verify_once
from model.generate import generate
from model.gpt import GPT
from model.loop import (  # noqa: F401 (re-exported)
    Distributed,
    LoopConfig,
    TrainingTask,
    fit,
    make_optimizer,
    peak_flops,
)
from model.progress import OnStep
from model.settings import TrainConfig  # noqa: F401 (re-exported)
from tokenizer_rs import Tokenizer

VERIFIED = "verified.json"  # what this run directory has checked of its dataset


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

    name = "pretrain"

    def __init__(self, cfg: TrainConfig, dist: Distributed):
        self.cfg = cfg
        dataset = TokenDataset(cfg.data, "train")
        model_cfg = GPTConfig.preset(cfg.preset, **{"vocab_size": dataset.vocab_size, **cfg.model})
        context = cfg.context_length or model_cfg.context_length
        if context > model_cfg.context_length:
            raise ValueError(f"context_length {context} is longer than the model's position table ({model_cfg.context_length})")
        dataset.check_model(model_cfg.vocab_size, max_length=context)
        val = self._validation_split(cfg, context)
        if val is not None:
            val.check_model(model_cfg.vocab_size, dataset.tokenizer_sha256)
        self.tokenizer_json = dataset.tokenizer_file()
        if dist.main:  # digests and token ids, once per run directory (a resume does not hash again)
            cfg.out.mkdir(parents=True, exist_ok=True)
            verify_once([d for d in (dataset, val) if d is not None], cfg.out / VERIFIED)
        dist.barrier()
        check_capacity(model_cfg, dist.device, training=True)
        self.tokens_per_micro = cfg.batch_size * context * dist.world
        self.accum = max(1, round((cfg.tokens_per_step or self.tokens_per_micro) / self.tokens_per_micro))
        torch.manual_seed(cfg.seed)  # same initial weights on every rank
        self.model = GPT(model_cfg).to(dist.device)
        self.context = context
        self.loader = RandomWindowLoader(dataset, cfg.batch_size, context, seed=cfg.seed, rank=dist.rank,
                                         world_size=dist.world, device=dist.device, prefetch=cfg.prefetch)
        self.batches = iter(self.loader)
        self.val_loader = None if val is None else RandomWindowLoader(val, cfg.batch_size, context, seed=cfg.seed + 1,
                                                                      rank=dist.rank, world_size=dist.world)

    @staticmethod
    def _validation_split(cfg: TrainConfig, context: int) -> TokenDataset | None:
        """The val split, or None (with a warning) when the dataset has none or too little: a damaged
        val shard is an error, never a silent run without evaluation."""
        splits = TokenDataset.split_sizes(cfg.data)
        tokens = splits.get("val", 0)
        if tokens <= context:
            warnings.warn(f"{cfg.data}: the validation split has {tokens} tokens, not more than the context of {context}: "
                          "training runs without validation loss (rebuild the dataset with a larger --val-fraction, "
                          "or --doc-split blank_line/line for a corpus of few files)", stacklevel=2)
            return None
        return TokenDataset(cfg.data, "val")

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


def train(cfg: TrainConfig, on_step: OnStep | None = None) -> dict[str, Any]:
    """Trains (or resumes) the run in `cfg.out`; returns a summary. Safe to call under torchrun.
    `on_step(done, total, metrics)` follows the steps (rank 0)."""
    dist = Distributed(cfg.device)
    try:
        with run_dir.owned(cfg.out, dist.main):
            return fit(cfg, PretrainTask(cfg, dist), dist, on_step)
    finally:
        dist.close()


def sample_text(model, tokenizer_json: Path, tokens: int, seed: int) -> str:
    tok = Tokenizer.from_file(str(tokenizer_json))
    eot = tok.token_to_id(EOT)
    ids = list(generate(model, [eot if eot is not None else 0], tokens, temperature=0.8, top_k=50, seed=seed, stop_id=eot))
    model.train()
    return tok.decode(ids)
