"""The training loop shared by pretraining and fine-tuning: `fit(LoopConfig, TrainingTask)`.

A task says what a batch is and how to score it (next-token loss for pretraining and instruction
tuning, a label for classification); the loop does the rest, the same way for all of them: AdamW
(fused; weight decay on 2-D tensors only) over the trainable parameters, linear warmup then
cosine decay, gradient accumulation, clipping, bf16 autocast and TF32 on CUDA, optional
torch.compile, DDP under torchrun, periodic evaluation, metrics as JSONL plus a loss-curve PNG, and
checkpoints that let a killed run resume with exactly the losses it would have had.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist_backend
from torch.nn.parallel import DistributedDataParallel as DDP

from model import checkpoint as ckpt
from model import run_dir
from model.capacity import check_device
from model.hf import CheckpointError
from model.progress import OnStep, TrainingProgress
from model.settings import LoopConfig  # noqa: F401 (re-exported)
from model.shard_format import write_atomic

# Dense bf16 peak FLOP/s by device-name fragment, for MFU; the first fragment found in the name wins,
# so the PCIe and NVL variants of the H100 (fewer SMs, lower clocks) come before the SXM part.
PEAK_FLOPS = (("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12),
              ("L40S", 362e12), ("L4", 121e12), ("A10", 125e12), ("4090", 165e12))


class TrainingTask(ABC):
    """What `fit` trains: a model on the loop's device, a resumable batch stream, and a loss."""

    model: torch.nn.Module
    accum: int = 1  # micro-batches per optimizer step
    tokens_per_micro: int = 0  # tokens in one micro-batch over all ranks (throughput and MFU)
    tokenizer_json: Path | None = None  # copied into every checkpoint
    name: str = "train"  # how progress lines call this run (pretrain, instruct, classify)

    @abstractmethod
    def next_batch(self) -> tuple[torch.Tensor, ...]: ...

    @abstractmethod
    def loss(self, model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Mean loss of one micro-batch, through `model` (which may be the DDP/compiled wrapper)."""

    @abstractmethod
    def sampler_state(self) -> dict[str, Any]: ...

    @abstractmethod
    def load_sampler_state(self, state: dict[str, Any]) -> None: ...

    def evaluate(self, model: torch.nn.Module, autocast: Callable) -> dict[str, float]:
        """Validation metrics (each averaged over ranks by the loop); none by default."""
        return {}

    def samples(self, model: torch.nn.Module) -> dict[str, Any]:
        """Extra records for the metrics log at each evaluation, rank 0 only (e.g. sampled text)."""
        return {}

    def checkpoint_state(self) -> dict[str, Any]:
        """Extra state.json entries (the task's config, label names, ...)."""
        return {}

    def flops_per_token(self) -> float | None:
        return None


def lr_at(step: int, cfg: LoopConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if step >= cfg.max_steps:
        return cfg.min_lr
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


def make_optimizer(model: torch.nn.Module, cfg: LoopConfig, device: torch.device) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters (check the trainable-blocks setting)")
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    # Fused: one pass over the parameters instead of a dozen (on the CPU too, where it took a third
    # of the default's time on the `tiny` and `small` presets).
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=device.type in ("cuda", "cpu"))


class Distributed:
    """torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK), or a single process."""

    def __init__(self, device: str):
        self.enabled = "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1
        self.rank = int(os.environ.get("RANK", 0))
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        local = int(os.environ.get("LOCAL_RANK", 0))
        if device == "auto":
            device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
        self.device = check_device(device)
        if self.enabled:
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            dist_backend.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo")
        self.main = self.rank == 0

    def mean(self, value: float) -> float:
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist_backend.all_reduce(t)
        return float(t) / self.world

    def barrier(self) -> None:
        if self.enabled:
            dist_backend.barrier()

    def close(self) -> None:
        if self.enabled:
            dist_backend.destroy_process_group()


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for fragment, flops in PEAK_FLOPS if fragment in name), None)


@contextlib.contextmanager
def oom_advice(cfg: LoopConfig):
    """Turns CUDA's out-of-memory error (a wall of allocator statistics) into the one thing to change."""
    try:
        yield
    except torch.cuda.OutOfMemoryError:
        raise RuntimeError(
            f"CUDA out of memory at batch_size {cfg.batch_size}: lower batch_size "
            f"(tokens_per_step keeps the tokens per optimizer step through gradient accumulation)"
        ) from None


