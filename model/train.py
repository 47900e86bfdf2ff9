"""Pretraining: one plain function, `train(TrainConfig)`, single process or DDP under torchrun.

Readable in one sitting, nanoGPT-style: AdamW (fused on CUDA; weight decay on 2-D tensors only),
linear warmup then cosine decay, gradient accumulation to a target of tokens per step, gradient
clipping, bf16 autocast and TF32 on CUDA (fp32 on the CPU), optional torch.compile, periodic
evaluation with sampled continuations, metrics as JSONL plus a loss-curve PNG, and checkpoints that
make a killed run resume with exactly the same losses it would have had.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from model import checkpoint as ckpt
from model.config import GPTConfig, PRESETS
from model.data import RandomWindowLoader, TokenDataset

# Dense bf16 peak FLOP/s by device name fragment, for MFU.
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12, "4090": 165e12}


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: Path = Field(description="Dataset directory (hataori data build).")
    out: Path = Field(description="Run directory: checkpoints/, metrics.jsonl, loss.png.")
    preset: str = Field("tiny", description=f"Model preset: {', '.join(PRESETS)}.")
    model: dict[str, Any] = Field(default_factory=dict, description="GPTConfig overrides (n_layer, dropout, ...).")
    batch_size: int = Field(8, gt=0, description="Sequences per micro-batch per process.")
    context_length: int | None = Field(None, gt=0, description="Training context (default: the model's).")
    tokens_per_step: int | None = Field(None, gt=0, description="Target tokens per optimizer step (gradient accumulation).")
    max_steps: int = Field(1000, gt=0)
    lr: float = Field(6e-4, gt=0)
    min_lr: float = Field(6e-5, ge=0)
    warmup_steps: int = Field(100, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = Field(1.0, ge=0, description="Max gradient norm (0 = off).")
    eval_interval: int = Field(100, gt=0)
    eval_batches: int = Field(20, gt=0)
    sample_tokens: int = Field(32, ge=0, description="Tokens of sampled continuation logged at each evaluation.")
    checkpoint_interval: int = Field(100, gt=0)
    keep_checkpoints: int = Field(3, gt=0)
    seed: int = 1337
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N")
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    compile: bool = False
    prefetch: int = Field(2, ge=0)
    progress: bool = True


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if step >= cfg.max_steps:
        return cfg.min_lr
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=device.type == "cuda")


class Distributed:
    """torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK), or a single process."""

    def __init__(self, device: str):
        self.enabled = "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1
        self.rank = int(os.environ.get("RANK", 0))
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        local = int(os.environ.get("LOCAL_RANK", 0))
        if device == "auto":
            device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if self.enabled:
            import torch.distributed as dist

            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            dist.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo")
        self.main = self.rank == 0

    def mean(self, value: float) -> float:
        if not self.enabled:
            return value
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t) / self.world

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.destroy_process_group()


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)


def write_loss_png(metrics_path: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="train", linewidth=1)
    if val:
        ax.plot(*zip(*val), "o-", label="validation")
    ax.set_xlabel("step"), ax.set_ylabel("loss"), ax.grid(alpha=0.3), ax.legend()
    fig.tight_layout()
    tmp = png.with_name(f".{png.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, png)


@torch.no_grad()
def evaluate(model, loader: RandomWindowLoader, batches: int, autocast) -> float:
    model.eval()
    losses = []
    for i in range(batches):
        x, y = loader.batch_numpy(i)
        x, y = torch.from_numpy(x.astype("int64")), torch.from_numpy(y.astype("int64"))
        device = next(model.parameters()).device
        with autocast():
            _, loss = model(x.to(device), y.to(device))
        losses.append(float(loss))
    model.train()
    return sum(losses) / len(losses)


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Trains (or resumes) the run in `cfg.out`; returns a summary. Safe to call under torchrun."""
    from model.gpt import GPT

    dist = Distributed(cfg.device)
    device = dist.device
    try:
        return _train(cfg, dist, device, GPT)
    finally:
        dist.close()


