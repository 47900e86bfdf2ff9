"""Training checkpoints: one directory per step, written atomically, the last K kept.

    checkpoints/step-000150/
        model.safetensors   weights (the tied head stored once)
        config.json         GPTConfig
        optimizer.pt        AdamW state (tensors and numbers only; loaded with weights_only=True)
        rng.pt              torch CPU (and CUDA) RNG states (weights_only=True)
        state.json          step, sampler state, training config, metrics so far
        tokenizer.json      copied from the dataset, so the checkpoint is self-contained
        manifest.json       sha256 of every file above, written last

Every checkpoint is verified against its manifest before use, however it was named (a run
directory or the checkpoint itself). A damaged one is never deleted: training sets it aside as
`step-NNNNNN.damaged` and falls back to the one before it; rotation only removes old checkpoints
that a newer, verified one replaces.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from model.capacity import check_capacity
from model.classifier import GPTClassifier
from model.config import TOKENIZER_FILE, GPTConfig
from model.files import (
    UnsafePath,
    disk_error,
    fsync_dir,
    inside,
    read_json,
    remove_stale_temps,
    set_aside,
    sha256_file,
)
from model.gpt import GPT
from model.hf import CheckpointError, load_hf_gpt2, load_state_strict
from model.lora import apply_lora

STEP_PREFIX = "step-"
STEP_NAME = re.compile(r"step-(\d{6})")
MANIFEST = "manifest.json"
REQUIRED = ("model.safetensors", "config.json")
DAMAGED = "damaged"


def step_dir(root: Path, step: int) -> Path:
    return root / f"{STEP_PREFIX}{step:06d}"


def list_checkpoints(root: Path) -> list[Path]:
    """Finished checkpoint directories (`step-NNNNNN`), oldest first."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and STEP_NAME.fullmatch(p.name))


def set_aside_damaged(root: Path) -> list[Path]:
    """Checkpoints earlier runs set aside as damaged."""
    return sorted(p for p in root.iterdir() if f".{DAMAGED}" in p.name) if root.is_dir() else []


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    raw = getattr(model, "module", model)  # DDP wraps the model
    raw = getattr(raw, "_orig_mod", raw)  # so does torch.compile
    return {k: v.detach().cpu().contiguous() for k, v in raw.state_dict().items() if k != "lm_head.weight"}


def _write_files(tmp: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any],
                 tokenizer_json: Path | None) -> None:
    """Every file of a checkpoint except the manifest, each fsynced; errors name the file."""
    raw = getattr(getattr(model, "module", model), "_orig_mod", getattr(model, "module", model))
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    writers = {
        "model.safetensors": lambda p: save_file(model_state(model), str(p), metadata={"format": "pt"}),
        "config.json": lambda p: p.write_text(raw.config.model_dump_json(indent=2)),
        "optimizer.pt": lambda p: torch.save(optimizer.state_dict(), p),
        "rng.pt": lambda p: torch.save(rng, p),
        "state.json": lambda p: p.write_text(json.dumps(state, indent=2)),
    }
    if tokenizer_json is not None and Path(tokenizer_json).is_file():
        writers[TOKENIZER_FILE] = lambda p: shutil.copyfile(tokenizer_json, p)
    for name, write in writers.items():
        path = tmp / name
        try:
            write(path)
            with open(path, "rb+") as f:
                os.fsync(f.fileno())
        except OSError as e:
            raise disk_error(e, path) from None
        except RuntimeError as e:  # torch.save reports a failed write as "[enforce fail at inline_container.cc...]"
            raise OSError(f"writing {path} failed (is the disk full?): {str(e).splitlines()[0]}") from None


