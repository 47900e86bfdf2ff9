"""Training checkpoints: one directory per step, written atomically, the last K kept.

    checkpoints/step-000150/
        model.safetensors   weights (the tied head stored once)
        config.json         GPTConfig
        optimizer.pt        AdamW state (tensors and numbers only; loaded with weights_only=True)
        rng.pt              torch CPU (and CUDA) RNG states (weights_only=True)
        state.json          step, sampler state, training config, metrics so far
        tokenizer.json      copied from the dataset, so the checkpoint is self-contained
        manifest.json       sha256 of every file above, written last

Loading verifies the manifest; a damaged newest checkpoint falls back to the one before it.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from model.classifier import GPTClassifier
from model.config import GPTConfig
from model.gpt import GPT
from model.hf import CheckpointError, load_hf_gpt2, load_state_strict
from model.lora import apply_lora
from model.shard_format import fsync_dir, sha256_file

STEP_PREFIX = "step-"


def step_dir(root: Path, step: int) -> Path:
    return root / f"{STEP_PREFIX}{step:06d}"


def list_checkpoints(root: Path) -> list[Path]:
    """Finished checkpoint directories, oldest first."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(STEP_PREFIX) and "." not in p.name)


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    raw = getattr(model, "module", model)  # DDP wraps the model
    raw = getattr(raw, "_orig_mod", raw)  # so does torch.compile
    return {k: v.detach().cpu().contiguous() for k, v in raw.state_dict().items() if k != "lm_head.weight"}


def save_checkpoint(root: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    state: dict[str, Any], tokenizer_json: Path | None, keep: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    final = step_dir(root, step)
    tmp = root / f"{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    raw = getattr(getattr(model, "module", model), "_orig_mod", getattr(model, "module", model))
    save_file(model_state(model), str(tmp / "model.safetensors"), metadata={"format": "pt"})
    (tmp / "config.json").write_text(raw.config.model_dump_json(indent=2))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    torch.save(rng, tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps({**state, "step": step}, indent=2))
    if tokenizer_json is not None and Path(tokenizer_json).is_file():
        shutil.copyfile(tokenizer_json, tmp / "tokenizer.json")
    files = sorted(p.name for p in tmp.iterdir())
    for name in files:
        with open(tmp / name, "rb+") as f:
            os.fsync(f.fileno())
    (tmp / "manifest.json").write_text(json.dumps({name: sha256_file(tmp / name) for name in files}, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    fsync_dir(root)
    for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def verify(directory: Path) -> None:
    manifest = directory / "manifest.json"
    if not manifest.is_file():
        raise CheckpointError(f"{directory}: no manifest.json (incomplete checkpoint)")
    for name, digest in json.loads(manifest.read_text()).items():
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing")
        if sha256_file(path) != digest:
            raise CheckpointError(f"{path}: sha256 does not match the checkpoint's manifest (corrupted)")


def build_model(config: GPTConfig) -> torch.nn.Module:
    """The module a config describes: a GPT, a classifier (`labels`), either with LoRA adapters."""
    if config.labels is not None:
        model: torch.nn.Module = GPTClassifier(config)
    else:
        model = GPT(config)
    if config.lora is not None:
        apply_lora(model, config.lora)
    return model


def load_model(directory: Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The model of one checkpoint directory (ours), with its weights."""
    try:
        config = GPTConfig.model_validate_json((directory / "config.json").read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{directory}: no config.json") from None
    model = build_model(config)
    load_state_strict(model, load_file(str(directory / "model.safetensors")), str(directory / "model.safetensors"))
    return model.to(device)


def resolve_checkpoint(path: Path) -> Path:
    """A run directory (its newest valid checkpoint), a checkpoint directory, or a transformers export."""
    path = Path(path)
    if (path / "checkpoints").is_dir():
        found = latest_valid(path / "checkpoints")
        if found is None:
            raise CheckpointError(f"{path}: no valid checkpoint under checkpoints/")
        return found
    if (path / "config.json").is_file():
        return path
    raise CheckpointError(f"{path}: not a run directory, checkpoint or transformers GPT-2 directory")


def load_pretrained(path: Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, Path]:
    """(model, checkpoint directory) from anything `resolve_checkpoint` accepts: ours or transformers'."""
    directory = resolve_checkpoint(path)
    try:
        config = json.loads((directory / "config.json").read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{directory / 'config.json'}: not JSON ({e})") from None
    model = load_hf_gpt2(directory).to(device) if "model_type" in config else load_model(directory, device)
    if not (directory / "tokenizer.json").is_file():
        raise CheckpointError(f"{directory}: no tokenizer.json beside the weights")
    return model, directory


def latest_valid(root: Path) -> Path | None:
    """The newest checkpoint that verifies; damaged newer ones are skipped with a warning."""
    for directory in reversed(list_checkpoints(root)):
        try:
            verify(directory)
            return directory
        except CheckpointError as e:
            warnings.warn(f"skipping damaged checkpoint: {e}; falling back to the previous one", stacklevel=2)
    return None


def restore(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Loads weights, optimizer and RNG states into the live objects; returns state.json."""
    raw = getattr(getattr(model, "module", model), "_orig_mod", getattr(model, "module", model))
    load_state_strict(raw, load_file(str(directory / "model.safetensors"), device=str(next(raw.parameters()).device)),
                      str(directory / "model.safetensors"))
    optimizer.load_state_dict(torch.load(directory / "optimizer.pt", weights_only=True, map_location="cpu"))
    rng = torch.load(directory / "rng.pt", weights_only=True)
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    return json.loads((directory / "state.json").read_text())