def _train(cfg: TrainConfig, dist: Distributed, device: torch.device, GPT) -> dict[str, Any]:
    dataset = TokenDataset(cfg.data, "train")
    model_cfg = GPTConfig.preset(cfg.preset, **{"vocab_size": dataset.vocab_size, **cfg.model})
    context = cfg.context_length or model_cfg.context_length
    if context > model_cfg.context_length:
        raise ValueError(f"context_length {context} is longer than the model's position table ({model_cfg.context_length})")
    dataset.check_model(model_cfg.vocab_size, max_length=context)
    tokens_per_micro = cfg.batch_size * context * dist.world
    accum = max(1, round((cfg.tokens_per_step or tokens_per_micro) / tokens_per_micro))
    use_bf16 = cfg.dtype == "bfloat16" or (cfg.dtype == "auto" and device.type == "cuda")
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_bf16 else contextlib.nullcontext
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    torch.manual_seed(cfg.seed)  # same initial weights on every rank
    model = GPT(model_cfg).to(device)
    optimizer = make_optimizer(model, cfg, device)
    loader = RandomWindowLoader(dataset, cfg.batch_size, context, seed=cfg.seed, rank=dist.rank,
                                world_size=dist.world, device=device, prefetch=cfg.prefetch)
    val_loader = None
    with contextlib.suppress(Exception):
        val = TokenDataset(cfg.data, "val")
        if len(val) > context:
            val_loader = RandomWindowLoader(val, cfg.batch_size, context, seed=cfg.seed + 1, rank=dist.rank, world_size=dist.world)

    root = cfg.out / "checkpoints"
    metrics_path = cfg.out / "metrics.jsonl"
    start = 0
    latest = ckpt.latest_valid(root)
    if latest is not None:
        state = ckpt.restore(latest, model, optimizer)
        start = state["step"]
        loader.load_state_dict(state["loader"])
        torch.manual_seed(cfg.seed + 1000 * start + dist.rank)  # dropout stream per step and rank
        if dist.main:
            print(f"resuming from {latest} (step {start})", flush=True)
    if dist.main:
        cfg.out.mkdir(parents=True, exist_ok=True)
        kept = []
        if metrics_path.exists():  # drop what the killed run logged after its last checkpoint
            kept = [line for line in metrics_path.read_text().splitlines() if line.strip() and json.loads(line)["step"] < start]
        metrics_path.write_text("".join(line + "\n" for line in kept))
    dist.barrier()

    train_model = model
    if cfg.compile:
        train_model = torch.compile(model)
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_model = DDP(train_model, device_ids=[device.index] if device.type == "cuda" else None)

    flops_token = model.flops_per_token(context)
    peak = peak_flops(device)
    tokenizer_json = cfg.data / "tokenizer.json"
    batches = iter(loader)
    bar = None
    if dist.main and cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.max_steps, initial=start, desc="train", unit="step", dynamic_ncols=True)
    summary: dict[str, Any] = {"start_step": start, "accum": accum, "tokens_per_step": tokens_per_micro * accum}
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
            x, y = next(batches)
            sync = contextlib.nullcontext() if (not dist.enabled or micro == accum - 1) else train_model.no_sync()
            with sync:
                try:
                    with autocast():
                        _, loss = train_model(x, y)
                    (loss / accum).backward()
                except torch.cuda.OutOfMemoryError:
                    raise RuntimeError(
                        f"CUDA out of memory at batch_size {cfg.batch_size} x context {context}: lower --batch-size "
                        f"(tokens_per_step keeps the tokens per optimizer step through gradient accumulation)"
                    ) from None
            loss_sum += float(loss.detach())
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf")))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        now = time.perf_counter()
        tokens_per_s = tokens_per_micro * accum / max(now - last_time, 1e-9)
        last_time = now
        loss_value = dist.mean(loss_sum / accum)
        record = {"step": step, "loss": loss_value, "lr": lr, "grad_norm": grad_norm, "tokens_per_s": tokens_per_s,
                  "mfu": (flops_token * tokens_per_s / dist.world / peak) if peak else None}
        done = step + 1
        if val_loader is not None and (done % cfg.eval_interval == 0 or done == cfg.max_steps):
            val_loss = dist.mean(evaluate(model, val_loader, cfg.eval_batches, autocast))
            record.update(val_loss=val_loss, val_ppl=math.exp(min(val_loss, 50)))
            if dist.main and cfg.sample_tokens and tokenizer_json.is_file():
                record["sample"] = sample_text(model, tokenizer_json, cfg.sample_tokens, cfg.seed)
        if dist.main:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            if bar is not None:
                bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.1e}", tok_s=f"{tokens_per_s:,.0f}")
                bar.update(1)
        if done % cfg.checkpoint_interval == 0 or done == cfg.max_steps:
            if dist.main:
                ckpt.save_checkpoint(root, done, model, optimizer,
                                     {"loader": loader.state_dict(), "train_config": cfg.model_dump(mode="json")},
                                     tokenizer_json, cfg.keep_checkpoints)
                write_loss_png(metrics_path, cfg.out / "loss.png")
            dist.barrier()
        summary.update(final_loss=loss_value, steps=done)
    if bar is not None:
        bar.close()
    if device.type == "cuda":
        summary["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
    return summary


def sample_text(model, tokenizer_json: Path, tokens: int, seed: int) -> str:
    from model.generate import generate
    from tokenizer_rs import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    eot = tok.token_to_id("<|endoftext|>")
    ids = list(generate(model, [eot if eot is not None else 0], tokens, temperature=0.8, top_k=50, seed=seed, stop_id=eot))
    model.train()
    return tok.decode(ids)
