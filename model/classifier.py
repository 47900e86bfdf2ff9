"""A GPT classifier: the LM head gives way to a head over label names, fed by the hidden state of
the last real (non-padding) token, which under causal attention has seen the whole text. Building,
batching and predicting live here, beside the GPT; training it is `model.finetune.classify`."""

from __future__ import annotations

import torch
import torch.nn as nn

from model.config import GPTConfig
from model.gpt import GPT


class GPTClassifier(GPT):
    """The GPT trunk plus `score`, a linear map from the last real token's state to label logits."""

    def __init__(self, cfg: GPTConfig):
        super().__init__(cfg)
        self.score = nn.Linear(cfg.n_embd, len(cfg.labels), bias=False)
        nn.init.normal_(self.score.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        hidden, _ = self.hidden_states(idx)
        last = hidden[torch.arange(idx.size(0), device=idx.device), lengths - 1]
        return self.score(last)


def collate(items: list[tuple[list[int], int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids, _ in items)
    x = torch.zeros((len(items), width), dtype=torch.long)  # padding after the last real token is never seen by it
    for row, (ids, _) in enumerate(items):
        x[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    lengths = torch.tensor([len(ids) for ids, _ in items], dtype=torch.long)
    return x, lengths, torch.tensor([label for _, label in items], dtype=torch.long)


def encode_texts(tokenizer, texts: list[str], limit: int) -> tuple[list[list[int]], int]:
    ids = tokenizer.encode_batch(texts, allowed_special=set())
    truncated = sum(len(x) > limit for x in ids)
    return [x[:limit] if x else [0] for x in ids], truncated


@torch.no_grad()
def predict(model: GPTClassifier, ids: list[list[int]], batch_size: int = 32) -> torch.Tensor:
    """Label probabilities (N, labels) for encoded texts."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(ids), batch_size):
        x, lengths, _ = collate([(x, 0) for x in ids[start : start + batch_size]])
        out.append(torch.softmax(model(x.to(device), lengths.to(device)).float(), dim=-1).cpu())
    return torch.cat(out)
