"""LoRA (Hu et al. 2021): a frozen linear layer W plus a trainable low-rank update (alpha/r) B A.

B starts at zero, so an adapted model computes exactly what the base model did until it trains.
`merge_lora` folds B A into W and puts plain `nn.Linear` layers back, so exported checkpoints are
ordinary GPT-2 weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from model.config import LoRASpec


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base = base
        self.base.requires_grad_(False)
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as nn.Linear initialises its weight
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.t() @ self.lora_b.t()) * self.scale

    def merged(self) -> nn.Linear:
        out = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None,
                        device=self.base.weight.device, dtype=self.base.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(self.base.weight + (self.lora_b @ self.lora_a) * self.scale)
            if self.base.bias is not None:
                out.bias.copy_(self.base.bias)
        return out


def _targets(model: nn.Module, names: list[str]) -> list[tuple[nn.Module, str, nn.Module]]:
    found = []
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if child_name in names:
                found.append((parent, child_name, child))
    return found


def apply_lora(model: nn.Module, spec: LoRASpec) -> nn.Module:
    """Wraps every linear layer named in `spec.targets` (in place). Freezes the whole model first:
    afterwards only the adapters train, plus whatever the caller unfreezes (a classifier head)."""
    model.requires_grad_(False)
    targets = [(p, n, c) for p, n, c in _targets(model, spec.targets) if isinstance(c, nn.Linear)]
    if not targets:
        raise ValueError(f"LoRA targets {spec.targets} match no linear layer of the model")
    for parent, name, child in targets:
        setattr(parent, name, LoRALinear(child, spec.rank, spec.alpha))
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Folds every adapter into its base weight (in place) and clears `config.lora`."""
    for parent, name, child in _targets(model, sorted({n for m in model.modules() for n, c in m.named_children()
                                                       if isinstance(c, LoRALinear)})):
        if isinstance(child, LoRALinear):
            setattr(parent, name, child.merged())
    if getattr(model, "config", None) is not None and model.config.lora is not None:
        model.config = model.config.model_copy(update={"lora": None})
    return model