def save_checkpoint(root: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    state: dict[str, Any], tokenizer_json: Path | None, keep: int) -> Path:
    """Writes `step-NNNNNN` atomically (a temp directory renamed when complete), then removes the
    oldest verified checkpoints beyond `keep`. A failed write (disk full) leaves nothing behind."""
    root.mkdir(parents=True, exist_ok=True)
    final = step_dir(root, step)
    tmp = root / f"{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        _write_files(tmp, model, optimizer, {**state, "step": step}, tokenizer_json)
        files = sorted(p.name for p in tmp.iterdir())
        manifest = json.dumps({name: sha256_file(tmp / name) for name in files}, indent=2)
        try:
            (tmp / MANIFEST).write_text(manifest)
        except OSError as e:
            raise disk_error(e, tmp / MANIFEST) from None
        if final.exists():  # a leftover of the same step: keep it aside unless it is a sound copy
            _retire(final)
        os.replace(tmp, final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep > 0:
        for old in list_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _retire(directory: Path) -> None:
    try:
        verify(directory)
        shutil.rmtree(directory)
    except CheckpointError:
        set_aside(directory, DAMAGED)


def verify(directory: Path) -> None:
    """Every file the manifest names is a plain name inside the checkpoint and has its sha256;
    the weights and config are among them."""
    directory = Path(directory)
    if not (directory / MANIFEST).is_file():
        raise CheckpointError(f"{directory}: no {MANIFEST} (an incomplete checkpoint)")
    try:
        digests = read_json(directory / MANIFEST, "checkpoint manifest")
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    if not isinstance(digests, dict) or not all(isinstance(v, str) for v in digests.values()):
        raise CheckpointError(f"{directory / MANIFEST}: not a map of file names to sha256 digests")
    missing = [name for name in REQUIRED if name not in digests]
    if missing:
        raise CheckpointError(f"{directory / MANIFEST}: does not list {', '.join(missing)}")
    for name, digest in digests.items():
        try:
            path = inside(directory, name, "checkpoint file")
        except UnsafePath as e:
            raise CheckpointError(str(e)) from None
        if not path.is_file():
            raise CheckpointError(f"{path}: missing")
        if sha256_file(path) != digest:
            raise CheckpointError(f"{path}: sha256 does not match the checkpoint's manifest (corrupted)")


def build_model(config: GPTConfig) -> torch.nn.Module:
    """The module a config describes: a GPT, a classifier (`labels`), either with LoRA adapters."""
    model: torch.nn.Module = GPTClassifier(config) if config.labels is not None else GPT(config)
    if config.lora is not None:
        apply_lora(model, config.lora)
    return model


def read_config(directory: Path) -> GPTConfig:
    """A checkpoint's config.json as a GPTConfig; errors name the file and field."""
    path = Path(directory) / "config.json"
    try:
        data = read_json(path, "model config")
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    try:
        return GPTConfig.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        raise CheckpointError(f"{path}: {'.'.join(map(str, err['loc'])) or 'config'}: {err['msg']}") from None


def load_model(directory: Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The model of one checkpoint directory (ours), with its weights; the size is checked first."""
    config = read_config(directory)
    check_capacity(config, torch.device(device), training=False, source=str(Path(directory) / "config.json"))
    model = build_model(config)
    load_state_strict(model, _load_weights(directory / "model.safetensors"), str(directory / "model.safetensors"))
    return model.to(device)


def _load_weights(path: Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: not readable safetensors ({e})") from None


def resolve_checkpoint(path: Path) -> Path:
    """A run directory (its newest valid checkpoint), a checkpoint directory (verified against its
    manifest), or a transformers export (a config.json with model_type, no manifest)."""
    path = Path(path)
    if (path / "checkpoints").is_dir():
        found = latest_valid(path / "checkpoints")
        if found is None:
            raise CheckpointError(f"{path}: no valid checkpoint under checkpoints/")
        return found
    if (path / MANIFEST).is_file():
        verify(path)
        return path
    if (path / "config.json").is_file():
        try:
            is_hf = isinstance(config := read_json(path / "config.json", "model config"), dict) and "model_type" in config
        except ValueError as e:
            raise CheckpointError(str(e)) from None
        if is_hf:
            return path
        raise CheckpointError(f"{path}: no {MANIFEST} (an incomplete hataori checkpoint; use the run directory or an earlier step)")
    raise CheckpointError(f"{path}: not a run directory, checkpoint or transformers GPT-2 directory")


def load_pretrained(path: Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, Path]:
    """(model, checkpoint directory) from anything `resolve_checkpoint` accepts: ours or transformers'.
    From a run directory, a checkpoint that verifies but does not load gives way to the one before."""
    path = Path(path)
    if (path / "checkpoints").is_dir():
        problems = []
        for directory in reversed(list_checkpoints(path / "checkpoints")):
            try:
                verify(directory)
                return _load_one(directory, device), directory
            except CheckpointError as e:
                problems.append(str(e))
                warnings.warn(f"skipping checkpoint: {e}; trying the previous one", stacklevel=2)
        raise CheckpointError(f"{path}: no usable checkpoint under checkpoints/" + (f" ({problems[0]})" if problems else ""))
    directory = resolve_checkpoint(path)
    return _load_one(directory, device), directory


def _load_one(directory: Path, device: str | torch.device) -> torch.nn.Module:
    try:
        config = read_json(directory / "config.json", "model config")
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    model = load_hf_gpt2(directory).to(device) if isinstance(config, dict) and "model_type" in config else load_model(directory, device)
    if not (directory / TOKENIZER_FILE).is_file():
        raise CheckpointError(f"{directory}: no {TOKENIZER_FILE} beside the weights")
    return model


def latest_valid(root: Path, set_aside_damaged: bool = False) -> Path | None:
    """The newest checkpoint that verifies; damaged newer ones are skipped with a warning (and,
    for the run's own writer, renamed `*.damaged` so rotation never deletes them)."""
    for directory in reversed(list_checkpoints(root)):
        try:
            verify(directory)
            return directory
        except CheckpointError as e:
            if set_aside_damaged:
                kept = set_aside(directory, DAMAGED)
                warnings.warn(f"damaged checkpoint: {e}; kept as {kept.name}, falling back to the previous one", stacklevel=2)
            else:
                warnings.warn(f"skipping damaged checkpoint: {e}; falling back to the previous one", stacklevel=2)
    return None


def restore(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Loads weights, optimizer and RNG states into the live objects; returns state.json. Anything
    that does not fit (a tensor, the optimizer's groups, a field) is a CheckpointError."""
    raw = getattr(getattr(model, "module", model), "_orig_mod", getattr(model, "module", model))
    weights = directory / "model.safetensors"
    load_state_strict(raw, _load_weights(weights, str(next(raw.parameters()).device)), str(weights))
    try:
        optimizer.load_state_dict(torch.load(directory / "optimizer.pt", weights_only=True, map_location="cpu"))
        rng = torch.load(directory / "rng.pt", weights_only=True)
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
        state = read_json(directory / "state.json", "training state")
        if not isinstance(state, dict) or not isinstance(state.get("step"), int) or "loader" not in state:
            raise ValueError(f"{directory / 'state.json'}: lacks step or loader")
    except CheckpointError:
        raise
    except Exception as e:  # a file that verifies but does not load: say which checkpoint, fall back
        raise CheckpointError(f"{directory}: cannot be restored ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    return state


def clean_run(root: Path) -> None:
    """Removes the temp checkpoint directories of killed runs (our own names only)."""
    remove_stale_temps(root)
