"""What instruction and classification fine-tuning share: their config, the base model and its
tokenizer, and epoch-based step counts."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import torch

from model.checkpoint import load_pretrained
from model.config import EOT, TOKENIZER_FILE
from model.finetune.records import FinetuneDataError, split_indices
from model.hf import CheckpointError
from model.lora import merge_lora
from model.settings import FinetuneConfig  # noqa: F401 (re-exported)
from model.shard_format import sha256_file
from tokenizer_rs import Tokenizer


def load_base(cfg: FinetuneConfig, device: torch.device):
    """(model, tokenizer, tokenizer.json path) of the base checkpoint, checked against cfg.tokenizer."""
    model, directory = load_pretrained(cfg.base, device)
    merge_lora(model)  # adapters of an earlier fine-tune become part of the base
    tokenizer_json = directory / TOKENIZER_FILE
    if cfg.tokenizer is not None:
        if not Path(cfg.tokenizer).is_file():
            raise CheckpointError(f"{cfg.tokenizer}: no such tokenizer file")
        ours, theirs = sha256_file(Path(cfg.tokenizer)), sha256_file(tokenizer_json)
        if ours != theirs:
            raise CheckpointError(f"the base checkpoint's tokenizer ({tokenizer_json}, sha256 {theirs[:12]}) differs "
                                  f"from the data's ({cfg.tokenizer}, sha256 {ours[:12]}): token ids would not mean the same")
    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    if tokenizer.vocab_size > model.config.vocab_size:
        raise CheckpointError(f"{tokenizer_json}: {tokenizer.vocab_size} tokens, more than the base model's "
                              f"vocabulary ({model.config.vocab_size})")
    return model, tokenizer, tokenizer_json


def end_of_text(tokenizer, tokenizer_json: Path) -> int:
    eot = tokenizer.token_to_id(EOT)
    if eot is None:
        raise CheckpointError(f"{tokenizer_json}: no <|endoftext|> token (fine-tuning pads with it and stops on it)")
    return eot


def steps_for(cfg: FinetuneConfig, per_epoch: int) -> int:
    return cfg.max_steps or max(1, math.ceil(cfg.epochs * per_epoch))


def warn_truncated(count: int, total: int, limit: int, what: str) -> None:
    if count:
        warnings.warn(f"{count} of {total} {what} were longer than {limit} tokens and were truncated", stacklevel=2)


def split_records(cfg: FinetuneConfig, load, prepare=None) -> dict[str, list[Any]]:
    """train / val / test lists: from their own files where given, else seeded fractions of `data`
    (after `prepare`, e.g. class balancing, which applies to `data` only)."""
    records = load(cfg.data)
    if prepare is not None:
        records = prepare(records)
    fractions = {"val": 0.0 if cfg.val_data else cfg.val_fraction, "test": 0.0 if cfg.test_data else cfg.test_fraction}
    parts = split_indices(len(records), fractions["val"], fractions["test"], cfg.seed)
    splits = {name: [records[i] for i in idx] for name, idx in parts.items()}
    for name, path in (("val", cfg.val_data), ("test", cfg.test_data)):
        if path is not None:
            splits[name] = load(path)
    for name in ("train", "val", "test"):
        if not splits[name]:
            source = getattr(cfg, f"{name}_data", None) if name != "train" else cfg.data
            hint = "" if name == "train" else f" ({name}_fraction {fractions[name]}: raise it or give {name}_data)"
            raise FinetuneDataError(f"the {name} split is empty: {source or cfg.data} gives it no records{hint}")
    return splits
