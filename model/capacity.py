"""How much memory a model needs, checked before it is built: a config.json or `--set` that asks
for a trillion parameters is refused in one line instead of an allocator crash or swap death."""

from __future__ import annotations

import os

import torch

from model.config import GPTConfig

# fp32 weights + gradients + AdamW's two moments, per parameter; activations come on top.
TRAIN_BYTES_PER_PARAM = 16
INFERENCE_BYTES_PER_PARAM = 4


class CapacityError(ValueError):
    """The model would not fit in the memory of the device it is meant for."""


def num_parameters(cfg: GPTConfig) -> int:
    """Parameters of the GPT `cfg` describes (the tied head counted once), without building it."""
    d, layers = cfg.n_embd, cfg.n_layer
    bias = 1 if cfg.bias else 0
    per_block = (2 * d * (1 + bias)  # two LayerNorms
                 + d * 3 * d + 3 * d * bias + d * d + d * bias  # attention
                 + d * 4 * d + 4 * d * bias + 4 * d * d + d * bias)  # MLP
    labels = len(cfg.labels) * d if cfg.labels else 0
    return cfg.padded_vocab_size * d + cfg.context_length * d + layers * per_block + d * (1 + bias) + labels


def available_bytes(device: torch.device) -> int | None:
    """Free memory on `device`: the GPU's, or the machine's available RAM (None when unknown)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_capacity(cfg: GPTConfig, device: torch.device | str, *, training: bool, source: str = "the model config") -> None:
    """Raises CapacityError when the model's weights (and, for training, gradients and optimizer
    state) would not fit in the device's free memory."""
    device = torch.device(device)
    params = num_parameters(cfg)
    need = params * (TRAIN_BYTES_PER_PARAM if training else INFERENCE_BYTES_PER_PARAM)
    have = available_bytes(device)
    if have is not None and need > have:
        shape = f"n_layer={cfg.n_layer}, n_embd={cfg.n_embd}, vocab_size={cfg.vocab_size}, context_length={cfg.context_length}"
        raise CapacityError(f"{source} describes a model of {params:,} parameters ({shape}): "
                            f"{'training' if training else 'loading'} it needs about {need / 2**30:,.1f} GiB, "
                            f"but {device.type} has {have / 2**30:,.1f} GiB free")


def check_device(name: str) -> torch.device:
    """The torch device `name` names, refused in one line when it is not one, or not on this machine."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r}: not a device (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: this machine has no CUDA device (torch.cuda.is_available() is False); "
                             "use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: there are {torch.cuda.device_count()} CUDA device(s), numbered from 0")
    elif device.type not in ("cpu", "mps"):
        raise ValueError(f"--device {name!r}: hataori runs on cpu or cuda")
    return device