def autocast_for(cfg: LoopConfig, device: torch.device) -> Callable[[], Any]:
    use_bf16 = cfg.dtype == "bfloat16" or (cfg.dtype == "auto" and device.type == "cuda")
    return (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_bf16 else contextlib.nullcontext


def write_loss_png(metrics_path: Path, png: Path) -> None:
    import matplotlib  # imported here: it costs a second, and only checkpoints draw

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = run_dir.read_metrics(metrics_path)
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="train", linewidth=1)
    if val:
        ax.plot(*zip(*val), "o-", label="validation")
    ax.set_xlabel("step"), ax.set_ylabel("loss"), ax.grid(alpha=0.3), ax.legend()
    fig.tight_layout()
    try:
        write_atomic(png, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        plt.close(fig)


def _last_logged(metrics_path: Path) -> dict[str, Any]:
    """final_loss and the latest val_* figures of a run's metrics log (a resumed or finished run)."""
    rows = run_dir.read_metrics(metrics_path)
    out: dict[str, Any] = {"final_loss": rows[-1]["loss"]} if rows else {}
    for row in rows:
        out.update({k: v for k, v in row.items() if k.startswith("val_")})
    return out


def fit(cfg: LoopConfig, task: TrainingTask, dist: Distributed, on_step: OnStep | None = None) -> dict[str, Any]:
    """Trains `task.model` to `cfg.max_steps`, resuming from the newest valid checkpoint in
    `cfg.out/checkpoints`; returns a summary. Every rank calls it; rank 0 writes (and calls
    `on_step(steps done, total, metrics)` after each step)."""
    device = dist.device
    model = task.model
    if hasattr(model, "chunked_loss"):  # a GPT: which loss path forward(idx, targets) takes
        model.chunked_loss = cfg.loss == "chunked"
    autocast = autocast_for(cfg, device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    optimizer = make_optimizer(model, cfg, device)

    root = cfg.out / run_dir.CHECKPOINTS
    metrics_path = cfg.out / run_dir.METRICS
    if dist.main:
        cfg.out.mkdir(parents=True, exist_ok=True)

    def restore(directory: Path) -> int:
        if not cfg.restart:
            run_dir.check_same_model(directory, model.config)
        state = ckpt.restore(directory, model, optimizer)
        try:
            task.load_sampler_state(state["loader"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{directory / 'state.json'}: the sampler state does not fit this run ({e})") from None
        return state["step"]

    start, latest = run_dir.resume(cfg.out, restore, cfg.checkpoint_interval, cfg.restart, dist.main)
    if latest is not None and dist.main:
        print(f"resuming from {latest} (step {start})", flush=True)
    dist.barrier()

    train_model = torch.compile(model) if cfg.compile else model
    if dist.enabled:
        train_model = DDP(train_model, device_ids=[device.index] if device.type == "cuda" else None)

    flops_token = task.flops_per_token()
    peak = peak_flops(device)
    progress = TrainingProgress(total=cfg.max_steps, start=start, show=dist.main, bar=cfg.progress,
                                every_seconds=cfg.log_seconds, on_step=on_step if dist.main else None, what=task.name)
    accum = task.accum
    summary: dict[str, Any] = {"start_step": start, "accum": accum, "tokens_per_step": task.tokens_per_micro * accum,
                               "steps": start, **(_last_logged(metrics_path) if dist.main else {})}
    last_time = time.perf_counter()
    model.train()
    for step in range(start, cfg.max_steps):
        # Dropout draws from torch's RNG: reseeding it per step keeps a resumed run on the same stream.
        torch.manual_seed(cfg.seed + 1000 * step + dist.rank)
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_sum = 0.0
        for micro in range(accum):
            batch = task.next_batch()
            sync = contextlib.nullcontext() if (not dist.enabled or micro == accum - 1) else train_model.no_sync()
            with sync, oom_advice(cfg):
                with autocast():
                    loss = task.loss(train_model, batch)
                (loss / accum).backward()
            loss_sum += float(loss.detach())
        trainable = [p for p in model.parameters() if p.requires_grad]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip if cfg.grad_clip > 0 else float("inf")))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        now = time.perf_counter()
        tokens_per_s = task.tokens_per_micro * accum / max(now - last_time, 1e-9)
        last_time = now
        loss_value = dist.mean(loss_sum / accum)
        if not math.isfinite(loss_value):  # never carried on into checkpoints and a finished run
            raise FloatingPointError(f"the loss is {loss_value} at step {step}: training diverged (lower lr, raise "
                                     f"warmup_steps or grad_clip, or check the data); the checkpoints so far are kept")
        record = {"step": step, "loss": loss_value, "lr": lr, "grad_norm": grad_norm, "tokens_per_s": tokens_per_s,
                  "mfu": (flops_token * tokens_per_s / dist.world / peak) if (peak and flops_token) else None}
        done = step + 1
        if done % cfg.eval_interval == 0 or done == cfg.max_steps:
            with torch.no_grad(), oom_advice(cfg):
                model.eval()
                record.update({k: dist.mean(v) for k, v in task.evaluate(model, autocast).items()})
                if dist.main:
                    record.update(task.samples(model))
                model.train()
            progress.evaluated(done, record)
        if dist.main:
            run_dir.append_metrics(metrics_path, record)
        progress.step(done, record)
        if done % cfg.checkpoint_interval == 0 or done == cfg.max_steps:
            if dist.main:
                ckpt.save_checkpoint(root, done, model, optimizer,
                                     {"loader": task.sampler_state(), **task.checkpoint_state()},
                                     task.tokenizer_json, cfg.keep_checkpoints)
                write_loss_png(metrics_path, cfg.out / "loss.png")
            dist.barrier()
        summary.update(final_loss=loss_value, steps=done, **{k: v for k, v in record.items() if k.startswith("val_")})
    progress.close()
    if device.type == "cuda":
        summary["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
    return summary
